"""Which requests get a gRPC local reply, by content-type, as Envoy 1.40 answered the probe of
tests/grpc_content_type_probes.py (integration/test_envoy_probe_scenarios.py runs it through
parity): application/grpc with a "+" suffix is gRPC; a ";" parameter, another suffix or another
case is not, and gets the plain 403."""
from __future__ import annotations

from grpc_content_type_probes import CONTENT_TYPES, grpc_content_type_scenarios
from proxywasm_host.parity import run_host


def test_only_application_grpc_and_its_plus_suffixes_get_a_grpc_answer() -> None:
    exchanges = run_host(grpc_content_type_scenarios()["content_types"]).exchanges
    answers = {ct: (e.status, dict(e.client_headers).get("grpc-status"), e.client_body)
               for ct, e in zip(CONTENT_TYPES, exchanges, strict=True)}
    assert answers == {
        "application/grpc+proto": (200, "7", b""),
        "application/grpc;charset=utf-8": (403, None, b"denied"),
        "application/grpcx": (403, None, b"denied"),
        "APPLICATION/GRPC+PROTO": (403, None, b"denied"),
        "application/json": (403, None, b"denied"),
    }
