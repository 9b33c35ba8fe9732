"""Requests that reach a filter whose VM trapped, as Envoy 1.40 answered them (measured through
proxywasm_host.parity.run_parity with these scenarios: identical in Envoy and the host).
fail_open: the trapping GET gets 503, the next GET skips the filter and keeps its end of stream,
so neither answer carries `connection: close` (the mark of a response that started before its
request ended). fail_closed: a later POST gets the 503 before its body, so with `connection: close`."""
from __future__ import annotations

from proxywasm_host.parity import Filter, Request, Scenario, run_host
from watgen import build

TRAP = {"proxy_on_request_headers": "unreachable", "proxy_on_request_body": "(i32.const 0)"}


def _answers(policy: str, second: Request) -> list[tuple[int, list[tuple[str, str]]]]:
    trap = Filter(build(TRAP), name="t", failure_policy=policy)
    side = run_host(Scenario([trap], [Request("GET", "/a"), second]))
    return [(e.status, e.client_headers) for e in side.exchanges]


def test_fail_open_a_skipped_get_ends_its_request_so_the_answer_keeps_the_connection() -> None:
    assert _answers("fail_open", Request("GET", "/b")) == [
        (503, [("content-length", "0")]),
        (200, [("content-type", "text/plain"), ("content-length", "2")])]


def test_fail_closed_a_later_post_is_answered_before_its_body() -> None:
    assert _answers("fail_closed", Request("POST", "/b", body="xy")) == [
        (503, [("content-length", "0")]),
        (503, [("connection", "close"), ("content-length", "0")])]
