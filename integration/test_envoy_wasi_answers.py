"""The answers tests/test_wasi_answers.py and tests/test_foreign_function_answers.py pin in the host
(WASI, foreign functions, envoy_resolve_dns, proxy_log at its edges), compared with a real Envoy 1.40
through parity with the same probe module."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wasi_probes import wasi_scenarios  # noqa: E402


@pytest.mark.parametrize("name", sorted(wasi_scenarios()))
def test_identical_to_envoy(name: str) -> None:
    report = run_parity(wasi_scenarios()[name])
    assert report.identical, report.text()
