"""A request that skips a failed filter (fail_open) keeps its end of stream, as Envoy 1.40 answered
(measured through proxywasm_host.parity.run_parity with this scenario: identical in Envoy and the
host): the trapping GET gets 503, the next GET passes upstream, and neither answer carries
`connection: close` (the mark of a response that started before its request ended)."""
from __future__ import annotations

from proxywasm_host.parity import Filter, Request, Scenario, run_host
from watgen import build


def test_fail_open_a_skipped_get_ends_its_request_so_the_answer_keeps_the_connection() -> None:
    trap = Filter(build({"proxy_on_request_headers": "unreachable"}), name="t", failure_policy="fail_open")
    side = run_host(Scenario([trap], [Request("GET", "/a"), Request("GET", "/b")]))
    assert [(e.status, e.client_headers) for e in side.exchanges] == [
        (503, [("content-length", "0")]),
        (200, [("content-type", "text/plain"), ("content-length", "2")])]
