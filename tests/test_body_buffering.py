"""How Envoy 1.40 buffers a body for a filter that stops, pinned in the host with the probe of
tests/body_probes.py (measured through parity in integration/test_envoy_probe_scenarios.py):
Envoy keeps its own buffer for the filter; the next chunk joins that buffer before the callback
only after StopIterationAndBuffer, otherwise the filter sees the chunk alone; after the callback
Buffer or Watermark moves the chunk into the buffer, NoBuffer drops the chunk but keeps the
buffer, and Continue (or a resume) forwards the buffer, then the chunk."""
from __future__ import annotations

import pytest

from body_probes import (BETWEEN_CHUNKS, BETWEEN_IDS, body_scenarios, body_status, resume_on_a_tick,
                         wait_at_the_end)
from proxywasm_host import Host
from proxywasm_host.http import HttpStream
from proxywasm_host.parity import run_host

POST = {":method": "POST", ":path": "/", ":authority": "a"}
RESPONSE = {":status": "200"}


def _seen(s: HttpStream) -> list[str]:
    """The bodies the probe's callbacks saw (it also logs "c" for the headers' status: left out)."""
    return [r.message for r in s.logs if r.message != "c"]


def _stream(direction: str) -> HttpStream:
    """A stream whose `direction` body goes through the probe next (the request let through)."""
    s = Host().load_plugin(body_status()).http_stream()
    s.send_request_headers(POST, end_of_stream=direction == "response")
    if direction == "response":
        s.send_response_headers(RESPONSE)
    return s


def _send(s: HttpStream, direction: str, chunks: list[bytes]) -> bytes:
    """Sends the chunks, then the end of stream; returns what the next hop got."""
    send = s.send_request_body if direction == "request" else s.send_response_body
    for chunk in chunks:
        send(chunk, end_of_stream=False)
    send(b"", end_of_stream=True)
    out = s.upstream_request if direction == "request" else s.downstream_response
    assert out.complete
    return out.body


def test_the_measured_scenario() -> None:
    """Per request: what the upstream got, what each request body callback saw, and the body
    size each response body callback was given (the upstream answers "aw", held by Watermark: the
    end of stream comes with nothing joined to it)."""
    side = run_host(body_scenarios()["body_buffering"])
    assert [(e.status, e.upstream[1] if e.upstream else None, e.client_body) for e in side.exchanges] == [
        (200, b"awbce", b"aw"), (200, b"abcnee", b"aw"), (200, b"bce", b"aw"), (200, b"awbbcd", b"aw")]
    seen = [m for _, m in side.logs["'wasm log b:'"] if m != "c"]
    assert seen == ["aw", "bc", "bce", "aw", "ab", "abcn", "dx", "ee", "aw", "an", "bc", "bce", "aw",
                    "aw", "bb", "awbbcd", "aw"]
    responses = [c for c in side.callbacks if c.startswith("proxy_on_response_body")]
    assert responses == [f"proxy_on_response_body({ctx}, {size}, {eos})" for ctx in (2, 3, 4, 5)
                         for size, eos in ((2, 0), (0, 1))]


@pytest.mark.parametrize("direction", ["request", "response"])
def test_after_watermark_the_filter_sees_the_next_chunk_alone(direction: str) -> None:
    """Watermark holds "aw" without joining the next chunk to it; the continue from inside the
    "bc" callback forwards "aw", and its StopIterationAndBuffer makes "e" join "bc"."""
    s = _stream(direction)
    assert _send(s, direction, [b"aw", b"bc", b"e"]) == b"awbce"
    assert _seen(s) == ["aw", "bc", "bce"]


@pytest.mark.parametrize("direction", ["request", "response"])
def test_nobuffer_drops_its_chunk_but_keeps_the_buffer(direction: str) -> None:
    """"ab" buffered, "cn" joins it (seen "abcn") and NoBuffer keeps "abcn"; "dx" (7, as NoBuffer)
    is seen alone and dropped; Continue on "ee" forwards the buffer, then "ee"."""
    s = _stream(direction)
    assert _send(s, direction, [b"ab", b"cn", b"dx", b"ee"]) == b"abcnee"
    assert _seen(s) == ["ab", "abcn", "dx", "ee"]


@pytest.mark.parametrize("direction", ["request", "response"])
def test_a_continue_after_nobuffer_forwards_nothing_of_the_chunk_it_saw(direction: str) -> None:
    """"an" is dropped; the continue from inside the "bc" callback finds no buffer, and its
    StopIterationAndBuffer holds "bc", which "e" then joins."""
    s = _stream(direction)
    assert _send(s, direction, [b"an", b"bc", b"e"]) == b"bce"
    assert _seen(s) == ["an", "bc", "bce"]


def test_nobuffer_at_the_end_keeps_the_buffer_for_the_resume() -> None:
    """A body buffered to its end, where the filter asks a callout and answers NoBuffer: the
    callout's answer continues the request with the whole body."""
    host = Host()
    host.add_cluster("auth")
    s = host.load_plugin(wait_at_the_end(3)).http_stream()
    s.send_request_headers(POST)
    s.send_request_body(b"ab", end_of_stream=False)
    s.send_request_body(b"cn", end_of_stream=False)
    assert s.send_request_body(b"", end_of_stream=True).status == "StopIterationNoBuffer"
    assert (s.upstream_request.body, s.upstream_request.complete) == (b"", False)
    (call,) = host.pending_http_calls
    call.respond(200, {}, b"")
    assert (s.upstream_request.body, s.upstream_request.complete) == (b"abcn", True)


def test_a_body_replayed_after_a_stop_all_and_stopped_on() -> None:
    """The body and trailers Envoy held while the headers were stopped replay at the resume.
    When the filter stops on that body (NoBuffer "an", Buffer "ab"), Envoy gives it the trailers
    anyway; as it continues, the body is dropped and the trailers callback runs a second time,
    then the trailers go upstream alone. A filter that continues on the body ("ae") gets the
    trailers once, and a body replayed at its end ("an" without trailers: a Continue, unlogged)
    goes through whole. on_log reads request.size 2 each time: the replayed body counts once."""
    side = run_host(body_scenarios()["replay_after_a_stop_all"])
    assert [(e.status, e.upstream[1] if e.upstream else None, e.upstream_trailers) for e in side.exchanges] == [
        (200, b"", [("x-t", "1")]), (200, b"", [("x-t", "1")]), (200, b"ae", [("x-t", "1")]), (200, b"an", [])]
    assert [m for _, m in side.logs["'wasm log r:'"] if m != "c"] == [
        "an", "t", "t", "2", "ab", "t", "t", "2", "ae", "t", "2", "2"]


@pytest.mark.parametrize(("at_headers", "chunks", "seen", "body"), BETWEEN_CHUNKS, ids=BETWEEN_IDS)
def test_a_resume_between_body_chunks(at_headers: bool, chunks: list[str], seen: list[str], body: bytes) -> None:
    """The first chunk held (by StopIterationAndBuffer, or with the stopped headers), a tick
    continues the request, then the next chunks."""
    host = Host()
    s = host.load_plugin(resume_on_a_tick(at_headers)).http_stream()
    s.send_request_headers(POST)
    for chunk in chunks:
        s.send_request_body(chunk, end_of_stream=False)
        host.clock.advance(ms=600)
    s.send_request_body(b"", end_of_stream=True)
    assert (_seen(s), s.upstream_request.body, s.upstream_request.complete) == (seen, body, True)
