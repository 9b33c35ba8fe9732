"""VM start, plugin configuration, context ids and teardown order (abi.md §1.6, §0.16–0.18, §0.30)."""
import pytest

from proxywasm_host import Host, PluginRejected
from watgen import build, records

REQ = {":method": "GET", ":path": "/", ":authority": "example.com"}

TRACE = {
    # each callback records a code: 1xx context create (+parent), 2 vm_start, 3 configure, ...
    "proxy_on_context_create": "(call $rec (i32.add (i32.const 100) (local.get $ctx))) (call $rec (local.get $parent))",
    "proxy_on_vm_start": "(call $rec (i32.const 2)) (call $rec (local.get $root)) (call $rec (local.get $size)) (i32.const 1)",
    "proxy_on_configure": "(call $rec (i32.const 3)) (call $rec (local.get $size)) (i32.const 1)",
    "proxy_on_request_headers": "(call $rec (i32.const 4)) (call $rec (local.get $ctx)) (i32.const 0)",
    "proxy_on_log": "(call $rec (i32.const 7))",
    "proxy_on_done": "(call $rec (i32.const 8)) (i32.const 1)",
    "proxy_on_delete": "(call $rec (i32.const 9))",
}


def test_start_configure_and_stream_order():
    plugin = Host().load_plugin(build(TRACE), configuration="abcde", vm_configuration="xyz")
    vm = plugin.workers[0].vm
    assert records(vm) == [101, 0, 2, 1, 3, 3, 5]  # root ctx 1 created, vm_start(root=1, 3), configure(5)
    stream = plugin.http_stream()
    stream.send_request_headers(REQ, end_of_stream=True)
    stream.send_response_headers({":status": "200"}, end_of_stream=True)
    stream.complete()
    # stream context 2 created lazily with parent 1; Envoy HTTP teardown: on_log, on_done, on_delete
    assert records(vm)[7:] == [102, 1, 4, 2, 7, 8, 9]


def test_vm_start_false_rejects_plugin_with_logs():
    wasm = build(
        {"proxy_on_vm_start": "(drop (call $proxy_log (i32.const 4) {msg})) (i32.const 0)"},
        {"msg": "bad vm config"},
    )
    with pytest.raises(PluginRejected, match="proxy_on_vm_start returned false") as e:
        Host().load_plugin(wasm)
    assert [r.message for r in e.value.logs] == ["bad vm config"]
    assert "bad vm config" in str(e.value)


def test_configure_false_rejects_plugin():
    wasm = build({"proxy_on_configure": "(drop (call $proxy_log (i32.const 3) {msg})) (i32.const 0)"}, {"msg": "field x"})
    with pytest.raises(PluginRejected, match="proxy_on_configure returned false") as e:
        Host().load_plugin(wasm)
    assert e.value.logs[0].level == "warn" and e.value.logs[0].message == "field x"


def test_plugin_configuration_only_readable_during_configure():
    read_cfg = "(call $rec (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 100) (i32.const 0x100) (i32.const 0x104)))"
    read_vm = "(call $rec (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 100) (i32.const 0x100) (i32.const 0x104)))"
    wasm = build(
        {
            "proxy_on_configure": read_cfg + " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))) (i32.const 1)",
            "proxy_on_request_headers": read_cfg + read_vm + " (i32.const 0)",
        }
    )
    plugin = Host().load_plugin(wasm, configuration='{"a":1}', vm_configuration="vmcfg")
    assert plugin.logs[0].message == '{"a":1}'
    stream = plugin.http_stream()
    stream.send_request_headers(REQ)
    assert records(stream.vm) == [0, 1, 0]  # Ok in configure; NotFound later; VM configuration always


def test_dict_configuration_is_json():
    wasm = build({"proxy_on_configure": "(drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 100) (i32.const 0x100) (i32.const 0x104))) (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))) (i32.const 1)"})
    plugin = Host().load_plugin(wasm, configuration={"k": [1, 2]})
    assert plugin.logs[0].message == '{"k":[1,2]}'


def test_initialize_then_main_and_restricted_hostcalls():
    wasm = build(
        {"_initialize": "(call $rec (i32.const 50))"},
        extra='(func (export "main") (param i32 i32) (result i32) (call $rec (i32.const 51)) (i32.const 0))'
        ' (func (export "__wasm_call_ctors") (call $rec (i32.const 52)))',
    )
    plugin = Host().load_plugin(wasm)
    assert records(plugin.workers[0].vm)[:2] == [50, 51]  # __wasm_call_ctors is never called by Envoy
    assert 52 not in records(plugin.workers[0].vm)
    restricted = build({"_initialize": "(drop (call $proxy_set_tick_period_milliseconds (i32.const 10)))"})
    with pytest.raises(PluginRejected, match="_initialize failed: restricted_callback"):
        Host().load_plugin(restricted)


def test_start_used_when_no_initialize():
    plugin = Host().load_plugin(build({"_start": "(call $rec (i32.const 60))"}))
    assert records(plugin.workers[0].vm)[0] == 60


def test_log_levels_follow_envoy_wasm_logger():
    wasm = build(
        {
            "proxy_on_vm_start": "(drop (call $proxy_log (i32.const 1) {d})) (drop (call $proxy_log (i32.const 2) {i}))"
            " (call $rec (call $proxy_log (i32.const 9) {i})) (call $rec (call $proxy_get_log_level (i32.const 0x100))) (call $rec (i32.load (i32.const 0x100))) (i32.const 1)"
        },
        {"d": "debug line", "i": "info line"},
    )
    plugin = Host().load_plugin(wasm)
    assert [(r.level, r.message) for r in plugin.logs] == [("info", "info line")]
    assert records(plugin.workers[0].vm) == [2, 0, 2]  # bad level -> BadArgument; level info = 2
    debug = Host(log_level="debug").load_plugin(wasm)
    assert [r.level for r in debug.logs] == ["debug", "info"]
