"""Envoy 1.40 behaviours found by running SDK-built modules through Envoy and the host
(shared/reference/envoy-observed.md, "Found by running SDK-built modules"). Each test pins one
with a WAT module that does what the SDK's code does; examples/ runs the SDK builds themselves."""
from __future__ import annotations

from proxywasm_host import Host
from proxywasm_host.memory import serialize_pairs
from watgen import build, out_bytes, records

CALL_HEADERS = serialize_pairs([(b":method", b"GET"), (b":path", b"/k"), (b":authority", b"idp")])


def test_effective_context_zero_is_the_calling_context():
    """cpp-host's contextOrEffectiveContext: id 0 means the context whose callback runs. A C++ SDK
    filter switches to a stream context and back with 0, then reads the callout's body."""
    wasm = build({
        "proxy_on_vm_start": "(drop (call $proxy_http_call {c} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 500) (i32.const 0x300))) (i32.const 1)",
        "proxy_on_http_call_response": (
            "(call $rec (call $proxy_set_effective_context (i32.const 0)))"
            " (call $rec (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get $body) (i32.const 0x100) (i32.const 0x104)))"
        ),
    }, {"c": "idp", "h": CALL_HEADERS})
    host = Host()
    host.add_cluster("idp")
    plugin = host.load_plugin(wasm)
    plugin.pending_http_calls[0].respond(200, body="the answer")
    vm = plugin.workers[0].vm
    assert records(vm) == [0, 0]
    assert out_bytes(vm) == b"the answer"


GET = "(call $rec (call $proxy_get_property {%s} (i32.const 0x100) (i32.const 0x104))) (call $rec (i32.load (i32.load (i32.const 0x100))))"


def test_request_and_response_sizes_and_duration_in_on_log():
    """Measured on Envoy 1.40 in proxy_on_log: request.duration (ns, once the request is complete),
    request.size (content-length, else body bytes), response.size (body bytes sent),
    response.code_details via_upstream, response.grpc_status 2 (Unknown) for a plain HTTP 200."""
    strings = {"dur": "request\0duration", "rsize": "request\0size", "psize": "response\0size",
               "details": "response\0code_details", "grpc": "response\0grpc_status"}
    on_log = GET % "dur" + GET % "rsize" + GET % "psize" + GET % "grpc" + GET % "details"
    host = Host()
    plugin = host.load_plugin(build({"proxy_on_request_headers": GET % "dur" + " (i32.const 0)", "proxy_on_log": on_log}, strings))
    s = plugin.http_stream()
    s.send_request_headers({":method": "POST", ":path": "/", "content-length": "5"})
    s.send_request_body(b"hello", end_of_stream=True)
    host.clock.advance(ms=2.5)
    s.send_response_headers({":status": "200"})
    s.send_response_body(b"abc", end_of_stream=True)
    s.complete()
    vm = plugin.workers[0].vm
    assert records(vm)[0] == 1  # NotFound while the request is in flight
    assert records(vm)[2:10] == [0, 2_500_000, 0, 5, 0, 3, 0, 2]
    assert records(vm)[10] == 0 and out_bytes(vm) == b"via_upstream"


def test_property_path_with_a_trailing_separator():
    """Recent C++ SDK builds end the path with the NUL separator; Envoy resolves it anyway."""
    strings = {"plain": "source\0address", "trailing": "source\0address\0"}
    cb = GET % "trailing" + " (i32.store (i32.const 0x110) (i32.load (i32.const 0x100))) (i32.store (i32.const 0x114) (i32.load (i32.const 0x104)))" + GET % "plain" + " (i32.const 0)"
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb}, strings))
    plugin.http_stream().send_request_headers({":path": "/"}, end_of_stream=True)
    vm = plugin.workers[0].vm
    assert records(vm)[0] == 0 and records(vm)[2] == 0
    assert vm.memory.read(vm.memory.read_u32(0x110), vm.memory.read_u32(0x114)) == out_bytes(vm) == b"127.0.0.1:54321"


def _pb(field: int, data: bytes) -> bytes:
    return bytes([field << 3 | 2, len(data)]) + data


def test_grpc_call_to_a_serialized_grpc_service():
    """The C++ SDK passes an envoy.config.core.v3.GrpcService proto, not a cluster name; Envoy
    calls the cluster it names and sends its initial_metadata. Plain cluster names still work."""
    from test_abi_completion import GRPC_IMPORTS, GRPC_SIGS

    service = _pb(1, _pb(1, b"backend")) + _pb(5, _pb(1, b"x-tenant") + _pb(2, b"blue"))
    call = "(call $rec (call $proxy_grpc_call {%s} {svc} {m} (i32.const 0) (i32.const 0) {msg} (i32.const 1000) (i32.const 0x300)))"
    wasm = build({"proxy_on_vm_start": call % "proto" + call % "plain" + " (i32.const 1)"},
                 {"proto": service, "plain": "backend", "svc": "pkg.Svc", "m": "Get", "msg": "req", "mdk": "x"},
                 imports=GRPC_IMPORTS, extra=GRPC_SIGS.format(mdk="{mdk}"))
    host = Host()
    host.add_cluster("backend")
    plugin = host.load_plugin(wasm)
    assert records(plugin.workers[0].vm) == [0, 0]
    by_proto, by_name = plugin.pending_grpc
    assert (by_proto.cluster, by_proto.service, by_proto.metadata["x-tenant"]) == ("backend", "pkg.Svc", "blue")
    assert by_name.cluster == "backend" and "x-tenant" not in by_name.metadata


def test_emscripten_memory_growth_notice_inside_malloc_is_refused_as_in_envoy():
    """An emscripten malloc that grows memory calls env.emscripten_notify_memory_growth. Envoy 1.40
    refuses it while the host allocates (measured: "malloc failed: Uncaught Error:
    restricted_callback", the request gets 503), so the host refuses it too."""
    import pytest

    from proxywasm_host import GuestTrap

    alloc = ('(func (export "malloc") (param $n i32) (result i32) (call $env.emscripten_notify_memory_growth (i32.const 0))'
             " (i32.const 0x9000))")
    wasm = build({"proxy_on_request_headers": "(drop (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"},
                 allocator=(), extra=alloc, imports={"env.emscripten_notify_memory_growth": "(param i32)"})
    plugin = Host().load_plugin(wasm)
    with pytest.raises(GuestTrap, match="Function: malloc failed: restricted_callback"):
        plugin.http_stream().send_request_headers({":path": "/"}, end_of_stream=True)
    after = plugin.http_stream()
    after.send_request_headers({":path": "/"}, end_of_stream=True)
    assert after.downstream_response.headers[":status"] == "503"  # the VM failed closed


def test_connection_manager_sanitizes_client_cert_and_closes_after_early_replies():
    """Envoy 1.40's connection manager (HTTP/1.1, plaintext listener, defaults), measured: it drops
    x-forwarded-client-cert before the filters run, and says `connection: close` after a local reply
    sent before the request ended, or after any local 400."""
    reply = "(drop (call $proxy_send_local_response (i32.const %d) (i32.const 0) (i32.const 0) {b} (i32.const 0) (i32.const 0) (i32.const -1)))"
    seen = "(call $rec (call $proxy_get_header_map_value (i32.const 0) {xfcc} (i32.const 0x100) (i32.const 0x104)))"
    wasm = build({"proxy_on_request_headers": seen + " (if (i32.eqz (local.get $eos)) (then " + reply % 403 + ")) (i32.const 0)",
                  "proxy_on_request_body": reply % 400 + " (i32.const 0)"},
                 {"b": "no", "xfcc": "x-forwarded-client-cert"})
    plugin = Host().load_plugin(wasm)

    def connection_header(method: str, body: bytes | None) -> str | None:
        s = plugin.http_stream()
        s.send_request_headers({":method": method, ":path": "/", "x-forwarded-client-cert": "By=spiffe://x"}, end_of_stream=body is None)
        if body is not None and s.local_reply is None:
            s.send_request_body(body, end_of_stream=True)
        if s.local_reply is None:
            s.send_response_headers({":status": "200"}, end_of_stream=True)
        return s.downstream_response.headers.get("connection")

    assert connection_header("POST", b"x") == "close"  # 403 while the body is still to come
    assert connection_header("GET", None) is None  # upstream 200 after a complete request
    assert records(plugin.workers[0].vm) == [1, 1]  # the filter never saw the client's cert header
    body_400 = Host().load_plugin(build({"proxy_on_request_body": reply % 400 + " (i32.const 0)"}, {"b": "no"})).http_stream()
    body_400.send_request_headers({":method": "POST", ":path": "/"})
    body_400.send_request_body(b"x", end_of_stream=True)
    assert body_400.downstream_response.headers["connection"] == "close"


def test_trap_in_a_network_filter_closes_the_connection():
    """Envoy 1.40 closes the downstream connection after a trap in a TCP callback (no reset)."""
    conn = Host().load_plugin(build({"proxy_on_downstream_data": "unreachable"}), raise_on_trap=False).tcp_stream()
    conn.send_downstream_data(b"x")
    assert conn.closed is not None and conn.closed.startswith("closed after a failure")


EXTRA_VMS_FILTER = {
    "proxy_on_vm_start": "(drop (call $proxy_define_metric (i32.const 0) {starts} (i32.const 0x300)))"
                         " (drop (call $proxy_increment_metric (i32.load (i32.const 0x300)) (i64.const 1)))"
                         " (drop (call $proxy_log (i32.const 2) {hello})) (i32.const 1)",
    "proxy_on_configure": "(drop (call $proxy_set_tick_period_milliseconds (i32.const 100))) (i32.const 1)",
    "proxy_on_tick": "(drop (call $proxy_define_metric (i32.const 0) {ticks} (i32.const 0x304)))"
                     " (drop (call $proxy_increment_metric (i32.load (i32.const 0x304)) (i64.const 1)))",
}
EXTRA_VMS_STRINGS = {"starts": "starts", "ticks": "ticks", "hello": "vm started"}


def test_extra_vms_run_start_and_configure_as_often_as_in_envoy():
    """Envoy 1.40 with one worker (measured): wasmcustom.starts is 3 (canary, main thread, worker),
    "vm started" is logged 3 times, and the main thread's VM ticks too (~20 ticks/s at 100 ms)."""
    wasm = build(EXTRA_VMS_FILTER, EXTRA_VMS_STRINGS)
    host = Host(extra_vms=True)
    plugin = host.load_plugin(wasm)
    host.clock.advance(seconds=1)
    assert host.metrics["starts"] == 3
    assert [r.message for r in plugin.logs] == ["vm started"] * 3
    assert host.metrics["ticks"] == 20
    plain = Host()
    plain.load_plugin(wasm, workers=2)
    plain.clock.advance(seconds=1)
    assert (plain.metrics["starts"], plain.metrics["ticks"]) == (2, 20)  # by default: the workers only


def test_log_lines_carry_envoy_prefix():
    """Envoy 1.40 prints "wasm log<prefix>: message" (measured): stream contexts " name root_id vm_id",
    root contexts " root_id vm_id", empty parts left out."""
    wasm = build({"proxy_on_vm_start": "(drop (call $proxy_log (i32.const 2) {m})) (i32.const 1)",
                  "proxy_on_request_headers": "(drop (call $proxy_log (i32.const 2) {m})) (i32.const 0)"}, {"m": "x"})
    for (name, root_id, vm_id), (root, stream) in {("n", "r", "v"): (" r v", " n r v"), ("n", "", "v"): (" v", " n v"),
                                                   ("", "", ""): ("", "")}.items():
        plugin = Host().load_plugin(wasm, name=name, root_id=root_id, vm_id=vm_id)
        plugin.http_stream().send_request_headers({":path": "/"}, end_of_stream=True)
        assert [r.prefix for r in plugin.logs] == [root, stream]


def test_upstream_address_once_the_upstream_is_picked():
    """Envoy 1.40 (found with the Go SDK's network example): upstream.address is NotFound in
    on_request_headers and answers in on_response_headers and in on_upstream_data."""
    strings = {"addr": "upstream\0address"}
    get = "(call $rec (call $proxy_get_property {addr} (i32.const 0x100) (i32.const 0x104)))"
    wasm = build({"proxy_on_request_headers": get + " (i32.const 0)", "proxy_on_response_headers": get + " (i32.const 0)",
                  "proxy_on_upstream_data": get + " (i32.const 0)"}, strings)
    plugin = Host().load_plugin(wasm)
    s = plugin.http_stream()
    s.send_request_headers({":path": "/"}, end_of_stream=True)
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    vm = plugin.workers[0].vm
    assert records(vm) == [1, 0] and out_bytes(vm) == b"127.0.0.1:8080"
    conn = plugin.tcp_stream()
    conn.send_upstream_data(b"hi")
    assert records(vm)[2] == 0


def test_a_chain_starts_in_envoys_order():
    """Envoy 1.40 (measured with two filters): each filter's canary and main-thread VMs start first,
    then each worker starts every filter in chain order. Host.load_chain does the same."""
    wasm = build({"proxy_on_configure": "(drop (call $proxy_log (i32.const 2) (i32.const 0x800) (i32.const 1))) (i32.const 1)"},
                 extra='(data (i32.const 0x800) "c")')
    host = Host(extra_vms=True)
    first, second = host.load_chain([(wasm, {"name": "a", "root_id": "a"}), (wasm, {"name": "b", "root_id": "b"})])
    order = [r.prefix for r in sorted(first.logs + second.logs, key=lambda r: r.seq)]
    assert order == [" a", " a", " b", " b", " a", " b"]  # canary + main of a, of b, then worker 0: a, b
    assert len(first.workers) == len(second.workers) == 1


def test_on_log_reads_the_connection_close_the_connection_manager_adds():
    """Measured on 1.40 (integration/test_sdk_differences.py): the connection: close Envoy adds after
    a reply that starts before the request ended is in the response header map on_log reads."""
    import pytest

    from proxywasm_host.abi import WasmResult

    reply = ("(if (i32.eqz (local.get $eos)) (then (drop (call $proxy_send_local_response (i32.const 403)"
             " (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))))"
             " (i32.const 0)")
    on_log = "(call $rec (call $proxy_get_header_map_value (i32.const 2) {c} (i32.const 0x100) (i32.const 0x104)))"
    plugin = Host().load_plugin(build({"proxy_on_request_headers": reply, "proxy_on_log": on_log}, {"c": "connection"}))
    vm = plugin.workers[0].vm
    early = plugin.http_stream()
    early.send_request_headers({":path": "/"}, end_of_stream=False)
    early.complete()
    assert early.downstream_response.headers["connection"] == "close"
    assert records(vm) == [WasmResult.OK] and out_bytes(vm) == b"close"
    whole = plugin.http_stream()
    whole.send_request_headers({":path": "/"}, end_of_stream=True)
    whole.send_response_headers({":status": "200", "connection": "keep-alive"}, end_of_stream=True)
    whole.complete()
    assert records(vm) == [WasmResult.OK, WasmResult.NOT_FOUND]  # the upstream's connection header went too
    with pytest.raises(KeyError):
        whole.downstream_response.headers["connection"]


def test_a_trap_in_the_allocator_fails_the_vm_once_the_callback_returns():
    """Measured on 1.40 (integration/test_sdk_differences.py): a trap in malloc is malloc's; the
    hostcall that allocated answers InvalidMemoryAccess and the callback goes on; then the VM is
    failed and the stream gets 503."""
    import pytest

    from proxywasm_host import GuestTrap

    malloc = '(func (export "malloc") (param $n i32) (result i32) unreachable)'
    pairs = ("(if (i32.eq (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104)) (i32.const 6))"
             " (then (drop (call $proxy_log (i32.const 2) {m})))) (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": pairs}, {"m": "went on with 6"}, allocator=(),
                                      extra=malloc))
    vm = plugin.workers[0].vm
    stream = plugin.http_stream()
    with pytest.raises(GuestTrap) as trap:
        stream.send_request_headers({":path": "/"}, end_of_stream=True)
    assert trap.value.callback == "malloc" and "unreachable" in trap.value.detail
    assert [r.message for r in plugin.logs] == ["went on with 6"]  # InvalidMemoryAccess, and the callback went on
    assert stream.downstream_response.headers[":status"] == "503"
    assert vm.failed is trap.value
    assert plugin.http_stream().send_request_headers({":path": "/"}).status == "StopAllIterationAndWatermark"
