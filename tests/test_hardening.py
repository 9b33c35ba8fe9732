"""A hostile or broken module never takes down or stalls the test process (issue #11): each
guest-controlled resource is capped as V8 caps it in Envoy, and each path ends in Envoy's outcome."""
from __future__ import annotations

import pytest

from proxywasm_host import DeadlineExceeded, Host, ModuleLoadError
from watchdog import run_watched
from watgen import build, records

REQ = {":path": "/", ":method": "GET", ":authority": "a"}


def test_table_growth_past_v8s_limit_fails_at_once():
    """Envoy 1.40 (V8): table.grow by 1e8 elements returns -1 and the filter goes on; a small grow works."""
    cb = ("(call $rec (table.grow $t (ref.null func) (i32.const 100000000)))"
          " (call $rec (table.grow $t (ref.null func) (i32.const 1000))) (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}, extra="(table $t 1 funcref)"), deadline_ms=200)
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    assert records(plugin.workers[0].vm) == [0xFFFFFFFF, 1]


def test_start_function_calling_a_hostcall_is_refused():
    """Envoy 1.40 crashes (SIGSEGV) on a module whose wasm start function calls a hostcall: the host refuses it."""
    wasm = build({}, extra="(func $early (drop (call $proxy_log (i32.const 2) (i32.const 0) (i32.const 1)))) (start $early)")
    with pytest.raises(ModuleLoadError, match="start function calls a hostcall"):
        Host().load_plugin(wasm)


def runaway_allocator() -> None:
    extra = '(func (export "malloc") (param i32) (result i32) (loop $l (br $l)) (i32.const 0))'
    wasm = build({"proxy_on_request_headers": "(drop (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"},
                 allocator=(), extra=extra)
    Host().load_plugin(wasm, deadline_ms=200).http_stream().send_request_headers(REQ, end_of_stream=True)


def test_runaway_allocator_is_a_deadline():
    kind, message = run_watched(runaway_allocator)  # a watchdog: without the deadline, a failure, not a hang
    assert kind == DeadlineExceeded.__name__ and "deadline of 200 ms" in message, message


QUEUE_IMPORTS = {
    "proxy_register_shared_queue": "(param i32 i32 i32) (result i32)",
    "proxy_enqueue_shared_queue": "(param i32 i32 i32) (result i32)",
    "proxy_dequeue_shared_queue": "(param i32 i32 i32) (result i32)",
}


def test_queue_ready_that_enqueues_again_runs_as_separate_events():
    """Envoy posts on_queue_ready as an event; a filter that enqueues from it again keeps posting.
    The host runs these from one loop (bounded per turn), never by recursion."""
    from proxywasm_host.context import Dispatcher

    wasm = build({
        "proxy_on_vm_start": "(drop (call $proxy_register_shared_queue {q} (i32.const 0x300))) (i32.const 1)",
        "proxy_on_request_headers": "(drop (call $proxy_enqueue_shared_queue (i32.load (i32.const 0x300)) {m})) (i32.const 0)",
        "proxy_on_queue_ready": "(drop (call $proxy_dequeue_shared_queue (local.get $q) (i32.const 0x310) (i32.const 0x314)))"
                                " (drop (call $proxy_enqueue_shared_queue (local.get $q) {m})) (call $rec (i32.const 1))",
    }, {"q": "loop", "m": "again"}, imports=QUEUE_IMPORTS)
    host = Host()
    plugin = host.load_plugin(wasm)
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    vm = plugin.workers[0].vm
    assert len(records(vm)) == Dispatcher.MAX_PER_TURN  # one turn, then the test gets control back
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)  # two guest calls: two more turns
    assert len(records(vm)) == 3 * Dispatcher.MAX_PER_TURN


BUFFER = "(if (result i32) (local.get $eos) (then (i32.const 0)) (else (i32.const 1)))"


def test_bodies_are_linear_and_buffers_are_limited_as_in_envoy():
    """10 MB in 10k chunks passes through (linear, not re-concatenated per chunk). A body the filter
    buffers past Envoy's default 1 MiB per_connection_buffer_limit_bytes gets 413 "Payload Too Large"
    (measured on Envoy 1.40 with 1,100,000 bytes; 900,000 pass); the limit is configurable."""
    passthrough = Host().load_plugin(build({"proxy_on_request_body": "(i32.const 0)"})).http_stream()
    passthrough.send_request_headers({**REQ, ":method": "POST"})
    for i in range(10_000):
        passthrough.send_request_body(b"x" * 1000, end_of_stream=i == 9_999)
    assert passthrough.upstream_request.body_size == 10_000_000 and passthrough.upstream_request.complete

    wasm = build({"proxy_on_request_body": BUFFER})
    for size, host, expected in ((900_000, Host(), None), (1_100_000, Host(), 413), (1_100_000, Host(buffer_limit_bytes=0), None)):
        s = host.load_plugin(wasm).http_stream()
        s.send_request_headers({**REQ, ":method": "POST"})
        for _ in range(size // 100_000):
            s.send_request_body(b"x" * 100_000, end_of_stream=False)
        s.send_request_body(b"", end_of_stream=True)
        if expected is None:
            assert s.local_reply is None and s.upstream_request.body_size == size
        else:
            assert (s.local_reply.status_code, s.local_reply.body) == (413, b"Payload Too Large")
            assert s.downstream_response.headers["connection"] == "close" and not s.upstream_request.complete


def test_response_buffered_past_the_limit_is_reset_after_its_headers():
    """Envoy 1.40 (measured): the client got the headers, then the connection closed mid-body."""
    s = Host().load_plugin(build({"proxy_on_response_body": BUFFER})).http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    s.send_response_headers({":status": "200", "content-length": "2000000"})
    for _ in range(20):
        s.send_response_body(b"y" * 100_000, end_of_stream=False)
    assert s.downstream_response.headers[":status"] == "200" and s.downstream_response.reset


def test_huge_log_writes_are_bounded():
    """64 iovecs over one 16 MiB region is a 1 GiB line for fd_write: the host copies at most
    LINE_LIMIT bytes of it, says how much it cut, and reports every byte written."""
    from proxywasm_host.logs import LINE_LIMIT

    iovs = "".join(f" (i32.store (i32.const {0x3000 + 8 * i}) (i32.const 0x10000)) (i32.store (i32.const {0x3004 + 8 * i}) (i32.const 0x1000000))"
                   for i in range(64))
    cb = (iovs + " (drop (memory.grow (i32.const 300)))"
          " (call $rec (call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0x3000) (i32.const 64) (i32.const 0x100)))"
          " (call $rec (i32.load (i32.const 0x100)))"
          " (call $rec (call $proxy_log (i32.const 2) (i32.const 0x10000) (i32.const 0x1000000))) (i32.const 0)")
    wasm = build({"proxy_on_request_headers": cb}, imports={"wasi_snapshot_preview1.fd_write": "(param i32 i32 i32 i32) (result i32)"})
    plugin = Host().load_plugin(wasm, deadline_ms=200)
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    assert records(plugin.workers[0].vm) == [0, 64 * 0x1000000 & 0xFFFFFFFF, 0]
    stdout, proxy_log = plugin.logs
    assert stdout.message.endswith(f"... [{64 * 0x1000000 - LINE_LIMIT} more bytes cut by proxywasm-host]")
    assert proxy_log.message.endswith(f"... [{0x1000000 - LINE_LIMIT} more bytes cut by proxywasm-host]")
    assert len(stdout.message) < LINE_LIMIT + 100


def test_captured_log_lines_per_vm_are_bounded(monkeypatch):
    from proxywasm_host import logs

    monkeypatch.setattr(logs, "RECORDS_LIMIT", RECORDS_LIMIT := 1000)  # 100k by default
    cb = ("(local.set $ctx (i32.const 0)) (loop $l (drop (call $proxy_log (i32.const 2) {m}))"
          f" (local.set $ctx (i32.add (local.get $ctx) (i32.const 1))) (br_if $l (i32.lt_u (local.get $ctx) (i32.const {RECORDS_LIMIT + 10})))) (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}, {"m": "line"}), deadline_ms=10_000)
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    assert len(plugin.workers[0].vm.logs) == RECORDS_LIMIT  # the oldest are dropped


def test_a_failed_vm_is_freed():
    """Envoy drops a failed VM; so does the host: a trap after growing memory gives it back
    (the closing note of issue #11 has the RSS of 100 such traps), the logs stay."""
    from proxywasm_host.memory import BadPointer

    grow_and_trap = "(drop (memory.grow (i32.const 1000))) (drop (call $proxy_log (i32.const 2) {m})) unreachable"
    plugin = Host().load_plugin(build({"proxy_on_request_headers": grow_and_trap}, {"m": "about to trap"}), raise_on_trap=False)
    plugin.http_stream().send_request_headers(REQ, end_of_stream=True)
    vm = plugin.workers[0].vm
    assert vm.failed is not None and vm.store is None
    with pytest.raises(BadPointer):
        vm.memory.read(0, 4)
    assert [r.message for r in plugin.logs] == ["about to trap"]


def test_an_exception_that_cannot_be_printed_still_traps(monkeypatch):
    """No exception is ever swallowed in a trampoline: even one whose str() fails, raised by a
    hostcall handler, reaches the test (here through a foreign function the test registered)."""
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    def broken(_args: bytes) -> bytes:
        raise Unprintable()

    call = ("(call $rec (call $proxy_call_foreign_function {f} (i32.const 0) (i32.const 0) (i32.const 0x100) (i32.const 0x104)))"
            " (i32.const 0)")
    wasm = build({"proxy_on_request_headers": call}, {"f": "broken"},
                 imports={"proxy_call_foreign_function": "(param i32 i32 i32 i32 i32 i32) (result i32)"})
    host = Host()
    host.foreign_functions["broken"] = broken
    with pytest.raises(Unprintable):
        host.load_plugin(wasm).http_stream().send_request_headers(REQ, end_of_stream=True)


def test_local_reply_header_with_bytes_that_are_not_utf8():
    """Found by make fuzz: a filter's local-reply header value is raw bytes (0xff here); it reaches
    the client as those bytes instead of failing in the host."""
    from proxywasm_host.memory import serialize_pairs

    pairs = serialize_pairs([(b"x-raw", b"a\xffb")])
    reply = "(drop (call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) {h} (i32.const -1))) (i32.const 1)"
    s = Host().load_plugin(build({"proxy_on_request_headers": reply}, {"h": pairs})).http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    assert s.downstream_response.headers[":status"] == "403"
    assert s.downstream_response.headers._raw[1] == (b"x-raw", b"a\xffb")


def test_buffer_limit_answers_per_direction():
    """Envoy's answers to a buffer over per_connection_buffer_limit_bytes: a request body → a local
    413 "Payload Too Large" (request_payload_too_large, measured on 1.40); a response body before its
    headers went out → 500 "Internal Server Error" (response_payload_too_large); after → the stream
    is reset with that detail."""
    buffer = "(i32.const 1)"  # StopIterationAndBuffer / StopIteration
    req = {":method": "POST", ":path": "/", ":authority": "a"}

    s = Host(buffer_limit_bytes=32).load_plugin(build({"proxy_on_request_body": buffer})).http_stream()
    s.send_request_headers(req)
    s.send_request_body(b"x" * 33, end_of_stream=False)
    assert (s.local_reply.status_code, s.local_reply.body, s.local_reply.details) == (
        413, b"Payload Too Large", "request_payload_too_large")
    assert s.downstream_response.headers[":status"] == "413"

    wasm = build({"proxy_on_response_headers": buffer, "proxy_on_response_body": buffer})
    s = Host(buffer_limit_bytes=32).load_plugin(wasm).http_stream()
    s.send_request_headers(req, end_of_stream=True)
    s.send_response_headers({":status": "200"})
    s.send_response_body(b"y" * 33, end_of_stream=False)
    assert (s.local_reply.status_code, s.local_reply.body, s.local_reply.details) == (
        500, b"Internal Server Error", "response_payload_too_large")
    assert s.downstream_response.headers[":status"] == "500" and s.downstream_response.body == b"Internal Server Error"
    assert s.downstream_response.headers["content-type"] == "text/plain"
    s = Host(buffer_limit_bytes=32).load_plugin(build({"proxy_on_response_body": buffer})).http_stream()
    s.send_request_headers(req, end_of_stream=True)
    s.send_response_headers({":status": "200"})
    s.send_response_body(b"y" * 33, end_of_stream=False)
    assert s.local_reply is None and s.downstream_response.reset and s.reset_details == "response_payload_too_large"
    assert s.downstream_response.headers[":status"] == "200"  # the headers had gone out; the body is cut


def test_fd_write_checks_every_buffer_even_past_the_copied_line():
    """Each iovec's buffer must lie in linear memory (else EFAULT), also one past the 1 MiB the
    host copies for a line; a zero-size iovec is not checked (cpp-host skips it), wherever it points."""
    iovec = "(i32.store (i32.const {at}) (i32.const {ptr})) (i32.store (i32.const {at4}) (i32.const {size}))"
    vectors = [(0x8000, 0x100, 0x200000),  # 2 MiB: more than a line
               (0x8008, 0xFFFFFFF0, 0),  # zero size: not checked
               (0x8010, 0x100, 0x10)]
    fill = " ".join(iovec.format(at=at, at4=at + 4, ptr=ptr, size=size) for at, ptr, size in vectors)
    write = "(call $rec (call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0x8000) (i32.const {n}) (i32.const 0x100)))"
    cb = ("(drop (memory.grow (i32.const 40))) " + fill + " " + write.format(n=3)
          + " (i32.store (i32.const 0x8014) (i32.const 0x7FFFFFFF)) " + write.format(n=3) + " (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb},
                                      imports={"wasi_snapshot_preview1.fd_write": "(param i32 i32 i32 i32) (result i32)"}))
    plugin.http_stream().send_request_headers(REQ)
    assert records(plugin.workers[0].vm) == [0, 21]  # then the third buffer's end lies past memory: EFAULT
    assert len(plugin.logs) == 1 and "bytes cut by proxywasm-host" in plugin.logs[0].message
