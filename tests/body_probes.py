"""WAT HTTP filters that probe how Envoy 1.40 runs body callbacks: each body status a filter can
return, a continue from inside a body callback, and what the next hop then receives. The same
scenarios run in the host (tests/test_body_phases.py) and in Envoy through parity
(integration/test_envoy_probe_scenarios.py)."""
from __future__ import annotations

from probe_filters import CALLOUT, CALLOUT_HEADERS, RESUME, SAVE_CTX
from proxywasm_host.parity import Filter, Request, Response, Scenario
from watgen import build

#: logs the status of reading the request headers' size ("a" + WasmResult)
HEADERS_STATUS = ("(i32.store8 (i32.const 0x2000) (i32.add (i32.const 97) (call $proxy_get_header_map_size (i32.const 0)"
                  " (i32.const 0x110)))) (drop (call $proxy_log (i32.const 2) (i32.const 0x2000) (i32.const 1)))")
#: the last byte of the body the callback sees
LAST = ("(drop (call $proxy_get_buffer_bytes (i32.const {buffer}) (i32.sub (local.get $size) (i32.const 1))"
        " (i32.const 1) (i32.const 0x100) (i32.const 0x104))) (i32.load8_u (i32.load (i32.const 0x100)))")


def _by_last_byte(buffer: int, direction: int, first: str = "") -> str:
    """A body callback that logs the status of reading the request headers and the body it sees,
    and answers by its last byte: "b" StopIterationAndBuffer (1), "w" StopIterationAndWatermark (2),
    "n" StopIterationNoBuffer (3), "x" an unknown 7, "c" a continue from inside the callback that
    then returns 1; anything else, and the end of stream, Continue. `first` runs before it all."""
    last = LAST.format(buffer=buffer)
    answers = " ".join(f"(if (i32.eq (local.get 3) (i32.const {ord(k)})) (then (return (i32.const {v}))))"
                       for k, v in (("b", 1), ("w", 2), ("n", 3), ("x", 7)))
    return f"""
    (local i32)
    {first}
    {HEADERS_STATUS}
    (if (i32.or (local.get $eos) (i32.eqz (local.get $size))) (then (return (i32.const 0))))
    (drop (call $proxy_get_buffer_bytes (i32.const {buffer}) (i32.const 0) (local.get $size) (i32.const 0x100) (i32.const 0x104)))
    (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))
    (local.set 3 {last})
    {answers}
    (if (i32.eq (local.get 3) (i32.const 99))
      (then (drop (call $proxy_continue_stream (i32.const {direction}))) (return (i32.const 1))))
    (i32.const 0)"""


def body_status() -> bytes:
    return build({"proxy_on_request_body": _by_last_byte(0, 0), "proxy_on_response_body": _by_last_byte(1, 1)})


def wait_at_the_end(at_end: int = 1) -> bytes:
    """Buffers the request body (StopIterationAndBuffer) and, at its end, asks cluster "auth" and
    stops with `at_end` (StopIterationAndBuffer, or 3: StopIterationNoBuffer); the trailers
    callback asks too and stops. The callout's answer continues the request. Each body and
    trailers callback logs the status of reading the request headers ("a" + WasmResult)."""
    ask = f"(drop {CALLOUT}) {SAVE_CTX}"
    return build({
        "proxy_on_request_body": f"""{HEADERS_STATUS}
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    {ask} (i32.const {at_end})""",
        "proxy_on_request_trailers": f"{HEADERS_STATUS} {ask} (i32.const 1)",
        "proxy_on_http_call_response": RESUME,
    }, {"auth": "auth", "callout": CALLOUT_HEADERS})


#: the stream context saved for the tick, and the ticks counted since
SAVED, TICKS = "(i32.load (i32.const 0x10c))", "(i32.load (i32.const 0x118))"
SAVE_FOR_THE_TICK = f"{SAVE_CTX} (i32.store (i32.const 0x118) (i32.const 0))"
TICK_PERIOD = "(drop (call $proxy_set_tick_period_milliseconds (i32.const 200))) (i32.const 1)"
#: on_tick: continues the saved stream on the second tick after it was saved
RESUME_ON_THE_SECOND_TICK = f"""(if {SAVED} (then (i32.store (i32.const 0x118) (i32.add {TICKS} (i32.const 1)))))
    (if (i32.eq {TICKS} (i32.const 2)) (then {RESUME} (i32.store (i32.const 0x10c) (i32.const 0))))"""


def replay_after_a_stop_all() -> bytes:
    """Stops at the request headers (StopAllIterationAndWatermark: Envoy holds the body and the
    trailers) and continues on the second tick after them (200 ms apart: the whole request has
    arrived), so the held body replays through the body callback of body_status(); the trailers
    callback logs "t" and continues; on_log logs request.size (the body bytes received) as a digit."""
    return build({
        "proxy_on_configure": TICK_PERIOD,
        "proxy_on_request_headers": f"{SAVE_FOR_THE_TICK} (i32.const 1)",
        "proxy_on_request_body": _by_last_byte(0, 0),
        "proxy_on_request_trailers": "(i32.store8 (i32.const 0x2000) (i32.const 116))"
                                     " (drop (call $proxy_log (i32.const 2) (i32.const 0x2000) (i32.const 1))) (i32.const 0)",
        "proxy_on_tick": RESUME_ON_THE_SECOND_TICK,
        "proxy_on_log": "(drop (call $proxy_get_property {size} (i32.const 0x100) (i32.const 0x104)))"
                        " (i32.store8 (i32.const 0x2000) (i32.add (i32.const 48) (i32.load8_u (i32.load (i32.const 0x100)))))"
                        " (drop (call $proxy_log (i32.const 2) (i32.const 0x2000) (i32.const 1)))",
    }, {"size": "request\0size"})


def resume_on_a_tick(at_headers: bool = False) -> bytes:
    """body_status() for the request, whose first body callback (`at_headers`: whose headers
    callback, which then stops: StopAllIterationAndWatermark) has the second tick after it
    continue the request: a resume from outside any body callback, between two chunks."""
    if at_headers:
        headers, first = f"{SAVE_FOR_THE_TICK} (i32.const 1)", ""
    else:
        headers = "(i32.store (i32.const 0x11c) (i32.const 0)) (i32.const 0)"
        first = f"(if (i32.eqz (i32.load (i32.const 0x11c))) (then {SAVE_FOR_THE_TICK} (i32.store (i32.const 0x11c) (i32.const 1))))"
    return build({
        "proxy_on_configure": TICK_PERIOD,
        "proxy_on_request_headers": headers,
        "proxy_on_request_body": _by_last_byte(0, 0, first),
        "proxy_on_tick": RESUME_ON_THE_SECOND_TICK,
    })


#: chunks through resume_on_a_tick(at_headers), each sent once Envoy is done with the one before
#: (the tick continues the request after the first): what the body callbacks saw, what the
#: upstream got (measured on 1.40 by integration/test_envoy_probe_scenarios.py). After a resume
#: from StopIterationAndBuffer the next chunk still joins Envoy's (now empty) buffer, which
#: NoBuffer then keeps; a body held while the headers were stopped replays as that buffer itself,
#: which NoBuffer keeps too.
BETWEEN_CHUNKS = [
    (False, ["ab", "cd", "ee"], ["ab", "cd", "ee"], b"abcdee"),
    (False, ["ab", "cb", "ee"], ["ab", "cb", "cbee"], b"abcbee"),
    (False, ["ab", "cn", "ee"], ["ab", "cn", "ee"], b"abcnee"),
    (True, ["an", "ee"], ["an", "ee"], b"anee"),
    (True, ["ab", "ee"], ["ab", "abee"], b"abee"),
]
BETWEEN_IDS = [("headers-" if h else "") + c[-2] for h, c, _, _ in BETWEEN_CHUNKS]


def body_scenarios() -> dict[str, Scenario]:
    post = "POST"
    return {
        "request_body_statuses": Scenario([Filter(body_status(), name="b")], [
            Request(post, "/buffer", body=["ab", "cb", "dd"]),
            Request(post, "/nobuffer", body=["an", "bd"]),
            Request(post, "/continue", body=["ac", "e"]),
            Request(post, "/rebuffer", body=["ab", "cc", "e"]),
            Request(post, "/unknown", body=["ax", "y"]),
        ]),
        # Envoy keeps the filter's buffer: the next chunk joins it before the callback only after
        # StopIterationAndBuffer; Watermark and NoBuffer show the chunk alone, NoBuffer drops the
        # chunk but keeps the buffer, and Continue (or a resume) forwards the buffer
        "body_buffering": Scenario([Filter(body_status(), name="b")], [
            Request(post, "/watermark", body=["aw", "bc", "e"]),
            Request(post, "/nobuffer_keeps", body=["ab", "cn", "dx", "ee"]),
            Request(post, "/continue_after_nobuffer", body=["an", "bc", "e"]),
            Request(post, "/watermark_then_buffer", body=["aw", "bb", "cd"]),
        ], upstream=Response(body="aw")),
        # the body held while the headers were stopped replays at the resume; when the filter stops
        # on it, Envoy still gives it the trailers, and if it continues drops that body and runs
        # the trailers callback again
        "replay_after_a_stop_all": Scenario([Filter(replay_after_a_stop_all(), name="r")], [
            Request(post, "/nobuffer", body=["a", "n"], trailers={"x-t": "1"}),
            Request(post, "/buffer", body=["a", "b"], trailers={"x-t": "1"}),
            Request(post, "/continue", body=["a", "e"], trailers={"x-t": "1"}),
            Request(post, "/end", body=["a", "n"]),
        ]),
        "wait_nobuffer_at_the_end": Scenario([Filter(wait_at_the_end(3), name="w")], [
            Request(post, "/buffer", body=["ab", "cn"])], callouts={"auth": Response()}),
        "wait_at_the_end": Scenario([Filter(wait_at_the_end(), name="w")], [
            Request(post, "/buffer", body=["ab", "cd"]), Request(post, "/trailers", body=["ab"], trailers={"x-t": "1"})], callouts={"auth": Response()}),
    }
