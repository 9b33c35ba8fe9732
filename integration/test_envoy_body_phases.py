"""The body-callback behaviours tests/test_body_phases.py pins in the host, measured in a real
Envoy 1.40 with the same probe module through parity."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from body_probes import body_scenarios  # noqa: E402


@pytest.mark.parametrize("name", ["request_body_statuses"])
def test_body_phases(name: str) -> None:
    report = run_parity(body_scenarios()[name])
    assert report.identical, report.text()
