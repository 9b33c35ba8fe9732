"""A filter that answers locally (403, body "denied") from its response headers, once the upstream
answered: to a gRPC request Envoy 1.40 then sends the trailers-only gRPC answer straight to the
client, the body as grpc-message and no body. Run in the host by
tests/test_grpc_reply_after_the_response_started.py and in Envoy through parity by
integration/test_envoy_probe_scenarios.py."""
from __future__ import annotations

from grpc_reply_probes import GRPC_BODY
from proxywasm_host.parity import Filter, Request, Scenario
from watgen import build

REPLY = ("(drop (call $proxy_send_local_response (i32.const 403) {details} {body} (i32.const 0) (i32.const 0)"
         " (i32.const -1))) (i32.const 0)")


def grpc_response_reply_scenarios() -> dict[str, Scenario]:
    module = build({"proxy_on_response_headers": REPLY}, {"details": "probe", "body": "denied"})
    # without "te: trailers": the host puts a client's content-length before it, Envoy after (a
    # difference in how parity's host side builds the upstream request, not in the answer)
    return {"reply_in_response_headers": Scenario([Filter(module, name="g")], [
        Request("POST", "/svc/M", {"content-type": "application/grpc"}, body=GRPC_BODY)])}
