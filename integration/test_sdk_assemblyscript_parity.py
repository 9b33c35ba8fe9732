"""Parity for a module built by a real third-party SDK (AssemblyScript 0.14.13 +
@solo-io/proxy-runtime 0.1.8, tests/sdk_modules/assemblyscript): the same requests through a
real Envoy 1.40 and through the Python host. Envoy is the ground truth.

Compared per request: the status; every response header the filter sets (x-as-*), and for
local replies the whole header list minus date/server; the local-reply body; for requests that
reached the upstream, the x-as-* and x-client-* request headers in order and the request body.
Also compared: the filter's info-and-above log lines, the wasmcustom counter, refused
configurations (on_configure false, SDK traps, unknown root_id) and an ECDS update.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxywasm_host import Host, PluginRejected
from proxywasm_host.envoy import EchoUpstream, PublishError, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sdk_modules"))
import build_as  # noqa: E402

ROOT_ID = "as_filter"
NAME = "as_filter"
AUTHORITY = "api.example"
CONFIG = "tag=blue;deny=x-deny;deny_body=forbidden"
# "wasm log <plugin> <root_id>: msg" (stream contexts) or "wasm log <plugin>: msg" (VM-level root contexts)
_WASM_LOG = re.compile(r"\]\[(\w+)\]\[wasm\] \[[^\]]*\] wasm log " + NAME + "(?: " + ROOT_ID + r")?: (.*)$")
_LEVELS = ("info", "warn", "warning", "error", "critical")


@dataclass
class Req:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    path: str = "/p?q=1"
    expect: int = 200


@dataclass
class Obs:
    status: int
    response_headers: list[tuple[str, str]]  # x-as-* only; the whole list minus date/server for local replies
    body: str | None  # local-reply body
    forwarded: list[tuple[str, str]] | None  # x-as-* / x-client-* request headers at the upstream
    upstream_body: str | None


MAIN = [
    Req({"x-client-b": "2", "x-client-a": "1", "x-as-remove-me": "gone", "x-as-replaced": "old"}),
    Req({"x-deny": "yes"}, expect=403),
    Req(body=b"harmless text"),
    Req(body=b"this is forbidden text", expect=403),
    Req({"x-as-empty-read": "1"}),
    Req(path="/second/path?x=%20y"),
]


def _ours(name: str) -> bool:
    return name.startswith(("x-as-", "x-client-"))


def _response_headers(status: int, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = [(k.lower(), v) for k, v in pairs if k.lower() not in (":status", "date", "server")]
    return pairs if status != 200 else [(k, v) for k, v in pairs if k.startswith("x-as-")]


def envoy_run(env: Any, reqs: list[Req]) -> list[Obs]:
    out = []
    with httpx.Client(timeout=10) as client:
        for r in reqs:
            resp = client.request("POST" if r.body is not None else "GET", env.url(r.path),
                                  headers={"host": AUTHORITY, **r.headers}, content=r.body)
            fwd = up_body = None
            if resp.status_code == 200:
                doc = resp.json()
                fwd = [(k, v) for k, v in doc["header_list"] if _ours(k)]
                up_body = doc["body"]
            out.append(Obs(resp.status_code, _response_headers(resp.status_code, resp.headers.multi_items()),
                           None if resp.status_code == 200 else resp.text, fwd, up_body))
    return out


def host_run(plugin: Any, reqs: list[Req]) -> list[Obs]:
    out = []
    for r in reqs:
        s = plugin.http_stream()
        s.send_request_headers({":method": "POST" if r.body is not None else "GET", ":path": r.path,
                                ":authority": AUTHORITY, ":scheme": "http", **r.headers},
                               end_of_stream=r.body is None)
        if r.body is not None and s.local_reply is None:
            s.send_request_body(r.body, end_of_stream=True)
        fwd = up_body = None
        if s.local_reply is None:
            fwd = [(k, v) for k, v in s.upstream_request.headers.items() if _ours(k)]
            up_body = s.upstream_request.body.decode() if s.upstream_request.body else ""
            s.send_response_headers({":status": "200", "content-type": "application/json"}, end_of_stream=True)
        s.complete()
        status = int(s.downstream_response.headers[":status"])
        out.append(Obs(status, _response_headers(status, list(s.downstream_response.headers.items())),
                       None if status == 200 else s.downstream_response.body.decode(), fwd, up_body))
    return out


def envoy_filter_logs(env: Any) -> list[tuple[str, str]]:
    out = []
    for line in env.wasm_log():
        m = _WASM_LOG.search(line)
        if m and m.group(1) in _LEVELS:
            out.append((m.group(1), m.group(2)))
    return out


def host_filter_logs(plugin: Any) -> list[tuple[str, str]]:
    return [(r.level, r.message) for r in plugin.logs if r.level in _LEVELS]


def _streams_only(logs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Without on_configure lines: Envoy configures more VMs (main thread, worker) than the host."""
    return [entry for entry in logs if not entry[1].startswith("as_filter configured")]


def assert_parity(reqs: list[Req], envoy: list[Obs], host: list[Obs]) -> None:
    assert [o.status for o in envoy] == [r.expect for r in reqs], f"envoy: {envoy}"
    problems = [f"#{i}:\n  envoy: {e}\n  host:  {h}" for i, (e, h) in enumerate(zip(envoy, host)) if e != h]
    assert not problems, "host disagrees with Envoy:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_as.module_for_tests()


@pytest.fixture(scope="module")
def up():
    with EchoUpstream() as upstream:
        yield upstream


def envoy_for(wasm: str, up: EchoUpstream, configuration: str = CONFIG, root_id: str = ROOT_ID):
    return envoy_harness([WasmFilter(NAME, wasm, configuration=configuration, root_id=root_id)],
                         upstream=up, concurrency=1)


def load(host: Host, wasm: str, configuration: str = CONFIG, root_id: str = ROOT_ID, **kw: Any):
    return host.load_plugin(wasm, configuration=configuration, root_id=root_id, name=NAME, **kw)


def test_requests_parity(wasm: str, up: EchoUpstream) -> None:
    """Header mutations, properties, config, local 403s from headers and body, the empty-read probe."""
    with envoy_for(wasm, up) as env:
        envoy = envoy_run(env, MAIN)
        envoy_logs = envoy_filter_logs(env)
        envoy_count = env.stat("wasmcustom.as_filter.requests")
    host = Host()
    plugin = load(host, wasm)
    assert_parity(MAIN, envoy, host_run(plugin, MAIN))
    assert envoy[0].forwarded[-1] == ("x-as-replaced", "by-as")  # the comparison is not vacuous
    assert envoy[4].forwarded[0] == ("x-as-empty-read", "1") and ("x-as-empty-read-result", "0,0,0") in envoy[4].forwarded
    host_logs = host_filter_logs(plugin)
    assert _streams_only(envoy_logs) == _streams_only(host_logs)
    assert {e for e in envoy_logs if e not in _streams_only(envoy_logs)} == \
        {("info", f"as_filter configured: size={len(CONFIG)} config=[{CONFIG}] tag=blue deny=x-deny")}
    assert envoy_count == host.metrics["as_filter.requests"] == len(MAIN)


CRASH = [Req(), Req({"x-as-crash": "1"}, expect=503), Req(expect=503)]


def _crash_run(wasm: str, up: EchoUpstream):
    with envoy_for(wasm, up) as env:
        envoy = envoy_run(env, CRASH)
        envoy_logs = envoy_filter_logs(env)
    plugin = load(Host(), wasm, raise_on_trap=False)
    return envoy, envoy_logs, host_run(plugin, CRASH), host_filter_logs(plugin)


def test_sdk_abort_parity(wasm: str, up: EchoUpstream) -> None:
    """The SDK aborts (CHECK_RESULT on BadArgument, proc_exit, unreachable): 503 and fail closed afterwards."""
    envoy, envoy_logs, host, host_logs = _crash_run(wasm, up)
    assert_parity(CRASH, envoy, host)
    critical = [m for lvl, m in envoy_logs if lvl == "critical"]
    assert critical == ["2", ":( at: node_modules/@solo-io/proxy-runtime/assembly/runtime.ts(28:5)"]
    assert critical == [m for lvl, m in host_logs if lvl == "critical"]


def test_sdk_abort_log_lines_parity(wasm: str, up: EchoUpstream) -> None:
    _, envoy_logs, _, host_logs = _crash_run(wasm, up)
    assert ("error", "wasi_unstable proc_exit") not in envoy_logs
    assert _streams_only(envoy_logs) == _streams_only(host_logs)


REFUSED = {
    "on_configure_false": ("tag=x;reject=1", ROOT_ID, "Failed to configure base Wasm plugin"),
    "empty_configuration": ("", ROOT_ID, "out of bounds"),  # SDK bug, same trap in both
    "unknown_root_id": (CONFIG, "other", "Missing root context factory for root id: other"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_plugin_parity(case: str, wasm: str, up: EchoUpstream) -> None:
    """Envoy fails the filter config (requests get 500) exactly when the host raises PluginRejected."""
    configuration, root_id, needle = REFUSED[case]
    with envoy_for(wasm, up, configuration, root_id) as env:
        status = httpx.get(env.url("/"), headers={"host": AUTHORITY}, timeout=10).status_code
        envoy_log = "\n".join(env.wasm_log())
        config_fail = env.stat(f"extension_config_discovery.http_filter.{NAME}.config_fail")
    assert (status, config_fail) == (500, 1)
    assert needle in envoy_log and f"Plugin {NAME} failed to load" in envoy_log
    with pytest.raises(PluginRejected) as exc:
        load(Host(), wasm, configuration, root_id)
    assert needle in str(exc.value) + "\n" + "\n".join(r.message for r in exc.value.logs)


def test_ecds_update_parity(wasm: str, up: EchoUpstream) -> None:
    """A new configuration takes effect (fresh root context state); a refused one leaves it serving."""
    one = [Req()]
    with envoy_for(wasm, up) as env:
        envoy = envoy_run(env, one)
        env.publish(NAME, configuration="tag=green")
        envoy += envoy_run(env, one)
        with pytest.raises(PublishError):
            env.publish(NAME, configuration="tag=x;reject=1")
        envoy += envoy_run(env, one)
    plugin = load(Host(), wasm)
    host = host_run(plugin, one)
    plugin.reload(configuration="tag=green")
    host += host_run(plugin, one)
    with pytest.raises(PluginRejected):
        plugin.reload(configuration="tag=x;reject=1")
    host += host_run(plugin, one)
    assert_parity(one * 3, envoy, host)
    assert ("x-as-tag", "green") in envoy[2].forwarded and ("x-as-seen", "2") in envoy[2].forwarded
