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
