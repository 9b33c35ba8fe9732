"""What Envoy 1.40's HTTP/1.1 codec and connection manager do to a response with trailers, and to
a request that repeats content-length, measured with parity (integration/test_sdk_go_trailers_parity.py
and integration/test_codec_parity.py) and pinned here with WAT modules."""
from __future__ import annotations

import pytest

from proxywasm_host import Host
from proxywasm_host.abi import WasmResult
from watgen import build, records

CHUNKED = {":status": "200", "content-type": "text/plain", "transfer-encoding": "chunked"}
TE = "(call $rec (call $proxy_get_header_map_value (i32.const 2) {te} (i32.const 0x100) (i32.const 0x104)))"
TOTAL_SIZE = ("(call $rec (call $proxy_get_property {total} (i32.const 0x100) (i32.const 0x104)))"
              " (call $rec (i32.load (i32.load (i32.const 0x100))))")


def chunked_response(plugin):
    """A GET answered by an upstream as Envoy's codec hands it over: chunked, 5 bytes, one trailer."""
    s = plugin.http_stream()
    s.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
    s.send_response_headers(CHUNKED)
    s.send_response_body(b"12345", end_of_stream=False)
    s.send_response_trailers({"grpc-status": "0"})
    s.complete()
    return s


def test_transfer_encoding_reaches_the_filters_and_not_the_client():
    """The filters see the upstream's transfer-encoding (on_response_headers counts it); the connection
    manager removes it after them, so on_log no longer finds it, and the codec frames the body itself."""
    plugin = Host().load_plugin(build({"proxy_on_response_headers": TE + " (i32.const 0)", "proxy_on_log": TE},
                                      {"te": "transfer-encoding"}))
    s = chunked_response(plugin)
    assert records(plugin.workers[0].vm) == [WasmResult.OK, WasmResult.NOT_FOUND]
    with pytest.raises(KeyError):
        s.downstream_response.headers["transfer-encoding"]


def test_response_total_size_counts_the_trailers():
    """response.total_size: body bytes sent + the response headers + the response trailers (Envoy
    measured 123 for this response: 5 + :status, content-type and x-envoy-upstream-service-time (62)
    + date and server (44) + grpc-status: 0 (12); the host counted no trailers and kept
    transfer-encoding, 135)."""
    plugin = Host().load_plugin(build({"proxy_on_log": TOTAL_SIZE}, {"total": "response\0total_size"}))
    chunked_response(plugin)
    assert records(plugin.workers[0].vm) == [WasmResult.OK, 123]


#: on_log logs response.code_details, records what the request header map answers, then
#: response.flags and response.total_size
ON_LOG = ("(call $rec (call $proxy_get_property {details} (i32.const 0x100) (i32.const 0x104)))"
          " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"
          " (call $rec (call $proxy_get_header_map_value (i32.const 0) {path} (i32.const 0x100) (i32.const 0x104)))"
          " (call $rec (call $proxy_get_header_map_size (i32.const 0) (i32.const 0x100)))"
          + TOTAL_SIZE.replace("{total}", "{flags}") + " " + TOTAL_SIZE)
CODEC_PROBE = {"proxy_on_request_headers": "(drop (call $proxy_log (i32.const 2) {seen})) (i32.const 0)",
               "proxy_on_response_headers": "(drop (call $proxy_log (i32.const 2) {seen})) (i32.const 0)",
               "proxy_on_log": ON_LOG}
CODEC_STRINGS = {"seen": "a filter callback ran", "details": "response\0code_details", "path": ":path",
                 "flags": "response\0flags", "total": "response\0total_size"}


@pytest.mark.parametrize("framing,details", [
    ([("content-length", "3"), ("content-length", "3")], "http1.codec_error"),
    ([("content-length", "3"), ("Content-Length", "4")], "http1.codec_error"),
    ([("content-length", "3, 3")], "http1.codec_error"),
    ([("content-length", "+3")], "http1.codec_error"),
    ([("content-length", "3"), ("transfer-encoding", "chunked")], "http1.content_length_and_chunked_not_allowed"),
], ids=["repeated", "repeated-differing", "list", "signed", "with-chunked"])
def test_codec_refuses_a_request_length_it_cannot_trust(framing, details):
    """Envoy's HTTP/1.1 codec answers 400 before the connection manager has the request headers:
    no request or response callback runs, on_log finds no request headers (NotFound, then
    BadArgument for the map's size) and reads the details, the DownstreamProtocolError flag
    (1 << 18) and a total_size of 118 (the reply's 11 bytes, its headers and date and server, as
    Envoy measured); the connection closes."""
    plugin = Host().load_plugin(build(CODEC_PROBE, CODEC_STRINGS))
    s = plugin.http_stream()
    result = s.send_request_headers([(":method", "POST"), (":path", "/"), (":authority", "a"), *framing])
    s.send_request_body(b"abc", end_of_stream=True)  # the codec reads no further: dropped
    s.complete()
    assert result.callback == "proxy_on_request_headers" and result.status == "NotCalled"
    assert s.local_reply.status_code == 400 and s.local_reply.details == details
    assert list(s.downstream_response.headers.items()) == [
        (":status", "400"), ("content-length", "11"), ("content-type", "text/plain"), ("connection", "close")]
    assert s.downstream_response.body == b"Bad Request" and s.upstream_request.headers is None
    assert [r.message for r in s.logs] == [details]
    assert records(plugin.workers[0].vm) == [WasmResult.OK, WasmResult.NOT_FOUND, WasmResult.BAD_ARGUMENT,
                                             WasmResult.OK, 1 << 18, WasmResult.OK, 118]


def test_one_plain_content_length_is_taken():
    plugin = Host().load_plugin(build(CODEC_PROBE, CODEC_STRINGS))
    s = plugin.http_stream()
    s.send_request_headers({":method": "POST", ":path": "/", ":authority": "a", "content-length": "3"})
    s.send_request_body(b"abc", end_of_stream=True)
    assert s.local_reply is None and s.upstream_request.body == b"abc"
    assert [r.message for r in s.logs] == ["a filter callback ran"]


def test_without_the_connection_manager_defaults_the_codec_refuses_nothing():
    """Host(connection_manager_defaults=False) turns the codec emulation off with the rest: a repeated
    content-length reaches the filter."""
    plugin = Host(connection_manager_defaults=False).load_plugin(
        build({"proxy_on_request_headers": "(drop (call $proxy_log (i32.const 2) {seen})) (i32.const 0)"},
              {"seen": "a filter callback ran"}))
    s = plugin.http_stream()
    s.send_request_headers([(":method", "POST"), (":path", "/"), ("content-length", "3"), ("content-length", "3")])
    assert [r.message for r in plugin.logs] == ["a filter callback ran"] and s.local_reply is None
