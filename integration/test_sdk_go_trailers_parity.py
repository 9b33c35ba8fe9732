"""Parity for trailers with the Go SDK examples (examples/go): the upstream answers chunked with
trailers, and the client's trailers (response) and the upstream's (request) are compared with a
real Envoy 1.40, with how each side framed the response (the filters' callbacks in the trace) and
what on_log reads. Envoy's values are checked too, so the comparison is not vacuous."""
from __future__ import annotations

import pytest

from proxywasm_host.parity import Filter, Request, Response, Scenario
from test_sdk_go_parity import CLIENT, _envoy_available, go_http, go_wasm  # noqa: F401 - fixtures

TEXT = {"content-type": "text/plain"}
GRPC_OK = {"grpc-status": "0", "x-upstream-sum": "a1"}


def response_callbacks(report, context: int) -> list[str]:
    return [c for c in report.envoy.by_context[context][0] if c.startswith("proxy_on_response")]


def test_trailers_both_ways_parity(go_wasm, proxywasm_parity) -> None:  # noqa: F811
    """The Go filter counts the request's trailers into one more and adds a response trailer with
    the body bytes it saw; a buffered (wrapped) response ends at its trailers, not at a last chunk."""
    report = proxywasm_parity(Scenario([go_http(go_wasm["http_filter"])], [
        Request("POST", "/grpc", CLIENT, body=["req"], trailers={"x-checksum": "abc", "x-count": "1"}),
        Request("GET", "/items", CLIENT),
        Request("GET", "/wrapped", {**CLIENT, "x-go-wrap-response": "1"}),
    ], upstream=Response(200, TEXT, "12345", trailers=GRPC_OK)))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 200, 200]
    assert e[0].upstream_trailers == [("x-checksum", "abc"), ("x-count", "1"), ("x-go-trailers-seen", "2")]
    assert e[0].client_trailers == [*GRPC_OK.items(), ("x-go-response-bytes", "5")]
    assert e[1].upstream_trailers == []
    assert e[2].client_body == b"12345"  # never wrapped: the end of stream came with the trailers
    assert response_callbacks(report, 2) == ["proxy_on_response_headers(2, 4, 0)", "proxy_on_response_body(2, 5, 0)",
                                             "proxy_on_response_trailers(2, 2)"]


@pytest.mark.parametrize("body,trailers,callbacks", [
    ("", GRPC_OK, ["proxy_on_response_headers(2, 4, 0)", "proxy_on_response_trailers(2, 2)"]),
    ("12345", {}, ["proxy_on_response_headers(2, 4, 0)", "proxy_on_response_body(2, 5, 0)",
                   "proxy_on_response_body(2, 0, 1)"]),
    ("", {}, ["proxy_on_response_headers(2, 4, 0)", "proxy_on_response_body(2, 0, 1)"]),
], ids=["no-body", "no-trailers", "neither"])
def test_chunked_response_framing_parity(go_wasm, proxywasm_parity, body, trailers, callbacks) -> None:  # noqa: F811
    """A chunked response never ends at its headers: an empty body still comes as an empty last
    chunk, and trailers end the stream without one. The wrapped response shows what the filter got."""
    report = proxywasm_parity(Scenario([go_http(go_wasm["http_filter"])], [
        Request("GET", "/items", CLIENT), Request("GET", "/wrapped", {**CLIENT, "x-go-wrap-response": "1"})],
        upstream=Response(200, TEXT, body, trailers=trailers)))
    e = report.envoy.exchanges
    assert response_callbacks(report, 2) == callbacks
    assert ("transfer-encoding", "chunked") in e[0].client_headers
    assert e[0].client_trailers == ([*trailers.items(), ("x-go-response-bytes", str(len(body)))] if trailers else [])


def test_callout_response_trailers_parity(go_wasm, proxywasm_parity) -> None:  # noqa: F811
    """A cluster's chunked answer with a trailer: the callout response hands the filter its count."""
    report = proxywasm_parity(Scenario(
        [Filter(go_wasm["callout_filter"], configuration='{"tick_ms": 60000}', name="go_callouts")],
        [Request(path="/orders", headers={"host": "shop", "x-go-user": "alice"})],
        callouts={"flags": Response(200, TEXT, "dark-mode=on", trailers={"x-f": "1"}),
                  "auth": Response(200, TEXT, "role=admin", trailers={"x-a": "1", "x-b": "2"})}))
    answers = [c for c in report.envoy.callbacks if c.startswith("proxy_on_http_call_response")]
    assert [c.rsplit(", ", 1)[1] for c in answers] == ["2)"]  # auth's (the trace starts at the first stream)


def test_on_log_total_size_counts_response_trailers_parity(go_wasm, proxywasm_parity) -> None:  # noqa: F811
    """response.total_size in on_log: the body, the response headers as they left (transfer-encoding
    removed) and the trailers: 5 + 62 + date and server (44) + 28 (found here: the host counted
    transfer-encoding and no trailers)."""
    report = proxywasm_parity(Scenario([Filter(go_wasm["observed_filter"], configuration="sizes", name="go_observed")],
                                       [Request("GET", "/a")], upstream=Response(200, TEXT, "12345", trailers=GRPC_OK)))
    lines = [m for group in report.envoy.logs.values() for _, m in group if "total_size" in m]
    assert lines == ['stream done: response total_size=139 connection=""']
