"""Traps, wild pointers, runaway loops and failure policies (abi.md §2.1; envoy-observed HTTP streams)."""

import re

import pytest

from proxywasm_host import DeadlineExceeded, GuestTrap, Host, VmFailed
from watchdog import run_watched
from watgen import build, records

REQ = {":method": "GET", ":path": "/", ":authority": "a"}
TRAP = {"proxy_on_request_headers": "(drop (call $proxy_log (i32.const 3) {msg})) unreachable"}


def test_trap_raises_with_backtrace_and_logs_and_fails_closed():
    p = Host().load_plugin(build(TRAP, {"msg": "about to panic"}), name="trapper")
    s = p.http_stream()
    with pytest.raises(GuestTrap) as e:
        s.send_request_headers(REQ)
    err = e.value
    assert err.callback == "proxy_on_request_headers"
    assert "unreachable" in err.detail
    assert "wasm backtrace" in err.backtrace
    assert [r.message for r in err.logs] == ["about to panic"]
    assert "about to panic" in str(err)
    # Envoy fails the stream closed: 503, details wasm_fail_stream
    assert s.local_reply.status_code == 503 and s.local_reply.details == "wasm_fail_stream"
    assert s.downstream_response.headers[":status"] == "503"
    # and every later stream on the failed VM gets the same answer, without calling the guest
    later = p.http_stream()
    r = later.send_request_headers(REQ)
    assert (r.callback, r.action, r.status) == ("proxy_on_request_headers", None, "StopAllIterationAndWatermark")
    assert later.local_reply.status_code == 503
    with pytest.raises(VmFailed):
        p.workers[0].vm.call("proxy_on_request_headers", 1, 0, 0)


def test_fail_open_skips_the_filter_after_a_trap():
    """Measured on Envoy 1.40 (FAIL_OPEN): the request that trapped still gets 503; later ones skip the filter."""
    p = Host().load_plugin(build(TRAP, {"msg": "x"}), failure_policy="fail_open", raise_on_trap=False)
    s = p.http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    assert s.trap is not None and s.local_reply.status_code == 503 and s.upstream_request.headers is None
    later = p.http_stream()
    r = later.send_request_headers(REQ, end_of_stream=True)
    assert r.status == "NotCalled" and later.upstream_request.headers[":path"] == "/"


def test_fail_reload_starts_a_fresh_vm():
    # traps only for the path "/boom" (5 bytes)
    wasm = build(
        {"proxy_on_request_headers": "(call $rec (i32.const 5)) (drop (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104)))"
         " (if (i32.eq (i32.load (i32.const 0x104)) (i32.const 5)) (then unreachable)) (i32.const 0)"},
        {"k": ":path"},
    )
    p = Host().load_plugin(wasm, failure_policy="fail_reload", raise_on_trap=False)
    first = p.http_stream()
    first.send_request_headers({**REQ, ":path": "/boom"})
    assert first.local_reply.status_code == 503
    second = p.http_stream()
    assert second.send_request_headers(REQ, end_of_stream=True).status == "Continue"
    assert second.vm is not first.vm and records(second.vm) == [5]


def runaway_then_another_request() -> None:
    """An infinite loop in on_request_headers (200 ms deadline), then a request to a sound plugin."""
    p = Host().load_plugin(build({"proxy_on_request_headers": "(loop $l (br $l)) (i32.const 0)"}), deadline_ms=200)
    try:
        p.http_stream().send_request_headers(REQ)
    finally:
        ok = Host().load_plugin(build({"proxy_on_request_headers": "(i32.const 0)"})).http_stream()
        assert ok.send_request_headers(REQ).status == "Continue"


def test_infinite_loop_is_stopped_at_the_deadline_and_the_session_goes_on():
    # under a watchdog: without the deadline this fails after WATCHDOG_SECONDS instead of hanging
    # (the time the deadline takes is in `make bench`)
    kind, message = run_watched(runaway_then_another_request)
    assert kind == DeadlineExceeded.__name__, message
    assert re.search("proxy_on_request_headers.*exceeded the execution deadline of 200 ms", message), message


def test_wild_pointers_get_invalid_memory_access():
    cb = (
        "(call $rec (call $proxy_log (i32.const 2) (i32.const 0xfffffff0) (i32.const 100)))"
        " (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 0xffffffff) (i32.const 0x100) (i32.const 0x104)))"
        " (call $rec (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x7ffffff0) (i32.const 0x104)))"
        " (call $rec (call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0xfffffff8) (i32.const 1) (i32.const 0x100)))"
        " (i32.const 0)"
    )
    p = Host().load_plugin(build({"proxy_on_request_headers": cb}, imports={"wasi_snapshot_preview1.fd_write": "(param i32 i32 i32 i32) (result i32)"}))
    s = p.http_stream()
    s.send_request_headers(REQ)
    assert records(s.vm) == [6, 6, 6, 21]  # InvalidMemoryAccess x3, WASI EFAULT


def test_allocator_failure_and_zero_size_values():
    # malloc-only module whose allocator returns 0: data cannot be handed over
    wasm = build(
        {"proxy_on_request_headers": "(call $rec (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"},
        {"k": "x-v"},
        allocator=(),
        extra='(func (export "malloc") (param i32) (result i32) (call $rec (i32.add (i32.const 1000) (local.get 0))) (i32.const 0))',
    )
    s = Host().load_plugin(wasm).http_stream()
    s.send_request_headers({**REQ, "x-v": "1"})
    assert records(s.vm) == [1001, 6]  # malloc(1) -> 0 -> InvalidMemoryAccess
    empty = Host().load_plugin(wasm).http_stream()
    empty.send_request_headers({**REQ, "x-v": ""})
    assert records(empty.vm) == [0]  # empty value: (0, 0) without calling malloc


def test_malloc_preferred_over_proxy_on_memory_allocate():
    extra = (
        '(func (export "malloc") (param i32) (result i32) (call $rec (i32.const 1)) (i32.const 0x9000))'
        ' (func (export "proxy_on_memory_allocate") (param i32) (result i32) (call $rec (i32.const 2)) (i32.const 0x9800))'
    )
    wasm = build({"proxy_on_request_headers": "(drop (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"}, {"k": ":path"}, allocator=(), extra=extra)
    s = Host().load_plugin(wasm).http_stream()
    s.send_request_headers(REQ)
    assert records(s.vm) == [1]


def test_restricted_hostcall_inside_allocator_traps():
    extra = '(func (export "malloc") (param i32) (result i32) (drop (call $proxy_set_tick_period_milliseconds (i32.const 1))) (i32.const 0x9000))'
    wasm = build({"proxy_on_request_headers": "(drop (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"}, {"k": ":path"}, allocator=(), extra=extra)
    with pytest.raises(GuestTrap, match="restricted_callback"):
        Host().load_plugin(wasm).http_stream().send_request_headers(REQ)


def test_memory_cap_names_the_limit():
    grow = "(drop (memory.grow (i32.const 100))) (if (i32.lt_s (memory.grow (i32.const 100)) (i32.const 0)) (then unreachable)) (i32.const 0)"
    p = Host().load_plugin(build({"proxy_on_request_headers": grow}), memory_limit=4 * 65536 + 100 * 65536)
    with pytest.raises(GuestTrap, match="linear memory reached the cap"):
        p.http_stream().send_request_headers(REQ)
