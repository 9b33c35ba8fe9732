"""The behaviours tests/test_tcp_semantics.py, test_tcp_connection_lifecycle.py, test_body_buffering.py,
test_body_phases.py and test_grpc_local_reply.py pin in the host, measured in a real Envoy 1.40
with the same probe modules through parity (network filters behind tcp_proxy to an echo upstream,
HTTP filters in front of the router)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

from proxywasm_host.parity import Scenario, run_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from body_probes import body_scenarios  # noqa: E402
from grpc_reply_probes import grpc_reply_scenarios  # noqa: E402
from tcp_probes import tcp_scenarios  # noqa: E402

SOURCES: dict[str, Callable[[], dict[str, Scenario]]] = {
    "tcp": tcp_scenarios, "body": body_scenarios, "grpc_reply": grpc_reply_scenarios}
IDENTICAL = [("tcp", name) for name in ("upstream_hold", "continue_reading", "new_connection_stop", "http_stream_types",
                                        "status", "properties")] + \
            [("body", "request_body_statuses"), ("body", "wait_at_the_end"), ("body", "body_buffering"),
             ("body", "wait_nobuffer_at_the_end"), ("body", "replay_after_a_stop_all"),
             ("grpc_reply", "own_grpc_status"), ("grpc_reply", "unmapped_http_status")]


@pytest.mark.parametrize(("source", "name"), IDENTICAL, ids=[f"{s}-{n}" for s, n in IDENTICAL])
def test_identical_to_envoy(source: str, name: str) -> None:
    report = run_parity(SOURCES[source]()[name])
    assert report.identical, report.text()


def test_a_grpc_answer_to_a_head_request_has_no_grpc_message() -> None:
    """Compared without the framing header (Envoy's codec chunks this answer, the host gives content-length: 0)."""
    report = run_parity(grpc_reply_scenarios()["head"])
    framing = ("transfer-encoding", "content-length")
    envoy, host = ([(k, v) for k, v in side.exchanges[0].client_headers if k not in framing]
                   for side in (report.envoy, report.host))
    assert envoy == host == [("content-type", "application/grpc"), ("grpc-status", "7")], report.text()
