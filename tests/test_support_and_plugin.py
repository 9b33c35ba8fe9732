"""The registry covers the whole ABI, the README's tables match it, and the pytest
plugin's fixture and failure report work in a real pytest run."""
from pathlib import Path

from proxywasm_host.abi import ABI_0_2_1
from proxywasm_host.hostcalls.registry import lookup
from proxywasm_host.support import callback_table, hostcall_table

pytest_plugins = ["pytester"]


def _plugin_args() -> list[str]:
    """Load our pytest plugin in the inner run unless its entry point already does."""
    from importlib.metadata import entry_points

    if any(ep.value == "proxywasm_host.pytest_plugin" for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "proxywasm_host.pytest_plugin"]

#: every import of spec abi-versions/v0.2.1 (proxy-wasm-abi.md §1.2)
SPEC_0_2_1 = """proxy_log proxy_get_log_level proxy_get_current_time_nanoseconds proxy_set_tick_period_milliseconds
proxy_get_buffer_bytes proxy_set_buffer_bytes proxy_get_buffer_status proxy_get_header_map_size
proxy_get_header_map_pairs proxy_set_header_map_pairs proxy_get_header_map_value proxy_add_header_map_value
proxy_replace_header_map_value proxy_remove_header_map_value proxy_continue_stream proxy_close_stream
proxy_send_local_response proxy_get_status proxy_http_call proxy_grpc_call proxy_grpc_stream proxy_grpc_send
proxy_grpc_cancel proxy_grpc_close proxy_set_shared_data proxy_get_shared_data proxy_register_shared_queue
proxy_resolve_shared_queue proxy_enqueue_shared_queue proxy_dequeue_shared_queue proxy_define_metric
proxy_record_metric proxy_increment_metric proxy_get_metric proxy_get_property proxy_set_property
proxy_set_effective_context proxy_done proxy_call_foreign_function""".split()
WASI = "fd_write fd_read fd_seek fd_close fd_fdstat_get environ_get environ_sizes_get args_get args_sizes_get proc_exit clock_time_get random_get poll_oneoff sched_yield fd_prestat_get".split()


def test_every_abi_0_2_1_hostcall_is_defined():
    missing = [n for n in SPEC_0_2_1 if lookup("env", n, ABI_0_2_1) is None]
    missing += [n for n in WASI if lookup("wasi_snapshot_preview1", n, ABI_0_2_1) is None]
    assert missing == []


def test_readme_tables_match_the_registry():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert hostcall_table() in readme, "README hostcall table is stale: paste `python -m proxywasm_host.support`"
    assert callback_table() in readme, "README callback table is stale: paste `python -m proxywasm_host.support`"


def test_fixture_and_failure_report_show_filter_logs(pytester):
    import wasmtime

    wat = (
        '(module (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))'
        ' (memory (export "memory") 1) (data (i32.const 16) "hello from the filter")'
        ' (func (export "proxy_abi_version_0_2_1"))'
        ' (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))'
        ' (func (export "proxy_on_vm_start") (param i32 i32) (result i32)'
        ' (drop (call $log (i32.const 2) (i32.const 16) (i32.const 21))) (i32.const 1)))'
    )
    pytester.path.joinpath("filter.wasm").write_bytes(wasmtime.wat2wasm(wat))
    pytester.makepyfile(
        """
        def test_passes(proxywasm_host):
            plugin = proxywasm_host.load_plugin("filter.wasm")
            assert plugin.logs[0].message == "hello from the filter"

        def test_fails(proxywasm_host):
            proxywasm_host.load_plugin("filter.wasm")
            assert False
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args())
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- proxywasm -*", "filter logs:", "*[[]info[]] hello from the filter*"])


def test_readme_pytest_example_passes(pytester):
    """The README's example is a real test: run it against the real rate-limit filter."""
    import sys

    root = Path(__file__).parents[1]
    sys.path.insert(0, str(root / "filters"))
    from build import build_filter

    build_filter("ratelimit")
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Testing a filter with pytest"):]
    start = section.index("```python\n") + len("```python\n")
    example = section[start : section.index("```", start)]
    (pytester.path / "filters").symlink_to(root / "filters")
    pytester.makepyfile(test_readme_example=example)
    result = pytester.runpytest_subprocess(*_plugin_args())
    result.assert_outcomes(passed=1)


def test_importing_the_plugin_does_not_create_the_engine():
    """wasmtime's trap handlers must be installed after pytest enables faulthandler,
    or the first guest trap kills the test process (SIGILL)."""
    import subprocess
    import sys

    code = "import proxywasm_host.pytest_plugin, proxywasm_host.module as m; assert m.ENGINE._engine is None"
    subprocess.run([sys.executable, "-c", code], check=True)
