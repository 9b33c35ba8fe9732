"""Testing an AssemblyScript filter with the host: a filter built by a real third-party SDK,
AssemblyScript 0.14.13 with @solo-io/proxy-runtime 0.1.8 (sources in assembly/, built and cached
outside the repository by build_as.py next to this file). integration/test_sdk_assemblyscript_parity.py
checks the same behaviour against a real Envoy 1.40.

The SDK's quirks that shape these tests: ABI 0.2.0 only, `malloc` instead of
proxy_on_memory_allocate, `wasi_unstable.proc_exit` on abort, the root context is looked up by
the `plugin_root_id` property (root_id must be "as_filter"), and property paths are passed as
given (segments must be NUL-separated).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import wasmtime

from proxywasm_host import GuestTrap, Host, PluginRejected

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_as  # noqa: E402

ROOT_ID = "as_filter"
CONFIG = "tag=blue;deny=x-deny;deny_body=forbidden"


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_as.module_for_tests()


def load(host: Host, wasm: str, configuration: str = CONFIG, **kw):
    return host.load_plugin(wasm, configuration=configuration, root_id=ROOT_ID, name="as_filter", **kw)


def request(plugin, headers=None, body: bytes | None = None, method: str = "GET", path: str = "/p?q=1"):
    """One request through the plugin; the upstream answers 200 when the request reaches it."""
    s = plugin.http_stream()
    req = {":method": method, ":path": path, ":authority": "api.example", **(headers or {})}
    s.send_request_headers(req, end_of_stream=body is None)
    if body is not None and s.local_reply is None:
        s.send_request_body(body, end_of_stream=True)
    if s.local_reply is None:
        s.send_response_headers({":status": "200", "content-type": "application/json"}, end_of_stream=True)
    s.complete()
    return s


def test_module_shape_is_what_the_sdk_emits(wasm: str) -> None:
    """ABI 0.2.0 marker, malloc (no proxy_on_memory_allocate) and the legacy wasi_unstable.proc_exit."""
    m = wasmtime.Module.from_file(wasmtime.Engine(), wasm)
    exports = {e.name for e in m.exports}
    imports = {(i.module, i.name) for i in m.imports}
    assert {"proxy_abi_version_0_2_0", "malloc", "proxy_on_request_headers"} <= exports
    assert "proxy_on_memory_allocate" not in exports and "proxy_abi_version_0_2_1" not in exports
    assert ("wasi_unstable", "proc_exit") in imports
    assert {mod for mod, _ in imports} == {"env", "wasi_unstable"}


def test_forwarded_request_headers(wasm: str) -> None:
    """Headers added/replaced/removed by the SDK, the configuration and two properties reach the upstream."""
    host = Host()
    plugin = load(host, wasm)
    s = request(plugin, {"x-client-b": "2", "x-client-a": "1", "x-as-remove-me": "gone", "x-as-replaced": "old"})
    up = s.upstream_request.headers
    assert up["x-as-tag"] == "blue"
    assert up["x-as-config"] == CONFIG
    assert up["x-as-seen"] == "1"
    assert up["x-as-client-headers"] == "x-client-b,x-client-a"
    assert up["x-as-path"] == "/p?q=1"
    assert up["x-as-plugin"] == "as_filter"
    assert up.get_all("x-as-replaced") == ["by-as"]
    assert "x-as-remove-me" not in up
    assert request(plugin).upstream_request.headers["x-as-seen"] == "2"  # root context state survives streams
    assert host.metrics["as_filter.requests"] == 2


def test_response_headers(wasm: str) -> None:
    s = request(load(Host(), wasm))
    assert list(s.downstream_response.headers.items()) == [
        (":status", "200"), ("content-type", "application/json"), ("x-envoy-upstream-service-time", "0"),
        ("x-as-response", "blue"), ("x-as-status-seen", "200")]  # Envoy's router adds the service time
    assert [(r.level, r.message) for r in s.logs] == [("info", "as_filter request #1 /p?q=1"),
                                                      ("info", "as_filter done: status 200")]


def test_deny_header_gets_local_403(wasm: str) -> None:
    """send_local_response from on_request_headers; the reply passes the filter's own on_response_headers."""
    s = request(load(Host(), wasm), {"x-deny": "yes"})
    assert s.upstream_request.headers is None
    assert s.local_reply.status_code == 403 and s.local_reply.details == "as_filter_denied"
    assert s.downstream_response.body == b"denied by blue\n"
    assert list(s.downstream_response.headers.items()) == [
        (":status", "403"), ("x-as-denied", "yes"), ("content-length", "15"), ("content-type", "text/plain"),
        ("x-as-response", "blue"), ("x-as-status-seen", "403")]


def test_deny_header_name_comes_from_configuration(wasm: str) -> None:
    plugin = load(Host(), wasm, "tag=red;deny=x-block")
    assert request(plugin, {"x-deny": "yes"}).local_reply is None
    s = request(plugin, {"x-block": "1"})
    assert s.local_reply.status_code == 403 and s.downstream_response.body == b"denied by red\n"


def test_request_body(wasm: str) -> None:
    """StopIterationAndBuffer until end of stream, then the whole body is read through malloc'd memory."""
    plugin = load(Host(), wasm)
    ok = request(plugin, body=b"harmless text", method="POST")
    assert ok.local_reply is None and ok.upstream_request.body == b"harmless text"
    bad = request(plugin, body=b"this is forbidden text", method="POST")
    assert bad.local_reply.status_code == 403 and bad.local_reply.details == "as_filter_body_denied"
    assert bad.downstream_response.body == b"body denied by blue\n"
    assert bad.downstream_response.headers["x-as-denied"] == "forbidden"
    assert "as_filter body 22 bytes" in [r.message for r in bad.logs]


def test_zero_length_buffer_read_writes_null_out_parameters(wasm: str) -> None:
    """A zero-length proxy_get_buffer_bytes answers Ok and writes (ptr 0, size 0), as Envoy 1.40 does."""
    s = request(load(Host(), wasm), {"x-as-empty-read": "1"})
    assert s.upstream_request.headers["x-as-empty-read-result"] == "0,0,0"


def test_sdk_abort_fails_the_stream_closed(wasm: str) -> None:
    """CHECK_RESULT on BadArgument -> abort -> proc_exit (returns) -> unreachable: Envoy's 503, then fail closed."""
    plugin = load(Host(), wasm, raise_on_trap=False)
    s = request(plugin, {"x-as-crash": "1"})
    assert s.local_reply.status_code == 503 and s.local_reply.details == "wasm_fail_stream"
    assert s.downstream_response.body == b""
    assert [r.message for r in s.logs if r.level == "critical"] == [
        "2", ":( at: node_modules/@solo-io/proxy-runtime/assembly/runtime.ts(28:5)"]
    assert request(plugin).local_reply.status_code == 503  # the VM stays failed


def test_sdk_abort_raises_guest_trap(wasm: str) -> None:
    with pytest.raises(GuestTrap, match="unreachable"):
        request(load(Host(), wasm), {"x-as-crash": "1"})


def test_proc_exit_is_not_a_filter_error_log(wasm: str) -> None:
    s = request(load(Host(), wasm, raise_on_trap=False), {"x-as-crash": "1"})
    assert [r.message for r in s.logs if r.level == "error"] == []


def test_on_configure_false_rejects_the_plugin(wasm: str) -> None:
    with pytest.raises(PluginRejected, match="Failed to configure base Wasm plugin") as exc:
        load(Host(), wasm, "tag=x;reject=1")
    assert "as_filter configured: size=14 config=[tag=x;reject=1] tag=x deny=x-deny" in [r.message for r in exc.value.logs]


def test_empty_configuration_traps_in_the_sdk(wasm: str) -> None:
    """SDK bug (RootContext.onConfigure passes the size as size_ptr, then trusts a stale size): with an
    empty configuration it decodes a null ArrayBuffer. Envoy 1.40 refuses the plugin the same way."""
    with pytest.raises(PluginRejected, match=r"(?s)proxy_on_configure failed.*out of bounds"):
        load(Host(), wasm, "")


def test_unknown_root_id_rejects_the_plugin(wasm: str) -> None:
    """The SDK throws in proxy_on_context_create when no root context factory matches plugin_root_id."""
    with pytest.raises(PluginRejected) as exc:
        Host().load_plugin(wasm, configuration=CONFIG, root_id="other", name="as_filter")
    assert any(r.level == "critical" and r.message.startswith("Missing root context factory for root id: other at: ")
               for r in exc.value.logs)


def test_reload_gives_a_fresh_root_context(wasm: str) -> None:
    """An ECDS-style update: the new configuration in a new root context (the counter restarts); a refused one
    keeps it."""
    plugin = load(Host(), wasm)
    request(plugin)
    plugin.reload(configuration="tag=green")
    assert request(plugin).upstream_request.headers.get_all("x-as-tag") == ["green"]
    with pytest.raises(PluginRejected):
        plugin.reload(configuration="tag=x;reject=1")
    s = request(plugin)
    assert s.upstream_request.headers["x-as-tag"] == "green" and s.upstream_request.headers["x-as-seen"] == "2"


# --- bodies: buffer until end of stream, then replace ---------------------------------------------

def test_request_body_buffered_then_replaced(wasm: str) -> None:
    """StopIterationAndBuffer until end of stream; then proxy_set_buffer_bytes replaces the whole body.
    The filter drops content-length in on_request_headers because the new body has another length."""
    s = load(Host(), wasm).http_stream()
    s.send_request_headers({":method": "POST", ":path": "/upload", ":authority": "api.example",
                            "content-length": "11", "x-as-body": "rewrite"}, end_of_stream=False)
    assert s.send_request_body(b"hello world", end_of_stream=True).status == "Continue"
    assert s.upstream_request.body == b"as_filter saw 11 bytes: HELLO WORLD"
    assert "content-length" not in s.upstream_request.headers


def test_chunked_request_body(wasm: str) -> None:
    """Each chunk is buffered (the next callback sees the whole buffer); the empty last chunk carries
    end_of_stream, as a chunked HTTP/1.1 body's terminator does in Envoy."""
    s = load(Host(), wasm).http_stream()
    s.send_request_headers({":method": "POST", ":path": "/upload", ":authority": "api.example",
                            "transfer-encoding": "chunked", "x-as-body": "rewrite"}, end_of_stream=False)
    statuses = [s.send_request_body(chunk, end_of_stream=False).status for chunk in (b"one ", b"two ", b"three")]
    assert statuses == ["StopIterationAndBuffer"] * 3
    assert s.upstream_request.body in (None, b"")  # nothing reached the upstream yet
    assert s.send_request_body(b"", end_of_stream=True).status == "Continue"
    assert s.upstream_request.body == b"as_filter saw 13 bytes: ONE TWO THREE"
    assert [r.message for r in s.logs if "body" in r.message] == [
        "as_filter request body: buffered=4 end=0", "as_filter request body: buffered=8 end=0",
        "as_filter request body: buffered=13 end=0", "as_filter request body: buffered=13 end=1",
        "as_filter request body replaced: 0"]


def test_response_body_buffered_then_replaced(wasm: str) -> None:
    s = load(Host(), wasm).http_stream()
    s.send_request_headers({":method": "GET", ":path": "/r", ":authority": "api.example",
                            "x-as-response-body": "rewrite"}, end_of_stream=True)
    s.send_response_headers({":status": "200", "content-type": "text/plain", "content-length": "5"}, end_of_stream=False)
    assert s.send_response_body(b"hel", end_of_stream=False).status == "StopIterationAndBuffer"
    assert s.send_response_body(b"lo", end_of_stream=True).status == "Continue"
    s.complete()
    assert s.downstream_response.body == b'{"as_filter": "blue", "upstream_bytes": 5, "upstream": "hello"}\n'
    assert list(s.downstream_response.headers.items()) == [
        (":status", "200"), ("content-type", "text/plain"), ("x-envoy-upstream-service-time", "0"),
        ("x-as-response", "blue"), ("x-as-status-seen", "200")]


# --- an HTTP callout from the stream ---------------------------------------------------------------

def _callout_stream(plugin, path: str = "/check/allow"):
    s = plugin.http_stream()
    result = s.send_request_headers({":method": "GET", ":path": "/orders", ":authority": "api.example",
                                     "x-as-callout": path}, end_of_stream=True)
    return s, result


def test_callout_pauses_then_resumes_with_its_answer(wasm: str) -> None:
    host = Host()
    host.add_cluster("as_callout")
    plugin = load(host, wasm)
    s, result = _callout_stream(plugin)
    assert result.status == "StopAllIterationAndWatermark" and s.upstream_request.headers is None
    (call,) = host.pending_http_calls
    assert call.cluster == "as_callout" and call.timeout_ms == 5000
    assert list(call.headers.items()) == [(":method", "GET"), (":path", "/check/allow"),
                                          (":authority", "as-callout"), ("x-as-from", "blue")]
    call.respond(200, {"x-verdict": "allow"}, b"ok alice")
    up = s.upstream_request.headers
    assert [(k, up[k]) for k in ("x-as-callout-status", "x-as-callout-body", "x-as-callout-verdict")] == [
        ("x-as-callout-status", "200"), ("x-as-callout-body", "ok alice"), ("x-as-callout-verdict", "allow")]
    assert [r.message for r in s.logs] == [
        "as_filter request #1 /orders", "as_filter callout to as_callout /check/allow: 0",
        "as_filter callout response: headers=3 [:status,x-verdict,x-envoy-upstream-service-time] status=200 body_size=8 trailers=0", "as_filter continue_request: 0"]


def test_callout_denial_becomes_a_local_reply(wasm: str) -> None:
    host = Host()
    host.add_cluster("as_callout")
    s, _ = _callout_stream(load(host, wasm), "/check/deny")
    host.pending_http_calls[0].respond(403, {"x-verdict": "deny"}, b"nope\n")
    assert s.upstream_request.headers is None
    assert (s.local_reply.status_code, s.local_reply.details) == (403, "as_filter_callout_denied")
    assert s.downstream_response.body == b"callout said 403: nope\n"
    assert s.downstream_response.headers["x-as-denied"] == "deny"


def test_callout_reset_and_timeout(wasm: str) -> None:
    """A reset reaches the filter as zero headers; a timeout as Envoy's local 504."""
    host = Host()
    host.add_cluster("as_callout")
    plugin = load(host, wasm)
    reset, _ = _callout_stream(plugin)
    host.pending_http_calls[0].fail()
    assert (reset.local_reply.status_code, reset.downstream_response.body) == (503, b"callout failed\n")
    late, _ = _callout_stream(plugin)
    host.pending_http_calls[0].timeout()
    assert late.local_reply.status_code == 403 and late.downstream_response.body == b"callout said 504: upstream request timeout"


def test_callout_to_an_unknown_cluster(wasm: str) -> None:
    """proxy_http_call answers BadArgument (2) for a cluster Envoy does not know."""
    s, result = _callout_stream(load(Host(), wasm, CONFIG + ";cluster=nowhere"))
    assert s.local_reply.status_code == 500 and s.downstream_response.body == b"callout not sent: 2\n"


def test_callout_sent_to_a_real_server(wasm: str) -> None:
    """host.add_cluster(name, url) + host.dispatch_http_calls(): the callout goes to a real HTTP server."""
    from proxywasm_host.envoy import EchoUpstream

    with EchoUpstream() as server:
        server.set_response("/check/allow", "ok alice", headers={"x-verdict": "allow"})
        host = Host()
        host.add_cluster("as_callout", url=f"http://127.0.0.1:{server.port}")
        s, _ = _callout_stream(load(host, wasm))
        host.dispatch_http_calls()
    assert s.upstream_request.headers["x-as-callout-body"] == "ok alice"


# --- shared data: a counter with CAS across workers --------------------------------------------------

def test_shared_counter_across_two_workers(wasm: str) -> None:
    """Two workers = two VMs: root-context state (x-as-seen) is per VM, shared data is per process."""
    host = Host()
    plugin = load(host, wasm, workers=2)
    seen, counts = [], []
    for worker in (0, 1, 0, 1, 1):
        s = plugin.http_stream(worker=worker)
        s.send_request_headers({":method": "GET", ":path": "/", ":authority": "api.example", "x-as-count": "1"},
                               end_of_stream=True)
        seen.append(s.upstream_request.headers["x-as-seen"])
        counts.append(s.upstream_request.headers["x-as-shared-count"])
        s.complete()
    assert seen == ["1", "1", "2", "2", "3"]
    assert counts == ["1", "2", "3", "4", "5"]
    value, cas = host.shared_data.get("as_filter.hits")
    assert value == b"5" and cas > 0


def test_shared_counter_starts_from_seeded_data(wasm: str) -> None:
    host = Host()
    host.shared_data.set("as_filter.hits", b"41")
    s = request(load(host, wasm), {"x-as-count": "1"})
    assert s.upstream_request.headers["x-as-shared-count"] == "42"


def test_stale_cas_is_refused(wasm: str) -> None:
    """get: NotFound (1); set with cas 0: Ok; set with the cas just read: Ok; the same cas again:
    CasMismatch (8); the value stays "b"."""
    s = request(load(Host(), wasm), {"x-as-cas-stale": "1"})
    assert s.upstream_request.headers["x-as-cas-probe"] == "1,0,0,8,b"
