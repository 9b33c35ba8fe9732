"""Pause on the request headers for a callout, resume from its answer, then the body and the
trailers (abi.md §0.27–0.29), as measured on Envoy 1.40 with the same module
(integration/test_envoy_semantics.py drives Envoy through the same sequences): what arrived while
paused is delivered at the resume as one body callback (end of stream not yet) and then the
trailers; a body that arrives after the resume goes straight through, chunk by chunk."""
from __future__ import annotations

from probe_filters import pause_for_callout
from proxywasm_host import Host
from proxywasm_host.http import HttpStream
from proxywasm_host.parity import summarize_trace

REQ = {":method": "POST", ":path": "/a", ":authority": "example.com", "transfer-encoding": "chunked"}


def paused_stream() -> tuple[Host, HttpStream]:
    host = Host(trace=True)
    host.add_cluster("auth")
    stream = host.load_plugin(pause_for_callout()).http_stream()
    assert stream.send_request_headers(REQ).status == "StopAllIterationAndWatermark"
    return host, stream


def callbacks(host: Host) -> list[str]:
    return [c for c in summarize_trace(host.trace or [])[0] if not c.startswith("proxy_on_memory_allocate")]


def answer(host: Host) -> None:
    (call,) = host.pending_http_calls
    call.respond(200, {"content-length": "2"}, b"ok")


def test_body_and_trailers_that_arrive_while_paused_follow_the_resume() -> None:
    host, s = paused_stream()
    assert s.send_request_body(b"part1-", end_of_stream=False).status == "NotCalled"
    assert s.send_request_body(b"part2", end_of_stream=False).status == "NotCalled"
    assert s.send_request_trailers({"x-t": "1"}).status == "NotCalled"
    assert s.upstream_request.headers is None
    answer(host)
    assert callbacks(host) == ["proxy_on_context_create(2, 1)", "proxy_on_request_headers(2, 6, 0)",
                               "proxy_on_http_call_response(1, 4, 3, 2, 0)", "proxy_on_request_body(2, 11, 0)",
                               "proxy_on_request_trailers(2, 1)"]
    up = s.upstream_request
    assert (up.headers[":path"], up.body, up.trailers.items(), up.complete) == ("/a", b"part1-part2", [("x-t", "1")], True)


def test_body_after_the_resume_on_a_request_not_yet_ended() -> None:
    host, s = paused_stream()
    answer(host)
    assert s.upstream_request.headers[":path"] == "/a" and not s.upstream_request.complete
    assert s.send_request_body(b"abc", end_of_stream=False).status == "Continue"
    assert s.upstream_request.body == b"abc"
    assert s.send_request_body(b"def", end_of_stream=False).status == "Continue"
    assert s.send_request_body(b"", end_of_stream=True).status == "Continue"
    assert callbacks(host) == ["proxy_on_context_create(2, 1)", "proxy_on_request_headers(2, 6, 0)",
                               "proxy_on_http_call_response(1, 4, 3, 2, 0)", "proxy_on_request_body(2, 3, 0)",
                               "proxy_on_request_body(2, 3, 0)", "proxy_on_request_body(2, 0, 1)"]
    assert (s.upstream_request.body, s.upstream_request.complete) == (b"abcdef", True)

