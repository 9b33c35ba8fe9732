"""The network-filter behaviours tests/test_tcp_semantics.py pins in the host, measured in a real
Envoy 1.40 with the same probe modules through parity (an echo upstream behind tcp_proxy)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tcp_probes import tcp_scenarios  # noqa: E402


@pytest.mark.parametrize("name", ["upstream_hold", "continue_reading", "new_connection_stop", "http_stream_types",
                                  "status", "properties"])
def test_network_filter_semantics(name: str) -> None:
    report = run_parity(tcp_scenarios()[name])
    assert report.identical, report.text()
