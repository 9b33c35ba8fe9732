"""Testing a Rust filter: examples/rust/src/lib.rs ("edge guard", proxy-wasm crate 0.2.5) through
the host, the way Envoy 1.40 would run it.

The module is compiled by build_rust.py into ~/.cache/proxywasm-host/rust-build/ (never into the
repository); without a Rust toolchain that can target wasm32 the tests skip and say how to get
one. Run:  .venv/bin/python -m pytest examples/rust -q

Reading order: configuration, a forwarded request, a local reply, the HTTP callout, the body
check, metrics and logs, then what the module looks like to Envoy.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import wasmtime

from proxywasm_host import Host, PluginRejected

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_rust  # noqa: E402

CONFIG = "tag=green;block_prefix=/admin;auth_cluster=authz;deny_word=forbidden"


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_rust.module_for_tests()  # cached build, or skip with the apt-get/rustup command


@pytest.fixture
def plugin(wasm: str, proxywasm_host: Host):
    proxywasm_host.add_cluster("authz")  # the callout's cluster must exist, as in Envoy's config
    return proxywasm_host.load_plugin(wasm, configuration=CONFIG, name="edge_guard")


def get(path: str = "/orders", **headers: str) -> dict[str, str]:
    return {":method": "GET", ":path": path, ":authority": "api.example", **headers}


# -- configuration ----------------------------------------------------------------------------


def test_configuration_is_read_in_on_configure(plugin) -> None:
    assert [r.message for r in plugin.logs] == [
        'edge_guard configured: tag=green block_prefix=Some("/admin") auth_cluster=Some("authz")']


def test_bad_configuration_rejects_the_plugin(wasm: str) -> None:
    """on_configure returning false is Envoy's "Failed to configure base Wasm plugin"; the
    filter's own log lines come with the exception."""
    with pytest.raises(PluginRejected, match="Failed to configure base Wasm plugin") as rejected:
        Host().load_plugin(wasm, configuration="tag=x;colour=blue")
    assert ("warn", "edge_guard: bad configuration (unknown key: colour)") in [
        (r.level, r.message) for r in rejected.value.logs]


# -- a request that reaches the upstream --------------------------------------------------------


def test_request_headers_added_replaced_removed(plugin) -> None:
    stream = plugin.http_stream()
    result = stream.send_request_headers(
        get(**{"x-b": "2", "x-edge-replace": "old", "x-edge-remove": "bye"}), end_of_stream=True)
    assert result.status == "Continue"
    upstream = stream.upstream_request.headers
    assert upstream["x-edge-tag"] == "green"
    assert upstream.get_all("x-edge-replace") == ["replaced"]  # replaced in place, not appended
    assert "x-edge-remove" not in upstream


def test_the_filter_sees_every_request_header(plugin) -> None:
    """get_http_request_headers() returns the pseudo-headers, the client's headers in order and
    what Envoy's connection manager added before any filter ran."""
    stream = plugin.http_stream()
    stream.send_request_headers(get(**{"x-b": "2", "x-a": "1"}), end_of_stream=True)
    upstream = stream.upstream_request.headers
    assert upstream["x-edge-header-names"] == "x-b,x-a,x-forwarded-proto,x-request-id"
    assert upstream["x-edge-header-count"] == "8"  # 4 pseudo-headers (Envoy adds :scheme) + 4


def test_response_headers(plugin) -> None:
    stream = plugin.http_stream()
    stream.send_request_headers(get(), end_of_stream=True)
    stream.send_response_headers({":status": "201", "x-upstream-secret": "s3cr3t"}, end_of_stream=True)
    stream.complete()
    assert list(stream.downstream_response.headers.items()) == [
        (":status", "201"), ("x-envoy-upstream-service-time", "0"), ("x-edge-tag", "green"),
        ("x-edge-upstream-status", "201")]  # Envoy's router added the service time


# -- local replies --------------------------------------------------------------------------------


def test_blocked_path_gets_a_local_403(plugin) -> None:
    """send_http_response() + Action::Pause: the request never reaches the upstream, and the
    reply passes through this filter's own on_http_response_headers, like in Envoy."""
    stream = plugin.http_stream()
    result = stream.send_request_headers(get("/admin/users"), end_of_stream=True)
    assert result.status == "StopAllIterationAndWatermark"
    assert stream.upstream_request.headers is None
    assert stream.local_reply.status_code == 403
    assert stream.local_reply.headers == [("x-edge-blocked", "green")]
    assert stream.downstream_response.body == b"blocked path (green)\n"
    assert list(stream.downstream_response.headers.items()) == [
        (":status", "403"), ("x-edge-blocked", "green"), ("content-length", "21"), ("content-type", "text/plain"),
        ("x-edge-tag", "green"), ("x-edge-upstream-status", "403")]


# -- an HTTP callout that holds the request --------------------------------------------------------


def test_callout_success_resumes_the_request(plugin) -> None:
    stream = plugin.http_stream()
    result = stream.send_request_headers(get(**{"x-edge-token": "t-1"}), end_of_stream=True)
    assert result.status == "StopAllIterationAndWatermark"  # paused until the callout answers
    assert stream.upstream_request.headers is None

    [call] = plugin.pending_http_calls
    assert call.cluster == "authz" and call.timeout_ms == 500
    assert list(call.headers.items()) == [
        (":method", "GET"), (":path", "/check"), (":authority", "authz"), ("x-token", "t-1")]

    call.respond(200, {"x-user": "alice"})  # resume_http_request() from on_http_call_response
    assert stream.upstream_request.headers["x-edge-user"] == "alice"
    assert stream.local_reply is None


def test_callout_refusal_is_a_local_401(plugin) -> None:
    stream = plugin.http_stream()
    stream.send_request_headers(get(**{"x-edge-token": "bad"}), end_of_stream=True)
    plugin.pending_http_calls[0].respond(403, body="no")
    assert stream.local_reply.status_code == 401
    assert stream.downstream_response.body == b"not authenticated (green)\n"
    assert stream.upstream_request.headers is None


def test_failed_callout_has_no_headers_to_read(plugin) -> None:
    """A failed callout arrives with zero headers. Reading them then returns BadArgument and the
    Rust SDK's getters panic ("unexpected status: 2"), so the filter checks num_headers first."""
    stream = plugin.http_stream()
    stream.send_request_headers(get(**{"x-edge-token": "t-2"}), end_of_stream=True)
    plugin.pending_http_calls[0].fail()
    assert stream.local_reply.status_code == 503
    assert [r.message for r in stream.logs if r.level == "warn"] == [
        f"edge_guard #{stream.id} auth callout failed"]


# -- request bodies -------------------------------------------------------------------------------


def test_body_is_buffered_then_checked(plugin) -> None:
    """Action::Pause on a body chunk buffers it; at end of stream the filter reads the whole body."""
    stream = plugin.http_stream()
    stream.send_request_headers({**get(), ":method": "POST"}, end_of_stream=False)
    assert stream.send_request_body(b"this is for", end_of_stream=False).status == "StopIterationAndBuffer"
    stream.send_request_body(b"bidden text", end_of_stream=True)
    assert stream.local_reply.status_code == 403
    assert stream.downstream_response.body == b"denied body (green)\n"
    assert "edge_guard #%d request body 22 bytes" % stream.id in [r.message for r in stream.logs]


def test_harmless_body_reaches_the_upstream_whole(plugin) -> None:
    stream = plugin.http_stream()
    stream.send_request_headers({**get(), ":method": "POST"}, end_of_stream=False)
    stream.send_request_body(b"hello ", end_of_stream=False)
    assert stream.send_request_body(b"world", end_of_stream=True).status == "Continue"
    assert stream.upstream_request.body == b"hello world"


# -- metrics and logs -------------------------------------------------------------------------------


def test_counter_and_log_line_per_request(proxywasm_host: Host, plugin) -> None:
    for path in ("/a", "/admin"):
        stream = plugin.http_stream()
        stream.send_request_headers(get(path), end_of_stream=True)
        if stream.local_reply is None:
            stream.send_response_headers({":status": "200"}, end_of_stream=True)
        stream.complete()  # on_log, on_done, on_delete
        assert stream.logs[-1].message == f"edge_guard #{stream.id} done: {path} -> " + (
            "200" if path == "/a" else "403")
    assert proxywasm_host.metrics["edge_guard.requests"] == 2


# -- the module as Envoy sees it ---------------------------------------------------------------------


def test_module_shape(wasm: str) -> None:
    """proxy-wasm 0.2.x exports the ABI 0.2.1 marker and `malloc` (which Envoy prefers over
    proxy_on_memory_allocate); with wasm32-unknown-unknown it imports nothing but `env`."""
    module = wasmtime.Module.from_file(wasmtime.Engine(), wasm)
    exports = {e.name for e in module.exports}
    assert {"proxy_abi_version_0_2_1", "malloc", "proxy_on_http_call_response", "_initialize"} <= exports
    assert {i.module for i in module.imports} == {"env"}
