"""Parity for a module built by a real third-party SDK (AssemblyScript 0.14.13 +
@solo-io/proxy-runtime 0.1.8, examples/assemblyscript): the same requests through a real Envoy
1.40 and through the host. Envoy is the ground truth.

On proxywasm_host.parity (every observation compared: statuses, client and upstream headers and
bodies, callouts, log lines, metrics): header mutations and properties, local 403s from headers
and body, the empty-read probe, SDK aborts (fail closed), refused configurations, bodies buffered
and replaced (content-length and chunked), an HTTP callout from the stream (answers per path),
callouts to an unknown cluster and to one that refuses connections, the shared-data CAS counter
over two workers (one connection per request), and an ECDS update (taken, then refused).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from proxywasm_host.parity import Filter, Reconfigure, Refused, Request, Response, Scenario, run_parity

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


# --- reconfiguration and several workers ---------------------------------------------------------

def test_ecds_update_parity(wasm: str, proxywasm_parity) -> None:
    """A new configuration takes effect (fresh root context state); a refused one leaves it serving."""
    report = proxywasm_parity(Scenario([as_filter(wasm)], [
        get(), Reconfigure(configuration="tag=green"), get(), Reconfigure(configuration="tag=x;reject=1"), get()]))
    assert report.envoy.reconfigurations == ["taken", "refused"]
    e = report.envoy.exchanges
    assert [header(x.upstream[0], "x-as-tag") for x in e] == [["blue"], ["green"], ["green"]]
    assert [header(x.upstream[0], "x-as-seen") for x in e] == [["1"], ["1"], ["2"]]


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
