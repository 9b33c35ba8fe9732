"""What the client gets when the filter (or its failure) answers locally, and what a callout with a
body carries, as measured on Envoy 1.40 (integration/test_envoy_semantics.py runs the same
scenarios through Envoy and the host). Envoy's sendLocalReply: a gRPC request gets a
trailers-only gRPC answer; an empty body gets content-length: 0 from the codec, after
connection: close."""
from __future__ import annotations

import pytest

from probe_filters import GRPC, answer_scenarios, local_reply, trap_on_request_headers
from proxywasm_host import Host
from proxywasm_host.parity import run_host


def test_fail_closed_answer_in_full() -> None:
    plain, grpc, later = run_host(answer_scenarios()["fail_closed"]).exchanges
    # the request that trapped (its body not complete when the answer went out: connection: close)
    assert (plain.status, plain.client_headers, plain.client_body, plain.upstream) == (
        503, [("connection", "close"), ("content-length", "0")], b"", None)
    # a gRPC request on the failed VM: gRPC UNAVAILABLE in a trailers-only answer
    assert (grpc.status, grpc.client_headers, grpc.client_body) == (
        200, [("content-type", "application/grpc"), ("grpc-status", "14"), ("connection", "close"),
              ("content-length", "0")], b"")
    assert (later.status, later.client_headers, later.upstream) == (503, [("content-length", "0")], None)


def test_after_the_fail_closed_answer_body_and_trailers_are_dropped() -> None:
    plugin = Host().load_plugin(trap_on_request_headers(), raise_on_trap=False)
    for headers in ({}, GRPC):
        s = plugin.http_stream()
        s.send_request_headers({":method": "POST", ":path": "/", ":authority": "a", **headers})
        assert s.local_reply is not None and s.local_reply.grpc_status == 14
        assert s.send_request_body(b"late", end_of_stream=False).status == "NotCalled"
        assert s.send_request_trailers({"x-t": "1"}).status == "NotCalled"
        assert (s.upstream_request.headers, s.upstream_request.body, s.upstream_request.trailers) == (None, b"", None)
        assert s.downstream_response.complete and s.downstream_response.body == b""


def test_empty_body_reply_drops_the_filters_content_length() -> None:
    side = run_host(answer_scenarios()["empty_reply_with_content_length"])
    chunked, get = side.exchanges
    # the body the client still sends after the reply reaches no callback (Envoy drops it)
    assert [c for c in side.callbacks if c.startswith("proxy_on_request")] == [
        "proxy_on_request_headers(2, 6, 0)", "proxy_on_request_headers(3, 6, 1)"]
    assert (chunked.status, chunked.client_headers, chunked.client_body) == (
        418, [("x-a", "1"), ("connection", "close"), ("content-length", "0")], b"")
    assert (get.status, get.client_headers, get.client_body) == (418, [("x-a", "1"), ("content-length", "0")], b"")


def test_after_a_local_reply_body_and_trailers_reach_no_callback() -> None:
    s = Host().load_plugin(local_reply(418, [(b"x-a", b"1")])).http_stream()
    s.send_request_headers({":method": "POST", ":path": "/", ":authority": "a"})
    assert s.local_reply is not None and s.local_reply.status_code == 418
    assert s.send_request_body(b"late", end_of_stream=False).status == "NotCalled"
    assert s.send_request_trailers({"x-t": "1"}).status == "NotCalled"
    assert (s.upstream_request.headers, s.upstream_request.body) == (None, b"")


def test_reply_to_a_grpc_request_is_a_grpc_answer() -> None:
    side = run_host(answer_scenarios()["grpc_reply"])
    (reply,) = side.exchanges
    assert (reply.status, reply.client_headers, reply.client_body) == (
        200, [("x-a", "1"), ("content-type", "application/grpc"), ("grpc-status", "7"), ("grpc-message", "denied"),
              ("connection", "close"), ("content-length", "0")], b"")
    assert "proxy_on_response_body(2, 6, 1)" not in side.callbacks  # no body goes through the filter


@pytest.mark.parametrize("code, sent", [(0, "0"), (16, "16"), (17, "7")])
def test_the_filters_grpc_status_from_0_to_16(code: int, sent: str) -> None:
    grpc, plain = run_host(answer_scenarios()[f"grpc_status_{code}"]).exchanges
    assert (grpc.status, dict(grpc.client_headers)["grpc-status"]) == (200, sent)
    assert (plain.status, plain.client_body) == (403, b"no")  # a plain request ignores it


def test_details_with_spaces_and_bytes_that_are_not_utf8() -> None:
    """Envoy replaces whitespace in the details (they name the reply in response.code_details);
    bytes that are not UTF-8 do not trap the host."""
    s = Host().load_plugin(local_reply(418, [], details=b"not\tallowed here\xff")).http_stream()
    s.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
    assert s.trap is None and s.local_reply.details == "not_allowed_here\ufffd"


def test_header_bytes_that_are_not_utf8_pass_through() -> None:
    """A local-reply header name or value is the filter's bytes (shown with surrogate escapes)."""
    s = Host().load_plugin(local_reply(418, [(b"x-\xff", b"v\xfe")])).http_stream()
    s.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
    assert s.trap is None and ("x-\udcff", "v\udcfe") in s.downstream_response.headers.items()


def test_callout_with_a_body_carries_its_length() -> None:
    host = Host()
    host.add_cluster("auth")
    scenario = answer_scenarios()["callout_body"]
    stream = host.load_plugin(bytes(scenario.filters[0].module)).http_stream()
    stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
    (call,) = host.pending_http_calls
    # the filter said content-length: 99; Envoy sets the body's length
    assert (call.headers.items(), call.body) == (
        [(":method", "POST"), (":path", "/cb"), (":authority", "auth"), ("content-length", "5")], b"hello")
