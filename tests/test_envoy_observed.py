"""Envoy 1.40 behaviours found by running SDK-built modules through Envoy and the host
(shared/reference/envoy-observed.md, "Found by running SDK-built modules"). Each test pins one
with a WAT module that does what the SDK's code does; examples/ runs the SDK builds themselves."""
from __future__ import annotations

from proxywasm_host import Host
from proxywasm_host.memory import serialize_pairs
from watgen import build, out_bytes, records

CALL_HEADERS = serialize_pairs([(b":method", b"GET"), (b":path", b"/k"), (b":authority", b"idp")])


def test_effective_context_zero_is_the_calling_context():
    """cpp-host's contextOrEffectiveContext: id 0 means the context whose callback runs. A C++ SDK
    filter switches to a stream context and back with 0, then reads the callout's body."""
    wasm = build({
        "proxy_on_vm_start": "(drop (call $proxy_http_call {c} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 500) (i32.const 0x300))) (i32.const 1)",
        "proxy_on_http_call_response": (
            "(call $rec (call $proxy_set_effective_context (i32.const 0)))"
            " (call $rec (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get $body) (i32.const 0x100) (i32.const 0x104)))"
        ),
    }, {"c": "idp", "h": CALL_HEADERS})
    host = Host()
    host.add_cluster("idp")
    plugin = host.load_plugin(wasm)
    plugin.pending_http_calls[0].respond(200, body="the answer")
    vm = plugin.workers[0].vm
    assert records(vm) == [0, 0]
    assert out_bytes(vm) == b"the answer"
