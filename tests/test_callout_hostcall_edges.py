"""proxy_http_call and the gRPC calls at their edges, as Envoy 1.40 answers them: a cluster name
that is not UTF-8 is no cluster (BadArgument, ParseFailure for gRPC); a callout body gets its own
content-length over the filter's; cancel and close of a unary call are Ok once, then NotFound, and no
callback follows; a status or property the guest cannot allocate for is InvalidMemoryAccess. The
log lines and callouts are what Envoy did with tests/hostcall_edge_probes' modules, measured through
proxywasm_host.parity.run_parity (a letter per status: "a" + WasmResult)."""
from __future__ import annotations

import pytest

from hostcall_edge_probes import GRPC_IMPORTS, callout_probe, callout_scenario, grpc_probe, grpc_scenario
from proxywasm_host import Host
from proxywasm_host.errors import StreamStateError
from proxywasm_host.parity import run_host
from watgen import build, records

REQUEST = {":method": "GET", ":path": "/", ":authority": "example.com"}


def test_an_http_callout_as_envoy_sends_it() -> None:
    (exchange,) = (side := run_host(callout_scenario())).exchanges
    # cluster "auth\xff" BadArgument, "auth" Ok, request.path with no memory to copy it to InvalidMemoryAccess
    assert side.logs == {"'wasm log c:'": [("info", "callout cag")]}
    assert exchange.status == 200
    assert exchange.callouts == [("auth", "POST", "/check", [("host", "auth"), ("content-length", "3")], b"abc")]


def test_the_test_sees_a_callouts_trailers_and_the_cluster_that_was_not_there() -> None:
    host = Host()
    host.add_cluster("auth")
    plugin = host.load_plugin(callout_probe())
    plugin.http_stream().send_request_headers(REQUEST)
    (call,) = plugin.pending_http_calls
    assert (call.cluster, call.body, list(call.trailers.items())) == ("auth", b"abc", [("x-t", "1")])
    assert host.undeclared_clusters == ["auth\udcff"]


def test_grpc_calls_cancelled_closed_and_answered_as_in_envoy() -> None:
    side = run_host(grpc_scenario())
    # three calls Ok; cancel Ok then NotFound; close Ok then NotFound; upstream "\xff" ParseFailure;
    # a service and method that are not UTF-8 Ok; close, cancel (cc bb cc) and send (c b c) with tokens
    # 4, 6 and 7 that name nothing: BadArgument unless the low bits say gRPC call (1) or stream (2),
    # then NotFound (send: stream only). Each answered call: status 7, and its message with
    # no memory to copy it to InvalidMemoryAccess; the cancelled and closed calls get no callback
    assert side.logs == {"'wasm log g:'": [("info", "grpc aaaababeaccbbcccbc")], "'wasm log:'": [("info", "close 7g")] * 2}
    assert side.callbacks == ["proxy_on_context_create(2, 1)", "proxy_on_request_headers(2, 6, 1)",
                              "proxy_on_grpc_close(1, 13, 7)", "proxy_on_memory_allocate(21)",
                              "proxy_on_grpc_close(1, 17, 7)", "proxy_on_memory_allocate(21)"]
    (exchange,) = side.exchanges
    paths = [path.encode("utf-8", "surrogateescape") for _, _, path, _, _ in exchange.callouts]
    assert paths == [b"/pkg.Echo/Say", b"/pkg.\xff/S\xfe"]  # Envoy sent the same bytes (its server decodes them)


def _streams_probe() -> bytes:
    """Request headers: streams S1 and S2 and unary calls C1 (timeout 1234 ms) and C2, then a message on
    S1 that ends it and one on S2 that does not. Response headers: close S2 twice, cancel C1, close C2."""
    stream = "(call $rec (call $proxy_grpc_stream {{cl}} {{svc}} {{m}} (i32.const 0) (i32.const 0) (i32.const {ret})))"
    call = ("(call $rec (call $proxy_grpc_call {{cl}} {{svc}} {{m}} (i32.const 0) (i32.const 0) {{msg}}"
            " (i32.const {ms}) (i32.const {ret})))")
    send = "(call $rec (call $proxy_grpc_send (i32.load (i32.const {at})) {{msg}} (i32.const {end})))"
    on_request = " ".join([stream.format(ret=0x300), stream.format(ret=0x304), call.format(ms=1234, ret=0x308),
                           call.format(ms=0, ret=0x30c), send.format(at=0x300, end=1), send.format(at=0x304, end=0)])
    close = "(call $rec (call $proxy_grpc_{op} (i32.load (i32.const {at}))))"
    on_response = " ".join(close.format(op=op, at=at) for op, at in (("close", 0x304), ("close", 0x304),
                                                                     ("cancel", 0x308), ("close", 0x30c)))
    callbacks = "".join(f'(func (export "{name}") (param i32 i32 i32) (call $rec (i32.const {tag})) (call $rec (local.get 1)))'
                        for name, tag in (("proxy_on_grpc_receive", 62), ("proxy_on_grpc_close", 64)))
    return build({"proxy_on_request_headers": on_request + " (i32.const 0)",
                  "proxy_on_response_headers": on_response + " (i32.const 0)"},
                 {"cl": "backend", "svc": "pkg.Svc", "m": "Get", "msg": "hi"},
                 imports={**GRPC_IMPORTS, "proxy_grpc_stream": "(param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)"},
                 extra=callbacks)


def test_a_stream_closed_by_the_filter_still_receives_and_closed_calls_do_not() -> None:
    """Envoy's Context::grpcClose (source/extensions/common/wasm/context.cc, 1.40): a stream is half-closed
    (closeStream) and kept until its remote side closes, so a second close is Ok and answers still arrive;
    a unary call is cancelled and forgotten, as by proxy_grpc_cancel (measured above through parity)."""
    host = Host()
    host.add_cluster("backend")
    plugin = host.load_plugin(_streams_probe())
    stream = plugin.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    vm = plugin.workers[0].vm
    assert records(vm) == [0, 0, 0, 0, 0, 0]
    s1, s2, c1, c2 = plugin.pending_grpc
    assert (s1.token, s2.token, c1.token, c2.token) == (6, 10, 5, 9)
    assert (s1.sent, s1.local_closed, s2.sent, s2.local_closed) == ([b"hi"], True, [b"hi"], False)
    assert (c1.timeout_ms, c2.timeout_ms) == (1234, 0)
    stream.send_response_headers({":status": "200"}, end_of_stream=True)
    assert records(vm)[6:] == [0, 0, 0, 0]
    assert s2.local_closed and plugin.pending_grpc == [s1, s2]
    for call in (c1, c2):
        with pytest.raises(StreamStateError):
            call.receive(b"late")
    s2.receive(b"answer")
    s2.close(0)
    assert records(vm)[10:] == [62, 10, 64, 10] and plugin.pending_grpc == [s1]


def test_a_grpc_call_to_a_cluster_that_is_not_there_is_named_for_the_test() -> None:
    """Envoy answers ParseFailure and logs nothing; the test report names the cluster instead."""
    host = Host()
    host.add_cluster("echo_svc")
    plugin = host.load_plugin(grpc_probe())
    plugin.http_stream().send_request_headers(REQUEST)
    assert host.undeclared_clusters == ["\udcff"] and len(plugin.pending_grpc) == 2
