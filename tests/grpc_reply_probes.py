"""Local replies to gRPC requests that probe how Envoy 1.40 builds the trailers-only answer: a
grpc-status the filter put in its own headers, an HTTP status with no gRPC mapping, a HEAD
request. Run in the host by tests/test_grpc_local_reply.py and in Envoy through parity by
integration/test_envoy_probe_scenarios.py."""
from __future__ import annotations

from probe_filters import GRPC, local_reply
from proxywasm_host.parity import Filter, Request, Scenario

GRPC_BODY = "\0\0\0\0\0"


def grpc_reply_scenarios() -> dict[str, Scenario]:
    return {
        "own_grpc_status": Scenario([Filter(local_reply(403, [(b"grpc-status", b"7")], "denied"), name="g")], [
            Request("POST", "/svc/M", GRPC, body=GRPC_BODY)]),
        "unmapped_http_status": Scenario([Filter(local_reply(418, [], "teapot"), name="g")], [
            Request("POST", "/svc/M", GRPC, body=GRPC_BODY)]),
        # Envoy's codec frames this answer to a HEAD request with transfer-encoding: chunked, the
        # host with content-length: 0 (a difference parity shows, left to the host)
        "head": Scenario([Filter(local_reply(403, [], "denied"), name="g")], [Request("HEAD", "/svc/M", GRPC)]),
    }
