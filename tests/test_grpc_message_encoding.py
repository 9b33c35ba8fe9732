"""How a filter's local-reply body becomes the grpc-message of Envoy's trailers-only gRPC answer:
percent-encoded as %XX with upper-case hex for the bytes below a space, "~" and above, and "%"
itself; the space and the rest of printable ASCII stay. The expected value is Envoy 1.40's answer
to this probe, measured through proxywasm_host.parity.run_parity."""
from __future__ import annotations

from probe_filters import GRPC, local_reply
from proxywasm_host.parity import Filter, Request, Scenario, run_host

#: around each edge: 0x1F and 0x20, "}" (0x7D), "~" (0x7E) and DEL (0x7F), "%", bytes with hex letters, NUL and 0xFF
BODY = b"a b}~%\x1f\x20\x7f\x80\xc3\xa9\xff\x00z"
ENVOY_GRPC_MESSAGE = "a b}%7E%25%1F %7F%80%C3%A9%FF%00z"


def test_the_body_is_percent_encoded_as_envoy_does() -> None:
    scenario = Scenario([Filter(local_reply(403, [], BODY), name="g")],
                        [Request("POST", "/svc/M", GRPC, body="\0\0\0\0\0")])
    (exchange,) = run_host(scenario).exchanges
    assert dict(exchange.client_headers)["grpc-message"] == ENVOY_GRPC_MESSAGE
