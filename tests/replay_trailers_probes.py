"""A filter that stops at the request headers, stops again on the body replayed when a tick
continues it, and then on the trailers (the first time: it logs "t" each time its trailers
callback runs), until a tick continues it once more. What Envoy 1.40 then does (through parity,
integration/test_envoy_probe_scenarios.py) is pinned in the host by
tests/test_trailers_stop_after_a_replay.py."""
from __future__ import annotations

from body_probes import RESUME_ON_THE_SECOND_TICK, SAVE_FOR_THE_TICK, TICK_PERIOD, _by_last_byte
from proxywasm_host.parity import Filter, Request, Scenario
from watgen import build

#: 0x120: whether the trailers callback stopped already
TRAILERS = ("(i32.store8 (i32.const 0x2000) (i32.const 116))"
            " (drop (call $proxy_log (i32.const 2) (i32.const 0x2000) (i32.const 1)))"
            f" (if (i32.eqz (i32.load (i32.const 0x120))) (then (i32.store (i32.const 0x120) (i32.const 1))"
            f" {SAVE_FOR_THE_TICK} (return (i32.const 1)))) (i32.const 0)")
#: the bodies and what the replayed one answers by its last byte (body_probes._by_last_byte)
BODIES = {"/nobuffer": ["a", "n"], "/buffer": ["a", "b"], "/continue": ["a", "e"]}


def stop_at_the_trailers_after_a_replay() -> bytes:
    return build({
        "proxy_on_configure": TICK_PERIOD,
        "proxy_on_request_headers": f"(i32.store (i32.const 0x120) (i32.const 0)) {SAVE_FOR_THE_TICK} (i32.const 1)",
        "proxy_on_request_body": _by_last_byte(0, 0),
        "proxy_on_request_trailers": TRAILERS,
        "proxy_on_tick": RESUME_ON_THE_SECOND_TICK,
    })


def replay_trailers_scenarios() -> dict[str, Scenario]:
    return {"trailers_stop_after_a_replay": Scenario([Filter(stop_at_the_trailers_after_a_replay(), name="r")], [
        Request("POST", path, body=body, trailers={"x-t": "1"}) for path, body in BODIES.items()])}
