"""The behaviours the probe modules of tests/ (`*_probes.py`: TCP, body buffering and phases, gRPC local
replies and content types, request targets, replayed trailers, callout bodies, hostcall edges) pin in the
host, measured in a real Envoy 1.40 with the same modules through parity (network filters behind tcp_proxy
to an echo upstream, HTTP filters in front of the router)."""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.static import StaticEnvoy, http_listener, plugin_config
from proxywasm_host.parity import Scenario, run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from body_probes import BETWEEN_CHUNKS, BETWEEN_IDS, body_scenarios, resume_on_a_tick  # noqa: E402
from call_body_probes import call_body_scenarios  # noqa: E402
from grpc_content_type_probes import grpc_content_type_scenarios  # noqa: E402
from grpc_reply_probes import grpc_reply_scenarios  # noqa: E402
from grpc_response_reply_probes import grpc_response_reply_scenarios  # noqa: E402
from hostcall_edge_probes import hostcall_edge_scenarios  # noqa: E402
from replay_trailers_probes import replay_trailers_scenarios  # noqa: E402
from request_target_probes import request_target_scenarios  # noqa: E402
from tcp_probes import tcp_scenarios  # noqa: E402

SOURCES: dict[str, Callable[[], dict[str, Scenario]]] = {
    "tcp": tcp_scenarios, "body": body_scenarios, "grpc_reply": grpc_reply_scenarios,
    "target": request_target_scenarios, "grpc_content_type": grpc_content_type_scenarios,
    "grpc_response_reply": grpc_response_reply_scenarios, "replay_trailers": replay_trailers_scenarios,
    "call_body": call_body_scenarios, "edge": hostcall_edge_scenarios}
IDENTICAL = [("tcp", name) for name in ("upstream_hold", "continue_reading", "new_connection_stop", "http_stream_types",
                                        "status", "properties")] + \
            [("body", "request_body_statuses"), ("body", "wait_at_the_end"), ("body", "body_buffering"),
             ("body", "wait_nobuffer_at_the_end"), ("body", "replay_after_a_stop_all"),
             ("grpc_reply", "own_grpc_status"), ("grpc_reply", "unmapped_http_status"),
             ("grpc_content_type", "content_types"), ("grpc_response_reply", "reply_in_response_headers"),
             ("replay_trailers", "trailers_stop_after_a_replay"), ("call_body", "call_body_from_a_stream")] + \
            [("target", name) for name in request_target_scenarios()] + \
            [("edge", name) for name in ("metrics", "shared", "callout")]  # "grpc" races in Envoy: see below


@pytest.mark.parametrize(("source", "name"), IDENTICAL, ids=[f"{s}-{n}" for s, n in IDENTICAL])
def test_identical_to_envoy(source: str, name: str) -> None:
    report = run_parity(SOURCES[source]()[name])
    assert report.identical, report.text()


# The "grpc" edge probe is pinned in the host only: its gRPC answer races the end of the request in
# Envoy (3 of 6 runs: proxy_set_effective_context on the finished stream answered NotFound).


def test_a_grpc_answer_to_a_head_request_has_no_grpc_message() -> None:
    """Compared without the framing header (Envoy's codec chunks this answer, the host gives content-length: 0)."""
    report = run_parity(grpc_reply_scenarios()["head"])
    framing = ("transfer-encoding", "content-length")
    envoy, host = ([(k, v) for k, v in side.exchanges[0].client_headers if k not in framing]
                   for side in (report.envoy, report.host))
    assert envoy == host == [("content-type", "application/grpc"), ("grpc-status", "7")], report.text()


def _wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, f"Envoy did not get to: {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(("at_headers", "chunks", "seen", "body"), BETWEEN_CHUNKS, ids=BETWEEN_IDS)
def test_a_resume_between_body_chunks(tmp_path: Path, at_headers: bool, chunks: list[str], seen: list[str],
                                      body: bytes) -> None:
    """The first chunk held (by StopIterationAndBuffer, or with the stopped headers), then a tick
    continues the request before the next chunk arrives (parity sends a request at once, so each
    chunk here waits for Envoy to be done with the one before): what each body callback saw and
    what the upstream got, as tests/test_body_buffering.py pins in the host."""
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(resume_on_a_tick(at_headers))
    with EchoUpstream(record=True) as up, StaticEnvoy(http_listener([plugin_config("m", str(wasm))]),
                                                     {"upstream": up.port}, component_log_level="wasm:trace") as env:
        with socket.create_connection(("127.0.0.1", env.port)) as sock:
            sock.sendall(b"POST /a HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n")
            for n, chunk in enumerate(chunks, 1):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk.encode()))
                _wait_for(f"body callback {n}", lambda: env.log().count("proxy_on_request_body(") >= n)
                if n == 1:
                    _wait_for("the resume", lambda: "env.proxy_continue_stream(0)" in env.log())
            sock.sendall(b"0\r\n\r\n")
            _wait_for("the upstream request", lambda: bool(up.received))
        lines = [line.split("wasm log m: ", 1)[1] for line in env.log().splitlines() if "wasm log m: " in line]
    assert ([line for line in lines if line != "c"], up.received[0].body) == (seen, body)
