"""Sending the upstream response wrongly is a clear error naming the problem: an end_of_stream
that is not a bool names the argument and the type allowed, and a response after the filter
answered locally says there is no upstream response (Envoy never asks the upstream then)."""
import re

import pytest

from probe_filters import local_reply
from proxywasm_host import Host, StreamStateError
from watgen import build

PASS = build({"proxy_on_request_headers": "(i32.const 0)"})
REQUEST = {":method": "GET", ":path": "/", ":authority": "a"}


def _answered_stream(module: bytes):
    s = Host().load_plugin(module).http_stream()
    s.send_request_headers(REQUEST, end_of_stream=True)
    return s


@pytest.mark.parametrize("method, args", [
    ("send_response_headers", ({":status": "200"},)),
    ("send_response_body", (b"x",)),
])
def test_a_non_bool_end_of_stream_names_the_argument(method: str, args: tuple) -> None:
    s = _answered_stream(PASS)
    if method == "send_response_body":
        s.send_response_headers({":status": "200"})
    with pytest.raises(TypeError, match=re.escape(f"{method}: end_of_stream must be bool, got str ('yes')")):
        getattr(s, method)(*args, end_of_stream="yes")


def test_response_after_a_local_reply_says_there_is_none() -> None:
    s = _answered_stream(local_reply(403, []))
    with pytest.raises(StreamStateError, match=re.escape(
            "the filter answered locally (403); there is no upstream response for it to see")):
        s.send_response_headers({":status": "200"})
