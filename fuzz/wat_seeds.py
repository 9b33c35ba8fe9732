"""Small WAT seed modules (built with tests/watgen.py) that call most hostcalls with valid
arguments. Their value as seeds: `const_tweak` turns those arguments (pointers, sizes,
map and buffer types, status codes) into hostile ones while the module stays valid, so the
host's argument checking is what gets fuzzed, not wasmtime's parser."""
from __future__ import annotations

from watgen import build

from proxywasm_host.memory import serialize_pairs

OUT = "(i32.const 0x100) (i32.const 0x104)"  # the scratch (ptr, size) out-pointers
HDRS = serialize_pairs([(b":method", b"GET"), (b":authority", b"example"), (b":path", b"/")])
STRINGS = {"path": ":path", "k": "x-fuzz", "v": "1", "prop": "request\0path", "msg": "fuzz log line",
           "metric": "fuzz.counter", "key": "fuzz-key", "cluster": "c1", "hdrs": HDRS, "details": "fuzz",
           "body": "denied", "q": "fuzz-queue", "vm": "", "gone": "x-gone"}

HEADERS = (
    "(drop (call $proxy_get_header_map_value (i32.const 0) {path} " + OUT + "))"
    " (drop (call $proxy_add_header_map_value (i32.const 0) {k} {v}))"
    " (drop (call $proxy_replace_header_map_value (i32.const 0) {k} {v}))"
    " (drop (call $proxy_remove_header_map_value (i32.const 0) {gone}))"
    " (drop (call $proxy_get_header_map_pairs (i32.const 0) " + OUT + "))"
    " (drop (call $proxy_get_header_map_size (i32.const 0) (i32.const 0x100)))"
    " (drop (call $proxy_get_property {prop} " + OUT + "))"
    " (drop (call $proxy_log (i32.const 2) {msg}))"
    " (drop (call $proxy_define_metric (i32.const 0) {metric} (i32.const 0x108)))"
    " (drop (call $proxy_increment_metric (i32.load (i32.const 0x108)) (i64.const 1)))"
    " (drop (call $proxy_set_shared_data {key} {v} (i32.const 0)))"
    " (drop (call $proxy_get_shared_data {key} " + OUT + " (i32.const 0x10c)))"
    " (drop (call $proxy_http_call {cluster} {hdrs} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)"
    " (i32.const 500) (i32.const 0x110)))"
    " (drop (call $proxy_get_current_time_nanoseconds (i32.const 0x118)))"
)
BODY = (
    "(drop (call $proxy_get_buffer_bytes (i32.const {buf}) (i32.const 0) (local.get $size) " + OUT + "))"
    " (drop (call $proxy_get_buffer_status (i32.const {buf}) (i32.const 0x100) (i32.const 0x104)))"
    " (drop (call $proxy_set_buffer_bytes (i32.const {buf}) (i32.const 0) (i32.const 1) {{v}}))"
)


def _body(buf: int) -> str:
    return BODY.replace("{buf}", str(buf)).replace("{{v}}", "{v}")


def http_module() -> bytes:
    return build({
        "proxy_on_vm_start": "(drop (call $proxy_set_tick_period_milliseconds (i32.const 1000))) (i32.const 1)",
        "proxy_on_configure": "(drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) "
                              + OUT + ")) (i32.const 1)",
        "proxy_on_request_headers": HEADERS + " (i32.const 0)",
        "proxy_on_request_body": _body(0) + " (i32.const 0)",
        "proxy_on_response_headers": HEADERS.replace("(i32.const 0) {path}", "(i32.const 2) {path}") + " (i32.const 0)",
        "proxy_on_response_body": _body(1) + " (i32.const 0)",
        "proxy_on_http_call_response": "(drop (call $proxy_get_header_map_pairs (i32.const 6) " + OUT + "))"
                                       " (drop (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0)"
                                       " (local.get $body) " + OUT + "))",
        "proxy_on_tick": "(drop (call $proxy_log (i32.const 2) {msg}))",
        "proxy_on_log": "(drop (call $proxy_get_property {prop} " + OUT + "))",
    }, STRINGS)


def local_reply_module() -> bytes:
    return build({
        "proxy_on_request_headers": "(drop (call $proxy_send_local_response (i32.const 403) {details} {body} {hdrs}"
                                    " (i32.const -1))) (i32.const 1)",
        "proxy_on_response_headers": "(drop (call $proxy_continue_stream (i32.const 0))) (i32.const 0)",
    }, STRINGS)


def tcp_module() -> bytes:
    return build({
        "proxy_on_new_connection": "(drop (call $proxy_log (i32.const 2) {msg})) (i32.const 0)",
        "proxy_on_downstream_data": _body(2) + " (i32.const 0)",
        "proxy_on_upstream_data": _body(3) + " (i32.const 0)",
        "proxy_on_downstream_connection_close": "(drop (call $proxy_get_property {prop} " + OUT + "))",
    }, STRINGS)


def abi_0_1_module() -> bytes:
    return build({
        "proxy_on_request_headers": "(drop (call $proxy_get_header_map_pairs (i32.const 0) " + OUT + "))"
                                    " (drop (call $proxy_continue_request)) (i32.const 0)",
        "proxy_on_configure": "(drop (call $proxy_get_configuration " + OUT + ")) (i32.const 1)",
    }, STRINGS, abi="0_1_0", allocator=("malloc",))


def MODULES() -> dict[str, tuple[bytes, tuple[str, ...]]]:
    return {
        "http": (http_module(), ("http",)),
        "local_reply": (local_reply_module(), ("http",)),
        "tcp": (tcp_module(), ("tcp",)),
        "abi_0_1": (abi_0_1_module(), ("http",)),
    }
