"""SDK-built modules: the Go SDK example (examples/go/http_filter, 3.5 MB, Go wasip1 runtime).

Figures: cold compile (no cache), load from the on-disk compile cache, a whole plugin load
from that warm cache (instantiate, Go's _initialize, on_vm_start, on_configure), and one
request (request headers, response headers, teardown). Compare with host_bench's
guest_call_us from the same run: it is the raw crossing floor."""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "go")]

import build_go  # noqa: E402

from proxywasm_host import Host, load_module  # noqa: E402
from proxywasm_host import module as module_mod  # noqa: E402

CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'
REQ = {":method": "GET", ":path": "/bench", ":authority": "example.com"}


def _ms(fn, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def run() -> dict[str, float]:
    wasm = build_go.build("http_filter").read_bytes()
    results = {"go_module_size_bytes": float(len(wasm))}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["PROXYWASM_CACHE_DIR"] = cache

        def cold() -> None:
            for f in Path(cache).glob("*.cwasm"):
                f.unlink()
            module_mod._COMPILED.clear()
            load_module(wasm)

        def cached() -> None:
            module_mod._COMPILED.clear()
            assert load_module(wasm).from_cache

        def plugin_load() -> None:
            module_mod._COMPILED.clear()
            Host().load_plugin(wasm, configuration=CONFIG)

        results["go_module_cold_compile_ms"] = _ms(cold, 3)
        results["go_module_cached_load_ms"] = _ms(cached, 7)
        results["go_plugin_load_warm_cache_ms"] = _ms(plugin_load, 7)
        del os.environ["PROXYWASM_CACHE_DIR"]

    plugin = Host().load_plugin(wasm, configuration=CONFIG)

    def one_request() -> None:
        s = plugin.http_stream()
        s.send_request_headers(REQ, end_of_stream=True)
        s.send_response_headers({":status": "200"}, end_of_stream=True)
        s.complete()

    for _ in range(200):
        one_request()  # warm up the Go heap
    results["go_request_us"] = _ms(lambda: [one_request() for _ in range(500)], 5) * 1e3 / 500
    return results


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:40s} {v:12.2f}")
