"""Parity for requests Envoy 1.40's HTTP/1.1 codec refuses: content-length repeated (same value or
not), not a plain number, or next to a chunked transfer-encoding. Envoy answers 400 "Bad Request"
before the filters see the request, and closes the connection; the Go SDK's observed_filter logs
what on_log reads then (code_details, grpc_status, flags, total_size, the connection header)."""
from __future__ import annotations

from proxywasm_host.parity import Filter, Request, Response, Scenario
from test_sdk_go_parity import _envoy_available, go_wasm  # noqa: F401 - fixtures

REFUSED = [("info", "stream {} done: duration known=true request size=0 response size=11 code_details={} "
                    "grpc_status=13 flags=262144"),
           ("info", 'stream done: response total_size=118 connection="close"')]


def test_codec_refusals_parity(go_wasm, proxywasm_parity) -> None:  # noqa: F811
    report = proxywasm_parity(Scenario([Filter(go_wasm["observed_filter"], configuration="sizes", name="go_observed")], [
        Request("POST", "/same", [("content-length", "3")], body="abc"),  # and the framing's content-length: 3
        Request("POST", "/differing", [("content-length", "4")], body="abc"),
        Request("POST", "/list", [("content-length", "3, 3")]),
        Request("POST", "/chunked", [("content-length", "3")], body=["abc"]),
        Request("POST", "/plain", body="abc"),
    ], upstream=Response(200, {"content-type": "text/plain"}, "ok")))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [400, 400, 400, 400, 200]
    assert [x.upstream is None for x in e] == [True, True, True, True, False]
    assert e[0].client_headers == [("content-length", "11"), ("content-type", "text/plain"), ("connection", "close")]
    assert e[0].client_body == b"Bad Request"
    details = ["http1.codec_error"] * 3 + ["http1.content_length_and_chunked_not_allowed"]
    assert report.envoy.logs["'wasm log go_observed:'"][:8] == [
        (level, line.format(i + 2, d)) for i, d in enumerate(details) for level, line in REFUSED]
