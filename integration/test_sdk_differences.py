"""Issue 9's differences between Envoy 1.40 and a naive host, checked with a Go SDK filter
(examples/go/observed_filter) through a real Envoy and the host, compared by
proxywasm_host.parity. examples/go/test_go_observed.py pins the same cases in the host alone.

Envoy-side values are asserted too, so an agreement cannot come from both sides doing nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import Connection, Filter, Flow, Request, Response, Scenario, run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "go"))
import build_go  # noqa: E402

TEXT = {"content-type": "text/plain"}


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_go.module_for_tests("observed_filter")


def header(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k == name]


def requests() -> list[Request]:
    return [
        Request("GET", "/plain", {"host": "a", "x-forwarded-client-cert": "By=spiffe://client"}),
        Request("GET", "/ask", {"host": "a", "x-go-ask": "alice"}),
        Request("POST", "/deny", {"host": "a", "x-go-deny": "1"}, body="abc"),
        Request("POST", "/deny-body", {"host": "a", "x-go-deny-body": "1"}, body="abcdef"),
        Request("POST", "/ok", {"host": "a"}, body="abcdef"),
    ]


def test_observed_filter_parity(wasm, proxywasm_parity) -> None:
    """Differences 2 (context 0 in a callout callback), 3 (access-log properties, a path ending
    in NUL), 5 (x-forwarded-client-cert removed, connection: close) and 7 (on_vm_start on the
    canary and main-thread VMs: parity runs Host(extra_vms=True))."""
    report = proxywasm_parity(Scenario([Filter(wasm, name="go_observed")], requests(),
                                       upstream=Response(200, TEXT, "upstream body"),
                                       callouts={"idp": Response(200, TEXT, "role=admin")}))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 200, 403, 400, 200]
    assert header(e[0].upstream[0], "x-go-xfcc") == ["<error status returned by host: not found>"]
    assert header(e[0].upstream[0], "x-go-early-duration") == ["false"]
    assert header(e[1].upstream[0], "x-go-idp") == ["role=admin"]
    assert [header(x.client_headers, "connection") for x in e] == [[], [], ["close"], ["close"], []]
    assert report.envoy.metrics == {"go_observed.vm_starts": 3}
    done = [m for group in report.envoy.logs.values() for _, m in group if m.startswith("stream done:")]
    assert done[-1] == ("stream done: duration known=true request size=6 response size=13"
                        " code_details=via_upstream grpc_status=2 flags=0")


def test_panic_in_a_network_filter_parity(wasm, proxywasm_parity) -> None:
    """Difference 5: after a panic in on_downstream_data Envoy closes the connection; with
    fail_closed the next connection is closed at once."""
    report = proxywasm_parity(Scenario([Filter(wasm, configuration="network", name="go_observed_tcp")],
                                       connections=[Connection([b"hi\n", b"PANIC\n", b"more\n"]),
                                                    Connection([b"after\n"])]))
    assert report.envoy.flows == [Flow(b"hi\n", b"hi\n", "proxy after chunk 2"), Flow(b"", b"", "proxy after chunk 1")]


@pytest.fixture(scope="module")
def sizes_report(wasm):
    """The early 403, the local 400 and an upstream 200, with on_log's response.total_size and
    connection header logged (plugin configuration "sizes")."""
    return run_parity(Scenario([Filter(wasm, configuration="sizes", name="go_observed")], requests()[2:],
                               upstream=Response(200, TEXT, "upstream body")))


def total_size_lines(side) -> list[str]:
    return [m for group in side.logs.values() for _, m in group if "total_size" in m]


def test_envoy_on_log_sees_connection_close(sizes_report) -> None:
    """Measured: the connection: close Envoy's connection manager adds is in the response header
    map on_log reads, and counts in response.total_size (10 + 5 bytes)."""
    assert total_size_lines(sizes_report.envoy) == ['stream done: response total_size=131 connection="close"',
                                                    'stream done: response total_size=130 connection="close"',
                                                    'stream done: response total_size=135 connection=""']


@pytest.mark.xfail(strict=True, reason="host difference found here: the host adds `connection: close` only to "
                   "what the client receives, not to the response header map on_log reads "
                   "(proxywasm_host/http.py mark_connection_close; reported to the lead)")
def test_host_on_log_sees_connection_close(sizes_report) -> None:
    assert total_size_lines(sizes_report.host) == total_size_lines(sizes_report.envoy)
