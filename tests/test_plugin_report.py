"""The pytest plugin as a user meets it: a failing test's report (filter logs once, metrics,
pending callouts, undeclared clusters), assertion explanations, settings from the command line
and the ini file, and runs under pytest-xdist. Inner runs use pytester in a subprocess."""
from __future__ import annotations

import pytest

from proxywasm_host import Host
from proxywasm_host.context import LocalReply
from proxywasm_host.headers import Headers
from proxywasm_host.memory import serialize_pairs
from proxywasm_host.pytest_report import compare, host_report
from watgen import build, records

pytest_plugins = ["pytester"]

CALL = ("(call $rec (call $proxy_http_call {%s} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)"
        " (i32.const 1000) (i32.const 0x300)))")
#: logs at error and info, counts requests, calls the declared cluster "auth" and the undeclared "nope"
FILTER = build(
    {
        "proxy_on_vm_start": "(drop (call $proxy_log (i32.const 4) {err})) (i32.const 1)",
        "proxy_on_request_headers": "(drop (call $proxy_log (i32.const 2) {info}))"
        " (drop (call $proxy_define_metric (i32.const 0) {metric} (i32.const 0x304)))"
        " (drop (call $proxy_increment_metric (i32.load (i32.const 0x304)) (i64.const 1)))"
        f" {CALL % 'auth'} {CALL % 'nope'} (i32.const 0)",
    },
    {"err": "the-error-line", "info": "the-info-line", "metric": "demo.requests", "auth": "auth", "nope": "nope",
     "h": serialize_pairs([(b":method", b"GET"), (b":path", b"/check"), (b":authority", b"auth")])},
)
REQUEST = {":method": "GET", ":path": "/", ":authority": "a"}


def _plugin_args() -> list[str]:
    """Load our pytest plugin in the inner run unless its entry point already does."""
    from importlib.metadata import entry_points

    if any(ep.value == "proxywasm_host.pytest_plugin" for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "proxywasm_host.pytest_plugin"]


def _run_filter(host: Host):
    host.add_cluster("auth")
    plugin = host.load_plugin(FILTER, name="demo")
    stream = plugin.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    return plugin, stream


def test_undeclared_cluster_is_bad_argument_and_named_in_the_report():
    """Envoy 1.40 answers BadArgument for a cluster it does not know and logs nothing (probed at
    wasm:trace: only the hostcall's trace line); the report tells the test what to do."""
    host = Host()
    _, stream = _run_filter(host)
    assert records(stream.vm) == [0, 2]  # auth: Ok, nope: BadArgument
    assert host.undeclared_clusters == ["nope"]
    report = host_report(host)
    assert "callout to undeclared cluster 'nope'" in report
    assert "declare it with host.add_cluster('nope')" in report
    assert " to auth: GET /check timeout 1000 ms" in report
    assert "  demo.requests = 1" in report
    assert [line for line in report.splitlines() if "the-error-line" in line] == ["  demo ctx=1 [error] the-error-line"]


def test_failure_report_shows_each_filter_line_once(pytester):
    pytester.path.joinpath("filter.wasm").write_bytes(FILTER)
    pytester.makepyfile(
        """
        def test_fails(proxywasm_host):
            proxywasm_host.add_cluster("auth")
            stream = proxywasm_host.load_plugin("filter.wasm").http_stream()
            stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
            assert False
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args())
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert out.count("the-error-line") == 1, out  # not again as captured logging
    assert out.count("the-info-line") == 1, out
    assert "Captured log" not in out
    result.stdout.fnmatch_lines([
        "*- proxywasm -*",
        "filter logs:",
        "  filter.wasm ctx=1 [[]error[]] the-error-line",
        "  filter.wasm ctx=2 [[]info[]] the-info-line",
        "metrics:",
        "  demo.requests = 1",
        "pending HTTP callouts*",
        "  token * to auth: GET /check timeout 1000 ms",
        "callout to undeclared cluster 'nope'*declare it with host.add_cluster('nope')",
    ])


def test_assertions_explain_headers_local_replies_and_logs(pytester):
    pytester.path.joinpath("filter.wasm").write_bytes(FILTER)
    pytester.makepyfile(
        """
        from proxywasm_host.context import LocalReply

        def _stream(host):
            host.add_cluster("auth")
            stream = host.load_plugin("filter.wasm").http_stream()
            stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a", "x-a": "1"},
                                        end_of_stream=True)
            return stream

        def test_headers_dict(proxywasm_host):
            assert _stream(proxywasm_host).upstream_request.headers == {":method": "GET", "x-a": "2", "x-b": "3"}

        def test_headers_list(proxywasm_host):
            headers = _stream(proxywasm_host).upstream_request.headers
            assert headers == [(":authority", "a"), (":path", "/"), (":method", "POST")]

        def test_local_reply():
            assert LocalReply(403, b"no", details="denied") == LocalReply(401, b"no", details="denied")

        def test_logs(proxywasm_host):
            assert _stream(proxywasm_host).logs == ["[info] other"]
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args())
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines([
        "*Headers (left) differ from the dict, header by header:",
        "*extra    :authority: 'a'",
        "*differs  x-a: '1' != '2'",
        "*missing  x-b: '3'",
    ])
    result.stdout.fnmatch_lines(["*Headers (left) differ from the list of pairs*", "*- :method: POST",
                                 "*+ :method: GET"])
    result.stdout.fnmatch_lines(["*LocalReply differs:", "*status_code: 403 != 401"])
    result.stdout.fnmatch_lines(["*log lines differ (- right, + left):", "*- [[]info[]] other",
                                 "*+ [[]info[]] the-info-line", "*a LogRecord never equals a str*"])


@pytest.mark.parametrize(
    "left, right, first, detail",
    [
        (Headers([(b"a", b"1")]), {"A": "1", "b": "2"}, "Headers (left) differ from the dict", "missing  b: '2'"),
        ({"a": "2"}, Headers([(b"a", b"1")]), "Headers (right) differ from the dict", "differs  a: '1' != '2'"),
        (LocalReply(500, b""), None, "a LocalReply (500, details '') == NoneType", "compare a field instead"),
    ],
)
def test_compare_explains(left, right, first, detail):
    lines = compare("==", left, right)
    assert lines[0].startswith(first) and any(detail in line for line in lines), lines


def test_compare_leaves_other_values_to_pytest():
    assert compare("==", [1], [2]) is None
    assert compare("!=", Headers([]), {}) is None


def test_metrics_name_what_they_have_and_get():
    host = Host()
    _run_filter(host)
    assert host.metrics.get("demo.requests") == 1
    assert host.metrics.get("demo.other") is None
    assert host.metrics.get("demo.other", 0) == 0
    with pytest.raises(KeyError, match=r"no metric 'demo\.other' \(metrics the filters defined: demo\.requests\)"):
        host.metrics["demo.other"]


@pytest.mark.parametrize("value, kind", [(1, "int"), (None, "NoneType"), (1.5, "float")])
def test_header_values_must_be_text(value, kind):
    stream = Host().load_plugin(FILTER).http_stream()
    with pytest.raises(TypeError, match=rf"send_request_headers: header 'x-a' value must be str or bytes, got {kind}"):
        stream.send_request_headers({**REQUEST, "x-a": value})


def test_settings_from_ini_and_command_line(pytester, tmp_path, monkeypatch):
    """The log level and trace from the ini file, the cache directory and Envoy binary from the
    command line; the command line wins over the ini file."""
    from proxywasm_host.envoy.validate import find_envoy

    envoy = tmp_path / "my-envoy"
    envoy.symlink_to(find_envoy())
    cache = tmp_path / "cache"
    pytester.path.joinpath("filter.wasm").write_bytes(FILTER)
    pytester.makeini("[pytest]\nproxywasm_log_level = error\nproxywasm_trace_on_failure = true\n")
    pytester.makepyfile(
        f"""
        import os
        from proxywasm_host.envoy.validate import find_envoy

        def test_settings(proxywasm_host):
            plugin = proxywasm_host.load_plugin("filter.wasm")
            assert proxywasm_host.log_level.name.lower() == os.environ["EXPECT_LEVEL"]
            assert list(os.scandir({str(cache)!r}))  # the module was compiled into the given cache
            assert find_envoy() == {str(envoy)!r}

        def test_trace_shown_on_failure(proxywasm_host):
            proxywasm_host.load_plugin("filter.wasm")
            assert False
        """
    )
    args = [*_plugin_args(), f"--proxywasm-cache-dir={cache}", f"--proxywasm-envoy-bin={envoy}"]
    monkeypatch.setenv("EXPECT_LEVEL", "error")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*proxywasm hostcall trace*", "*proxy_on_vm_start*"])
    monkeypatch.setenv("EXPECT_LEVEL", "debug")
    only = "test_settings_from_ini_and_command_line.py::test_settings"
    pytester.runpytest_subprocess(*args, "--proxywasm-log-level=debug", only).assert_outcomes(passed=1)


def test_runs_under_xdist_with_one_fresh_compile_cache(pytester, tmp_path):
    """Four tests in two workers compile the same module into one empty cache at the same time."""
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install pytest-xdist)")
    cache = tmp_path / "cache"
    pytester.path.joinpath("filter.wasm").write_bytes(FILTER)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_load(proxywasm_host, n):
            proxywasm_host.add_cluster("auth")
            stream = proxywasm_host.load_plugin("filter.wasm").http_stream()
            stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
            assert proxywasm_host.metrics["demo.requests"] == 1
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "-n", "2", "-p", "xdist", f"--proxywasm-cache-dir={cache}")
    result.assert_outcomes(passed=4)
    assert "recompiling" not in result.stdout.str() + result.stderr.str()
    assert sorted(p.suffix for p in cache.iterdir()) == [".cwasm", ".sha256"]
