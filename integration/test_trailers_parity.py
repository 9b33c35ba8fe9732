"""Parity for trailers a filter adds at the end of a message (WAT): Envoy's HTTP/1.1 codec sends
them only after a chunked body; a message framed by its content-length goes without them. Both
directions, with an upstream answering by content-length and chunked."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import Filter, Request, Response, Scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from watgen import build  # noqa: E402

ADD = "(if (local.get $eos) (then (drop (call $proxy_add_header_map_value (i32.const {map}) {{k}} {{v}})))) (i32.const 0)"
ADDED = [("x-added", "1")]


@pytest.fixture(scope="module")
def adds_trailers() -> bytes:
    """On the last body chunk of each direction: add the trailer x-added: 1 (request trailers map 1,
    response trailers map 3)."""
    return build({"proxy_on_request_body": ADD.format(map=1), "proxy_on_response_body": ADD.format(map=3)},
                 {"k": "x-added", "v": "1"})


@pytest.mark.parametrize("upstream_trailers,client_trailers", [(None, []), ({}, ADDED)],
                         ids=["content-length", "chunked"])
def test_added_trailers_go_only_after_a_chunked_body(adds_trailers, proxywasm_parity, upstream_trailers,
                                                     client_trailers) -> None:
    report = proxywasm_parity(Scenario([Filter(adds_trailers)], [
        Request("POST", "/length", body="abc"), Request("POST", "/chunks", body=["abc"])],
        upstream=Response(200, {"content-type": "text/plain"}, "12345", trailers=upstream_trailers)))
    e = report.envoy.exchanges
    assert [x.upstream_trailers for x in e] == [[], ADDED]
    assert [x.client_trailers for x in e] == [client_trailers] * 2
