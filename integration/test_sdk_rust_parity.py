"""Parity for the Rust SDK example (examples/rust, proxy-wasm crate 0.2.5, ABI 0.2.1): the same
requests through a real Envoy 1.40 and through the Python host. Envoy is the ground truth.

Compared per request: the status, the response headers the filter sets (x-edge-*; for local
replies the whole list minus date/server), the local-reply body, the x-edge-* request headers that
reached the upstream (minus the header count/names, which depend on the HTTP client's own
headers), the upstream body; then the filter's stream log lines and the counter.
The callout goes to the echo upstream (cluster "authz") in Envoy and, through
host.dispatch_http_calls(), in the host.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxywasm_host import Host
from proxywasm_host.envoy import EchoUpstream, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "rust"))
import build_rust  # noqa: E402

NAME = "edge_guard"
AUTHORITY = "api.example"
CONFIG = "tag=green;block_prefix=/admin;auth_cluster=authz;deny_word=forbidden"
_WASM_LOG = re.compile(r"\]\[(\w+)\]\[wasm\] \[[^\]]*\] wasm log " + NAME + r"(?: \S*)?: (.*)$")

# (path, headers, body, expected status)
REQUESTS = [
    ("/orders", {"x-edge-replace": "old", "x-edge-remove": "bye"}, None, 200),
    ("/admin/users", {}, None, 403),
    ("/upload", {}, b"harmless text", 200),
    ("/upload", {}, b"this is forbidden text", 403),
    ("/orders", {"x-edge-token": "t-1"}, None, 200),  # callout: 200 + x-user
]
_SKIP = ("x-edge-header-count", "x-edge-header-names")


def _response_headers(status: int, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = [(k.lower(), v) for k, v in pairs if k.lower() not in (":status", "date", "server")]
    return pairs if status != 200 else [(k, v) for k, v in pairs if k.startswith("x-edge-")]


def _forwarded(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if k.startswith("x-edge-") and k not in _SKIP]


def envoy_run(env: Any) -> tuple[list[tuple], list[str]]:
    out, names = [], []
    with httpx.Client(timeout=10) as client:
        for path, headers, body, _ in REQUESTS:
            resp = client.request("POST" if body is not None else "GET", env.url(path),
                                  headers={"host": AUTHORITY, **headers}, content=body)
            fwd = up_body = None
            if resp.status_code == 200:
                doc = resp.json()
                fwd = _forwarded([tuple(p) for p in doc["header_list"]])
                names.append(dict(doc["header_list"]).get("x-edge-header-names"))
                up_body = doc["body"]
            out.append((resp.status_code, _response_headers(resp.status_code, resp.headers.multi_items()),
                        None if resp.status_code == 200 else resp.text, fwd, up_body))
    return out, names


def host_run(host: Host, plugin: Any) -> list[tuple]:
    out = []
    for path, headers, body, _ in REQUESTS:
        s = plugin.http_stream()
        s.send_request_headers({":method": "POST" if body is not None else "GET", ":path": path,
                                ":authority": AUTHORITY, ":scheme": "http", **headers}, end_of_stream=body is None)
        host.dispatch_http_calls()
        if body is not None and s.local_reply is None:
            s.send_request_body(body, end_of_stream=True)
        fwd = up_body = None
        if s.local_reply is None:
            fwd = _forwarded(list(s.upstream_request.headers.items()))
            up_body = s.upstream_request.body.decode() if s.upstream_request.body else ""
            s.send_response_headers({":status": "200", "content-type": "application/json"}, end_of_stream=True)
        s.complete()
        status = int(s.downstream_response.headers[":status"])
        out.append((status, _response_headers(status, list(s.downstream_response.headers.items())),
                    None if status == 200 else s.downstream_response.body.decode(), fwd, up_body))
    return out


def _stream_logs(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Without on_configure lines (Envoy configures more VMs than the host) and context ids."""
    return [(lvl, re.sub(r"#\d+ ", "#N ", m)) for lvl, m in lines if not m.startswith("edge_guard configured")]


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_rust.module_for_tests()


def test_rust_filter_parity(wasm: str) -> None:
    with EchoUpstream() as up:
        up.set_response("/check", "ok", headers={"x-user": "alice"})
        with envoy_harness([WasmFilter(NAME, wasm, configuration=CONFIG)], upstream=up, concurrency=1,
                           clusters={"authz": up.port}) as env:
            envoy, names = envoy_run(env)
            envoy_logs = [(m.group(1), m.group(2)) for m in map(_WASM_LOG.search, env.wasm_log())
                          if m and m.group(1) in ("info", "warn", "warning", "error", "critical")]
            envoy_count = env.stat("wasmcustom.edge_guard.requests")
        host = Host()
        host.add_cluster("authz", url=f"http://127.0.0.1:{up.port}")
        plugin = host.load_plugin(wasm, configuration=CONFIG, name=NAME)
        ours = host_run(host, plugin)
    assert [e[0] for e in envoy] == [r[3] for r in REQUESTS], envoy
    assert ("x-edge-user", "alice") in envoy[4][3]  # the comparison is not vacuous
    assert all(n.endswith("x-forwarded-proto,x-request-id") for n in names), names  # added before filters
    problems = [f"#{i}:\n  envoy: {e}\n  host:  {h}" for i, (e, h) in enumerate(zip(envoy, ours)) if e != h]
    assert not problems, "host disagrees with Envoy:\n" + "\n".join(problems)
    assert _stream_logs(envoy_logs) == _stream_logs([(r.level, r.message) for r in plugin.logs])
    assert envoy_count == host.metrics["edge_guard.requests"] == len(REQUESTS)
