"""WAT filters that ask the metric, shared-data, queue, callout and gRPC hostcalls their edge cases
and log the answers as one line: a letter per status ("a" + WasmResult) or a digit-like character
per small value ("0" + value). The same modules ran in Envoy 1.40 through proxywasm_host.parity;
the tests that use them pin the line Envoy logged."""
from __future__ import annotations

from proxywasm_host.memory import serialize_pairs
from proxywasm_host.parity import Filter, GrpcReply, Request, Response, Scenario
from watgen import build

LINE = 0x2000  # where a probe writes its log line
SAVE_CTX = "(i32.store (i32.const 0x10c) (local.get $ctx))"
RESUME = "(drop (call $proxy_set_effective_context (i32.load (i32.const 0x10c)))) (drop (call $proxy_continue_stream (i32.const 0)))"
QUEUE_IMPORTS = {
    "proxy_register_shared_queue": "(param i32 i32 i32) (result i32)",
    "proxy_resolve_shared_queue": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_enqueue_shared_queue": "(param i32 i32 i32) (result i32)",
}
GRPC_IMPORTS = {
    "proxy_grpc_call": "(param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
    "proxy_grpc_cancel": "(param i32) (result i32)",
    "proxy_grpc_close": "(param i32) (result i32)",
    "proxy_grpc_send": "(param i32 i32 i32 i32) (result i32)",
}
#: an allocator that answers 0 (no memory) once the guest stored 1 at DENY
DENY = 0x140
ALLOCATOR = (
    '(func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)'
    f" (if (i32.load (i32.const {DENY})) (then (return (i32.const 0))))"
    " (local.set $p (global.get $bump)) (global.set $bump (i32.add (global.get $bump) (local.get $n))) (local.get $p))"
)


def status(call: str) -> str:
    """A log character for the WasmResult `call` returns: "a" Ok, "b" NotFound, "c" BadArgument…"""
    return f"(i32.add (i32.const 97) {call})"


def value(expr: str) -> str:
    """A log character for a small number: "0" + it."""
    return f"(i32.add (i32.const 48) {expr})"


def log_line(tag: str, chars: list[str]) -> str:
    """WAT that writes `tag`, a space and one character per expression, then logs it (info)."""
    code = [f"(i32.store8 (i32.const {LINE + i}) (i32.const {ord(c)}))" for i, c in enumerate(f"{tag} ")]
    at = len(tag) + 1
    code += [f"(i32.store8 (i32.const {LINE + at + i}) {c})" for i, c in enumerate(chars)]
    code.append(f"(drop (call $proxy_log (i32.const 2) (i32.const {LINE}) (i32.const {at + len(chars)})))")
    return " ".join(code)


def metrics_probe() -> bytes:
    """Defines two counters, a gauge and a histogram, then increments, records and reads them back."""
    define = "(call $proxy_define_metric (i32.const {t}) {{{name}}} (i32.const {ret}))"
    get = "(call $proxy_get_metric (i32.load (i32.const {id})) (i32.const 0x130))"
    got = value("(i32.load (i32.const 0x130))")

    def inc(id_at: int, delta: int) -> str:
        return status(f"(call $proxy_increment_metric (i32.load (i32.const {id_at})) (i64.const {delta}))")

    def rec(id_at: int, v: int) -> str:
        return status(f"(call $proxy_record_metric (i32.load (i32.const {id_at})) (i64.const {v}))")

    chars = [
        status(define.format(t=0, name="a", ret=0x120)), status(define.format(t=0, name="b", ret=0x124)),
        status(define.format(t=1, name="g", ret=0x128)), status(define.format(t=2, name="h", ret=0x12c)),
        *(value(f"(i32.load (i32.const {at}))") for at in (0x120, 0x124, 0x128, 0x12c)),
        inc(0x120, 3), inc(0x124, 0), inc(0x124, -1),
        status(get.format(id=0x120)), got, status(get.format(id=0x124)), got,
        rec(0x128, 7), status(get.format(id=0x128)), got,
        inc(0x128, -2), status(get.format(id=0x128)), got,
        rec(0x120, 2), status(get.format(id=0x120)), got,
        status(get.format(id=0x12c)), rec(0x12c, 9),
        status(define.format(t=0, name="odd", ret=0x134)),
        *(status(f"(call $proxy_{op}_metric (i32.const {unknown}) {arg})") for unknown in (1000, 1001, 1002, 1003)
          for op, arg in (("get", "(i32.const 0x130)"), ("increment", "(i64.const 1)"), ("record", "(i64.const 1)"))),
    ]
    strings = {"a": "probe.a", "b": "probe.b", "g": "probe.g", "h": "probe.h", "odd": b"probe.\xff"}
    return build({"proxy_on_request_headers": log_line("metrics", chars) + " (i32.const 0)"}, strings)


def metrics_scenario() -> Scenario:
    return Scenario([Filter(metrics_probe(), name="m")], [Request()])


def shared_probe() -> bytes:
    """Reads then writes shared data "k"; registers a queue whose name is not UTF-8, resolves it by
    an empty VM id, by "a" and by a VM id that is not UTF-8, and enqueues on it. The module has no
    proxy_on_queue_ready."""
    chars = [
        status("(call $proxy_get_shared_data {k} (i32.const 0x100) (i32.const 0x104) (i32.const 0x108))"),
        status("(call $proxy_set_shared_data {k} {v} (i32.const 0))"),
        status("(call $proxy_register_shared_queue {q} (i32.const 0x120))"),
        status("(call $proxy_resolve_shared_queue {none} {q} (i32.const 0x124))"),
        status("(call $proxy_resolve_shared_queue {a} {q} (i32.const 0x128))"),
        status("(call $proxy_resolve_shared_queue {odd} {q} (i32.const 0x12c))"),
        value("(i32.eq (i32.load (i32.const 0x120)) (i32.load (i32.const 0x124)))"),
        status("(call $proxy_enqueue_shared_queue (i32.load (i32.const 0x124)) {v})"),
    ]
    strings = {"k": "k", "v": "v", "q": b"q\xff", "none": "", "a": "a", "odd": b"\xfe"}
    return build({"proxy_on_request_headers": log_line("shared", chars) + " (i32.const 0)"}, strings,
                 imports=QUEUE_IMPORTS)


def shared_scenario() -> Scenario:
    """The probe three times in one chain: two plugins on VM id "a", one on "b"."""
    wasm = shared_probe()
    return Scenario([Filter(wasm, name="a1", root_id="a1", vm_id="a"), Filter(wasm, name="a2", root_id="a2", vm_id="a"),
                     Filter(wasm, name="b1", root_id="b1", vm_id="b")], [Request(), Request()])


def callout_probe() -> bytes:
    """Calls a cluster whose name is not UTF-8, then calls "auth" with a body, a content-length that
    is not the body's and trailers (pausing until the answer); reads a property with an allocator
    that has no memory left."""
    call = ("(call $proxy_http_call {cl} {hd} {body} {tr} (i32.const 5000) (i32.const 0x108))")
    chars = [
        status(call.format(cl="{odd}", hd="{hd}", body="{body}", tr="{tr}")),
        status(call.format(cl="{auth}", hd="{hd}", body="{body}", tr="{tr}")),
        f"(i32.store (i32.const {DENY}) (i32.const 1)) "
        + status("(call $proxy_get_property {path} (i32.const 0x100) (i32.const 0x104))"),
    ]
    headers = [(b":method", b"POST"), (b":path", b"/check"), (b":authority", b"auth"), (b"content-length", b"99")]
    strings = {"odd": b"auth\xff", "auth": "auth", "hd": serialize_pairs(headers), "body": "abc",
               "tr": serialize_pairs([(b"x-t", b"1")]), "path": "request\0path"}
    on_headers = f"{log_line('callout', chars)} (i32.store (i32.const {DENY}) (i32.const 0)) {SAVE_CTX} (i32.const 1)"
    return build({"proxy_on_request_headers": on_headers,
                  "proxy_on_http_call_response": RESUME}, strings, allocator=(), extra=ALLOCATOR)


def callout_scenario() -> Scenario:
    return Scenario([Filter(callout_probe(), name="c")], [Request()], callouts={"auth": Response(200, {}, "ok")})


def grpc_probe() -> bytes:
    """Opens three unary calls on "echo_svc": cancels the first and closes the second (each twice),
    lets the third be answered; on_grpc_close reads the status message with no memory left."""
    call = "(call $proxy_grpc_call {{cl}} {{svc}} {{m}} (i32.const 0) (i32.const 0) {{msg}} (i32.const 5000) (i32.const {ret}))"
    token = "(i32.load (i32.const {at}))"
    chars = [
        status(call.format(ret=0x300)), status(call.format(ret=0x304)), status(call.format(ret=0x308)),
        status(f"(call $proxy_grpc_cancel {token.format(at=0x300)})"),
        status(f"(call $proxy_grpc_cancel {token.format(at=0x300)})"),
        status(f"(call $proxy_grpc_close {token.format(at=0x304)})"),
        status(f"(call $proxy_grpc_close {token.format(at=0x304)})"),
        status("(call $proxy_grpc_call {odd} {svc} {m} (i32.const 0) (i32.const 0) {msg} (i32.const 5000) (i32.const 0x30c))"),
        status("(call $proxy_grpc_call {cl} {osvc} {om} (i32.const 0) (i32.const 0) {msg} (i32.const 5000) (i32.const 0x310))"),
        *(status(f"(call $proxy_grpc_{op} (i32.const {unknown}))") for unknown in (4, 6, 7) for op in ("close", "cancel")),
        *(status(f"(call $proxy_grpc_send (i32.const {unknown}) {{msg}} (i32.const 0))") for unknown in (4, 6, 7)),
    ]
    on_close = log_line("close", [
        f"(i32.store (i32.const {DENY}) (i32.const 1)) {value('(local.get 2)')}",
        status("(call $proxy_get_status (i32.const 0x120) (i32.const 0x100) (i32.const 0x104))"),
    ]) + f" (i32.store (i32.const {DENY}) (i32.const 0)) {RESUME}"
    on_receive = log_line("receive", [value("(local.get 2)")]) + " " + RESUME
    extra = ALLOCATOR + "".join(f'(func (export "{n}") (param $root i32) (param $token i32) (param $x i32) {b})'
                                for n, b in (("proxy_on_grpc_close", on_close), ("proxy_on_grpc_receive", on_receive)))
    strings = {"cl": "echo_svc", "svc": "pkg.Echo", "m": "Say", "msg": "hi", "odd": b"\xff", "osvc": b"pkg.\xff",
               "om": b"S\xfe"}
    return build({"proxy_on_request_headers": f"{log_line('grpc', chars)} {SAVE_CTX} (i32.const 1)"}, strings,
                 imports=GRPC_IMPORTS, allocator=(), extra=extra)


def grpc_scenario() -> Scenario:
    return Scenario([Filter(grpc_probe(), name="g")], [Request()],
                    callouts={"echo_svc": GrpcReply(status=7, status_message="not you")})


def hostcall_edge_scenarios() -> dict[str, Scenario]:
    """All four, as integration/test_envoy_probe_scenarios.py runs them in Envoy."""
    return {"metrics": metrics_scenario(), "shared": shared_scenario(), "callout": callout_scenario(),
            "grpc": grpc_scenario()}
