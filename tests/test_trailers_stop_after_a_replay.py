"""Trailers held while the request headers were stopped, when the filter stops on the body the
resume replays and then on the trailers: as Envoy 1.40 ran the probe of
tests/replay_trailers_probes.py (through parity, integration/test_envoy_probe_scenarios.py), the
next continue forwards the whole body and the trailers, the trailers callback runs once, and the
answer does not close the connection (the request had ended)."""
from __future__ import annotations

from proxywasm_host.parity import run_host
from replay_trailers_probes import BODIES, replay_trailers_scenarios


def test_a_continue_after_the_trailers_stop_forwards_the_held_body_and_trailers() -> None:
    side = run_host(replay_trailers_scenarios()["trailers_stop_after_a_replay"])
    assert [(e.status, e.upstream[1] if e.upstream else None) for e in side.exchanges] == [
        (200, "".join(body).encode()) for body in BODIES.values()]
    assert all("connection" not in dict(e.client_headers) for e in side.exchanges)
    assert [m for _, m in side.logs["'wasm log r:'"] if m != "c"] == ["an", "t", "ab", "t", "ae", "t"]
