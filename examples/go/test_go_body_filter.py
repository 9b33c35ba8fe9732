"""A Go filter that replaces whole bodies with ones of another length (body_filter/main.go).

Removing content-length in the headers callback is the way to do it: the body then goes on
chunked. A filter that leaves the old content-length gets what Envoy's HTTP/1 codec makes of it,
measured in integration/test_sdk_go_more_parity.py: the other side reads content-length bytes
and takes the rest as the start of the next message on that connection. The host passes on what
the filter produced, so these tests show the stale header next to the new body.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host import Host

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_go  # noqa: E402


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_go.module_for_tests("body_filter")


@pytest.fixture
def plugin(wasm):
    return Host().load_plugin(wasm, name="go_body")


def exchange(plugin, request_edit: str = "", response_edit: str = ""):
    """A POST of "hello world" (with content-length, as a client sends it) answered by "upstream body"."""
    headers = {":method": "POST", ":path": "/", ":authority": "a", "content-length": "11"}
    headers.update({k: v for k, v in (("x-go-edit", request_edit), ("x-go-edit-response", response_edit)) if v})
    s = plugin.http_stream()
    s.send_request_headers(headers)
    assert s.send_request_body(b"hello world", end_of_stream=False).status == (
        "StopIterationAndBuffer" if request_edit else "Continue")
    s.send_request_body(b"", end_of_stream=True)
    s.send_response_headers({":status": "200", "content-type": "text/plain", "content-length": "13"})
    s.send_response_body(b"upstream body", end_of_stream=False)
    s.send_response_body(b"", end_of_stream=True)
    s.complete()
    return s


def test_request_body_grows_with_content_length_removed(plugin):
    up = exchange(plugin, request_edit="fix").upstream_request
    assert up.body == b"hello worldhello world" and "content-length" not in up.headers
    assert "request body 11 -> 22 bytes (fix)" in [r.message for r in plugin.logs]


def test_response_body_grows_with_content_length_removed(plugin):
    out = exchange(plugin, response_edit="fix").downstream_response
    assert out.body == b"upstream bodyupstream body" and "content-length" not in out.headers


@pytest.mark.parametrize("edit,body", [("grow", b"hello worldhello world"), ("shrink", b"hello")])
def test_request_body_edited_under_the_old_content_length(plugin, edit, body):
    up = exchange(plugin, request_edit=edit).upstream_request
    assert up.body == body and up.headers["content-length"] == "11"   # Envoy's upstream reads 11 bytes


def test_response_body_edited_under_the_old_content_length(plugin):
    out = exchange(plugin, response_edit="grow").downstream_response
    assert out.body == b"upstream bodyupstream body" and out.headers["content-length"] == "13"
