"""Issue #11's points that tests/test_hardening.py did not pin: each test here fails when its fix is
undone (the audit made each one-line revert and saw the test fail)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from proxywasm_host import DeadlineExceeded, Host, ModuleLoadError, PluginRejected
from proxywasm_host import module as module_mod
from proxywasm_host.abi import WASI_EINVAL
from proxywasm_host.logs import LINE_LIMIT
from proxywasm_host.module import load_module
from watchdog import run_watched
from watgen import build, records

REQ = {":path": "/", ":method": "GET", ":authority": "a"}
FD_WRITE = {"wasi_snapshot_preview1.fd_write": "(param i32 i32 i32 i32) (result i32)"}


def test_a_second_memory_is_refused_so_memory_limit_bounds_the_vm():
    """memory_limit caps each memory, so the host allows one per VM (Envoy 1.40 loads a module with 2
    or even 101 memories, measured with proxywasm parity: a host limit, named in the error)."""
    with pytest.raises(ModuleLoadError, match="memory count too high at 2"):
        Host().load_plugin(build({}, extra="(memory $second 1)"))


def test_fd_write_and_proxy_log_copy_at_most_a_line():
    """64 iovecs over one 16 MiB region (a 1 GiB line) and a 16 MiB proxy_log: the host allocates
    about one line's worth (LINE_LIMIT), not the gigabyte the guest asked to write."""
    iovs = "".join(f" (i32.store (i32.const {0x3000 + 8 * i}) (i32.const 0x10000))"
                   f" (i32.store (i32.const {0x3004 + 8 * i}) (i32.const 0x1000000))" for i in range(64))
    cb = (iovs + " (drop (memory.grow (i32.const 300)))"
          " (call $rec (call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0x3000) (i32.const 64) (i32.const 0x100)))"
          " (call $rec (call $proxy_log (i32.const 2) (i32.const 0x10000) (i32.const 0x1000000))) (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}, imports=FD_WRITE), deadline_ms=10_000)
    tracemalloc.start()
    try:
        plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records(plugin.workers[0].vm) == [0, 0]
    assert peak < 16 * LINE_LIMIT, f"{peak} bytes allocated for two cut log lines"


def test_fd_write_with_more_than_iov_max_iovecs_is_einval():
    """A host limit (Envoy has none): one fd_write walks at most 65,536 iovecs; one more is EINVAL
    and nothing is logged. 65,536 empty iovecs are written (zero bytes: no line, as in Envoy 1.40)."""
    from proxywasm_host.hostcalls.wasi import IOV_MAX

    write = "(call $rec (call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0x10000) (i32.const {n}) (i32.const 0x100)))"
    cb = (" (drop (memory.grow (i32.const 16)))" + write.format(n=IOV_MAX + 1) + write.format(n=IOV_MAX) + " (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}, imports=FD_WRITE))
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    assert records(plugin.workers[0].vm) == [WASI_EINVAL, 0]
    assert [r.message for r in plugin.logs] == []


def hostcall_loop() -> None:
    """A guest that loops over a hostcall which calls back into its allocator (a nested guest call)."""
    loop = "(loop $l (drop (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104))) (br $l)) (i32.const 0)"
    Host().load_plugin(build({"proxy_on_request_headers": loop}), deadline_ms=200).http_stream().send_request_headers(REQ)


def test_the_deadline_covers_time_spent_in_hostcalls_and_nested_guest_calls():
    kind, message = run_watched(hostcall_loop)  # a watchdog: a deadline reset by the nested calls would hang
    assert kind == DeadlineExceeded.__name__ and "proxy_on_request_headers" in message and "200 ms" in message, message


def test_the_deadline_counts_the_time_a_hostcall_holds_the_gil():
    """The epoch ticker is a Python thread: while a hostcall holds the GIL it cannot tick, and the
    ticks it missed are caught up, so the deadline stays real time. Here a hostcall holds the GIL
    for 1 s (bytes.find over 64 MiB, about 200 ms a call) and the guest then loops a little: its
    500 ms deadline has passed. A ticker that lost those ticks (one per GIL turn) let it return."""
    big = bytes(64 << 20)

    def hold_the_gil(_args: bytes) -> bytes:
        start = time.perf_counter()
        while time.perf_counter() - start < 1.0:
            big.find(b"\0" * 7 + b"\1")
        return b""

    cb = ("(drop (call $proxy_call_foreign_function {f} (i32.const 0) (i32.const 0) (i32.const 0x100) (i32.const 0x104)))"
          " (local.set $ctx (i32.const 0)) (loop $l (local.set $ctx (i32.add (local.get $ctx) (i32.const 1)))"
          " (br_if $l (i32.lt_u (local.get $ctx) (i32.const 1000)))) (i32.const 0)")
    wasm = build({"proxy_on_request_headers": cb}, {"f": "hold"},
                 imports={"proxy_call_foreign_function": "(param i32 i32 i32 i32 i32 i32) (result i32)"})
    host = Host()
    host.foreign_functions["hold"] = hold_the_gil
    with pytest.raises(DeadlineExceeded, match="deadline of 500 ms"):
        host.load_plugin(wasm, deadline_ms=500).http_stream().send_request_headers(REQ, end_of_stream=True)


def test_effective_context_zero_then_root_context_hostcalls():
    """In a stream callback, proxy_set_effective_context(0) and then hostcalls that act on the root
    context: the same results as Envoy 1.40 (compared with proxywasm parity, traced hostcall
    results identical): OK, tick period OK, proxy_done NotFound (nothing pending), a metric
    defined, the plugin configuration NotFound outside on_configure."""
    cb = ("(call $rec (call $proxy_set_effective_context (i32.const 0)))"
          " (call $rec (call $proxy_set_tick_period_milliseconds (i32.const 0)))"
          " (call $rec (call $proxy_done))"
          " (call $rec (call $proxy_define_metric (i32.const 0) {m} (i32.const 0x108)))"
          " (call $rec (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 10) (i32.const 0x100) (i32.const 0x104)))"
          " (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}, {"m": "eff.counter"}, imports={"proxy_done": "(result i32)"}))
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    assert records(plugin.workers[0].vm) == [0, 0, 1, 0, 1]


def test_a_forwarded_body_grows_in_place_both_ways():
    """Bodies are linear: each chunk is appended to the one buffer the next hop receives (a copy of
    the body so far per chunk made 10 MB in 10k chunks take seconds; bench/hardening_bench.py has
    the times)."""
    s = Host().load_plugin(build({"proxy_on_request_body": "(i32.const 0)", "proxy_on_response_body": "(i32.const 0)"})).http_stream()
    s.send_request_headers({**REQ, ":method": "POST"})
    s.send_request_body(b"x" * 1000, end_of_stream=False)
    upstream = s.upstream_request._body
    for i in range(1000):
        s.send_request_body(b"x" * 1000, end_of_stream=i == 999)
    s.send_response_headers({":status": "200"})
    s.send_response_body(b"y" * 1000, end_of_stream=False)
    downstream = s.downstream_response._body
    for i in range(1000):
        s.send_response_body(b"y" * 1000, end_of_stream=i == 999)
    assert s.upstream_request._body is upstream and s.upstream_request.body_size == 1_001_000
    assert s.downstream_response._body is downstream and s.downstream_response.body_size == 1_001_000


def test_in_process_compile_cache_keeps_the_recently_used(tmp_path, monkeypatch):
    """The in-process cache is an LRU: a module loaded again is kept while others are evicted."""
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(module_mod, "COMPILED_IN_PROCESS", 4)
    module_mod._COMPILED.clear()
    used = load_module(build({}, {"unique": f"lru-used-{id(tmp_path)}"}))
    others = [load_module(build({}, {"unique": f"lru-{i}-{id(tmp_path)}"})) for i in range(3)]
    load_module(used.wasm)  # a hit: now the most recently used
    load_module(build({}, {"unique": f"lru-last-{id(tmp_path)}"}))
    assert used.sha256 in module_mod._COMPILED and others[0].sha256 not in module_mod._COMPILED


REJECT_BAD = ("(drop (memory.grow (i32.const 1000))) (memory.fill (i32.const 0x10000) (i32.const 1) (i32.const 60000000))"
              " (drop (call $proxy_log (i32.const 2) {m})) (i32.ne (local.get $size) (i32.const 3))")  # "bad" is refused


def _live_vms(host: Host) -> list:
    return [vm for by_worker in host._vms.values() for vm in by_worker.values() if vm.store is not None]


def test_a_host_releases_the_vms_of_rejected_plugins():
    """A plugin refused by on_configure leaves no VM behind (Envoy drops it): 10 refusals that each
    filled 60 MB of a fresh VM keep none of it; its logs stay on the exception. A VM another plugin
    already runs in stays, and that plugin goes on."""
    wasm = build({"proxy_on_configure": REJECT_BAD}, {"m": "configuring"})
    host = Host()
    for i in range(10):
        with pytest.raises(PluginRejected) as refused:
            host.load_plugin(wasm, configuration="bad", deadline_ms=1000 + i)  # a new VM key each time
    assert _live_vms(host) == [] and [r.message for r in refused.value.logs] == ["configuring"]
    good = host.load_plugin(wasm, configuration="good")
    with pytest.raises(PluginRejected):
        host.load_plugin(wasm, configuration="bad")  # same VM key: joins good's VM
    assert _live_vms(host) == [good.workers[0].vm]
    s = good.http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    assert s.upstream_request.complete


FAULTHANDLER = """
import faulthandler, sys
sys.path.insert(0, {tests!r})
from proxywasm_host import GuestTrap, Host
from watgen import build
wasm = build({{"proxy_on_request_headers": "unreachable"}})
def trap():
    try:
        Host().load_plugin(wasm).http_stream().send_request_headers({{":path": "/", ":method": "GET", ":authority": "a"}})
    except GuestTrap:
        print("GuestTrap", flush=True)
{steps}
"""


@pytest.mark.parametrize("steps, survives", [
    ("faulthandler.enable(); trap(); trap()", True),  # pytest's order: enabled before the first compile
    ("trap(); faulthandler.enable(); trap()", False),  # enabled after wasmtime installed its handlers
    ("faulthandler.enable(); trap(); faulthandler.disable(); trap()", False),  # disable restores the older ones
])
def test_faulthandler_constraint_in_the_readme(steps, survives):
    """The README's exact constraint: wasmtime's trap handlers must be installed after
    faulthandler.enable() and stay; enabling it later or disabling it makes the next trap kill the
    process (SIGILL). Run in a subprocess."""
    code = FAULTHANDLER.format(tests=str(Path(__file__).parent), steps=steps.replace("; ", "\n"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    if survives:
        assert (proc.returncode, proc.stdout) == (0, "GuestTrap\nGuestTrap\n"), proc.stderr
    else:
        assert (proc.returncode, proc.stdout) == (-4, "GuestTrap\n"), proc.stderr  # SIGILL after the first trap


def test_megabyte_log_lines_are_cut_in_exception_messages_and_failure_reports(monkeypatch):
    """A filter that logs 64 lines of 1 MiB and traps: the GuestTrap's message and the pytest
    failure report show each line's first 1,000 characters (the whole lines stay in .logs); the
    report shows the last SHOWN_LINES lines and says how many it left out."""
    from proxywasm_host import GuestTrap, pytest_report
    from proxywasm_host.errors import SHOWN_CHARS

    log = ("(drop (memory.grow (i32.const 16))) (local.set $ctx (i32.const 0)) (loop $l"
           " (drop (call $proxy_log (i32.const 2) (i32.const 0x10000) (i32.const 0x100000)))"
           " (local.set $ctx (i32.add (local.get $ctx) (i32.const 1))) (br_if $l (i32.lt_u (local.get $ctx) (i32.const 64)))) unreachable")
    host = Host()
    plugin = host.load_plugin(build({"proxy_on_request_headers": log}))
    with pytest.raises(GuestTrap) as trap:
        plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    cut = f"... [{len('[info] ') + 0x100000 - SHOWN_CHARS} more characters not shown]"
    assert str(trap.value).count(cut) == 50 and len(str(trap.value)) < 51 * (SHOWN_CHARS + 100)
    assert len(trap.value.logs) == 64 and len(trap.value.logs[0].message) == 0x100000
    monkeypatch.setattr(pytest_report, "SHOWN_LINES", 10)
    report = pytest_report.host_report(host)
    assert "  ... 54 earlier lines not shown (plugin.logs has them)" in report
    assert report.count(cut) == 10 and len(report) < 11 * (SHOWN_CHARS + 100)


def test_captured_log_text_per_vm_is_bounded(monkeypatch):
    """A VM keeps at most RECORDS_CHARS characters of log text (64 Mi by default; 100,000 lines of
    1 MiB were 100 GiB): the oldest lines are dropped first. Here 200 numbered lines of 100
    characters with a 10,000-character budget: the last 100 stay."""
    from proxywasm_host import logs

    monkeypatch.setattr(logs, "RECORDS_CHARS", 10_000)
    line = "(i32.store8 (i32.const 0x2000) (i32.add (i32.const 0x30) (i32.rem_u (local.get $ctx) (i32.const 10))))"
    cb = ("(local.set $ctx (i32.const 0)) (loop $l " + line + " (drop (call $proxy_log (i32.const 2) (i32.const 0x2000) (i32.const 100)))"
          " (local.set $ctx (i32.add (local.get $ctx) (i32.const 1))) (br_if $l (i32.lt_u (local.get $ctx) (i32.const 200)))) (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}))
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    kept = plugin.workers[0].vm.logs
    assert len(kept) == 100 and kept.chars == 10_000 == sum(len(r.message) for r in kept)
    assert [r.message[0] for r in kept] == [str(i % 10) for i in range(100, 200)]  # the newest 100
    monkeypatch.setattr(logs, "RECORDS_LIMIT", 50)  # lines dropped by the line limit leave the count too
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}))
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    assert plugin.workers[0].vm.logs.chars == 5_000
