"""Host benchmarks: compile vs cached load, cost per guest call, per hostcall, and per
on_request_headers of a filter that reads one header and adds one.

Per-call figures are CPU time against the raw crossing floor (floor.py); the compile and
cached-load figures are wall-clock medians. Compare figures from the same run (this machine
is noisy)."""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from proxywasm_host import Host, load_module  # noqa: E402
from proxywasm_host import module as module_mod  # noqa: E402
from watgen import build  # noqa: E402

from floor import cold_compile_ms, cpu_us  # noqa: E402

REQ = {":method": "GET", ":path": "/bench", ":authority": "example.com", "user-agent": "bench"}

HEADER_FILTER = build(
    {
        "proxy_on_request_headers": "(drop (call $proxy_get_header_map_value (i32.const 0) {path} (i32.const 0x100) (i32.const 0x104)))"
        " (drop (call $proxy_add_header_map_value (i32.const 0) {k} {v})) (global.set $bump (i32.const 0x8000)) (i32.const 0)",
    },
    {"path": ":path", "k": "x-bench", "v": "1"},
    extra='(func (export "nop") (param i32) (result i32) (local.get 0))'
    ' (func (export "hostcalls") (param $n i32) (result i32) (block $done (loop $l'
    ' (br_if $done (i32.eqz (local.get $n))) (drop (call $proxy_get_log_level (i32.const 0x100)))'
    ' (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br $l))) (i32.const 0))',
)


def _compile_figures(results: dict[str, float]) -> None:
    from filters_path import jwt_module  # built by filters/build.py; the largest module we have

    wasm = jwt_module()
    results["module_size_bytes"] = float(len(wasm))
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["PROXYWASM_CACHE_DIR"] = cache
        results["module_cold_compile_ms"] = cold_compile_ms(wasm, Path(cache))
        warm = []
        for _ in range(3):
            module_mod._COMPILED.clear()
            t = time.perf_counter()
            assert load_module(wasm).from_cache
            warm.append(time.perf_counter() - t)
        del os.environ["PROXYWASM_CACHE_DIR"]
    results["module_cached_load_ms"] = statistics.median(warm) * 1e3


def run() -> dict[str, float]:
    results: dict[str, float] = {}
    plugin = Host(connection_manager_defaults=False).load_plugin(HEADER_FILTER)
    vm = plugin.workers[0].vm
    n = 2000

    def one_stream() -> None:
        plugin.http_stream().send_request_headers(REQ)

    stream = plugin.http_stream()
    stream.send_request_headers(REQ)
    stream.request.headers_readable = True  # keep the map readable to time the callback alone
    us = cpu_us({
        "guest_call": (lambda: vm.call("nop", 1), 5000),
        "no_hostcall": (lambda: vm.call("hostcalls", 0), 2000),
        "hostcalls": (lambda: vm.call("hostcalls", n), 5),
        "stream": (one_stream, 500),
        "callback": (lambda: stream.invoke("proxy_on_request_headers", stream.id, 4, 1), 2000),
    })
    results["host_floor_crossing_us"] = us["floor"]
    results["guest_call_us"] = us["guest_call"]
    results["hostcall_us"] = (us["hostcalls"] - us["no_hostcall"]) / n
    results["http_stream_on_request_headers_us"] = us["stream"]
    results["on_request_headers_callback_us"] = us["callback"]
    try:
        _compile_figures(results)
    except FileNotFoundError as e:
        print(f"compile figures skipped: {e}", file=sys.stderr)
    return results


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:40s} {v:12.2f}")
