"""A stream made current in the callout's answer reads the callout's body (the root context's), as
Envoy 1.40 did with the probe of tests/call_body_probes.py (through parity,
integration/test_envoy_probe_scenarios.py): the SDKs read a stream's callout answer this way."""
from __future__ import annotations

from call_body_probes import call_body_scenarios
from proxywasm_host.parity import run_host


def test_a_stream_reads_the_callout_body_in_its_answer() -> None:
    side = run_host(call_body_scenarios()["call_body_from_a_stream"])
    assert side.logs["'wasm log cb:'"] == [("info", "callout body")]
    assert [e.status for e in side.exchanges] == [200]
