"""What the map and buffer hostcalls hand back, beyond their status: the data a read returns in
the phases where it is read-only, and InvalidMemoryAccess when the guest's allocator returns 0
(cpp-host's copyToPointerSize fails, whatever the hostcall)."""
from __future__ import annotations

from proxywasm_host import Host
from proxywasm_host.memory import serialize_pairs
from watgen import build, records

REQ = {":method": "POST", ":path": "/", ":authority": "a"}
PAIRS = "(call $proxy_get_header_map_pairs (i32.const {map}) (i32.const 0x100) (i32.const 0x104))"
PAIRS_COUNT = "(i32.load (i32.load (i32.const 0x100)))"  # the serialized map starts with its number of pairs


def test_allocator_returning_zero_is_invalid_memory_access() -> None:
    zero_malloc = '(func (export "malloc") (param i32) (result i32) (i32.const 0))'
    wasm = build({
        "proxy_on_request_headers": f"(call $rec {PAIRS.format(map=0)}) (i32.const 0)",
        "proxy_on_request_body": "(call $rec (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 9)"
                                 " (i32.const 0x100) (i32.const 0x104))) (i32.const 0)",
    }, allocator=(), extra=zero_malloc)
    s = Host().load_plugin(wasm).http_stream()
    s.send_request_headers(REQ)
    s.send_request_body(b"body", end_of_stream=True)
    assert records(s.vm) == [6, 6]
    legacy = build({"proxy_on_configure": "(call $rec (call $proxy_get_configuration (i32.const 0x100) (i32.const 0x104)))"
                                          " (i32.const 1)"}, abi="0_1_0", allocator=(), extra=zero_malloc)
    plugin = Host().load_plugin(legacy, configuration="conf")
    assert records(plugin.workers[0].vm) == [6]


def test_read_only_maps_are_read_whole() -> None:
    """on_log reads the request headers, on_http_call_response the callout's response headers:
    read-only, but every pair is there (Envoy's on_log also sees the router's
    x-envoy-expected-rq-timeout-ms, added after the filters: parity masks it)."""
    host = Host()
    host.add_cluster("auth")
    callout = ("(drop (call $proxy_http_call {auth} {headers} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)"
               " (i32.const 5000) (i32.const 0x108)))")
    wasm = build({
        "proxy_on_request_headers": f"(call $rec (local.get $n)) {callout} (i32.const 0)",
        "proxy_on_http_call_response": f"(call $rec {PAIRS.format(map=6)}) (call $rec {PAIRS_COUNT})",
        "proxy_on_log": f"(call $rec {PAIRS.format(map=0)}) (call $rec {PAIRS_COUNT})",
    }, {"auth": "auth", "headers": serialize_pairs([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"auth")])})
    s = host.load_plugin(wasm).http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    host.pending_http_calls[0].respond(200, {"x-c": "1"}, b"")
    s.complete()
    request_headers = records(s.vm)[0]
    # :status, x-c, x-envoy-upstream-service-time; then every request header
    assert records(s.vm) == [request_headers, 0, 3, 0, request_headers]
