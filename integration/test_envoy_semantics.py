"""The Envoy 1.40 behaviours that tests/test_hostcall_status.py, test_local_reply_answers.py and
test_pause_resume.py pin in the host, measured here in a real Envoy with the same probe modules:
through parity where the scenario's timing is the client's alone, and by driving Envoy step by step
(a callout cluster that answers only when told) where the order of the client and a callout matters."""
from __future__ import annotations

import re
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.static import StaticEnvoy, http_listener, plugin_config, trace_by_thread
from proxywasm_host.parity import ParityReport, run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from probe_filters import answer_scenarios, control_scenarios, pause_for_callout, status_scenarios  # noqa: E402

DEADLINE = 10.0  # seconds a step may take before the test fails
_ALLOCATE = re.compile(r"proxy_on_memory_allocate\(\d+\)")


def allocation_sizes_aside(report: ParityReport) -> list[str]:
    """The differences, with the sizes the guest allocates set aside: on_log and on_done read the
    headers Envoy's router and codec added after the filters (MASKED), so the pairs differ in size."""
    sized = [_ALLOCATE.sub("proxy_on_memory_allocate(N)", c) for c in report.envoy.callbacks]
    host = [_ALLOCATE.sub("proxy_on_memory_allocate(N)", c) for c in report.host.callbacks]
    out = [str(d) for d in report.differences if not d.observation.startswith("callbacks of context")]
    return out + ([] if sized == host else ["callbacks differ beyond allocation sizes"])


@pytest.mark.parametrize("name", ["phases", "callout", "absent_body_size", "append_at_the_end", "legacy_reads"])
def test_hostcall_status_per_phase(name: str) -> None:
    report = run_parity(status_scenarios()[name])
    assert report.envoy.logs == report.host.logs, report.text()
    assert allocation_sizes_aside(report) == [], report.text()


@pytest.mark.parametrize("name", ["fail_closed", "empty_reply_with_content_length", "grpc_reply", "callout_body",
                                  "grpc_status_0", "grpc_status_16", "grpc_status_17"])
def test_local_answers_and_callout_length(name: str) -> None:
    report = run_parity(answer_scenarios()[name])
    assert report.identical, report.text()
    if name == "callout_body":  # held until the callout's answer, so the callout surely reached the cluster
        e = report.envoy.exchanges[0]
        assert e.status == 200 and [(c[0], c[4]) for c in e.callouts] == [("auth", b"hello")]


@pytest.mark.parametrize("name", ["http", "tcp_close_upstream", "continue_inside_headers"])
def test_continue_and_close_stream(name: str) -> None:
    report = run_parity(control_scenarios()[name])
    assert report.identical, report.text()


class GatedCluster(socketserver.ThreadingTCPServer):
    """A callout cluster that reads a request and answers 200 "ok" only once `gate` is set."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _GatedHandler)
        self.gate = threading.Event()


class _GatedHandler(socketserver.BaseRequestHandler):
    server: GatedCluster

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.request.recv(4096)
            if not data:
                return
            head += data
        if self.server.gate.wait(DEADLINE):
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            self.request.recv(1)  # until Envoy closes or reuses the connection


@pytest.fixture
def paused_envoy(tmp_path: Path) -> Iterator[tuple[StaticEnvoy, GatedCluster, EchoUpstream]]:
    wasm = tmp_path / "pause.wasm"
    wasm.write_bytes(pause_for_callout())
    auth = GatedCluster()
    threading.Thread(target=auth.serve_forever, daemon=True).start()
    try:
        with EchoUpstream(record=True) as up, StaticEnvoy(
                http_listener([plugin_config("p", str(wasm))]), {"upstream": up.port, "auth": auth.server_address[1]},
                component_log_level="wasm:trace") as env:
            yield env, auth, up
    finally:
        auth.shutdown()
        auth.server_close()


def wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not done():
        assert time.monotonic() < deadline, f"Envoy did not get to: {what}"
        time.sleep(0.02)


def stream_callbacks(env: StaticEnvoy) -> list[str]:
    """The worker's callbacks of the stream (context 2) and of the callout's answer."""
    lines = [line.removeprefix("[host->vm] ") for lines in trace_by_thread(env.log()).values() for line in lines]
    return [c for c in lines if c.startswith(("proxy_on_request", "proxy_on_http_call_response", "proxy_on_context_create(2"))]


def received_bytes(env: StaticEnvoy) -> int:
    text = httpx.get(env.admin + "/stats?filter=downstream_cx_rx_bytes_total", timeout=5).text
    return int(re.search(r"http\.main\.downstream_cx_rx_bytes_total: (\d+)", text).group(1))


def response(sock: socket.socket) -> bytes:
    sock.settimeout(DEADLINE)
    return sock.recv(65536)


HEAD = b"POST /a HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("chunks", "body_callbacks", "body"), [
    (b"6\r\npart1-\r\n5\r\npart2\r\n", ["proxy_on_request_body(2, 11, 0)"], b"part1-part2"),
    (b"", [], b""),  # trailers alone: no body callback (tests/test_paused_trailers.py)
], ids=["body and trailers", "trailers alone"])
def test_body_and_trailers_that_arrive_while_paused(paused_envoy, chunks: bytes, body_callbacks: list[str],  # type: ignore[no-untyped-def]
                                                    body: bytes) -> None:
    env, auth, up = paused_envoy
    whole = HEAD + chunks + b"0\r\nx-t: 1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", env.port)) as sock:
        sock.sendall(whole)
        wait_for("the whole request read while the callout waits", lambda: received_bytes(env) >= len(whole))
        auth.gate.set()
        assert response(sock).startswith(b"HTTP/1.1 200 OK")
    wait_for("the trailers callback", lambda: any("trailers" in c for c in stream_callbacks(env)))
    assert stream_callbacks(env) == ["proxy_on_context_create(2, 1)", "proxy_on_request_headers(2, 6, 0)",
                                     "proxy_on_http_call_response(1, 4, 3, 2, 0)", *body_callbacks,
                                     "proxy_on_request_trailers(2, 1)"]
    assert up.received[-1].body == body


def test_body_after_the_resume(paused_envoy) -> None:  # type: ignore[no-untyped-def]
    env, auth, up = paused_envoy
    auth.gate.set()
    with socket.create_connection(("127.0.0.1", env.port)) as sock:
        sock.sendall(HEAD)
        wait_for("the callout's answer", lambda: any("http_call_response" in c for c in stream_callbacks(env)))
        sock.sendall(b"3\r\nabc\r\n")
        wait_for("the first body callback", lambda: any("body" in c for c in stream_callbacks(env)))
        sock.sendall(b"3\r\ndef\r\n0\r\n\r\n")
        assert response(sock).startswith(b"HTTP/1.1 200 OK")
    assert stream_callbacks(env) == ["proxy_on_context_create(2, 1)", "proxy_on_request_headers(2, 6, 0)",
                                     "proxy_on_http_call_response(1, 4, 3, 2, 0)", "proxy_on_request_body(2, 3, 0)",
                                     "proxy_on_request_body(2, 3, 0)", "proxy_on_request_body(2, 0, 1)"]
    assert up.received[-1].body == b"abcdef"
