"""A test that drives a stream out of order gets an error naming the problem (Envoy's codec never
delivers such a sequence, so there is nothing to imitate), results name the callback they are
about even when it was not called, and ending a stream twice tears it down once; once ended, the
stream's context is gone (abi.md: proxy_set_effective_context answers BadArgument to an unknown id),
and a stream nobody reset reads as not reset in either direction."""
import re

import pytest

from proxywasm_host import Host, StreamStateError
from proxywasm_host.http import PhaseResult
from watgen import build, records

REQUEST = {":method": "POST", ":path": "/", ":authority": "a"}
PASS = build({})
STOP_ALL = build({"proxy_on_request_headers": "(i32.const 1)"})
TRAP = build({"proxy_on_request_headers": "unreachable"})


def _stream(module: bytes = PASS):
    return Host().load_plugin(module).http_stream()


def test_headers_sent_twice_name_their_direction() -> None:
    s = _stream()
    s.send_request_headers(REQUEST)
    with pytest.raises(StreamStateError, match=r"^request headers were already sent on this stream$"):
        s.send_request_headers(REQUEST)


def test_trailers_before_headers_name_the_trailers() -> None:
    with pytest.raises(StreamStateError, match=r"^send the request headers before the request trailers$"):
        _stream().send_request_trailers({"x-t": "1"})


def test_trailers_after_the_end_name_the_trailers() -> None:
    s = _stream()
    s.send_request_headers(REQUEST, end_of_stream=True)
    with pytest.raises(StreamStateError, match=r"^the request has already ended; no more trailers can be sent$"):
        s.send_request_trailers({"x-t": "1"})


def test_bad_response_trailers_name_the_call() -> None:
    s = _stream()
    s.send_request_headers(REQUEST, end_of_stream=True)
    s.send_response_headers({":status": "200"})
    with pytest.raises(TypeError, match=r"^send_response_trailers: headers must be a dict"):
        s.send_response_trailers("x-t: 1")  # type: ignore[arg-type]


@pytest.mark.parametrize("method, args", [("send_response_body", (b"x",)), ("send_response_trailers", ({"x-t": "1"},))])
def test_a_response_after_a_failed_filter_answered_says_there_is_none(method: str, args: tuple) -> None:
    """The filter trapped in its request headers: Envoy answered 503 without asking the upstream."""
    s = Host().load_plugin(TRAP, raise_on_trap=False).http_stream()
    s.send_request_headers(REQUEST, end_of_stream=True)
    with pytest.raises(StreamStateError, match=re.escape(
            "the filter answered locally (503); there is no upstream response for it to see")):
        getattr(s, method)(*args)


@pytest.mark.parametrize("method, args", [("send_response_headers", ({":status": "200"},)),
                                          ("send_response_body", (b"x",)),
                                          ("send_response_trailers", ({"x-t": "1"},))])
def test_a_response_before_the_request_went_upstream_says_why(method: str, args: tuple) -> None:
    s = _stream(STOP_ALL)
    s.send_request_headers(REQUEST, end_of_stream=True)
    with pytest.raises(StreamStateError, match=re.escape(
            "the upstream has not received the request (the filter has not let the request headers through: "
            "stop_all); it cannot respond yet")):
        getattr(s, method)(*args)


def test_results_name_their_callback_when_it_was_not_called() -> None:
    """Headers of a module without the callback, trailers held while the headers are stopped, and
    a request that a fail-open plugin lets past a failed VM."""
    plain = _stream()
    assert plain.send_request_headers(REQUEST) == PhaseResult("proxy_on_request_headers", None, "NotCalled")
    held = _stream(STOP_ALL)
    held.send_request_headers(REQUEST)
    assert held.send_request_trailers({"x-t": "1"}) == PhaseResult("proxy_on_request_trailers", None, "NotCalled")
    plugin = Host().load_plugin(TRAP, failure_policy="fail_open", raise_on_trap=False)
    plugin.http_stream().send_request_headers(REQUEST, end_of_stream=True)
    skipped = plugin.http_stream()
    assert skipped.send_request_headers(REQUEST, end_of_stream=True) == PhaseResult(
        "proxy_on_request_headers", None, "NotCalled")
    assert skipped.upstream_request.complete


def test_completing_twice_ends_the_stream_once() -> None:
    """proxy_on_log, proxy_on_done and proxy_on_delete run once per stream, as in Envoy."""
    plugin = Host().load_plugin(build({
        "proxy_on_log": "(call $rec (i32.const 7))",
        "proxy_on_done": "(call $rec (i32.const 8)) (i32.const 1)",
        "proxy_on_delete": "(call $rec (i32.const 9))"}))
    s = plugin.http_stream()
    s.send_request_headers(REQUEST, end_of_stream=True)
    s.complete()
    s.complete()
    assert records(plugin.workers[0].vm) == [7, 8, 9]


def test_a_completed_streams_context_is_gone() -> None:
    """A tick sets the effective context to the stream saved in its request headers: Ok (0) while
    the stream lives, BadArgument (2) after proxy_on_delete."""
    host = Host()
    plugin = host.load_plugin(build({
        "proxy_on_configure": "(drop (call $proxy_set_tick_period_milliseconds (i32.const 100))) (i32.const 1)",
        "proxy_on_request_headers": "(i32.store (i32.const 0x10c) (local.get $ctx)) (i32.const 0)",
        "proxy_on_tick": "(if (i32.load (i32.const 0x10c))"
                         " (then (call $rec (call $proxy_set_effective_context (i32.load (i32.const 0x10c))))))"}))
    s = plugin.http_stream()
    s.send_request_headers(REQUEST, end_of_stream=True)
    host.clock.advance(ms=100)
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    s.complete()
    host.clock.advance(ms=100)
    assert records(plugin.workers[0].vm) == [0, 2]


def test_an_exchange_nobody_reset_is_not_reset() -> None:
    s = _stream()
    s.send_request_headers(REQUEST, end_of_stream=True)
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    assert (s.upstream_request.reset, s.downstream_response.reset) == (False, False)
