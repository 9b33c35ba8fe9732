"""SDK-built modules through the host, all on the Go SDK (wasip1, the heaviest guest runtime):

* bench/go/header_filter, the per-request figures. One request is request headers, response
  headers and teardown (proxy_on_log, proxy_on_done, proxy_on_delete): six guest calls and two
  hostcalls. With the configuration "log" the filter also logs every request and response header
  (eight proxy_log and two header-map reads more).
* examples/go/http_filter (3.5 MB): cold compile, load from the compile cache, a whole plugin
  load from the warm cache (instantiate, Go's _initialize, on_vm_start, on_configure), two
  processes that miss the cache at once, and one request through the full example filter.
* wat_header: the header filter's hostcalls from a hand-written module, no SDK or guest runtime:
  the host's own share of a request.

Targets (issue 14): >= 12k requests/s for the header filter and >= 5k/s for the one that logs;
a plugin load from the warm cache <= 25 ms; one compile, not one per process. Per-request and
load figures are CPU time measured against the raw crossing floor (floor.py); `*_floors` is
the cost as a multiple of that floor, `*_per_s` requests per second of one core's CPU time."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "go"), str(ROOT / "tests")]

import build_go  # noqa: E402
from floor import cold_compile_ms, cpu_ms, cpu_us  # noqa: E402
from watgen import build  # noqa: E402

from proxywasm_host import Host, load_module  # noqa: E402
from proxywasm_host import module as module_mod  # noqa: E402

HTTP_FILTER_CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'
REQ = {":method": "GET", ":path": "/bench", ":authority": "example.com"}
# The header filter's work without an SDK (the same two hostcalls, no guest runtime): what the
# host's own per-request cost is, next to the Go filter's.
WAT_HEADER_FILTER = build({
    "proxy_on_request_headers": "(drop (call $proxy_add_header_map_value (i32.const 0) {k} {v})) (i32.const 0)",
    "proxy_on_response_headers": "(drop (call $proxy_add_header_map_value (i32.const 2) {k} {r})) (i32.const 0)",
    "proxy_on_log": "nop", "proxy_on_done": "(i32.const 1)", "proxy_on_delete": "nop",  # the Go SDK's six callbacks
}, {"k": "x-bench", "v": "1", "r": "x-bench-response"})
LOAD_ONCE = "import sys; from proxywasm_host import load_module; print(load_module(sys.argv[1]).from_cache)"


def request_loop(plugin) -> Callable[[], None]:
    """One request through `plugin`, after a warm-up (the Go heap grows to its working size)."""

    def one_request() -> None:
        s = plugin.http_stream()
        s.send_request_headers(REQ, end_of_stream=True)
        s.send_response_headers({":status": "200"}, end_of_stream=True)
        s.complete()

    for _ in range(200):
        one_request()
    return one_request


def _per_request(results: dict[str, float], http_filter: bytes) -> None:
    header_filter = build_go.build("header_filter", root=ROOT / "bench" / "go").read_bytes()
    plugins = {
        "wat_header": Host().load_plugin(WAT_HEADER_FILTER),
        "go_header": Host().load_plugin(header_filter),
        "go_log_headers": Host().load_plugin(header_filter, configuration="log"),
        "go_http_filter": Host().load_plugin(http_filter, configuration=HTTP_FILTER_CONFIG),
    }
    us = cpu_us({name: (request_loop(p), 200) for name, p in plugins.items()})
    results["sdk_floor_crossing_us"] = us["floor"]
    for name in plugins:
        results[f"{name}_request_us"] = us[name]
        results[f"{name}_requests_per_s"] = 1e6 / us[name]
        results[f"{name}_request_floors"] = us[name] / us["floor"]


def _parallel_cold_load(wasm: Path, cache: str, processes: int = 2) -> tuple[float, float]:
    """(compiles, seconds) when `processes` fresh interpreters load `wasm` into an empty cache at once."""
    env = {**os.environ, "PROXYWASM_CACHE_DIR": cache}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", LOAD_ONCE, str(wasm)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    outputs = [p.communicate(timeout=600)[0].strip() for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a loader failed: {outputs}")
    return float(outputs.count("False")), time.perf_counter() - start


def _loads(results: dict[str, float], wasm: bytes, path: Path) -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["PROXYWASM_CACHE_DIR"] = cache
        try:
            results["go_module_cold_compile_ms"] = cold_compile_ms(wasm, Path(cache))

            def cached() -> None:
                module_mod._COMPILED.clear()
                assert load_module(wasm).from_cache

            def plugin_load() -> None:
                module_mod._COMPILED.clear()
                Host().load_plugin(wasm, configuration=HTTP_FILTER_CONFIG)

            results["go_module_cached_load_ms"] = cpu_ms(cached, 7)
            results["go_plugin_load_warm_cache_ms"] = cpu_ms(plugin_load, 7)
            wall = []
            for _ in range(7):
                t = time.perf_counter()
                plugin_load()
                wall.append((time.perf_counter() - t) * 1e3)
            results["go_plugin_load_warm_cache_wall_ms"] = statistics.median(wall)
        finally:
            del os.environ["PROXYWASM_CACHE_DIR"]
    with tempfile.TemporaryDirectory() as cache:
        compiles, seconds = _parallel_cold_load(path, cache)
        results["go_two_processes_cold_load_compiles"] = compiles
        results["go_two_processes_cold_load_wall_s"] = seconds


def run() -> dict[str, float]:
    path = build_go.build("http_filter")
    wasm = path.read_bytes()
    results = {"go_module_size_bytes": float(len(wasm))}
    _per_request(results, wasm)
    _loads(results, wasm, path)
    return results


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:40s} {v:12.2f}")
