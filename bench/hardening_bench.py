"""Issue #11's numbers: how soon each kind of runaway guest is stopped (with a 200 ms deadline and
with the default one), how much the process's RSS grows over 100 hostile events, and how long a
10 MB body takes to go through a filter in 10k and in 1k chunks. Figures, not assertions: the
tests pin the outcomes (tests/test_hardening.py, tests/test_hardening_audit.py)."""
from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from proxywasm_host import DeadlineExceeded, GuestTrap, Host, PluginRejected  # noqa: E402
from proxywasm_host.vm import DEFAULT_DEADLINE_MS  # noqa: E402
from watgen import build  # noqa: E402

_spec = importlib.util.spec_from_file_location("fuzz_campaign", ROOT / "fuzz" / "run.py")
fuzz_campaign = sys.modules["fuzz_campaign"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_campaign)  # its rss_mb(): the RSS the fuzz workers report

REQ = {":method": "GET", ":path": "/", ":authority": "a"}
FD_WRITE = {"wasi_snapshot_preview1.fd_write": "(param i32 i32 i32 i32) (result i32)"}
QUEUE = {f"proxy_{op}_shared_queue": "(param i32 i32 i32) (result i32)" for op in ("register", "enqueue", "dequeue")}
REPEATS = 3


def _iovecs(count: int) -> str:
    """`count` iovecs at 0x10000, each over the same 16 MiB from 0x10000 (memory grown to fit)."""
    fill = ("(local.set $ctx (i32.const 0)) (loop $i (i32.store (i32.add (i32.const 0x10000) (i32.shl (local.get $ctx) (i32.const 3)))"
            " (i32.const 0x10000)) (i32.store (i32.add (i32.const 0x10004) (i32.shl (local.get $ctx) (i32.const 3))) (i32.const 0x1000000))"
            f" (local.set $ctx (i32.add (local.get $ctx) (i32.const 1))) (br_if $i (i32.lt_u (local.get $ctx) (i32.const {count}))))")
    return "(drop (memory.grow (i32.const 300))) " + fill


def _fd_write_loop(count: int) -> bytes:
    write = f"(drop (call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0x10000) (i32.const {count}) (i32.const 0x100)))"
    return build({"proxy_on_request_headers": _iovecs(count) + f" (loop $l {write} (br $l)) (i32.const 0)"}, imports=FD_WRITE)


#: each runaway kind's module; the guest runs away in proxy_on_request_headers
RUNAWAYS: dict[str, Callable[[], bytes]] = {
    "infinite_loop": lambda: build({"proxy_on_request_headers": "(loop $l (br $l)) (i32.const 0)"}),
    "runaway_allocator": lambda: build(
        {"proxy_on_request_headers": "(drop (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"},
        allocator=(), extra='(func (export "malloc") (param i32) (result i32) (loop $l (br $l)) (i32.const 0))'),
    "table_grow_1e8": lambda: build({"proxy_on_request_headers": "(drop (table.grow $t (ref.null func) (i32.const 100000000))) (i32.const 0)"},
                                    extra="(table $t 1 funcref)"),
    "memory_grow_past_limit": lambda: build({"proxy_on_request_headers":
                                             "(loop $l (br_if $l (i32.ge_s (memory.grow (i32.const 16)) (i32.const 0)))) unreachable"}),
    "fd_write_64_iovecs_of_16MiB_loop": lambda: _fd_write_loop(64),
    "fd_write_65536_iovecs_of_16MiB_loop": lambda: _fd_write_loop(1 << 16),
    "queue_ready_reenqueues": lambda: build({
        "proxy_on_vm_start": "(drop (call $proxy_register_shared_queue {q} (i32.const 0x300))) (i32.const 1)",
        "proxy_on_request_headers": "(drop (call $proxy_enqueue_shared_queue (i32.load (i32.const 0x300)) {m})) (i32.const 0)",
        "proxy_on_queue_ready": "(drop (call $proxy_dequeue_shared_queue (local.get $q) (i32.const 0x310) (i32.const 0x314)))"
                                " (drop (call $proxy_enqueue_shared_queue (local.get $q) {m}))",
    }, {"q": "loop", "m": "again"}, imports=QUEUE),
}


def stop_ms(wasm: bytes, deadline_ms: int) -> tuple[float, str]:
    """Milliseconds from the request to control back in the test, and how it ended."""
    stream = Host().load_plugin(wasm, deadline_ms=deadline_ms, raise_on_trap=True).http_stream()
    start = time.perf_counter()
    try:
        stream.send_request_headers(REQ, end_of_stream=True)
        outcome = "returned"
    except DeadlineExceeded:
        outcome = "DeadlineExceeded"
    except GuestTrap as trap:
        outcome = f"GuestTrap: {trap.detail}"
    return (time.perf_counter() - start) * 1000, outcome


def runaway_figures() -> dict[str, float]:
    out = {}
    for kind, make in RUNAWAYS.items():
        wasm = make()
        for deadline in (200, DEFAULT_DEADLINE_MS):
            runs = [stop_ms(wasm, deadline) for _ in range(REPEATS)]
            ms = statistics.median(t for t, _ in runs)
            print(f"  {kind} (deadline {deadline} ms): {ms:.1f} ms, {runs[0][1][:110]}", flush=True)
            out[f"hardening_stop_{kind}_deadline_{deadline}ms_ms"] = ms
    return out


def _hostile_events() -> list[Callable[[Host], None]]:
    """One of each hostile event, each on a new plugin of the given Host."""
    fill = "(drop (memory.grow (i32.const 1000))) (memory.fill (i32.const 0x10000) (i32.const 1) (i32.const 60000000))"
    grow_trap = build({"proxy_on_request_headers": fill + " unreachable"})
    refused = build({"proxy_on_configure": fill + " (i32.const 0)"})
    runaways = [make() for make in RUNAWAYS.values()]

    def request(wasm: bytes, **options) -> Callable[[Host], None]:
        def event(host: Host) -> None:
            try:
                host.load_plugin(wasm, raise_on_trap=False, **options).http_stream().send_request_headers(REQ, end_of_stream=True)
            except (DeadlineExceeded, PluginRejected):
                pass
        return event

    return [request(grow_trap), request(refused)] + [request(w, deadline_ms=20) for w in runaways]


def rss_growth_mb(events: int = 100, fresh_host: bool = True) -> float:
    """RSS growth over `events` hostile events after one warm-up round of each kind; a new Host per
    event (as the pytest fixture gives each test), or all on one Host (a long test)."""
    kinds = _hostile_events()
    host = Host()
    for event in kinds:
        event(Host() if fresh_host else host)
    gc.collect()
    before = fuzz_campaign.rss_mb()
    for i in range(events):
        kinds[i % len(kinds)](Host() if fresh_host else host)
    gc.collect()
    return fuzz_campaign.rss_mb() - before


def body_seconds(chunks: int, total: int = 10_000_000) -> tuple[float, float]:
    """(wall, CPU) seconds to send a `total`-byte body in `chunks` chunks through a pass-through filter."""
    stream = Host().load_plugin(build({"proxy_on_request_body": "(i32.const 0)"})).http_stream()
    stream.send_request_headers({**REQ, ":method": "POST"})
    chunk = b"x" * (total // chunks)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(chunks):
        stream.send_request_body(chunk, end_of_stream=i == chunks - 1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert stream.upstream_request.body_size == total  # a figure for a body that did not arrive would be no figure
    return wall, cpu


def run() -> dict[str, float]:
    out = runaway_figures()
    for fresh in (True, False):
        out[f"hardening_rss_growth_100_hostile_events_{'fresh_hosts' if fresh else 'one_host'}_mb"] = rss_growth_mb(fresh_host=fresh)
    for chunks in (10_000, 1_000):
        wall, cpu = body_seconds(chunks)
        out[f"hardening_10MB_body_in_{chunks}_chunks_s"] = wall
        out[f"hardening_10MB_body_in_{chunks}_chunks_cpu_s"] = cpu
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:62s} {value:10.2f}   (load average {os.getloadavg()[0]:.2f})")
