"""Callouts, ticks and paused requests in a Go filter (callout_filter/main.go).

The test plays the clusters: `plugin.pending_http_calls` lists the calls the filter made,
`call.respond(...)` / `call.fail()` answers one, and `host.clock.advance(...)` fires on_tick.
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
    return build_go.module_for_tests("callout_filter")


@pytest.fixture
def host() -> Host:
    h = Host()
    h.add_cluster("flags")
    h.add_cluster("auth")
    return h


def load(host, wasm):
    return host.load_plugin(wasm, name="go_callouts", configuration='{"tick_ms": 1000}')


def request(plugin, headers=None):
    s = plugin.http_stream()
    s.send_request_headers({":method": "GET", ":path": "/orders", ":authority": "shop", ":scheme": "http",
                            **(headers or {})}, end_of_stream=True)
    return s


def finish(s):
    """The upstream answers 200 (if the request reached it) and the stream ends."""
    if s.local_reply is None:
        s.send_response_headers({":status": "200"}, end_of_stream=True)
    s.complete()
    return s


def test_root_context_calls_out_at_plugin_start(host, wasm):
    plugin = load(host, wasm)
    [call] = plugin.pending_http_calls
    assert call.cluster == "flags" and call.timeout_ms == 5000
    assert call.headers[":path"] == "/flags?why=start"
    assert "x-go-flags" not in finish(request(plugin)).upstream_request.headers   # no answer yet
    call.respond(200, {"content-type": "text/plain"}, "dark-mode=on")
    assert finish(request(plugin)).upstream_request.headers["x-go-flags"] == "dark-mode=on"
    assert 'flags are now "dark-mode=on"' in [r.message for r in plugin.logs]


def test_ticks_refresh_from_the_root_context(host, wasm):
    plugin = load(host, wasm)
    plugin.pending_http_calls[0].respond(200, body="v1")
    host.clock.advance(ms=999)
    assert plugin.pending_http_calls == []            # the tick period is 1000 ms
    host.clock.advance(ms=1)
    [call] = plugin.pending_http_calls
    assert call.headers[":path"] == "/flags?why=tick"
    call.respond(200, body="v2")
    assert finish(request(plugin)).upstream_request.headers["x-go-flags"] == "v2"


def test_failed_root_callout_keeps_the_old_answer(host, wasm):
    plugin = load(host, wasm)
    plugin.pending_http_calls[0].respond(200, body="v1")
    host.clock.advance(seconds=1)
    plugin.pending_http_calls[0].fail()
    assert finish(request(plugin)).upstream_request.headers["x-go-flags"] == "v1"
    assert [(r.level, r.message) for r in plugin.logs if r.level == "warn"] == [
        ("warn", 'flags callout failed; keeping "v1"')]


def test_stream_pauses_for_a_callout_and_resumes_with_its_answer(host, wasm):
    plugin = load(host, wasm)
    s = request(plugin, {"x-go-user": "alice"})
    assert s.upstream_request.headers is None          # paused while auth is asked
    call = next(c for c in plugin.pending_http_calls if c.cluster == "auth")
    assert call.headers[":path"] == "/users/alice" and call.timeout_ms == 2000
    assert call.headers["x-go-asked-by"] == str(s.id)
    call.respond(200, {"content-type": "text/plain"}, "role=admin")
    assert s.upstream_request.headers["x-go-auth"] == "role=admin"   # resumed with the answer
    assert finish(s).downstream_response.headers[":status"] == "200"


def test_callout_refusal_becomes_a_local_403(host, wasm):
    plugin = load(host, wasm)
    s = request(plugin, {"x-go-user": "mallory"})
    next(c for c in plugin.pending_http_calls if c.cluster == "auth").respond(404, body="no such user")
    assert s.upstream_request.headers is None
    assert s.local_reply.status_code == 403
    assert s.downstream_response.body == b"user mallory refused by auth (404)\n"
    assert 'auth answered 404 for mallory: "no such user"' in [r.message for r in s.logs]


def test_failed_callout_becomes_a_local_503(host, wasm):
    plugin = load(host, wasm)
    s = request(plugin, {"x-go-user": "bob"})
    next(c for c in plugin.pending_http_calls if c.cluster == "auth").fail()
    assert s.local_reply.status_code == 503
    assert s.downstream_response.headers["x-go-auth-error"] == "callout failed"


def test_callout_to_an_unknown_cluster_is_refused(wasm):
    plugin = load(Host(), wasm)                          # no "flags" or "auth" cluster
    assert plugin.pending_http_calls == []
    assert any(r.level == "error" and r.message.startswith("flags callout not sent:") for r in plugin.logs)
    s = request(plugin, {"x-go-user": "alice"})
    assert s.local_reply.status_code == 500 and s.downstream_response.body == b"auth callout not sent\n"


def test_held_request_resumes_on_the_next_tick_via_set_effective_context(host, wasm):
    plugin = load(host, wasm)
    first = request(plugin, {"x-go-hold": "1"})
    second = request(plugin, {"x-go-hold": "1"})
    assert first.upstream_request.headers is None and second.upstream_request.headers is None
    host.clock.advance(seconds=1)
    for s in (first, second):
        assert s.upstream_request.headers["x-go-released-at-tick"] == "1"
        assert finish(s).downstream_response.headers[":status"] == "200"
    assert "tick 1: releasing 2 held request(s)" in [r.message for r in plugin.logs]


def test_held_stream_that_ended_cannot_be_resumed(host, wasm):
    """The client went away before the tick: proxy_set_effective_context answers BadArgument for that id."""
    plugin = load(host, wasm)
    s = request(plugin, {"x-go-hold": "1"})
    s.complete()
    host.clock.advance(seconds=1)
    assert (f"stream {s.id} is gone: error status returned by host: bad argument"
            in [r.message for r in plugin.logs if r.level == "error"])
