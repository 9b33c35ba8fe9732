"""Properties, WASI, time and ticks, shared data and queues, metrics, callout validation
(abi.md §1.3, §1.5, §2.5–2.8; envoy-observed Properties)."""
import struct

from proxywasm_host import Host
from proxywasm_host.memory import serialize_pairs
from watgen import build, out_bytes, records

REQ = {":method": "GET", ":path": "/a?b=1", ":authority": "example.com", "x-h": "v"}
PROP = "(call $rec (call $proxy_get_property {%s} (i32.const 0x100) (i32.const 0x104)))"


def _logged_property(name):
    return PROP % name + " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"


def test_properties_follow_envoy_attributes_and_windows():
    strings = {"path": "request\0path", "root": "plugin_root_id", "hdr": "request\0headers\0x-h", "old": "route_name", "node": "xds\0node\0id", "code": "response\0code", "src": "source\0address"}
    on_req = " ".join(_logged_property(n) for n in ("path", "root", "hdr", "node", "src")) + " " + PROP % "old" + " " + PROP % "code" + " (i32.const 0)"
    on_resp = PROP % "path" + " " + PROP % "code" + " (i32.const 0)"
    plugin = Host(connection_manager_defaults=False).load_plugin(
        build({"proxy_on_request_headers": on_req, "proxy_on_response_headers": on_resp}, strings), root_id="my_root"
    )
    s = plugin.http_stream()
    s.send_request_headers(REQ)
    assert [r.message for r in s.logs] == ["/a?b=1", "my_root", "v", "proxywasm-host", "127.0.0.1:54321"]
    assert records(s.vm) == [0, 0, 0, 0, 0, 1, 1]  # legacy top-level names and response.code: NotFound
    s.send_response_headers({":status": "201"})
    assert records(s.vm)[7:] == [1, 0]  # request.path gone after the request went upstream; response.code Ok
    assert out_bytes(s.vm) == struct.pack("<q", 201)


def test_property_overrides_and_set_property_round_trip():
    strings = {"k": "my\0prop", "v": "val", "src": "source\0address"}
    cb = "(call $rec (call $proxy_set_property {k} {v}))" + _logged_property("k") + _logged_property("src") + " (i32.const 0)"
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}, strings), properties={"source.address": "10.0.0.9:1"})
    s = plugin.http_stream(properties={"source.address": "192.168.1.1:80"})
    s.send_request_headers(REQ)
    assert [r.message for r in s.logs] == ["val", "192.168.1.1:80"]  # stream beats plugin
    root_only = Host().load_plugin(build({"proxy_on_vm_start": "(call $rec (call $proxy_set_property {k} {v})) (i32.const 1)"}, strings))
    assert records(root_only.workers[0].vm) == [1]  # no stream: NotFound


def test_metadata_as_envoy_hands_it_over():
    """Measured on Envoy 1.40 (integration/test_parity_feature.py compares them live): node metadata
    is a Struct (3 reads back as the double 3.0, a null is SerializationFailure, also inside a list);
    dynamic metadata read whole is the Metadata message's protobuf bytes, and an empty one no bytes
    with filter_metadata an empty map."""
    paths = {"num": "xds\0node\0metadata\0num", "none": "xds\0node\0metadata\0none", "list": "xds\0node\0metadata\0l",
             "md": "metadata", "fm": "metadata\0filter_metadata", "key": "metadata\0filter_metadata\0probe\0key"}
    cb = " ".join(_logged_property(n) for n in paths) + " (i32.const 0)"
    wasm = build({"proxy_on_request_headers": cb}, paths)
    plugin = Host(node_metadata={"num": 3, "none": None, "l": ["a", None]}).load_plugin(wasm)
    s = plugin.http_stream(properties={"metadata": {"filter_metadata": {"probe": {"key": "v1"}}}})
    s.send_request_headers(REQ)
    assert records(s.vm) == [0, 3, 3, 0, 0, 0]
    assert [r.message for r in s.logs][:1] + [r.message for r in s.logs][3:4] == [
        "\x00\x00\x00\x00\x00\x00\x08@", "\n\x16\n\x05probe\x12\r\n\x0b\n\x03key\x12\x04\x1a\x02v1"]
    empty = plugin.http_stream()
    empty.send_request_headers(REQ)
    assert records(empty.vm)[6:] == [0, 3, 3, 0, 0, 1]
    assert out_bytes(empty.vm) == b"\0\0\0\0"  # filter_metadata of no dynamic metadata: an empty map


def test_wasi_stdout_clock_random_and_environment():
    imports = {f"wasi_snapshot_preview1.{n}": sig for n, sig in {
        "fd_write": "(param i32 i32 i32 i32) (result i32)",
        "clock_time_get": "(param i32 i64 i32) (result i32)",
        "random_get": "(param i32 i32) (result i32)",
        "environ_sizes_get": "(param i32 i32) (result i32)",
    }.items()}
    cb = (
        "(i32.store (i32.const 0x200) {out_ptr}) (i32.store (i32.const 0x204) (i32.const 6))"
        " (call $rec (call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0x200) (i32.const 1) (i32.const 0x208)))"
        " (call $rec (call $wasi_snapshot_preview1.clock_time_get (i32.const 0) (i64.const 1) (i32.const 0x210)))"
        " (call $rec (call $wasi_snapshot_preview1.clock_time_get (i32.const 7) (i64.const 1) (i32.const 0x210)))"
        " (call $rec (call $wasi_snapshot_preview1.random_get (i32.const 0x220) (i32.const 8)))"
        " (call $rec (call $wasi_snapshot_preview1.random_get (i32.const 0x220) (i32.const 70000)))"
        " (call $rec (call $wasi_snapshot_preview1.environ_sizes_get (i32.const 0x230) (i32.const 0x234)))"
        " (call $rec (i32.load (i32.const 0x230))) (call $rec (i32.load (i32.const 0x234))) (i32.const 1)"
    )
    wasm = build({"proxy_on_vm_start": cb}, {"out": "hello\n"}, imports=imports)
    host = Host(start_time=1700000000.5, seed=3)
    vm = host.load_plugin(wasm, environment={"MODE": "test"}).workers[0].vm
    assert records(vm) == [0, 0, 58, 0, 28, 0, 1, 10]  # ENOTSUP clock, EINVAL > 64 KiB, "MODE=test\0"
    assert [(r.level, r.message) for r in host.plugins[0].logs] == [("info", "hello")]
    assert vm.memory.read(0x210, 8) == struct.pack("<Q", 1700000000500000000)
    again = Host(seed=3).load_plugin(wasm, environment={"MODE": "test"}).workers[0].vm
    assert vm.memory.read(0x220, 8) == again.memory.read(0x220, 8)  # seeded


def test_tick_period_and_virtual_clock():
    wasm = build({
        "proxy_on_vm_start": "(drop (call $proxy_set_tick_period_milliseconds (i32.const 1000))) (i32.const 1)",
        "proxy_on_tick": "(call $rec (local.get $root)) (drop (call $proxy_get_current_time_nanoseconds (i32.const 0x300)))",
    })
    host = Host(start_time=100)
    plugin = host.load_plugin(wasm, workers=2)
    host.clock.advance(seconds=2.5)
    for w in plugin.workers:  # one timer per root context per VM
        assert records(w.vm) == [1, 1]
        assert w.vm.memory.read(0x300, 8) == struct.pack("<Q", 102_000_000_000)
    assert host.clock.now_ns == 102_500_000_000


SET = "(call $rec (call $proxy_set_shared_data {k} {v} (i32.const %d)))"
GET = "(call $rec (call $proxy_get_shared_data {k} (i32.const 0x100) (i32.const 0x104) (i32.const 0x108))) (call $rec (i32.load (i32.const 0x108)))"


def test_shared_data_cas_across_two_workers():
    wasm = build({"proxy_on_request_headers": GET + " (call $rec (call $proxy_set_shared_data {k} {v} (i32.load (i32.const 0x108)))) (i32.const 0)"}, {"k": "counter", "v": "x"})
    host = Host()
    plugin = host.load_plugin(wasm, workers=2)
    a, b = plugin.http_stream(worker=0), plugin.http_stream(worker=1)
    a.send_request_headers(REQ)
    b.send_request_headers(REQ)
    assert records(a.vm) == [1, 0, 0]  # NotFound; set with cas 0 (unconditional) -> cas 1
    assert records(b.vm) == [0, 1, 0]  # other VM sees it with cas 1 and updates it
    assert host.shared_data.get(b"counter") == (b"x", 2)
    stale = build({"proxy_on_request_headers": SET % 1 + " (i32.const 0)"}, {"k": "counter", "v": "y"})
    s = host.load_plugin(stale).http_stream()
    s.send_request_headers(REQ)
    assert records(s.vm) == [8]  # CasMismatch


def test_shared_queue_delivers_on_queue_ready_to_registering_root():
    reg = "(drop (call $proxy_register_shared_queue {q} (i32.const 0x300))) (i32.const 1)"
    imports = {
        "proxy_register_shared_queue": "(param i32 i32 i32) (result i32)",
        "proxy_resolve_shared_queue": "(param i32 i32 i32 i32 i32) (result i32)",
        "proxy_enqueue_shared_queue": "(param i32 i32 i32) (result i32)",
        "proxy_dequeue_shared_queue": "(param i32 i32 i32) (result i32)",
    }
    consumer = build({"proxy_on_vm_start": reg, "proxy_on_queue_ready": "(call $rec (local.get $q)) (call $rec (call $proxy_dequeue_shared_queue (local.get $q) (i32.const 0x100) (i32.const 0x104))) (call $rec (call $proxy_dequeue_shared_queue (local.get $q) (i32.const 0x100) (i32.const 0x104)))"}, {"q": "jobs"}, imports=imports)
    producer = build({"proxy_on_request_headers": "(call $rec (call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) {q} (i32.const 0x300))) (call $rec (call $proxy_enqueue_shared_queue (i32.load (i32.const 0x300)) {msg})) (call $rec (call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) {nope} (i32.const 0x300))) (i32.const 0)"}, {"q": "jobs", "msg": "hello", "nope": "nope"}, imports=imports)
    host = Host()
    c = host.load_plugin(consumer)
    s = host.load_plugin(producer, workers=2).http_stream(worker=1)
    s.send_request_headers(REQ)
    assert records(s.vm) == [0, 0, 1]
    assert records(c.workers[0].vm) == [1, 0, 7]  # token 1; first dequeue Ok, then Empty
    assert out_bytes(c.workers[0].vm) == b"hello"


def test_metrics_ids_rules_and_sum_across_workers():
    cb = (
        "(drop (call $proxy_define_metric (i32.const 0) {c} (i32.const 0x300))) (call $rec (i32.load (i32.const 0x300)))"
        " (drop (call $proxy_define_metric (i32.const 1) {g} (i32.const 0x304))) (call $rec (i32.load (i32.const 0x304)))"
        " (drop (call $proxy_define_metric (i32.const 2) {h} (i32.const 0x308))) (call $rec (i32.load (i32.const 0x308)))"
        " (call $rec (call $proxy_define_metric (i32.const 3) {h} (i32.const 0x30c)))"
        " (call $rec (call $proxy_increment_metric (i32.load (i32.const 0x300)) (i64.const 2)))"
        " (call $rec (call $proxy_increment_metric (i32.load (i32.const 0x300)) (i64.const -1)))"
        " (call $rec (call $proxy_record_metric (i32.load (i32.const 0x300)) (i64.const 3)))"
        " (call $rec (call $proxy_increment_metric (i32.load (i32.const 0x304)) (i64.const -4)))"
        " (call $rec (call $proxy_record_metric (i32.load (i32.const 0x308)) (i64.const 42)))"
        " (call $rec (call $proxy_get_metric (i32.load (i32.const 0x308)) (i32.const 0x310)))"
        " (call $rec (call $proxy_increment_metric (i32.const 999) (i64.const 1)))"
        " (i32.const 1)"
    )
    host = Host()
    plugin = host.load_plugin(build({"proxy_on_vm_start": cb}, {"c": "reqs", "g": "level", "h": "sizes"}), workers=2)
    assert records(plugin.workers[0].vm) == [4, 5, 6, 2, 0, 2, 0, 0, 0, 2, 2]  # id 999 (low bits 3) BadArgument, as Envoy 1.40
    assert host.metrics["reqs"] == 10  # (2 + 3) per worker, one stat per name
    assert host.metrics.histogram("sizes") == [42, 42]


def test_http_call_validation():
    good = serialize_pairs([(b":method", b"GET"), (b":path", b"/k"), (b":authority", b"idp")])
    no_auth = serialize_pairs([(b":method", b"GET"), (b":path", b"/k")])
    call = "(call $rec (call $proxy_http_call {%s} {%s} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const %d) (i32.const 0x300)))"
    cb = call % ("c", "good", 100) + call % ("nope", "good", 100) + call % ("c", "bad", 100) + call % ("c", "good", -1) + call % ("c", "good", 0) + " (call $rec (i32.load (i32.const 0x300)))"
    wasm = build({
        "proxy_on_vm_start": cb + " (i32.const 1)",
        "proxy_on_http_call_response": "(call $rec (local.get $nh)) (call $rec (call $proxy_get_status (i32.const 0x320) (i32.const 0x100) (i32.const 0x104))) (call $rec (i32.load (i32.const 0x320)))",
    }, {"c": "idp", "nope": "nope", "good": good, "bad": no_auth})
    host = Host()
    host.add_cluster("idp")
    plugin = host.load_plugin(wasm)
    vm = plugin.workers[0].vm
    assert records(vm) == [0, 2, 2, 2, 0, 8]  # tokens 4 then 8
    first, second = plugin.pending_http_calls
    assert (first.token, first.timeout_ms, second.token) == (4, 100, 8)
    first.fail()
    assert records(vm)[6:] == [0, 0, 11]  # zero headers; get_status BrokenConnection "reset"
    assert out_bytes(vm) == b"reset"
    second.respond(503)
    assert records(vm)[9] == 2 and not plugin.pending_http_calls  # :status and x-envoy-upstream-service-time


def test_whole_header_map_property_and_connection_id_token():
    """Measured on Envoy 1.40: request.headers is a pairs map in on_request_headers and an
    empty map (a zero count, 4 bytes) once the headers went upstream; connection_id is the
    Wasm token for connection.id (int64 LE)."""
    strings = {"hdrs": "request\0headers", "cid": "connection_id"}
    cb = PROP % "hdrs" + " (i32.store (i32.const 0x110) (i32.load (i32.const 0x104)))" + PROP % "cid" + " (i32.const 0)"
    plugin = Host(connection_manager_defaults=False).load_plugin(
        build({"proxy_on_request_headers": cb, "proxy_on_response_headers": PROP % "hdrs" + " (i32.const 0)"}, strings)
    )
    s = plugin.http_stream()
    s.send_request_headers({":path": "/", "x-a": "1"})
    assert records(s.vm) == [0, 0]
    assert out_bytes(s.vm) == struct.pack("<q", s.connection_id)
    assert s.vm.memory.read_u32(0x110) == len(serialize_pairs([(b":path", b"/"), (b"x-a", b"1")]))
    s.send_response_headers({":status": "200"})
    assert records(s.vm)[2] == 0 and out_bytes(s.vm) == b"\0\0\0\0"


def test_wasi_calls_the_go_runtime_makes_while_starting():
    """What a Go (wasip1) module calls in _initialize, answered as Envoy 1.40 answers it (wasm:trace
    of an SDK-built module): a non-zero monotonic clock (Go aborts on 0), fd_fdstat_get EBADF for
    stdin and OK for stdout, fd_fdstat_set_flags ENOSYS, fd_prestat_get(3) EBADF — all allowed."""
    imports = {f"wasi_snapshot_preview1.{n}": sig for n, sig in {
        "clock_time_get": "(param i32 i64 i32) (result i32)",
        "fd_fdstat_get": "(param i32 i32) (result i32)",
        "fd_fdstat_set_flags": "(param i32 i32) (result i32)",
        "fd_prestat_get": "(param i32 i32) (result i32)",
    }.items()}
    start = (
        " (call $rec (call $wasi_snapshot_preview1.clock_time_get (i32.const 1) (i64.const 0) (i32.const 0x210)))"
        " (call $rec (i64.ne (i64.load (i32.const 0x210)) (i64.const 0)))"
        " (call $rec (call $wasi_snapshot_preview1.fd_fdstat_get (i32.const 0) (i32.const 0x220)))"
        " (call $rec (call $wasi_snapshot_preview1.fd_fdstat_get (i32.const 1) (i32.const 0x220)))"
        " (call $rec (call $wasi_snapshot_preview1.fd_fdstat_set_flags (i32.const 1) (i32.const 4)))"
        " (call $rec (call $wasi_snapshot_preview1.fd_prestat_get (i32.const 3) (i32.const 0x240)))"
    )
    vm = Host().load_plugin(build({"_initialize": start}, imports=imports)).workers[0].vm
    assert records(vm) == [0, 1, 8, 0, 52, 8]
    assert vm.memory.read(0x220, 24) == struct.pack("<QQQ", 0, 64, 0)  # FD_WRITE right only, as cpp-host


def test_trace_records_callbacks_and_hostcalls_as_envoy_prints_them(monkeypatch):
    """Host(trace=True) (or PROXYWASM_TRACE=1): Envoy's wasm:trace lines, e.g. for this module
    "[vm->host] env.proxy_log(2, 4096, 2)" then "[vm<-host] env.proxy_log return: 0"."""
    wasm = build({"proxy_on_request_headers": "(drop (call $proxy_log (i32.const 2) {m})) (i32.const 0)"}, {"m": "hi"})
    monkeypatch.setenv("PROXYWASM_TRACE", "1")
    host = Host()
    plugin = host.load_plugin(wasm)
    start = len(host.trace)
    plugin.http_stream().send_request_headers({":path": "/"}, end_of_stream=True)
    assert host.trace[start:] == [
        "[host->vm] proxy_on_context_create(2, 1)", "[host<-vm] proxy_on_context_create return: void",
        "[host->vm] proxy_on_request_headers(2, 4, 1)",
        "[vm->host] env.proxy_log(2, 4096, 2)", "[vm<-host] env.proxy_log return: 0",
        "[host<-vm] proxy_on_request_headers return: 0",
    ]
    assert host.trace[:2] == ["[host->vm] proxy_on_context_create(1, 0)", "[host<-vm] proxy_on_context_create return: void"]
    monkeypatch.delenv("PROXYWASM_TRACE")
    assert Host().trace is None
