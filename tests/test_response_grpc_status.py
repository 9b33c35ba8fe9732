"""response.grpc_status read in on_response_headers: a trailers-only gRPC answer's grpc-status
header (5), else Envoy's mapping of the HTTP status (404 -> 12, Unimplemented). Envoy 1.40's
answers to these scenarios, measured through proxywasm_host.parity.run_parity (identical)."""
from __future__ import annotations

import struct

import pytest

from proxywasm_host.parity import Filter, Request, Response, Scenario, run_host
from watgen import build

READ = ("(drop (call $proxy_get_property {path} (i32.const 0x100) (i32.const 0x104)))"
        " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))) (i32.const 0)")


@pytest.mark.parametrize(("upstream", "grpc_status"), [
    (Response(200, {"content-type": "application/grpc", "grpc-status": "5"}, b""), 5),
    (Response(404, {"content-type": "text/plain"}, "no"), 12)], ids=["grpc-status header", "http 404"])
def test_grpc_status_of_the_upstream_answer(upstream: Response, grpc_status: int) -> None:
    probe = build({"proxy_on_response_headers": READ}, {"path": "response\0grpc_status"})
    side = run_host(Scenario([Filter(probe, name="g")], [Request("GET", "/s")], upstream=upstream))
    (message,) = [m for _, m in side.logs["'wasm log g:'"]]
    assert message.encode("latin-1") == struct.pack("<q", grpc_status)
