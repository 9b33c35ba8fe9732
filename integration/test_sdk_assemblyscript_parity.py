"""Parity for a module built by a real third-party SDK (AssemblyScript 0.14.13 +
@solo-io/proxy-runtime 0.1.8, examples/assemblyscript): the same requests through a
real Envoy 1.40 and through the Python host. Envoy is the ground truth.

Compared per request: the status; every response header the filter sets (x-as-*), and for
local replies the whole header list minus date/server; the local-reply body; for requests that
reached the upstream, the x-as-* and x-client-* request headers in order and the request body.
Also compared: the filter's info-and-above log lines, the wasmcustom counter, refused
configurations (on_configure false, SDK traps, unknown root_id) and an ECDS update.

Then (Exchange cases): request/response bodies buffered until end of stream and replaced
(content-length and chunked; the host is driven the way Envoy's HTTP/1 codec delivers bodies: the
data with end_stream=false, then an empty end_stream=true frame), an HTTP callout from the stream to
cluster as_callout (the same echo server for Envoy and, via host.dispatch_http_calls(), the host),
callout failures (unknown cluster, connection refused), and a shared-data CAS counter over two workers.
"""
from __future__ import annotations

import re
import socket
import time
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxywasm_host import Host, PluginRejected
from proxywasm_host.envoy import EchoUpstream, PublishError, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "assemblyscript"))
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


# --- bodies, an HTTP callout from the stream, shared data with CAS -----------------------------------

FIXED_BODY = "fixed upstream body"


@dataclass
class Exchange:
    """One request for the body/callout/shared-data cases; what the client and the upstream saw."""
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/p"
    chunks: list[bytes] | None = None  # request body; more than one chunk is sent chunked
    fixed: bool = False  # the upstream answers FIXED_BODY (path /fixed) instead of echoing the request


def _chunk_gen(chunks: list[bytes]):
    for chunk in chunks:
        yield chunk
        time.sleep(0.3)  # one read per chunk in Envoy, so one proxy_on_request_body per chunk


def envoy_exchange(env: Any, ex: Exchange, new_connection: bool = False) -> dict[str, Any]:
    content: Any = None
    if ex.chunks is not None:
        content = _chunk_gen(ex.chunks) if len(ex.chunks) > 1 else ex.chunks[0]
    headers = {"host": AUTHORITY, **ex.headers}
    if new_connection:
        headers["connection"] = "close"
    resp = httpx.request("POST" if ex.chunks is not None else "GET", env.url("/fixed" if ex.fixed else ex.path),
                         headers=headers, content=content, timeout=15)
    echoed = resp.status_code == 200 and not ex.fixed
    doc = resp.json() if echoed else None
    return {
        "status": resp.status_code,
        "response_headers": _response_headers(resp.status_code, resp.headers.multi_items()),
        "client_body": None if echoed else resp.text,
        "forwarded": [(k, v) for k, v in doc["header_list"] if _ours(k)] if doc else None,
        "upstream_body": doc["body"] if doc else None,
        "upstream_content_length": dict(doc["header_list"]).get("content-length") if doc else None,
    }


def host_exchange(host: Host, plugin: Any, ex: Exchange, worker: int | None = None) -> dict[str, Any]:
    s = plugin.http_stream(worker=worker)
    req = {":method": "POST" if ex.chunks is not None else "GET", ":path": "/fixed" if ex.fixed else ex.path,
           ":authority": AUTHORITY, ":scheme": "http", **ex.headers}
    if ex.chunks is not None:
        total = sum(len(c) for c in ex.chunks)
        req.update({"transfer-encoding": "chunked"} if len(ex.chunks) > 1 else {"content-length": str(total)})
    s.send_request_headers(req, end_of_stream=ex.chunks is None)
    host.dispatch_http_calls()
    # Envoy's HTTP/1 codec hands every body (content-length or chunked) over with end_stream=false and
    # then an empty data frame with end_stream=true: the host is driven the same way.
    if ex.chunks is not None and s.local_reply is None:
        for chunk in ex.chunks:
            s.send_request_body(chunk, end_of_stream=False)
        s.send_request_body(b"", end_of_stream=True)
    up = s.upstream_request if s.local_reply is None else None
    if up is not None:
        if ex.fixed:
            s.send_response_headers({":status": "200", "content-length": str(len(FIXED_BODY))}, end_of_stream=False)
            s.send_response_body(FIXED_BODY.encode(), end_of_stream=False)
            s.send_response_body(b"", end_of_stream=True)
        else:
            s.send_response_headers({":status": "200", "content-type": "application/json"}, end_of_stream=True)
    s.complete()
    status = int(s.downstream_response.headers[":status"])
    echoed = status == 200 and not ex.fixed
    return {
        "status": status,
        "response_headers": _response_headers(status, list(s.downstream_response.headers.items())),
        "client_body": None if echoed else (s.downstream_response.body or b"").decode(),
        "forwarded": [(k, v) for k, v in up.headers.items() if _ours(k)] if echoed else None,
        "upstream_body": (up.body or b"").decode() if echoed else None,
        "upstream_content_length": up.headers.get("content-length") if echoed else None,
    }


def _compare(envoy: list[dict[str, Any]], host: list[dict[str, Any]]) -> None:
    problems = []
    for i, (e, h) in enumerate(zip(envoy, host)):
        for key in e:
            if e[key] != h[key]:
                problems.append(f"#{i} {key}:\n  envoy: {e[key]!r}\n  host:  {h[key]!r}")
    assert not problems, "host disagrees with Envoy:\n" + "\n".join(problems)


BODIES = [
    Exchange({"x-as-body": "rewrite"}, chunks=[b"hello world"]),
    Exchange({"x-as-body": "rewrite"}, chunks=[b"one ", b"two ", b"three"]),
    Exchange({"x-as-response-body": "rewrite"}, fixed=True),
    Exchange({"x-as-body": "rewrite", "x-as-response-body": "rewrite"}, chunks=[b"a", b"bc"], fixed=True),
    Exchange(chunks=[b"untouched ", b"chunks"]),
]


def test_bodies_parity(wasm: str, up: EchoUpstream) -> None:
    """Request and response bodies buffered until end of stream and replaced (plain and chunked);
    the per-callback buffered sizes are compared through the filter's log lines."""
    up.set_response("/fixed", FIXED_BODY)
    with envoy_for(wasm, up) as env:
        envoy = [envoy_exchange(env, ex) for ex in BODIES]
        envoy_logs = envoy_filter_logs(env)
    host = Host()
    plugin = load(host, wasm)
    ours = [host_exchange(host, plugin, ex) for ex in BODIES]
    assert envoy[0]["upstream_body"] == "as_filter saw 11 bytes: HELLO WORLD"  # not vacuous
    assert envoy[1]["upstream_body"] == "as_filter saw 13 bytes: ONE TWO THREE"
    assert envoy[2]["client_body"] == '{"as_filter": "blue", "upstream_bytes": 19, "upstream": "fixed upstream body"}\n'
    _compare(envoy, ours)
    assert _streams_only(envoy_logs) == _streams_only(host_filter_logs(plugin))


CALLOUTS = [
    Exchange({"x-as-callout": "/check/allow"}),
    Exchange({"x-as-callout": "/check/deny"}),
    Exchange({"x-as-callout": "/check/allow"}, chunks=[b"body waits for the callout"]),
]


def _callout_upstream(up: EchoUpstream) -> None:
    up.set_response("/check/allow", "ok alice", headers={"x-verdict": "allow"})
    up.set_response("/check/deny", "nope\n", status=403, headers={"x-verdict": "deny"})


def _callout_run(wasm: str, up: EchoUpstream, reqs: list[Exchange], cluster: str = "as_callout",
                 clusters: dict[str, int] | None = None):
    """The exchanges and the filter's stream log lines, through Envoy and through the host (whose
    clusters send callouts to the same servers with host.dispatch_http_calls())."""
    clusters = clusters if clusters is not None else {"as_callout": up.port}
    config = CONFIG + ";cluster=" + cluster
    with envoy_harness([WasmFilter(NAME, wasm, configuration=config, root_id=ROOT_ID)], upstream=up,
                       concurrency=1, clusters=clusters) as env:
        envoy = [envoy_exchange(env, ex) for ex in reqs]
        envoy_logs = _streams_only(envoy_filter_logs(env))
    host = Host()
    for name, port in clusters.items():
        host.add_cluster(name, url=f"http://127.0.0.1:{port}")
    plugin = load(host, wasm, config)
    ours = [host_exchange(host, plugin, ex) for ex in reqs]
    return envoy, envoy_logs, ours, _streams_only(host_filter_logs(plugin))


def test_callout_parity(wasm: str, up: EchoUpstream) -> None:
    """Pause on request headers, proxy_http_call to cluster as_callout (the echo upstream's canned
    answers), resume with continue_request or answer locally from the callout's status and body;
    a request body waits while the callout is pending."""
    _callout_upstream(up)
    envoy, _, ours, _ = _callout_run(wasm, up, CALLOUTS)
    assert ("x-as-callout-body", "ok alice") in envoy[0]["forwarded"]  # not vacuous
    assert envoy[1]["status"] == 403 and envoy[1]["client_body"] == "callout said 403: nope\n"
    assert envoy[2]["upstream_body"] == "body waits for the callout"
    _compare(envoy, ours)


def test_callout_response_headers_parity(wasm: str, up: EchoUpstream) -> None:
    """What proxy_on_http_call_response reports and proxy_get_header_map_pairs(HttpCallResponseHeaders)
    lists (logged by the filter). Envoy's async client runs the router, which adds
    x-envoy-upstream-service-time to the callout's response headers."""
    _callout_upstream(up)
    _, envoy_logs, _, host_logs = _callout_run(wasm, up, CALLOUTS)
    assert ("info", "as_filter callout response: headers=6 [:status,server,date,x-verdict,content-length,"
                    "x-envoy-upstream-service-time] status=200 body_size=8 trailers=0") in envoy_logs
    assert envoy_logs == host_logs


def test_callout_unknown_cluster_parity(wasm: str, up: EchoUpstream) -> None:
    """proxy_http_call to a cluster Envoy does not know answers BadArgument (2): a local 500 here."""
    envoy, envoy_logs, ours, host_logs = _callout_run(wasm, up, CALLOUTS[:1], cluster="nowhere")
    assert envoy[0]["status"] == 500 and envoy[0]["client_body"] == "callout not sent: 2\n"
    _compare(envoy, ours)
    assert envoy_logs == host_logs


def test_callout_connection_refused_parity(wasm: str, up: EchoUpstream) -> None:
    """A cluster whose server refuses connections: Envoy's async client answers with its own local
    503 (3 headers, the 98-byte "upstream connect error ..." body) through
    proxy_on_http_call_response(root, token, 3, 98, 0), not with a failure (0 headers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    envoy, envoy_logs, ours, host_logs = _callout_run(wasm, up, CALLOUTS[:1], cluster="as_dead",
                                                      clusters={"as_dead": dead_port})
    assert envoy[0]["status"] == 403
    assert envoy[0]["client_body"] == ("callout said 503: upstream connect error or disconnect/reset before headers. "
                                       "reset reason: remote connection failure")
    assert ("info", "as_filter callout response: headers=3 [:status,content-length,content-type] status=503 "
                    "body_size=98 trailers=0") in envoy_logs
    _compare(envoy, ours)
    assert envoy_logs == host_logs


def test_shared_data_parity(wasm: str, up: EchoUpstream) -> None:
    """A CAS counter in shared data across two workers (each request on a new connection, so Envoy
    spreads them over both worker VMs), and the stale-CAS probe."""
    reqs = [Exchange({"x-as-count": "1"}) for _ in range(10)] + [Exchange({"x-as-cas-stale": "1"})]
    with envoy_for_workers(wasm, up, 2) as env:
        envoy = [envoy_exchange(env, ex, new_connection=True) for ex in reqs]
    host = Host()
    plugin = load(host, wasm, workers=2)
    ours = [host_exchange(host, plugin, ex, worker=i % 2) for i, ex in enumerate(reqs)]

    def counts(obs: list[dict[str, Any]]) -> list[str]:
        return [dict(o["forwarded"]).get("x-as-shared-count", "-") for o in obs]

    assert counts(envoy) == [str(i) for i in range(1, 11)] + ["-"] == counts(ours)
    assert dict(envoy[-1]["forwarded"])["x-as-cas-probe"] == "1,0,0,8,b" == dict(ours[-1]["forwarded"])["x-as-cas-probe"]
    # per-VM root-context state: with two workers no VM saw all ten requests
    envoy_seen = [int(dict(o["forwarded"])["x-as-seen"]) for o in envoy]
    assert max(envoy_seen) < len(envoy_seen), f"Envoy used one worker only: {envoy_seen}"


def envoy_for_workers(wasm: str, up: EchoUpstream, concurrency: int):
    return envoy_harness([WasmFilter(NAME, wasm, configuration=CONFIG, root_id=ROOT_ID)],
                         upstream=up, concurrency=concurrency)
