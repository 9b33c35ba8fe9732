"""Which content-types make a request a gRPC one, whose local reply is then a trailers-only gRPC
answer (Envoy's Grpc::Common::hasGrpcContentType): probed with a filter that answers 403 to every
request. Run in the host by tests/test_grpc_content_types.py and in Envoy 1.40 through parity by
integration/test_envoy_probe_scenarios.py."""
from __future__ import annotations

from grpc_reply_probes import GRPC_BODY
from probe_filters import local_reply
from proxywasm_host.parity import Filter, Request, Scenario

#: content-types of the probe's requests, in order
CONTENT_TYPES = ["application/grpc+proto", "application/grpc;charset=utf-8", "application/grpcx",
                 "APPLICATION/GRPC+PROTO", "application/json"]


def grpc_content_type_scenarios() -> dict[str, Scenario]:
    return {"content_types": Scenario([Filter(local_reply(403, [], "denied"), name="g")], [
        Request("POST", "/svc/M", {"content-type": ct, "te": "trailers"}, body=GRPC_BODY) for ct in CONTENT_TYPES])}
