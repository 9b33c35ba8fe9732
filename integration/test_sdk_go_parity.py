"""Parity for the Go SDK examples (examples/go, official proxy-wasm-go-sdk): the same traffic
through a real Envoy 1.40 and through the host. Envoy is the ground truth.

On proxywasm_host.parity (every observation compared: statuses, client and upstream headers and
bodies, callouts, log lines, wasmcustom metrics): the HTTP filter with VM configuration and route
metadata, its panics under both failure policies, the callout filter (root-context callouts at
start and on ticks, a stream callout answered per path, a request held until a tick), and the
shared-data/queue filter as a chain of three plugins with their own vm_id on two workers, and the
TCP (network) filter before tcp_proxy (per connection: what the upstream and the client received,
who closed). Envoy's statuses and a few values are checked on Envoy's side, so the comparison is
not vacuous.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.validate import find_envoy
from proxywasm_host.parity import Connection, Filter, Flow, Request, Response, Scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "go"))
import build_go  # noqa: E402

_LEVELS = ("info", "warn", "error", "critical")


@pytest.fixture(scope="module")
def go_wasm() -> dict[str, str]:
    return {name: build_go.module_for_tests(name) for name in build_go.PROGRAMS}


@pytest.fixture(scope="module", autouse=True)
def _envoy_available() -> None:
    try:
        find_envoy()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def up():
    with EchoUpstream() as upstream:
        yield upstream


def _norm(headers) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.startswith("x-go-")]


def host_logs(records: list) -> list[tuple[str, str]]:
    return [(r.level, r.message) for r in records if r.level in _LEVELS]


def header(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k == name]


def all_lines(report) -> list[tuple[str, str]]:
    return [entry for group in report.envoy.logs.values() for entry in group]


# --- HTTP filter ----------------------------------------------------------------------------------

HTTP_CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'
VM_CONFIG = "region=eu-1"
ROUTE_METADATA = {"filter_metadata": {"go_filter": {"tier": "gold", "limits": {"rps": "10", "burst": "20"}}}}
CLIENT = {"host": "api.example", "accept": "*/*", "accept-encoding": "gzip, deflate", "user-agent": "go-parity"}


def go_http(wasm: str, policy: str = "fail_closed") -> Filter:
    return Filter(wasm, configuration=HTTP_CONFIG, vm_configuration=VM_CONFIG, name="go_http", failure_policy=policy)


def test_http_filter_parity(go_wasm, proxywasm_parity) -> None:
    report = proxywasm_parity(Scenario([go_http(go_wasm["http_filter"])], [
        Request("GET", "/items?page=2", {**CLIENT, "x-go-replace": "old", "x-go-remove": "bye", "x-go-lookup": "alice"}),
        Request("GET", "/admin/users", CLIENT),
        Request("POST", "/upload", {**CLIENT, "x-go-body": "buffer"}, body="hello world"),
        Request("POST", "/upload", {**CLIENT, "x-go-body": "stream"}, body="small chunk"),
        Request("GET", "/wrapped", {**CLIENT, "x-go-wrap-response": "1"}),
    ], upstream=Response(200, {"content-type": "text/plain"}, 'say "hi"!'), route_metadata=ROUTE_METADATA))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 403, 200, 200, 200]
    assert header(e[0].upstream[0], "x-go-route-limits") == ["burst=20,rps=10"]  # not vacuous
    assert e[2].upstream[1] == b"<<HELLO WORLD>>"
    for name in ("go_http.requests_total", "go_http.requests_method=GET", "go_http.requests_method=POST"):
        assert name in report.envoy.metrics, name


@pytest.mark.parametrize("policy,expected", [("fail_closed", [200, 503, 503]), ("fail_open", [200, 503, 200])])
def test_panic_parity(go_wasm, proxywasm_parity, policy, expected) -> None:
    report = proxywasm_parity(Scenario([go_http(go_wasm["http_filter"], policy)], [
        Request(path="/a", headers=CLIENT), Request(path="/b", headers={**CLIENT, "x-go-panic": "1"}),
        Request(path="/c", headers=CLIENT)], route_metadata=ROUTE_METADATA))
    assert [x.status for x in report.envoy.exchanges] == expected
    assert [m for lvl, m in all_lines(report) if lvl == "error"][:2] == ["panic: ", "x-go-panic asked for a panic"]


# --- callouts -------------------------------------------------------------------------------------

def test_callouts_parity(go_wasm, proxywasm_parity) -> None:
    """Flags fetched by the root context at start; the auth cluster answers per user (no tick
    fires during the run: see test_held_request_parity)."""
    text = {"content-type": "text/plain"}
    report = proxywasm_parity(Scenario(
        [Filter(go_wasm["callout_filter"], configuration='{"tick_ms": 60000}', name="go_callouts")],
        [Request(path="/orders", headers={"host": "shop"}),
         Request(path="/orders", headers={"host": "shop", "x-go-user": "alice"}),
         Request(path="/orders", headers={"host": "shop", "x-go-user": "mallory"})],
        callouts={"flags": Response(200, text, "dark-mode=on"),
                  "auth": {"/users/alice": Response(200, text, "role=admin"),
                           "/users/mallory": Response(404, text, "no such user")}}))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 200, 403]
    assert header(e[0].upstream[0], "x-go-flags") == ["dark-mode=on"]
    assert header(e[1].upstream[0], "x-go-auth") == ["role=admin"]
    assert e[2].client_body == b"user mallory refused by auth (404)\n"


def test_held_request_parity(go_wasm, proxywasm_parity) -> None:
    """A request held until the next tick: Envoy's client waits (real time), the host's clock moves
    to the tick. The tick fires on the main thread's VM and on the worker's (their log lines are
    compared per thread), each fetching the flags again; the worker's releases the request. The
    period leaves the first requests seconds of margin before the first tick, on a busy machine too."""
    text = {"content-type": "text/plain"}
    report = proxywasm_parity(Scenario(
        [Filter(go_wasm["callout_filter"], configuration='{"tick_ms": 3000}', name="go_callouts")],
        [Request(path="/orders", headers={"host": "shop"}),
         Request(path="/orders", headers={"host": "shop", "x-go-user": "alice"}),
         Request(path="/orders", headers={"host": "shop", "x-go-hold": "1"})],
        callouts={"flags": Response(200, text, "dark-mode=on"), "auth": Response(200, text, "role=admin")}))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 200, 200]
    assert header(e[2].upstream[0], "x-go-released-at-tick") == ["1"]
    assert [path for _, _, path, _, _ in e[2].callouts] == ["/flags?why=tick"] * 2  # the main thread's and the worker's
    assert ("info", "tick 1: releasing 1 held request(s)") in report.envoy.logs["'wasm log:'"]
    assert ("info", "tick 1: releasing 0 held request(s)") in report.envoy.logs["'wasm log:' on the main thread"]


# --- shared data and queues -----------------------------------------------------------------------

def test_shared_data_and_queue_parity(go_wasm, proxywasm_parity) -> None:
    wasm = go_wasm["shared_filter"]
    report = proxywasm_parity(Scenario(
        [Filter(wasm, '{"role": "counter"}', vm_id="counter", name="counter"),
         Filter(wasm, '{"role": "collector"}', vm_id="collector", name="collector"),
         Filter(wasm, '{"role": "producer", "queue_vm_id": "collector"}', vm_id="edge", name="edge")],
        [Request(path=p, headers={"host": "a"}) for p in ("/a", "/b", "/stale-cas", "/c")], workers=2))
    e = report.envoy.exchanges
    assert [header(x.upstream[0], "x-go-hits") for x in e] == [["1"], ["2"], ["3"], ["4"]]
    assert header(e[2].upstream[0], "x-go-stale-cas") == ["first=ok second=error status returned by host: cas mismatch"]
    assert report.envoy.metrics["go_shared.events_collected"] == 4


# --- TCP filter -----------------------------------------------------------------------------------

def test_tcp_filter_parity(go_wasm, proxywasm_parity) -> None:
    """The network filter before tcp_proxy to an echo server: upper-cased on the way up, "go> " on
    the way back, a QUIT line closes the connection from the filter."""
    report = proxywasm_parity(Scenario([Filter(go_wasm["tcp_filter"], name="go_tcp")], connections=[
        Connection([b"hello\n", b"bye\n"]), Connection([b"ping\n", b"QUIT\r\n"])]))
    assert report.envoy.flows == [Flow(b"HELLO\nBYE\n", b"go> HELLO\ngo> BYE\n", "client"),
                                  Flow(b"PING\n", b"go> PING\n", "proxy after chunk 2")]
    lines = [m for _, m in all_lines(report)]
    assert lines[1:4] == ["upstream closed (peer type 0)", "downstream closed (peer type 1)",
                          "connection done: 10 bytes in, 10 bytes out, closed by filter: false"]
    assert "client said QUIT: closing" in lines and lines[-1].endswith("closed by filter: true")
    assert report.envoy.metrics == {"go_tcp.connections": 2, "go_tcp.downstream_bytes": 21}
