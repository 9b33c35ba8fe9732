"""Host(extra_vms=True) against Envoy 1.40: the canary and main-thread VMs run on_vm_start and
on_configure as Envoy's do, so their counts, logs and ticks agree (tests/test_envoy_observed.py
holds the WAT filter and the host-only test)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from proxywasm_host import Host
from proxywasm_host.envoy import WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_envoy_observed import EXTRA_VMS_FILTER, EXTRA_VMS_STRINGS  # noqa: E402
from watgen import build  # noqa: E402


@pytest.mark.parametrize("workers", [1, 2])
def test_start_counts_and_logs_match_envoy(workers: int) -> None:
    wasm = build(EXTRA_VMS_FILTER, EXTRA_VMS_STRINGS)
    host = Host(extra_vms=True)
    plugin = host.load_plugin(wasm, workers=workers)
    with envoy_harness([WasmFilter("f", wasm, configuration="")], concurrency=workers) as env:
        assert env.stat("wasmcustom.starts") == host.metrics["starts"] == workers + 2
        envoy_logs = [line for line in env.wasm_log() if line.endswith("vm started")]
        assert len(envoy_logs) == len(plugin.logs) == workers + 2
        first, t0 = env.stat("wasmcustom.ticks"), time.monotonic()
        time.sleep(1.0)
        envoy_ticks, elapsed = env.stat("wasmcustom.ticks") - first, time.monotonic() - t0
    before = host.metrics["ticks"] if "ticks" in host.metrics else 0
    host.clock.advance(seconds=elapsed)
    # main thread + workers tick every 100 ms in both; Envoy's timers drift by up to a period per VM
    assert abs(envoy_ticks - (host.metrics["ticks"] - before)) <= 2 * (workers + 1)
