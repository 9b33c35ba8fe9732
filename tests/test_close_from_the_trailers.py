"""proxy_close_stream from the trailers callback resets the stream (Envoy 1.40 resets the whole
stream, whichever side it names) even when the callback then answers Continue: the upstream
request is reset, never completed, and the trailers do not reach it."""
from __future__ import annotations

import pytest

from proxywasm_host import Host
from watgen import build

CLOSE_THEN_CONTINUE = "(drop (call $proxy_close_stream (i32.const 0))) (i32.const 0)"


@pytest.mark.parametrize("kind", ["request", "response"])
def test_a_close_in_the_trailers_callback_wins_over_its_continue(kind: str) -> None:
    s = Host().load_plugin(build({f"proxy_on_{kind}_trailers": CLOSE_THEN_CONTINUE})).http_stream()
    s.send_request_headers({":method": "POST", ":path": "/", ":authority": "a"})
    s.send_request_body(b"ab", end_of_stream=False)
    s.send_request_trailers({"x-t": "1"})
    out = s.upstream_request
    if kind == "response":
        s.send_response_headers({":status": "200"})
        s.send_response_body(b"cd", end_of_stream=False)
        s.send_response_trailers({"x-t": "1"})
        out = s.downstream_response
    assert (s.reset_details, out.reset, out.complete, out.trailers) == ("wasm_close_stream", True, False, None)
