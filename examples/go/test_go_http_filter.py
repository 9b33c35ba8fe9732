"""Testing a Go filter: http_filter/main.go, built with the official Go SDK
(github.com/proxy-wasm/proxy-wasm-go-sdk) and run in the host with Envoy 1.40's rules.

The module is built once per test session by build_go.py (cached outside the repository);
without a Go toolchain these tests skip and say how to get one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host import GuestTrap, Host, PluginRejected

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_go  # noqa: E402

CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'
ROUTE_METADATA = {"filter_metadata": {"go_filter": {"tier": "gold", "limits": {"rps": "10", "burst": "20"}}}}


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_go.module_for_tests("http_filter")


@pytest.fixture
def plugin(wasm):
    host = Host()
    return host.load_plugin(wasm, name="go_http", configuration=CONFIG, vm_configuration="region=eu-1")


def get(plugin, path="/items", headers=None, **stream_kw):
    """A bodiless GET that the upstream answers with 200 and a small body."""
    s = plugin.http_stream(**stream_kw)
    s.send_request_headers({":method": "GET", ":path": path, ":authority": "api.example", ":scheme": "http",
                            **(headers or {})},
                           end_of_stream=True)
    if s.local_reply is None:
        s.send_response_headers({":status": "200", "content-type": "text/plain", "x-upstream-secret": "s3"})
        s.send_response_body(b"upstream says hi", end_of_stream=True)
    s.complete()
    return s


def test_module_is_what_the_go_sdk_emits(wasm):
    """ABI 0.2.0, proxy_on_memory_allocate, a WASI reactor (_initialize) importing wasi_snapshot_preview1."""
    module = Host().load_module(wasm)      # checked and compiled as Envoy would load it
    assert module.abi == "0.2.0"
    exports = set(module.exports)
    assert {"proxy_abi_version_0_2_0", "proxy_on_memory_allocate", "_initialize", "proxy_on_request_headers"} <= exports
    assert "_start" not in exports and "malloc" not in exports
    assert {i.module for i in module.imports} == {"env", "wasi_snapshot_preview1"}


def test_vm_and_plugin_configuration_are_read_at_start(plugin):
    assert plugin.abi == "0.2.0"
    assert [r.message for r in plugin.logs] == [
        'go http_filter: VM started (vm configuration "region=eu-1")',
        "go http_filter: configured tag=blue deny_prefix=/admin",
    ]


def test_invalid_plugin_configuration_rejects_the_plugin(wasm):
    with pytest.raises(PluginRejected, match="Failed to configure base Wasm plugin") as exc:
        Host().load_plugin(wasm, configuration="{not json")
    assert any(r.level == "error" and r.message.startswith('invalid plugin configuration "{not json"')
               for r in exc.value.logs)


def test_request_headers_added_replaced_removed_and_read(plugin):
    s = get(plugin, headers={"x-go-replace": "old", "x-go-remove": "bye", "user-agent": "pytest"})
    up = s.upstream_request.headers
    assert up["x-go-tag"] == "blue"                  # from the plugin configuration
    assert up["x-go-vm"] == "region=eu-1"            # from the VM configuration
    assert up.get_all("x-go-replace") == ["replaced by go"]
    assert "x-go-remove" not in up
    # What the filter read: Envoy's connection manager added x-forwarded-proto and x-request-id first.
    assert up["x-go-header-count"] == "9"
    assert up["x-go-header-names"] == "user-agent,x-forwarded-proto,x-go-remove,x-go-replace,x-request-id"
    assert s.logs[0].message == "request GET /items with 9 headers"


def test_response_headers(plugin):
    s = get(plugin)
    assert list(s.downstream_response.headers.items()) == [
        (":status", "200"), ("content-type", "text/plain"), ("x-envoy-upstream-service-time", "0"),
        ("x-go-tag", "blue")]  # x-upstream-secret removed; Envoy's router added the service time
    assert s.downstream_response.body == b"upstream says hi"


def test_local_reply_with_headers(plugin):
    s = get(plugin, path="/admin/users")
    assert s.upstream_request.headers is None        # never reached the upstream
    assert s.local_reply.status_code == 403
    assert s.downstream_response.body == b"/admin/users is not allowed here (tag blue)\n"
    # The local reply passes through this filter's own response callback (x-go-tag).
    assert list(s.downstream_response.headers.items()) == [
        (":status", "403"), ("content-type", "text/plain"), ("x-go-denied-by", "blue"),
        ("content-length", "44"), ("x-go-tag", "blue")]


def test_buffered_request_body_is_rewritten_at_end_of_stream(plugin):
    s = plugin.http_stream()
    s.send_request_headers({":method": "POST", ":path": "/upload", ":authority": "api.example",
                            "content-length": "11", "x-go-body": "buffer"})
    assert s.send_request_body(b"hello ", end_of_stream=False).status == "StopIterationAndBuffer"
    assert s.upstream_request.body == b""            # held back
    assert s.send_request_body(b"world", end_of_stream=True).status == "Continue"
    assert s.upstream_request.body == b"<<HELLO WORLD>>"    # replaced, then prepended and appended
    assert "content-length" not in s.upstream_request.headers
    assert "buffered request body: 11 bytes" in [r.message for r in s.logs]


def test_streamed_request_body_is_rewritten_chunk_by_chunk(plugin):
    s = plugin.http_stream()
    s.send_request_headers({":method": "POST", ":path": "/upload", ":authority": "api.example", "x-go-body": "stream"})
    for chunk in (b"abc", b"de"):
        assert s.send_request_body(chunk, end_of_stream=False).status == "Continue"
    assert s.upstream_request.body == b"ABCDE"       # each chunk went upstream as it came
    s.send_request_body(b"f", end_of_stream=True)
    assert s.upstream_request.body == b"ABCDEF" and s.upstream_request.complete
    assert [r.message for r in s.logs if "chunk" in r.message] == [
        "request chunk 1: 3 bytes (end_of_stream=false)",
        "request chunk 2: 2 bytes (end_of_stream=false)",
        "request chunk 3: 1 bytes (end_of_stream=true)",
    ]


def test_buffered_response_body_is_wrapped(plugin):
    s = plugin.http_stream()
    s.send_request_headers({":method": "GET", ":path": "/items", ":authority": "api.example",
                            "x-go-wrap-response": "1"}, end_of_stream=True)
    s.send_response_headers({":status": "200", "content-type": "text/plain", "content-length": "9"})
    assert s.send_response_body(b'say "hi"', end_of_stream=False).status == "StopIterationAndBuffer"
    s.send_response_body(b"!", end_of_stream=True)
    resp = s.downstream_response
    assert resp.body == b'{"tag":"blue","upstream":"say \\"hi\\"!"}'
    assert resp.headers["content-type"] == "application/json" and "content-length" not in resp.headers


def test_trailers_both_ways(plugin):
    s = plugin.http_stream()
    s.send_request_headers({":method": "POST", ":path": "/grpc", ":authority": "api.example"})
    s.send_request_body(b"req", end_of_stream=False)
    s.send_request_trailers({"x-checksum": "abc", "x-count": "1"})
    assert list(s.upstream_request.trailers.items()) == [("x-checksum", "abc"), ("x-count", "1"), ("x-go-trailers-seen", "2")]
    s.send_response_headers({":status": "200"})
    s.send_response_body(b"12345", end_of_stream=False)
    s.send_response_trailers({"grpc-status": "0"})
    assert list(s.downstream_response.trailers.items()) == [("grpc-status", "0"), ("x-go-response-bytes", "5")]
    assert [r.message for r in s.logs if "trailer" in r.message] == [
        "request trailer x-checksum: abc", "request trailer x-count: 1"]


def test_properties_route_metadata_request_and_source(plugin):
    s = get(plugin, path="/items?page=2", properties={"xds.route_metadata": ROUTE_METADATA,
                                                      "source.address": "10.1.2.3:4567"})
    up = s.upstream_request.headers
    assert up["x-go-route-tier"] == "gold"                 # a leaf of the route metadata
    assert up["x-go-route-limits"] == "burst=20,rps=10"    # a nested map, read with GetPropertyMap
    assert up["x-go-prop-method"] == "GET"
    assert up["x-go-prop-path"] == "/items?page=2"
    assert up["x-go-source"] == "10.1.2.3:4567"
    assert up["x-go-plugin-name"] == "go_http"
    # response.code (an int64 property) is readable when the stream is done
    assert s.logs[-1].message.endswith("done: response code 200")


def test_properties_without_route_metadata(plugin):
    up = get(plugin).upstream_request.headers
    assert "x-go-route-tier" not in up and "x-go-route-limits" not in up
    assert up["x-go-source"] == "127.0.0.1:54321"          # the host's default client address


def test_foreign_function(plugin):
    plugin.host.foreign_functions["go_lookup"] = lambda name: b"user:" + name[::-1]
    assert get(plugin, headers={"x-go-lookup": "alice"}).upstream_request.headers["x-go-lookup-result"] == "user:ecila"


def test_unknown_foreign_function_is_not_found(plugin):
    up = get(plugin, headers={"x-go-lookup": "alice"}).upstream_request.headers
    assert up["x-go-lookup-result"] == "error: error status returned by host: not found"


def test_metrics_of_three_kinds_with_tags_in_names(plugin):
    host = plugin.host
    get(plugin)
    get(plugin, path="/admin")          # a local reply is still a request
    s = plugin.http_stream()
    s.send_request_headers({":method": "POST", ":path": "/upload", ":authority": "a", "x-go-body": "buffer"})
    assert host.metrics["go_http.active_requests"] == 1    # gauge: one stream still open
    s.send_request_body(b"0123456789", end_of_stream=True)
    s.send_response_headers({":status": "204"}, end_of_stream=True)
    s.complete()
    assert host.metrics["go_http.requests_total"] == 3
    assert host.metrics["go_http.requests_method=GET"] == 2
    assert host.metrics["go_http.requests_method=POST"] == 1
    assert host.metrics["go_http.active_requests"] == 0
    assert host.metrics.histogram("go_http.request_body_bytes") == [10]


def test_counters_are_shared_by_workers(wasm):
    host = Host()
    plugin = host.load_plugin(wasm, configuration=CONFIG, workers=2)
    for _ in range(4):
        get(plugin)
    assert host.metrics["go_http.requests_total"] == 4   # one Envoy stat, summed over both VMs


def test_panic_fails_closed_for_this_and_every_later_request(wasm):
    plugin = Host().load_plugin(wasm, configuration=CONFIG, raise_on_trap=False)
    s = get(plugin, headers={"x-go-panic": "1"})
    assert s.local_reply.status_code == 503 and s.local_reply.details == "wasm_fail_stream"
    assert s.upstream_request.headers is None
    # Go prints the panic on stderr (fd 2). Envoy logs every fd_write as one wasm error line, and
    # Go's runtime writes a panic piece by piece, so the message arrives in fragments.
    errors = [r.message for r in plugin.logs if r.level == "error"]
    assert errors[:2] == ["panic: ", "x-go-panic asked for a panic"]
    assert "main.(*httpContext).OnHttpRequestHeaders" in errors   # the goroutine trace follows
    later = get(plugin)
    assert later.local_reply.status_code == 503 and later.upstream_request.headers is None


def test_panic_with_fail_open_lets_requests_through(wasm):
    plugin = Host().load_plugin(wasm, configuration=CONFIG, failure_policy="fail_open", raise_on_trap=False)
    s = get(plugin, headers={"x-go-panic": "1"})
    assert s.local_reply.status_code == 503     # Envoy 1.40: the request that crashed the VM still gets 503
    later = get(plugin)
    assert later.local_reply is None            # later ones bypass the failed filter
    assert later.upstream_request.headers is not None and "x-go-tag" not in later.upstream_request.headers


def test_panic_raises_guest_trap_by_default(wasm):
    plugin = Host().load_plugin(wasm, configuration=CONFIG)
    with pytest.raises(GuestTrap):
        get(plugin, headers={"x-go-panic": "1"})
