"""Per-request cost of the host at an earlier commit and now, side by side in one run:

    .venv/bin/python bench/compare.py REV [--rounds N]

REV is checked out into a temporary git worktree; each round runs sdk_bench's per-request
figures once against REV's package and once against this checkout's, in fresh interpreters
taking turns (the two packages share a name, so they cannot share a process). The best round of
each side is printed, in µs and in floors of its own run. The benchmark code and the modules
are this checkout's on both sides."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_RUN = """
import json, sys
import proxywasm_host  # first: sdk_bench puts this checkout at the front of sys.path
assert proxywasm_host.__file__.startswith({package!r}), proxywasm_host.__file__
sys.path[:0] = [{bench!r}, {go!r}, {tests!r}]
import build_go, sdk_bench
results = {{}}
sdk_bench._per_request(results, build_go.build("http_filter").read_bytes())
print(json.dumps(results))
"""


def _one_run(package_root: Path) -> dict[str, float]:
    code = ONE_RUN.format(package=str(package_root), bench=str(ROOT / "bench"), go=str(ROOT / "examples" / "go"), tests=str(ROOT / "tests"))
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tempfile.gettempdir(), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _best(runs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Per request figure: (µs, floors) of the run where it was lowest."""
    out: dict[str, tuple[float, float]] = {}
    for run in runs:
        for key, us in run.items():
            if key.endswith("_request_us") and (key not in out or us < out[key][0]):
                out[key] = (us, us / run["sdk_floor_crossing_us"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.rev], check=True,
                       capture_output=True)
        try:
            for _ in range(args.rounds):
                runs["before"].append(_one_run(before))
                runs["now"].append(_one_run(ROOT))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    before_best, now_best = _best(runs["before"]), _best(runs["now"])
    print(f"{'per request (best of ' + str(args.rounds) + ')':34s} {args.rev[:12]:>22s} {'now':>22s}  ratio")
    for key, (us, floors) in before_best.items():
        now_us, now_floors = now_best[key]
        name = key.removesuffix("_request_us")
        print(f"{name:34s} {us:9.1f} µs ({floors:5.1f}) {now_us:9.1f} µs ({now_floors:5.1f})  {now_us / us:5.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
