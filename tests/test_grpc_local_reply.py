"""A filter's local reply to a gRPC request, as Envoy 1.40 answered the probes of
tests/grpc_reply_probes.py (integration/test_envoy_probe_scenarios.py runs them through parity):
a grpc-status the filter gave wins over the one Envoy would set, an HTTP status with no gRPC
mapping gives 2 (Unknown), and a HEAD request gets no grpc-message."""
from __future__ import annotations

from grpc_reply_probes import grpc_reply_scenarios
from proxywasm_host.parity import run_host


def _answer(name: str) -> tuple[int, list[tuple[str, str]]]:
    (exchange,) = run_host(grpc_reply_scenarios()[name]).exchanges
    return exchange.status, exchange.client_headers


def test_the_filters_own_grpc_status_wins() -> None:
    assert _answer("own_grpc_status") == (200, [
        ("grpc-status", "7"), ("content-type", "application/grpc"), ("grpc-message", "denied"),
        ("connection", "close"), ("content-length", "0")])


def test_an_http_status_without_a_grpc_mapping_gives_unknown() -> None:
    assert _answer("unmapped_http_status") == (200, [
        ("content-type", "application/grpc"), ("grpc-status", "2"), ("grpc-message", "teapot"),
        ("connection", "close"), ("content-length", "0")])


def test_a_head_request_gets_no_grpc_message() -> None:
    status, headers = _answer("head")
    assert (status, headers[:2]) == (200, [("content-type", "application/grpc"), ("grpc-status", "7")])
    assert "grpc-message" not in [k for k, _ in headers]
