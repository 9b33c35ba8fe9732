"""What Envoy 1.40 does with a request target before any filter runs (HTTP/1.1, default settings),
measured through parity with tests/request_target_probes.py (and compared again with Envoy by
integration/test_envoy_probe_scenarios.py): the codec refuses a target that is neither a path nor
an absolute URL (400, like its other refusals), takes an absolute URL apart, and the connection
manager answers a path without "/" with 404 and a fragment with 400, running only on_log, on_done
and on_delete of the filter."""
from __future__ import annotations

import struct

from proxywasm_host import Host
from proxywasm_host.parity import Side, run_host
from request_target_probes import LOG_PROPERTIES, TARGETS, request_target_scenarios
from watgen import build

CLOSE_400 = [("connection", "close"), ("content-length", "0")]
CODEC_400 = [("content-length", "11"), ("content-type", "text/plain"), ("connection", "close")]
CODEC_FLAGS = 1 << 18  # DownstreamProtocolError


def _logged(side: Side) -> list[dict[str, object]]:
    """Each request's on_log reads: strings, the integers decoded, None for NotFound."""
    messages = [message for _, message in side.logs["'wasm log t:'"]]
    rows = [messages[i:i + len(LOG_PROPERTIES)] for i in range(0, len(messages), len(LOG_PROPERTIES))]
    integers = {"response.flags", "response.total_size"}
    return [{name: None if value == "missing" else
             struct.unpack("<q", value.encode("latin-1"))[0] if name in integers else value
             for name, value in zip(LOG_PROPERTIES, row)} for row in rows]


def _by_target() -> dict[tuple[str, str], tuple[object, dict[str, object]]]:
    side = run_host(request_target_scenarios()["targets"])
    return dict(zip(TARGETS, zip(side.exchanges, _logged(side))))


def test_a_fragment_is_refused_by_the_connection_manager_before_the_filters() -> None:
    side = run_host(request_target_scenarios()["targets"])
    exchange, logged = side.exchanges[0], _logged(side)[0]
    assert (exchange.status, exchange.client_headers, exchange.client_body, exchange.upstream) == (
        400, CLOSE_400, b"", None)
    assert logged == {"response.code_details": "path_normalization_failed", "response.flags": 0,
                      "request.path": "/a#frag", "request.scheme": None, "request.host": "example.com",
                      "response.total_size": 69}  # :status, date, server: no content-length
    first = [c for c in side.callbacks if c.startswith("proxy_on_") and "memory" not in c][:3]
    assert first == ["proxy_on_context_create(2, 1)", "proxy_on_log(2)", "proxy_on_done(2)"]


def test_a_target_that_is_not_a_path_is_the_codecs_400() -> None:
    seen = _by_target()
    for target, details in ((("GET", "a"), "http1.codec_error"), (("GET", "*"), "http1.invalid_url"),
                            (("GET", "ftp://other.com/a"), "http1.invalid_scheme"),
                            (("GET", "http:///a"), "http1.invalid_url"), (("GET", "https:///a"), "http1.invalid_url"),
                            (("GET", "http://?u=ftp://y"), "http1.invalid_url")):  # no host (the first "://" counts)
        exchange, logged = seen[target]
        assert (exchange.status, exchange.client_headers, exchange.client_body) == (400, CODEC_400, b"Bad Request")
        assert (logged["response.code_details"], logged["response.flags"], logged["request.path"]) == (
            details, CODEC_FLAGS, None)


def test_a_path_without_a_slash_is_the_connection_managers_404() -> None:
    seen = _by_target()
    for target, path, host in ((("OPTIONS", "*"), "*", "example.com"),
                               (("GET", "http://other.com?q=1"), "?q=1", "other.com"),
                               (("GET", "http://other.com?q=/a?b"), "?q=/a?b", "other.com")):  # the first "?" ends the host
        exchange, logged = seen[target]
        assert (exchange.status, exchange.client_headers, exchange.upstream) == (404, [("content-length", "0")], None)
        assert (logged["response.code_details"], logged["request.path"], logged["request.host"],
                logged["response.total_size"]) == ("absolute_path_rejected", path, host, 54)


def test_an_absolute_url_gives_authority_scheme_and_path() -> None:
    seen = _by_target()
    for target, (path, scheme) in {("GET", "https://other.com/a"): ("/a", "https"),
                                   ("GET", "HTTP://other.com"): ("/", "http"),
                                   ("GET", "http://other.com/a/b?u=http://y"): ("/a/b?u=http://y", "http")}.items():
        exchange, logged = seen[target]
        assert exchange.status == 200 and dict(exchange.upstream[0])["host"] == "other.com"
        assert (logged["request.path"], logged["request.scheme"], logged["request.host"]) == (path, scheme,
                                                                                              "other.com")
    exchange, logged = seen[("GET", "http://other.com/a?b#c")]  # taken apart, then its fragment refused
    assert (exchange.status, exchange.client_headers) == (400, CLOSE_400)
    assert (logged["request.path"], logged["request.scheme"], logged["response.code_details"]) == (
        "/a?b#c", "http", "path_normalization_failed")


def test_dot_segments_double_slashes_and_escaped_slashes_pass_unchanged() -> None:
    exchange, logged = _by_target()[("GET", "/a/../b//c%2Fd")]
    assert exchange.status == 200 and logged["request.path"] == "/a/../b//c%2Fd"


def test_a_grpc_request_with_a_fragment_gets_a_grpc_answer() -> None:
    side = run_host(request_target_scenarios()["grpc_fragment"])
    assert side.exchanges[0].client_headers == [("content-type", "application/grpc"), ("grpc-status", "13"),
                                                *CLOSE_400]
    assert _logged(side)[0]["response.code_details"] == "path_normalization_failed"


def test_the_filters_see_an_absolute_urls_scheme_second() -> None:
    """The codec that takes an absolute URL apart hands :authority and :scheme first (measured with
    bench/go/header_filter logging every header: :authority, :scheme, :path, :method)."""
    stream = Host().load_plugin(build({"proxy_on_request_headers": "(i32.const 0)"}, {})).http_stream()
    stream.send_request_headers({":method": "GET", ":path": "https://other.com/a"}, end_of_stream=True)
    assert [k for k, _ in stream.upstream_request.headers.items()][:4] == [":authority", ":scheme", ":path",
                                                                           ":method"]
