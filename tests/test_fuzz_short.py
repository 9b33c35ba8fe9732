"""A short run of the fuzz campaign (fuzz/run.py, `make fuzz` for the long one).

Covers: seed 11, iterations 0-119, over the WAT seed modules, the two Zig filters and the
AssemblyScript and Rust SDK examples (those whose toolchain is missing are skipped by the
campaign and named in its report); about 60% are mutants of the module bytes (byte edits,
function-body and i32.const edits, import/export renames, ABI-marker swaps, section sizes),
driven through load_module, load_plugin(raise_on_trap=False), two HTTP exchanges and a TCP
exchange; the rest are hostile test-API inputs (headers, bodies, properties, configurations,
load options, streams driven out of order) on the unmutated modules. The Go examples are
left to `make fuzz`: compiling each Go mutant takes about 2 s.

Every iteration runs in a watched worker process, so a crash or a hang is a finding here,
not a dead pytest. Expected: no finding (only the host's own exceptions, TypeError/ValueError
naming the argument, or normal results).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fuzz"))
import run as fuzz_run

SEED = 11
ITERATIONS = 120


def test_short_fuzz_campaign_finds_nothing():
    summary = fuzz_run.run_campaign(seed=SEED, iterations=ITERATIONS, families={"wat", "zig", "as", "rust"},
                                    batch=60)
    report = fuzz_run.report(summary)
    print(report)
    assert summary.iterations == ITERATIONS, report
    assert not summary.findings, report
    assert sum(n for (_, mode), n in summary.per_source.items() if mode == "mutant") > 30, report


def test_a_crashing_or_hanging_iteration_is_reported_and_the_campaign_goes_on(monkeypatch):
    monkeypatch.setenv("PROXYWASM_FUZZ_SELFTEST", "crash:2,hang:4")
    summary = fuzz_run.run_campaign(seed=SEED, iterations=7, families={"wat"}, timeout=2.0)
    watched = {f["i"]: f for f in summary.findings if f["i"] in (2, 4)}
    assert {i: f["kind"] for i, f in watched.items()} == {2: "crash (SIGSEGV)", 4: "hang"}
    assert "Fatal Python error: Segmentation fault" in watched[2]["message"]  # the worker's last words
    assert summary.iterations == 7  # 3, 5 and 6 ran in fresh workers
    assert Path(watched[2]["reproducer"]).is_file()
    assert watched[2]["replay"].startswith("python fuzz/run.py --seed 11 --replay 2 ")
