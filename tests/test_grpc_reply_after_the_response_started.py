"""A local reply from the response headers to a gRPC request, as Envoy 1.40 answered the probe of
tests/grpc_response_reply_probes.py (integration/test_envoy_probe_scenarios.py runs it through
parity): the trailers-only gRPC answer with the body as grpc-message, and no body."""
from __future__ import annotations

from grpc_response_reply_probes import grpc_response_reply_scenarios
from proxywasm_host.parity import run_host


def test_the_answer_carries_the_body_as_grpc_message_only() -> None:
    (exchange,) = run_host(grpc_response_reply_scenarios()["reply_in_response_headers"]).exchanges
    assert (exchange.status, exchange.client_headers, exchange.client_body) == (200, [
        ("content-type", "application/grpc"), ("grpc-status", "7"), ("grpc-message", "denied"),
        ("content-length", "0")], b"")
