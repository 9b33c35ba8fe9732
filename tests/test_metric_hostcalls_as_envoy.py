"""The metric hostcalls as Envoy 1.40 answers them: ids per type (counters 4, 8; gauge 5; histogram
6), values read back after increments and records, a counter's delta of 0 or less refused, a
histogram neither read nor incremented, and an unknown id answered by the type its low bits name.
ENVOY_LINE is what Envoy logged for tests/hostcall_edge_probes.metrics_probe, measured through
proxywasm_host.parity.run_parity (each character: "a" + WasmResult, or "0" + a value)."""
from __future__ import annotations

from hostcall_edge_probes import metrics_scenario
from proxywasm_host.parity import run_host

ENVOY_LINE = "metrics " + "".join([
    "aaaa",  # define counter a, counter b, gauge g, histogram h: Ok
    "4856",  # their ids
    "acc",  # counter a += 3 Ok; counter b += 0 and += -1 BadArgument
    "a3", "a0",  # get a = 3, get b = 0
    "aa7",  # record gauge 7, get 7
    "aa5",  # gauge += -2, get 5
    "aa5",  # record 2 on counter a adds: 5
    "ca",  # get on the histogram BadArgument; record on it Ok
    "a",  # define a counter whose name is not UTF-8
    "bbb", "bbb", "ccb", "ccb",  # get/increment/record on unknown ids 1000 (counter), 1001 (gauge), 1002, 1003
])


def test_metric_hostcalls_answer_as_envoy() -> None:
    side = run_host(metrics_scenario())
    assert side.logs == {"'wasm log m:'": [("info", ENVOY_LINE)]}
    assert {k: v for k, v in side.metrics.items() if k.isascii()} == {"probe.a": 5, "probe.b": 0, "probe.g": 5}
