"""More Go SDK example features through Envoy 1.40 and the host (issue 9's list), where
test_sdk_go_parity.py leaves them out: request trailers, a body streamed in several chunks, the
CAS counter with requests spread over two workers, a plugin configuration both sides refuse; and
bodies replaced by ones of another length (examples/go/body_filter), with content-length removed
(compared) and left stale (what Envoy does, measured: the host does not emulate it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import Filter, Request, Response, Scenario, run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "go"))
import build_go  # noqa: E402

HTTP_CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'
UPSTREAM = Response(200, {"content-type": "text/plain"}, "upstream body")


@pytest.fixture(scope="module")
def http_wasm() -> str:
    return build_go.module_for_tests("http_filter")


@pytest.fixture(scope="module")
def body_wasm() -> str:
    return build_go.module_for_tests("body_filter")


def messages(report) -> list[str]:
    return [m for group in report.envoy.logs.values() for _, m in group]


def header(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k == name]


def test_request_trailers_parity(http_wasm, proxywasm_parity) -> None:
    """The filter reads the client's trailers and adds one (its log lines and hostcalls compared)."""
    report = proxywasm_parity(Scenario([Filter(http_wasm, configuration=HTTP_CONFIG, name="go_http")], [
        Request("POST", "/grpc", {"host": "api.example"}, body=["req"],
                trailers={"x-checksum": "abc", "x-count": "1"})]))
    assert report.envoy.exchanges[0].status == 200
    assert [m for m in messages(report) if "trailer" in m] == ["request trailer x-checksum: abc",
                                                               "request trailer x-count: 1"]


def test_body_streamed_in_chunks_parity(http_wasm, proxywasm_parity) -> None:
    """Each chunk the client writes reaches on_request_body on its own and is upper-cased as it passes."""
    report = proxywasm_parity(Scenario([Filter(http_wasm, configuration=HTTP_CONFIG, name="go_http")], [
        Request("POST", "/upload", {"host": "api.example", "x-go-body": "stream"}, body=["abc", "de", "f"])]))
    [exchange] = report.envoy.exchanges
    assert exchange.upstream is not None and exchange.upstream[1] == b"ABCDEF"
    assert [m for m in messages(report) if "chunk" in m][0] == "request chunk 1: 3 bytes (end_of_stream=false)"


def test_cas_counter_on_two_workers_parity(proxywasm_parity) -> None:
    """Four connections alternate between Envoy's two workers (exact balance), so each
    increment runs in another VM than the one before; the shared value still counts 1..4. The
    observed filter after the counter logs its stream's context id, which each VM numbers on its
    own: every id twice shows that two VMs served the requests. (Its start-up line is the same on
    every VM: lines that differ per VM would interleave as the workers' threads race.)"""
    wasm = build_go.module_for_tests("shared_filter")
    report = proxywasm_parity(Scenario(
        [Filter(wasm, '{"role": "counter"}', vm_id="counter", name="counter"),
         Filter(build_go.module_for_tests("observed_filter"), name="go_observed")],
        [Request(path="/", headers={"host": "a"}, connection=c) for c in range(4)], workers=2))
    assert [header(x.upstream[0], "x-go-hits") for x in report.envoy.exchanges] == [["1"], ["2"], ["3"], ["4"]]
    done = [m.split(" done:")[0] for m in messages(report) if " done: duration" in m]
    assert len(done) == 4 and len(set(done)) == 2, done


def test_invalid_plugin_configuration_is_refused_by_both(http_wasm) -> None:
    """OnPluginStart fails on JSON it cannot parse: Envoy refuses the filter, and so does the host."""
    report = run_parity(Scenario([Filter(http_wasm, configuration="{not json", name="go_http")]))
    assert report.identical, report.text()
    assert report.envoy.refusal is not None and report.host.refusal is not None


def test_bodies_replaced_with_content_length_removed_parity(body_wasm, proxywasm_parity) -> None:
    """Twice the body each way; content-length removed in the headers callback, so it goes on chunked."""
    report = proxywasm_parity(Scenario([Filter(body_wasm, name="go_body")], [
        Request("POST", "/", {"host": "a", "x-go-edit": "fix"}, body="hello world"),
        Request("GET", "/", {"host": "a", "x-go-edit-response": "fix"})], upstream=UPSTREAM))
    e = report.envoy.exchanges
    assert e[0].upstream is not None and e[0].upstream[1] == b"hello worldhello world"
    assert header(e[0].upstream[0], "transfer-encoding") == ["chunked"]
    assert e[1].client_body == b"upstream bodyupstream body"


def test_bodies_grown_under_a_stale_content_length_in_envoy(body_wasm) -> None:
    """What Envoy 1.40's HTTP/1 codec does with a body longer than the content-length the filter
    left (the host passes the whole body on: examples/go/test_go_body_filter.py): the receiver
    reads content-length bytes; the rest starts the next message on that connection, so the
    next request on the upstream connection is garbage to the upstream (its 400)."""
    report = run_parity(Scenario([Filter(body_wasm, name="go_body")], [
        Request("GET", "/", {"host": "a", "x-go-edit-response": "grow"}, connection=1),
        Request("POST", "/grow", {"host": "a", "x-go-edit": "grow"}, body="hello world", connection=2),
        Request("GET", "/after", {"host": "a"}, connection=3)], upstream=UPSTREAM))
    e = report.envoy.exchanges
    assert e[0].client_body == b"upstream body"                       # 13 of the 26 bytes
    assert e[1].upstream is not None and e[1].upstream[1] == b"hello world"   # 11 of the 22 bytes
    assert e[2].status == 400 and b"hello worldGET /after" in e[2].client_body
