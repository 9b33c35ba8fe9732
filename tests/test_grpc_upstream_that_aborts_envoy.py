"""A gRPC upstream whose bytes parse as a GrpcService naming no target aborts Envoy 1.40 (measured
through parity: "echo\\xff" — field 12, fixed32 — gives 'panic: unset oneof' in the async client
manager, and b"" closes the client's connection without an answer). The host stops the test with
EnvoyWouldCrash, which says so; a cluster name that is no protobuf wire data is called as before."""
from __future__ import annotations

import pytest

from hostcall_edge_probes import GRPC_IMPORTS
from proxywasm_host import EnvoyWouldCrash, Host
from watgen import build, records


def _grpc_call(upstream: bytes) -> tuple[Host, bytes]:
    call = ("(call $rec (call $proxy_grpc_call {up} {svc} {m} (i32.const 0) (i32.const 0) {msg} (i32.const 5000)"
            " (i32.const 0x300)))")
    wasm = build({"proxy_on_request_headers": call + " (i32.const 0)"},
                 {"up": upstream, "svc": "pkg.Echo", "m": "Say", "msg": "hi"}, imports=GRPC_IMPORTS,
                 extra='(func (export "proxy_on_grpc_close") (param i32 i32 i32))'
                       '(func (export "proxy_on_grpc_receive") (param i32 i32 i32))')
    host = Host()
    host.add_cluster("echo_svc")
    return host, wasm


@pytest.mark.parametrize("upstream", [b"", b"echo\xff"], ids=["empty", "parses-as-a-field"])
def test_an_upstream_that_is_a_grpc_service_without_target_stops_the_test(upstream: bytes) -> None:
    host, wasm = _grpc_call(upstream)
    stream = host.load_plugin(wasm).http_stream()
    with pytest.raises(EnvoyWouldCrash, match=r"names no target: Envoy 1.40 aborts"):
        stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"})


def test_a_cluster_name_is_called() -> None:
    host, wasm = _grpc_call(b"echo_svc")
    stream = host.load_plugin(wasm).http_stream()
    stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"})
    assert records(stream.vm) == [0] and [call.cluster for call in host.pending_grpc] == ["echo_svc"]
