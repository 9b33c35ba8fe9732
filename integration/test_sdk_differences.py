"""Issue 9's differences between Envoy 1.40 and a naive host, checked with a Go SDK filter
(examples/go/observed_filter) through a real Envoy and the host, compared by
proxywasm_host.parity. examples/go/test_go_observed.py pins the same cases in the host alone.
The two that no Go filter can reach (a gRPC call to a serialized GrpcService, emscripten's malloc:
C++ SDK forms) run as WAT modules, as in tests/test_envoy_observed.py.

Envoy-side values are asserted too, so an agreement cannot come from both sides doing nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import Connection, Filter, Flow, GrpcReply, Request, Response, Scenario, run_parity

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples" / "go"), str(ROOT / "tests")]
import build_go  # noqa: E402
from test_envoy_observed import _pb  # noqa: E402
from test_parity_feature import grpc_probe  # noqa: E402
from watgen import build  # noqa: E402

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
    done = [m.split(" ", 2)[2] for group in report.envoy.logs.values() for _, m in group if " done: duration" in m]
    assert done[-1] == ("done: duration known=true request size=6 response size=13"
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


def test_host_on_log_sees_connection_close(sizes_report) -> None:
    """The host's on_log reads the same response headers and total_size as Envoy's (found here)."""
    assert total_size_lines(sizes_report.host) == total_size_lines(sizes_report.envoy)


def test_grpc_call_to_a_serialized_grpc_service_parity(proxywasm_parity) -> None:
    """Difference 4: the call names its upstream with a GrpcService proto (the C++ SDK's form);
    Envoy calls the cluster it names and sends its initial metadata."""
    service = _pb(1, _pb(1, b"echo_svc")) + _pb(5, _pb(1, b"x-tenant") + _pb(2, b"blue"))
    report = proxywasm_parity(Scenario([Filter(grpc_probe(service), name="grpc")], [Request()],
                                       callouts={"echo_svc": GrpcReply(b"hi back")}))
    [exchange] = report.envoy.exchanges
    assert exchange.status == 200
    assert exchange.callouts == [("echo_svc", "POST", "/pkg.Echo/Say", [("x-tenant", "blue"), ("x-meta", "1")], b"hello")]
    assert report.envoy.logs["'wasm log:'"] == [("info", "hi back")]


@pytest.fixture(scope="module")
def emscripten_report():
    """Difference 6: an emscripten malloc that calls emscripten_notify_memory_growth while the host
    allocates (here: for proxy_get_header_map_pairs), two requests."""
    malloc = ('(func (export "malloc") (param $n i32) (result i32)'
              " (call $env.emscripten_notify_memory_growth (i32.const 0)) (i32.const 0x9000))")
    pairs = "(drop (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"
    wasm = build({"proxy_on_request_headers": pairs}, allocator=(), extra=malloc,
                 imports={"env.emscripten_notify_memory_growth": "(param i32)"})
    return run_parity(Scenario([Filter(wasm, name="emscripten")], [Request(), Request()]))


def test_emscripten_memory_growth_notice_in_malloc_fails_the_vm(emscripten_report) -> None:
    """Envoy refuses the notice inside malloc (restricted callback), as the host does: the request
    gets 503 and the VM stays failed."""
    assert [x.status for x in emscripten_report.envoy.exchanges] == [503, 503]
    assert [x.status for x in emscripten_report.host.exchanges] == [503, 503]
    assert emscripten_report.envoy.traps == ["malloc"]


def test_emscripten_malloc_trap_as_in_envoy(emscripten_report) -> None:
    """The trap is malloc's, the allocating hostcall answers InvalidMemoryAccess and the callback
    goes on, in the host as in Envoy (found here)."""
    assert emscripten_report.identical, emscripten_report.text()
