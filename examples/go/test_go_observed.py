"""Envoy 1.40 behaviours that real SDK-built modules rely on, checked with a Go SDK filter
(observed_filter/main.go) in the host. Each test names the difference of issue 9 it pins; the
same traffic goes through Envoy in integration/test_sdk_differences.py. Cases no Go filter can
produce (a gRPC call to a serialized GrpcService, emscripten's malloc) are pinned with WAT modules
in tests/test_envoy_observed.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host import Host

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_go  # noqa: E402


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_go.module_for_tests("observed_filter")


@pytest.fixture
def plugin(wasm):
    host = Host()
    host.add_cluster("idp")
    return host.load_plugin(wasm, name="go_observed")


def request(plugin, headers: dict[str, str], body: bytes | None = None):
    """A request as Envoy's HTTP/1 codec delivers it; the upstream answers 200 unless a local reply came first."""
    s = plugin.http_stream()
    s.send_request_headers({":method": "POST" if body else "GET", ":path": "/", ":authority": "a", **headers},
                           end_of_stream=body is None)
    if body is not None and s.local_reply is None:
        s.send_request_body(body, end_of_stream=False)
    if body is not None and s.local_reply is None:
        s.send_request_body(b"", end_of_stream=True)
    return s


def respond(s, body: bytes = b"upstream body"):
    if s.local_reply is None:
        s.send_response_headers({":status": "200", "content-type": "text/plain"})
        s.send_response_body(body, end_of_stream=True)
    s.complete()
    return s


def done_line(s) -> str:
    [line] = [r.message for r in s.logs if r.message.startswith(f"stream {s.id} done: duration")]
    return line.split(" ", 2)[2]


def test_effective_context_zero_is_the_calling_context(plugin):
    """Difference 2: in the callout's callback, context 0 is the root context that received the
    answer, so the body is readable there; then the filter switches back to the stream."""
    s = request(plugin, {"x-go-ask": "alice"})
    [call] = plugin.pending_http_calls
    assert call.cluster == "idp" and call.headers[":path"] == "/users/alice"
    assert s.upstream_request.headers is None                 # held until the answer
    call.respond(200, {"content-type": "text/plain"}, "role=admin")
    assert s.upstream_request.headers["x-go-idp"] == "role=admin"
    assert 'idp answered "role=admin" via context 0' in [r.message for r in plugin.logs]


def test_access_log_properties(plugin):
    """Difference 3: request.duration is NotFound while the request is in flight and known in
    on_log; sizes, code_details, grpc_status (Unknown for a plain 200) and flags as Envoy answers."""
    s = request(plugin, {"content-length": "5"}, b"hello")
    assert s.upstream_request.headers["x-go-early-duration"] == "false"
    plugin.host.clock.advance(ms=2)
    respond(s)
    assert done_line(s) == ("done: duration known=true request size=5 response size=13"
                            " code_details=via_upstream grpc_status=2 flags=0")


def test_property_path_ending_in_the_separator(plugin):
    """Difference 3: a path whose last segment is empty ends in NUL ("source\\0address\\0", as
    recent C++ SDK builds send every path); Envoy resolves it as source.address."""
    s = respond(request(plugin, {}))
    assert s.upstream_request.headers["x-go-source-trailing"] == "127.0.0.1:54321"


def test_client_cert_header_never_reaches_the_filter(plugin):
    """Difference 5: Envoy's connection manager removes x-forwarded-client-cert (plaintext listener)."""
    s = respond(request(plugin, {"x-forwarded-client-cert": "By=spiffe://client"}))
    assert s.upstream_request.headers["x-go-xfcc"] == "<error status returned by host: not found>"
    assert "x-forwarded-client-cert" not in s.upstream_request.headers


@pytest.mark.parametrize("headers,status,closes", [
    ({"x-go-deny": "1"}, 403, True),        # answered before the request's body arrived
    ({"x-go-deny-body": "1"}, 400, True),   # a local 400, after the whole request
    ({}, 200, False),                       # the upstream's answer to a complete request
])
def test_connection_close_after_early_or_400_replies(plugin, headers, status, closes):
    """Difference 5: Envoy adds connection: close to a reply that starts before the request ended
    and to any local 400."""
    s = respond(request(plugin, headers, b"abc"))
    out = s.downstream_response.headers
    assert out[":status"] == str(status)
    assert out.get("connection") == ("close" if closes else None)


def test_panic_in_a_network_filter_closes_the_connection(wasm):
    """Difference 5: after a trap in a network-filter callback Envoy closes the connection (no
    reset); the bytes before the panic went through."""
    net = Host().load_plugin(wasm, configuration="network", raise_on_trap=False)
    conn = net.tcp_stream()
    conn.connect()
    assert conn.send_downstream_data(b"hi\n") == "Continue"
    conn.send_downstream_data(b"PANIC\n")
    assert bytes(conn.upstream_received) == b"hi\n"
    assert conn.closed is not None and conn.closed.startswith("closed after a failure")
    assert [r.message for r in conn.logs if r.level == "error"][:2] == ["panic: ", "the client asked for a panic"]


@pytest.mark.parametrize("workers", [1, 2])
def test_extra_vms_start_as_often_as_in_envoy(wasm, workers):
    """Difference 7: Envoy runs on_vm_start on a canary and the main thread's VM besides each
    worker's; Host(extra_vms=True) does too, the default host runs the workers' only."""
    envoy_like = Host(extra_vms=True)
    plugin = envoy_like.load_plugin(wasm, workers=workers)
    assert envoy_like.metrics["go_observed.vm_starts"] == workers + 2
    assert [r.message for r in plugin.logs] == ["go observed_filter: VM started"] * (workers + 2)
    plain = Host()
    plain.load_plugin(wasm, workers=workers)
    assert plain.metrics["go_observed.vm_starts"] == workers
