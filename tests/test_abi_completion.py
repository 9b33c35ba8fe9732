"""TCP streams, gRPC callouts, plugin teardown and proxy_done, reload, VMs shared by
plugins, and callouts routed to a real HTTP server (abi.md §1.6, §2.1, §2.2, §2.6)."""
import http.server
import threading

import pytest

from proxywasm_host import Host, ModuleLoadError, PluginRejected, StreamStateError
from proxywasm_host.memory import serialize_pairs
from watgen import build, out_bytes, records

REQ = {":method": "GET", ":path": "/", ":authority": "a"}


def test_tcp_stream_buffers_while_stopped_and_tears_down_in_tcp_order():
    wasm = build({
        "proxy_on_new_connection": "(call $rec (i32.const 1)) (i32.const 0)",
        "proxy_on_downstream_data": "(call $rec (local.get $size)) (call $rec (local.get $eos))"
        " (if (result i32) (i32.lt_u (local.get $size) (i32.const 6)) (then (i32.const 1))"
        " (else (drop (call $proxy_set_buffer_bytes (i32.const 2) (i32.const 0) (i32.const 0) {pre})) (i32.const 0)))",
        "proxy_on_upstream_data": "(call $rec (i32.const 3)) (call $rec (local.get $size)) (i32.const 0)",
        "proxy_on_downstream_connection_close": "(call $rec (i32.const 40)) (call $rec (local.get 1))",
        "proxy_on_upstream_connection_close": "(call $rec (i32.const 41)) (call $rec (local.get 1))",
        "proxy_on_done": "(call $rec (i32.const 8)) (i32.const 1)",
        "proxy_on_log": "(call $rec (i32.const 7))",
        "proxy_on_delete": "(call $rec (i32.const 9))",
    }, {"pre": ">"}, extra="")
    conn = Host().load_plugin(wasm).tcp_stream()
    assert conn.connect() == "Continue"
    assert conn.send_downstream_data(b"abc") == "StopIteration"
    assert conn.upstream_received == b""
    assert conn.send_downstream_data(b"def") == "Continue"  # sees all 6 buffered bytes
    assert conn.upstream_received == b">abcdef"
    conn.send_upstream_data(b"pong", end_of_stream=True)
    assert conn.downstream_received == b"pong"
    conn.close("downstream")
    # connect, 3/0, 6/0, upstream 4, synthesized upstream close UNKNOWN(0), downstream close REMOTE(2), done, log, delete
    assert records(conn.vm) == [1, 3, 0, 6, 0, 3, 4, 41, 0, 40, 2, 8, 7, 9]
    with pytest.raises(StreamStateError):
        conn.send_downstream_data(b"late")


def test_tcp_close_from_filter_and_continue_reading():
    wasm = build({
        "proxy_on_downstream_data": "(if (result i32) (local.get $eos) (then (call $rec (call $proxy_close_stream (i32.const 2))) (i32.const 1))"
        " (else (call $rec (call $proxy_continue_stream (i32.const 2))) (i32.const 1)))",
    })
    conn = Host().load_plugin(wasm).tcp_stream()
    conn.send_downstream_data(b"x")
    assert conn.upstream_received == b"x"  # continue_stream(DOWNSTREAM) resumes reading after the call
    conn.send_downstream_data(b"y", end_of_stream=True)
    assert conn.closed == "closed by the filter"


GRPC_IMPORTS = {
    "proxy_grpc_call": "(param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
    "proxy_grpc_stream": "(param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
    "proxy_grpc_send": "(param i32 i32 i32 i32) (result i32)",
    "proxy_grpc_cancel": "(param i32) (result i32)",
    "proxy_grpc_close": "(param i32) (result i32)",
}
GRPC_CB = {
    "proxy_on_grpc_receive_initial_metadata": "(call $rec (i32.const 61)) (call $rec (local.get 1)) (call $rec (local.get 2))"
    " (call $rec (call $proxy_get_header_map_value (i32.const 4) {mdk} (i32.const 0x100) (i32.const 0x104)))",
    "proxy_on_grpc_receive": "(call $rec (i32.const 62)) (call $rec (local.get 1)) (call $rec (local.get 2))"
    " (call $rec (call $proxy_get_buffer_bytes (i32.const 5) (i32.const 0) (i32.const 100) (i32.const 0x100) (i32.const 0x104)))",
    "proxy_on_grpc_close": "(call $rec (i32.const 64)) (call $rec (local.get 1)) (call $rec (local.get 2))"
    " (call $rec (call $proxy_get_status (i32.const 0x120) (i32.const 0x100) (i32.const 0x104)))",
}
GRPC_SIGS = "".join(
    f'(func (export "{n}") (param i32 i32 i32) {b})' for n, b in GRPC_CB.items()
)


def test_grpc_call_and_stream_inspect_and_answer():
    start = (
        "(call $rec (call $proxy_grpc_call {cl} {svc} {m} (i32.const 0) (i32.const 0) {msg} (i32.const 1000) (i32.const 0x300)))"
        " (call $rec (i32.load (i32.const 0x300)))"
        " (call $rec (call $proxy_grpc_call {bad} {svc} {m} (i32.const 0) (i32.const 0) {msg} (i32.const 1000) (i32.const 0x300)))"
        " (call $rec (call $proxy_grpc_stream {cl} {svc} {m} {md} (i32.const 0x304)))"
        " (call $rec (i32.load (i32.const 0x304)))"
        " (call $rec (call $proxy_grpc_send (i32.load (i32.const 0x304)) {msg} (i32.const 0)))"
        " (call $rec (call $proxy_grpc_send (i32.const 5) {msg} (i32.const 0)))"
        " (call $rec (call $proxy_grpc_cancel (i32.const 97))) (i32.const 1)"  # 97: a call token that names none
    )
    strings = {"cl": "backend", "bad": "nope", "svc": "pkg.Svc", "m": "Get", "msg": "req", "mdk": "x-md",
               "md": serialize_pairs([(b"x-md", b"v")])}
    wasm = build({"proxy_on_vm_start": start}, strings, imports=GRPC_IMPORTS, extra=GRPC_SIGS.format(mdk="{mdk}"))
    host = Host()
    host.add_cluster("backend")
    plugin = host.load_plugin(wasm)
    vm = plugin.workers[0].vm
    assert records(vm) == [0, 5, 4, 0, 6, 0, 2, 1]  # call token 5; unknown cluster ParseFailure; stream 6; send on a call BadArgument
    call, stream = plugin.pending_grpc
    assert (call.service, call.method, call.message, call.is_stream) == ("pkg.Svc", "Get", b"req", False)
    assert stream.metadata["x-md"] == "v" and stream.sent == [b"req"]
    call.receive(b"answer")
    assert records(vm)[8:] == [62, 5, 6, 0] and out_bytes(vm) == b"answer"
    stream.receive_initial_metadata({"x-md": "1"})
    stream.close(14, "unavailable")
    assert records(vm)[12:] == [61, 6, 1, 0, 64, 6, 14, 0]
    assert out_bytes(vm) == b"unavailable" and vm.memory.read_u32(0x120) == 14
    assert plugin.pending_grpc == []


@pytest.mark.parametrize("message, seen", [("not you", b"not you{via_upstream}"), ("", b"via_upstream")])
def test_grpc_failure_message_as_envoy_enhances_it(message, seen):
    """Envoy's gRPC client appends the response code details to a service's status message
    (measured: integration/test_parity_feature.py::test_a_grpc_callout)."""
    start = ("(call $rec (call $proxy_grpc_call {cl} {svc} {m} (i32.const 0) (i32.const 0) {msg} (i32.const 1000)"
             " (i32.const 0x300))) (i32.const 1)")
    strings = {"cl": "backend", "svc": "pkg.Svc", "m": "Get", "msg": "req", "mdk": "x-md"}
    wasm = build({"proxy_on_vm_start": start}, strings, imports=GRPC_IMPORTS, extra=GRPC_SIGS.format(mdk="{mdk}"))
    host = Host()
    host.add_cluster("backend")
    plugin = host.load_plugin(wasm)
    plugin.pending_grpc[0].fail(7, message)
    vm = plugin.workers[0].vm
    assert records(vm)[1:] == [64, vm.memory.read_u32(0x300), 7, 0] and out_bytes(vm) == seen


def test_shutdown_with_proxy_done():
    wasm = build({
        "proxy_on_done": "(call $rec (i32.const 8)) (i32.const 0)",
        "proxy_on_delete": "(call $rec (i32.const 9))",
        "proxy_on_tick": "(call $rec (call $proxy_done)) (call $rec (call $proxy_done))",
    }, imports={"proxy_done": "(result i32)"})
    host = Host()
    plugin = host.load_plugin(wasm)
    vm = plugin.workers[0].vm
    plugin.shutdown()
    assert records(vm) == [8]  # on_done returned false: pending
    plugin.workers[0].root.invoke("proxy_on_tick", 1)
    assert records(vm) == [8, 0, 1, 9]  # proxy_done Ok, then NotFound; on_delete after the call


def test_reload_swaps_new_streams_and_keeps_old_on_failure():
    v1 = build({"proxy_on_request_headers": "(drop (call $proxy_add_header_map_value (i32.const 0) {k} {v})) (i32.const 0)"}, {"k": "x-v", "v": "1"})
    v2 = build({"proxy_on_request_headers": "(drop (call $proxy_add_header_map_value (i32.const 0) {k} {v})) (i32.const 0)"}, {"k": "x-v", "v": "2"})
    rejecting = build({"proxy_on_configure": "(i32.const 0)"})
    host = Host()
    plugin = host.load_plugin(v1)
    open_stream = plugin.http_stream()
    plugin.reload(host.load_module(v2))
    new_stream = plugin.http_stream()
    open_stream.send_request_headers(REQ)
    new_stream.send_request_headers(REQ)
    assert open_stream.upstream_request.headers["x-v"] == "1"  # finishes on the old VM
    assert new_stream.upstream_request.headers["x-v"] == "2"
    with pytest.raises(PluginRejected):
        plugin.reload(host.load_module(rejecting))
    with pytest.raises(ModuleLoadError):
        plugin.reload(host.load_module(b"not wasm"))
    s = plugin.http_stream()
    s.send_request_headers(REQ)
    assert s.upstream_request.headers["x-v"] == "2"  # the last good plugin keeps serving


def test_reload_keeps_the_vm_when_its_key_is_unchanged():
    """As Envoy applies an ECDS update (seen in its wasm:trace): same code and VM configuration, so
    the worker keeps its VM; the new plugin gets a new root context there (on_vm_start and
    on_configure again), then the old root gets on_done and on_delete. New code: a fresh VM."""
    root, ctx = "(call $rec (local.get $root))", "(call $rec (local.get $ctx))"
    hooks = {"proxy_on_vm_start": f"{root} (i32.const 1)", "proxy_on_configure": f"{root} (i32.const 1)",
             "proxy_on_done": f"{ctx} (i32.const 1)", "proxy_on_delete": ctx}
    host = Host()
    plugin = host.load_plugin(build(hooks), configuration="a")
    vm = plugin.workers[0].vm
    plugin.reload(configuration="b")
    assert plugin.workers[0].vm is vm and plugin.workers[0].root.id == 2
    assert records(vm) == [1, 1, 2, 2, 1, 1]  # start+configure of 1, of 2, then done+delete of 1
    plugin.reload(host.load_module(build({**hooks, "proxy_on_tick": ""})))
    assert plugin.workers[0].vm is not vm and plugin.workers[0].root.id == 1
    assert records(vm)[6:] == [2, 2]  # the old VM's root: done and delete


def test_plugins_with_same_vm_config_share_a_vm():
    wasm = build({
        "proxy_on_vm_start": "(call $rec (local.get $root)) (i32.const 1)",
        "proxy_on_configure": "(drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 10) (i32.const 0x100) (i32.const 0x104)))"
        " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))) (i32.const 1)",
    })
    host = Host()
    a = host.load_plugin(wasm, name="a", root_id="ra", configuration="cfg-a")
    b = host.load_plugin(wasm, name="b", root_id="rb", configuration="cfg-b")
    other = host.load_plugin(wasm, name="c", vm_id="other", configuration="cfg-c")
    assert a.workers[0].vm is b.workers[0].vm and other.workers[0].vm is not a.workers[0].vm
    assert (a.workers[0].root.id, b.workers[0].root.id) == (1, 2)
    assert records(a.workers[0].vm) == [1, 2]  # on_vm_start per root context
    assert [r.message for r in a.logs] == ["cfg-a"] and [r.message for r in b.logs] == ["cfg-b"]


def test_callout_routed_to_a_real_http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"keys": []}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.send_header("x-path", self.path)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = Host()
        host.add_cluster("jwks", f"http://127.0.0.1:{server.server_port}")
        hdrs = serialize_pairs([(b":method", b"GET"), (b":path", b"/keys"), (b":authority", b"jwks")])
        wasm = build({
            "proxy_on_vm_start": "(drop (call $proxy_http_call {c} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 2000) (i32.const 0x300))) (i32.const 1)",
            "proxy_on_http_call_response": "(call $rec (local.get $body))"
            " (call $rec (call $proxy_get_header_map_value (i32.const 6) {xp} (i32.const 0x100) (i32.const 0x104)))",
        }, {"c": "jwks", "h": hdrs, "xp": "x-path"})
        plugin = host.load_plugin(wasm)
        host.dispatch_http_calls()
        vm = plugin.workers[0].vm
        assert records(vm) == [12, 0] and out_bytes(vm) == b"/keys"
    finally:
        server.shutdown()


def test_foreign_functions_builtin_registry_and_unknown():
    call = "(call $rec (call $proxy_call_foreign_function {%s} {arg} (i32.const 0x100) (i32.const 0x104)))"
    wasm = build(
        {"proxy_on_vm_start": call % "compress" + call % "mine" + " (call $rec (i32.load (i32.const 0x104)))" + call % "nope" + " (i32.const 1)"},
        {"compress": "compress", "mine": "reverse", "nope": "no_such_fn", "arg": "hello"},
        imports={"proxy_call_foreign_function": "(param i32 i32 i32 i32 i32 i32) (result i32)"},
    )
    host = Host()
    host.foreign_functions["reverse"] = lambda data: data[::-1]
    vm = host.load_plugin(wasm).workers[0].vm
    assert records(vm) == [0, 0, 5, 1]
    assert out_bytes(vm) == b"olleh"


def test_request_trailers_and_abi_0_1_configuration():
    p = Host(connection_manager_defaults=False).load_plugin(
        build({
            "proxy_on_request_trailers": "(call $rec (local.get $n)) (call $rec (call $proxy_get_header_map_value (i32.const 1) {k} (i32.const 0x100) (i32.const 0x104))) (i32.const 0)",
            "proxy_on_configure": "(call $rec (call $proxy_get_configuration (i32.const 0x100) (i32.const 0x104))) (call $rec (i32.load (i32.const 0x104))) (i32.const 1)",
        }, {"k": "x-t"}, abi="0_1_0"),
        configuration="plugin-cfg",
    )
    assert records(p.workers[0].vm) == [0, 10]
    s = p.http_stream()
    s.send_request_headers(REQ)
    s.send_request_body(b"b", end_of_stream=False)
    s.send_request_trailers({"x-t": "v"})
    assert records(s.vm)[2:] == [1, 0]
    assert s.upstream_request.trailers["x-t"] == "v" and s.upstream_request.complete


def test_http_call_timeout_is_a_504_response():
    hdrs = serialize_pairs([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"x")])
    wasm = build({
        "proxy_on_vm_start": "(drop (call $proxy_http_call {c} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 0x300))) (i32.const 1)",
        "proxy_on_http_call_response": "(call $rec (local.get $nh)) (call $rec (call $proxy_get_header_map_value (i32.const 6) {st} (i32.const 0x100) (i32.const 0x104)))",
    }, {"c": "slow", "h": hdrs, "st": ":status"})
    host = Host()
    host.add_cluster("slow")
    plugin = host.load_plugin(wasm)
    plugin.pending_http_calls[0].timeout()
    assert records(plugin.workers[0].vm) == [3, 0] and out_bytes(plugin.workers[0].vm) == b"504"
