"""A filter that holds the request for a callout and, when the answer comes (to the root context),
makes the stream current and logs the callout's body read from there, then lets the request go
on: what a stream context reads of the callout answer in Envoy 1.40 (through parity,
integration/test_envoy_probe_scenarios.py), pinned in the host by tests/test_call_body_from_a_stream.py."""
from __future__ import annotations

from probe_filters import CALLOUT, CALLOUT_HEADERS, RESUME, SAVE_CTX
from proxywasm_host.parity import Filter, Request, Response, Scenario
from watgen import build

SET_CTX = "(drop (call $proxy_set_effective_context (i32.load (i32.const 0x10c))))"
#: the whole callout body (buffer type 4) logged, or "-" if reading it fails
LOG_BODY = ("(if (i32.eqz (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get $body)"
            " (i32.const 0x100) (i32.const 0x104)))"
            " (then (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))))"
            " (else (drop (call $proxy_log (i32.const 2) {dash}))))")


def call_body_from_a_stream() -> bytes:
    return build({
        "proxy_on_request_headers": f"(drop {CALLOUT}) {SAVE_CTX} (i32.const 1)",
        "proxy_on_http_call_response": f"{SET_CTX} {LOG_BODY} {RESUME}",
    }, {"auth": "auth", "callout": CALLOUT_HEADERS, "dash": "-"})


def call_body_scenarios() -> dict[str, Scenario]:
    return {"call_body_from_a_stream": Scenario([Filter(call_body_from_a_stream(), name="cb")], [Request("GET", "/a")],
                                                callouts={"auth": Response(200, {}, "callout body")})}
