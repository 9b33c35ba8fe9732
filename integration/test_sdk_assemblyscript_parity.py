"""Parity for a module built by a real third-party SDK (AssemblyScript 0.14.13 +
@solo-io/proxy-runtime 0.1.8, examples/assemblyscript): the same requests through a real Envoy
1.40 and through the host. Envoy is the ground truth.

On proxywasm_host.parity (every observation compared: statuses, client and upstream headers and
bodies, callouts, log lines, metrics): header mutations and properties, local 403s from headers
and body, the empty-read probe, SDK aborts (fail closed), refused configurations, bodies buffered
and replaced (content-length and chunked), an HTTP callout from the stream (answers per path),
callouts to an unknown cluster and to one that refuses connections, the shared-data CAS counter
over two workers (one connection per request).

Still hand-written, because the parity feature cannot express it yet: an ECDS update of the
configuration (parity has no reconfiguration).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxywasm_host import Host, PluginRejected
from proxywasm_host.envoy import EchoUpstream, PublishError, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness
from proxywasm_host.parity import Filter, Refused, Request, Response, Scenario, run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "assemblyscript"))
import build_as  # noqa: E402

ROOT_ID = "as_filter"
NAME = "as_filter"
AUTHORITY = "api.example"
HOST = {"host": AUTHORITY}
CONFIG = "tag=blue;deny=x-deny;deny_body=forbidden"
FIXED_BODY = "fixed upstream body"


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_as.module_for_tests()


def as_filter(wasm: str, configuration: str = CONFIG, root_id: str = ROOT_ID, **kw: Any) -> Filter:
    return Filter(wasm, configuration=configuration, root_id=root_id, name=NAME, **kw)


def get(headers: dict[str, str] | None = None, path: str = "/p?q=1") -> Request:
    return Request(path=path, headers={**HOST, **(headers or {})})


def post(body: Any, headers: dict[str, str] | None = None, path: str = "/p") -> Request:
    return Request("POST", path, {**HOST, **(headers or {})}, body=body)


def header(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k == name]


def test_requests_parity(wasm: str, proxywasm_parity) -> None:
    """Header mutations, properties, config, local 403s from headers and body, the empty-read probe."""
    report = proxywasm_parity(Scenario([as_filter(wasm)], [
        get({"x-client-b": "2", "x-client-a": "1", "x-as-remove-me": "gone", "x-as-replaced": "old"}),
        get({"x-deny": "yes"}),
        post("harmless text"),
        post("this is forbidden text"),
        get({"x-as-empty-read": "1"}),
        get(path="/second/path?x=%20y"),
    ]))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 403, 200, 403, 200, 200]
    assert header(e[0].upstream[0], "x-as-replaced") == ["by-as"]  # the comparison is not vacuous
    assert header(e[4].upstream[0], "x-as-empty-read-result") == ["0,0,0"]
    assert report.envoy.metrics["as_filter.requests"] == 6
    configured = [m for lines in report.envoy.logs.values() for _, m in lines if m.startswith("as_filter configured")]
    assert set(configured) == {f"as_filter configured: size={len(CONFIG)} config=[{CONFIG}] tag=blue deny=x-deny"}


def test_sdk_abort_parity(wasm: str, proxywasm_parity) -> None:
    """The SDK aborts (CHECK_RESULT on BadArgument, proc_exit, unreachable): 503 and fail closed afterwards."""
    report = proxywasm_parity(Scenario([as_filter(wasm)], [get(), get({"x-as-crash": "1"}), get()]))
    assert [x.status for x in report.envoy.exchanges] == [200, 503, 503]
    lines = [entry for group in report.envoy.logs.values() for entry in group]
    assert [m for lvl, m in lines if lvl == "critical"] == \
        ["2", ":( at: node_modules/@solo-io/proxy-runtime/assembly/runtime.ts(28:5)"]
    assert ("error", "wasi_unstable proc_exit") not in lines


REFUSED = {
    "on_configure_false": ("tag=x;reject=1", ROOT_ID, "Failed to configure base Wasm plugin"),
    "empty_configuration": ("", ROOT_ID, "out of bounds"),  # SDK bug, same trap in both
    "unknown_root_id": (CONFIG, "other", "Missing root context factory for root id: other"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_plugin_parity(case: str, wasm: str) -> None:
    """Envoy refuses the filter exactly when the host raises PluginRejected."""
    configuration, root_id, needle = REFUSED[case]
    report = run_parity(Scenario([as_filter(wasm, configuration, root_id)], [get()]))
    assert report.identical, report.text()
    assert report.envoy.refusal is not None and report.host.refusal is not None
    assert needle in report.envoy.log_text, report.envoy.log_text


def test_bodies_parity(wasm: str, proxywasm_parity) -> None:
    """Request and response bodies buffered until end of stream and replaced (plain and chunked);
    the per-callback buffered sizes are compared through the filter's log lines."""
    report = proxywasm_parity(Scenario([as_filter(wasm)], [
        post("hello world", {"x-as-body": "rewrite"}),
        post([b"one ", b"two ", b"three"], {"x-as-body": "rewrite"}),
        get({"x-as-response-body": "rewrite"}, "/fixed"),
        post([b"a", b"bc"], {"x-as-body": "rewrite", "x-as-response-body": "rewrite"}, "/fixed"),
        post([b"untouched ", b"chunks"]),
    ], upstream=Response(200, {"content-type": "text/plain"}, FIXED_BODY)))
    e = report.envoy.exchanges
    assert e[0].upstream[1] == b"as_filter saw 11 bytes: HELLO WORLD"  # not vacuous
    assert e[1].upstream[1] == b"as_filter saw 13 bytes: ONE TWO THREE"
    assert e[2].client_body == b'{"as_filter": "blue", "upstream_bytes": 19, "upstream": "fixed upstream body"}\n'
    assert e[4].upstream[1] == b"untouched chunks"


CALLOUTS = [get({"x-as-callout": "/check/allow"}, "/p"), get({"x-as-callout": "/check/deny"}, "/p"),
            post("body waits for the callout", {"x-as-callout": "/check/allow"})]
ANSWERS = {"/check/allow": Response(200, {"x-verdict": "allow"}, "ok alice"),
           "/check/deny": Response(403, {"x-verdict": "deny"}, "nope\n")}


def _callout_scenario(wasm: str, cluster: str, requests: list[Request], callouts: dict[str, Any]) -> Scenario:
    return Scenario([as_filter(wasm, CONFIG + ";cluster=" + cluster)], requests, callouts=callouts)


def _log_lines(report: Any) -> list[tuple[str, str]]:
    return [entry for group in report.envoy.logs.values() for entry in group]


def test_callout_parity(wasm: str, proxywasm_parity) -> None:
    """Pause on request headers, proxy_http_call to cluster as_callout, resume with continue_request
    or answer locally from the callout's status and body; a request body waits while the callout is
    pending. What proxy_on_http_call_response reports and proxy_get_header_map_pairs lists is logged
    by the filter, so compared too."""
    report = proxywasm_parity(_callout_scenario(wasm, "as_callout", CALLOUTS, {"as_callout": ANSWERS}))
    e = report.envoy.exchanges
    assert header(e[0].upstream[0], "x-as-callout-body") == ["ok alice"]  # not vacuous
    assert e[1].status == 403 and e[1].client_body == b"callout said 403: nope\n"
    assert e[2].upstream[1] == b"body waits for the callout"
    assert any(m.startswith("as_filter callout response: headers=") and "x-verdict" in m and
               m.endswith("x-envoy-upstream-service-time] status=200 body_size=8 trailers=0")
               for _, m in _log_lines(report)), _log_lines(report)


def test_callout_unknown_cluster_parity(wasm: str, proxywasm_parity) -> None:
    """proxy_http_call to a cluster Envoy does not know answers BadArgument (2): a local 500 here."""
    report = proxywasm_parity(_callout_scenario(wasm, "nowhere", CALLOUTS[:1], {}))
    e = report.envoy.exchanges
    assert e[0].status == 500 and e[0].client_body == b"callout not sent: 2\n"


def test_callout_connection_refused_parity(wasm: str, proxywasm_parity) -> None:
    """A cluster whose server refuses connections: Envoy's async client answers with its own local
    503 (3 headers, the 98-byte "upstream connect error ..." body) through
    proxy_on_http_call_response(root, token, 3, 98, 0), not with a failure (0 headers)."""
    report = proxywasm_parity(_callout_scenario(wasm, "as_dead", CALLOUTS[:1], {"as_dead": Refused()}))
    e = report.envoy.exchanges
    assert e[0].status == 403
    assert e[0].client_body == (b"callout said 503: upstream connect error or disconnect/reset before headers. "
                                b"reset reason: remote connection failure")
    assert ("info", "as_filter callout response: headers=3 [:status,content-length,content-type] status=503 "
                    "body_size=98 trailers=0") in _log_lines(report)


# --- hand-written: what parity cannot express yet -----------------------------------------------------

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


def assert_parity(reqs: list[Req], envoy: list[Obs], host: list[Obs]) -> None:
    assert [o.status for o in envoy] == [r.expect for r in reqs], f"envoy: {envoy}"
    problems = [f"#{i}:\n  envoy: {e}\n  host:  {h}" for i, (e, h) in enumerate(zip(envoy, host)) if e != h]
    assert not problems, "host disagrees with Envoy:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def up():
    with EchoUpstream() as upstream:
        yield upstream


def envoy_for(wasm: str, up: EchoUpstream, configuration: str = CONFIG, root_id: str = ROOT_ID):
    return envoy_harness([WasmFilter(NAME, wasm, configuration=configuration, root_id=root_id)],
                         upstream=up, concurrency=1)


def load(host: Host, wasm: str, configuration: str = CONFIG, root_id: str = ROOT_ID, **kw: Any):
    return host.load_plugin(wasm, configuration=configuration, root_id=root_id, name=NAME, **kw)


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


def test_shared_data_parity(wasm: str, proxywasm_parity) -> None:
    """A CAS counter in shared data across two workers (each request on its own connection, which
    Envoy's exact balance alternates over the two worker VMs), and the stale-CAS probe."""
    report = proxywasm_parity(Scenario([as_filter(wasm)], [
        *(Request(path="/p", headers={**HOST, "x-as-count": "1"}, connection=i) for i in range(10)),
        Request(path="/p", headers={**HOST, "x-as-cas-stale": "1"}, connection=10)], workers=2))
    e = report.envoy.exchanges
    assert [header(x.upstream[0], "x-as-shared-count") for x in e] == [[str(i)] for i in range(1, 11)] + [[]]
    assert header(e[-1].upstream[0], "x-as-cas-probe") == ["1,0,0,8,b"]
    # per-VM root-context state: each worker VM saw every other request
    assert [header(x.upstream[0], "x-as-seen") for x in e[:4]] == [["1"], ["1"], ["2"], ["2"]]


def envoy_for_workers(wasm: str, up: EchoUpstream, concurrency: int):
    return envoy_harness([WasmFilter(NAME, wasm, configuration=CONFIG, root_id=ROOT_ID)],
                         upstream=up, concurrency=concurrency)
