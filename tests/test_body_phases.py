"""Request body callbacks pinned in the host with the probe of tests/body_probes.py: what the
filter sees and what the upstream receives for each body status, as Envoy 1.40 did with the same
module and client (integration/test_envoy_probe_scenarios.py runs it through parity)."""
from __future__ import annotations

import pytest

from body_probes import body_scenarios, body_status, wait_at_the_end
from probe_filters import local_reply
from proxywasm_host import Host, StreamStateError
from proxywasm_host.http import PhaseResult
from proxywasm_host.parity import run_host
from watgen import build

POST = {":method": "POST", ":path": "/", ":authority": "a"}


def test_what_each_body_status_lets_through() -> None:
    """StopIterationAndBuffer: the next callback sees everything held plus the new chunk, and
    Continue forwards it all; StopIterationNoBuffer, and an unknown 7 like it, drops what the
    callback saw; a continue from inside the first body callback that stops changes nothing (the
    next callback still sees the held bytes), one from a callback after a StopIterationAndBuffer
    lets through what it saw (the next callback sees only its chunk). The end of stream comes as an
    empty last callback. Request headers read BadArgument in every body callback."""
    side = run_host(body_scenarios()["request_body_statuses"])
    assert [(e.status, e.upstream[1] if e.upstream else None) for e in side.exchanges] == [
        (200, b"abcbdd"), (200, b"bd"), (200, b"ace"), (200, b"abcce"), (200, b"y")]
    lines = [m for _, m in side.logs["'wasm log b:'"]]
    assert [m for m in lines if m != "c"] == [
        "ab", "abcb", "abcbdd", "ok", "an", "bd", "ok", "ac", "ace", "ok", "ab", "abcc", "e", "ok", "ax", "y", "ok"]
    # the request headers read BadArgument in every body callback, after a continue too
    assert lines.count("c") == len([c for c in side.callbacks if "_body(" in c]) == 27
    requests = [c for c in side.callbacks if c.startswith("proxy_on_request_body")]
    assert requests == [
        "proxy_on_request_body(2, 2, 0)", "proxy_on_request_body(2, 4, 0)", "proxy_on_request_body(2, 6, 0)",
        "proxy_on_request_body(2, 0, 1)",
        "proxy_on_request_body(3, 2, 0)", "proxy_on_request_body(3, 2, 0)", "proxy_on_request_body(3, 0, 1)",
        "proxy_on_request_body(4, 2, 0)", "proxy_on_request_body(4, 3, 0)", "proxy_on_request_body(4, 0, 1)",
        "proxy_on_request_body(5, 2, 0)", "proxy_on_request_body(5, 4, 0)", "proxy_on_request_body(5, 1, 0)",
        "proxy_on_request_body(5, 0, 1)",
        "proxy_on_request_body(6, 2, 0)", "proxy_on_request_body(6, 1, 0)", "proxy_on_request_body(6, 0, 1)"]


def test_each_raw_body_answer_as_envoys_filter_status() -> None:
    """The status the host reports per raw return (cpp-host's conversion; what each does to the
    flow is what the scenario above measured): 3 and anything above drop the chunk, 1 buffers it,
    0 lets through what was held and the chunk."""
    s = Host().load_plugin(body_status()).http_stream()
    s.send_request_headers(POST)
    answers = [(chunk, s.send_request_body(chunk, end_of_stream=False)) for chunk in (b"cn", b"dx", b"ab", b"ee")]
    assert [(c, r.action, r.status) for c, r in answers] == [
        (b"cn", 3, "StopIterationNoBuffer"), (b"dx", 7, "StopIterationNoBuffer"),
        (b"ab", 1, "StopIterationAndBuffer"), (b"ee", 0, "Continue")]
    assert s.upstream_request.body == b"abee"
    assert s.send_request_body(b"", end_of_stream=True).status == "Continue" and s.upstream_request.complete


def test_body_results_name_their_callback_when_not_called() -> None:
    """A body held while the headers are stopped, or dropped after a local reply, reports its
    callback as NotCalled; a module without the callback lets the body through, NotCalled too."""
    held = Host().load_plugin(build({"proxy_on_request_headers": "(i32.const 1)"})).http_stream()
    held.send_request_headers(POST)
    assert held.send_request_body(b"ab", end_of_stream=False) == PhaseResult("proxy_on_request_body", None, "NotCalled")
    replied = Host().load_plugin(local_reply(403, [])).http_stream()
    replied.send_request_headers(POST)
    assert replied.send_request_body(b"ab") == PhaseResult("proxy_on_request_body", None, "NotCalled")
    plain = Host().load_plugin(build({})).http_stream()
    plain.send_request_headers(POST)
    assert plain.send_request_body(b"ab") == PhaseResult("proxy_on_request_body", None, "NotCalled")
    assert (plain.upstream_request.body, plain.upstream_request.complete) == (b"ab", True)


def test_a_body_sent_out_of_order_names_the_problem() -> None:
    s = Host().load_plugin(build({})).http_stream()
    with pytest.raises(StreamStateError, match=r"^send the request headers before the request body$"):
        s.send_request_body(b"x")
    s.send_request_headers(POST, end_of_stream=True)
    with pytest.raises(StreamStateError, match=r"^the request has already ended; no more body can be sent$"):
        s.send_request_body(b"x")


def test_a_request_that_waits_at_its_end_for_a_callout() -> None:
    """A body buffered to its end, or trailers, held for a callout whose answer continues: the next
    hop gets the whole body (and the trailers) and the request ends; request headers read
    BadArgument in every body and trailers callback."""
    side = run_host(body_scenarios()["wait_at_the_end"])
    assert [(e.status, e.upstream[1] if e.upstream else None) for e in side.exchanges] == [(200, b"abcd"), (200, b"ab")]
    assert side.logs == {"'wasm log w:'": [("info", "c")] * 5}
    assert [c for c in side.callbacks if "alloc" not in c] == [
        "proxy_on_context_create(2, 1)", "proxy_on_request_body(2, 2, 0)", "proxy_on_request_body(2, 4, 0)",
        "proxy_on_request_body(2, 4, 1)", "proxy_on_http_call_response(1, 4, 4, 2, 0)",
        "proxy_on_context_create(3, 1)", "proxy_on_request_body(3, 2, 0)", "proxy_on_request_trailers(3, 1)",
        "proxy_on_http_call_response(1, 8, 4, 2, 0)"]


def test_the_next_hop_gets_the_end_and_the_trailers_after_the_wait() -> None:
    """The same flows driven step by step: what the upstream has before and after the answer."""
    host = Host()
    host.add_cluster("auth")
    plugin = host.load_plugin(wait_at_the_end())
    for trailers in (None, {"x-t": "1"}):
        s = plugin.http_stream()
        s.send_request_headers(POST)
        s.send_request_body(b"ab", end_of_stream=False)
        if trailers is None:
            assert s.send_request_body(b"", end_of_stream=True).status == "StopIterationAndBuffer"
        else:
            assert s.send_request_trailers(trailers).status == "StopIteration"
        assert (s.upstream_request.body, s.upstream_request.complete) == (b"", False)
        (call,) = host.pending_http_calls
        call.respond(200, {}, b"")
        up = s.upstream_request
        assert (up.body, up.trailers.items() if up.trailers else None, up.complete) == (
            b"ab", list(trailers.items()) if trailers else None, True)
