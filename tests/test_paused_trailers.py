"""Trailers without a body that arrive while the request headers wait for a callout: at the resume
Envoy 1.40 runs the trailers callback and no body callback (measured step by step in
integration/test_envoy_semantics.py, test_body_and_trailers_that_arrive_while_paused)."""
from __future__ import annotations

from test_pause_resume import answer, callbacks, paused_stream


def test_trailers_without_a_body_that_arrive_while_paused() -> None:
    host, s = paused_stream()
    assert s.send_request_trailers({"x-t": "1"}).status == "NotCalled"
    answer(host)
    assert callbacks(host) == ["proxy_on_context_create(2, 1)", "proxy_on_request_headers(2, 6, 0)",
                               "proxy_on_http_call_response(1, 4, 3, 2, 0)", "proxy_on_request_trailers(2, 1)"]
    up = s.upstream_request
    assert (up.body, up.trailers.items(), up.complete) == (b"", [("x-t", "1")], True)
