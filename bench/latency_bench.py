"""How long the execution deadline takes to stop an infinite loop: a figure the tests no longer
assert (a wall-clock bound in a test fails on a loaded machine). How soon a published filter is
served is bench/reload_bench.py's."""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from proxywasm_host import DeadlineExceeded, Host  # noqa: E402
from watgen import build  # noqa: E402

REQ = {":method": "GET", ":path": "/", ":authority": "a"}
DEADLINE_MS = 200


def deadline_stop_ms() -> float:
    plugin = Host().load_plugin(build({"proxy_on_request_headers": "(loop $l (br $l)) (i32.const 0)"}), deadline_ms=DEADLINE_MS)
    start = time.perf_counter()
    try:
        plugin.http_stream().send_request_headers(REQ)
    except DeadlineExceeded:
        return (time.perf_counter() - start) * 1000
    raise RuntimeError("the infinite loop returned")


def run() -> dict[str, float]:
    return {f"deadline_{DEADLINE_MS}ms_stops_loop_after_ms": deadline_stop_ms()}


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:50s} {value:10.1f}")
