"""The codec's content-length: 0 on a local reply goes only where no content-length is left after
the filter's own response-headers callback, as Envoy 1.40 answered these probes through parity
(run_parity, 2026-11-30: the client got exactly these headers from Envoy): a filter that adds
`content-length: 0` to its empty reply gets one such header, not two; a filter that removes the
content-length of its reply with a body gets a chunked answer, not `content-length: 0`."""
from __future__ import annotations

from proxywasm_host.memory import serialize_pairs
from proxywasm_host.parity import Filter, Request, Scenario, run_host
from watgen import build

ADD_LENGTH = "(drop (call $proxy_add_header_map_value (i32.const 2) {cl} {zero})) (i32.const 0)"
REMOVE_LENGTH = "(drop (call $proxy_remove_header_map_value (i32.const 2) {cl})) (i32.const 0)"


def _reply_then(body: str, on_response_headers: str) -> bytes:
    """Answers 403 with `body` from its request headers, then edits that answer's headers."""
    strings = {"details": b"probe", "body": body or "-", "headers": serialize_pairs([]), "cl": "content-length", "zero": "0"}
    body_arg = "{body}" if body else "(i32.const 0) (i32.const 0)"
    return build({
        "proxy_on_request_headers": f"(drop (call $proxy_send_local_response (i32.const 403) {{details}} {body_arg}"
                                    " {headers} (i32.const -1))) (i32.const 0)",
        "proxy_on_response_headers": on_response_headers,
    }, strings)


def _client_answer(module: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    (exchange,) = run_host(Scenario([Filter(module, name="l")], [Request("GET", "/x")])).exchanges
    return exchange.status, exchange.client_headers, exchange.client_body


def test_a_content_length_the_filter_added_to_its_empty_reply_is_not_doubled() -> None:
    assert _client_answer(_reply_then("", ADD_LENGTH)) == (403, [("content-length", "0")], b"")


def test_a_reply_body_whose_length_the_filter_removed_goes_chunked() -> None:
    assert _client_answer(_reply_then("denied", REMOVE_LENGTH)) == (
        403, [("content-type", "text/plain"), ("transfer-encoding", "chunked")], b"denied")
