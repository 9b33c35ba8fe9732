"""pytest plugin (entry point `pytest11`): fixtures for testing compiled filters.

    def test_adds_header(proxywasm_host):
        plugin = proxywasm_host.load_plugin("filter.wasm", configuration='{"header": "x-a"}')
        stream = plugin.http_stream()
        stream.send_request_headers({":path": "/", ":method": "GET", ":authority": "a"}, end_of_stream=True)
        assert stream.upstream_request.headers["x-a"] == "1"

When a test fails, the filter log lines of every host it used are shown in the report.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from .host import Host

_HOSTS = pytest.StashKey[list]()


@pytest.fixture
def proxywasm_host(request: pytest.FixtureRequest) -> Iterator[Host]:
    """A fresh Host (one emulated Envoy process) for the test."""
    host = Host()
    request.node.stash.setdefault(_HOSTS, []).append(host)
    yield host


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
