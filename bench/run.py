"""`make bench`: every benchmark in one run, printed and written to bench/results.json
(name -> number, the unit in the name)."""
from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

SUITES = ("host_bench", "sdk_bench", "filters_bench", "envoy_bench", "latency_bench", "reload_bench", "hardening_bench")


def main() -> int:
    results: dict[str, float] = {}
    failed = []
    for name in SUITES:
        print(f"== {name}", flush=True)
        load_at_start = os.getloadavg()[0]
        try:
            suite = importlib.import_module(name).run()
        except Exception:  # a broken suite must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
            continue
        # The machine is shared: each figure is printed with the load it was measured under.
        suite[f"{name}_load_average_1min"] = load = (load_at_start + os.getloadavg()[0]) / 2
        for key, value in suite.items():
            print(f"{key:50s} {value:14.2f}   (load average {load:.2f})", flush=True)
        results.update(suite)
    (HERE / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {HERE / 'results.json'} ({len(results)} figures)")
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
