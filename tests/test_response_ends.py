"""When the response ends for the client: `send_response_body` ends it unless told otherwise (its
documented default), and a local reply to a gRPC request is a whole trailers-only answer, as the
client of a real Envoy 1.40 receives it (the grpc_reply scenario of tests/probe_filters.py, run
through parity by integration/test_envoy_semantics.py)."""
from probe_filters import GRPC, local_reply
from proxywasm_host import Host
from watgen import build

PASS = build({"proxy_on_request_headers": "(i32.const 0)"})


def test_a_response_body_ends_the_response_by_default() -> None:
    s = Host().load_plugin(PASS).http_stream()
    s.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
    s.send_response_headers({":status": "200"})
    assert not s.downstream_response.complete
    s.send_response_body(b"ok")
    assert (s.downstream_response.body, s.downstream_response.complete) == (b"ok", True)


def test_a_local_reply_to_a_grpc_request_is_a_complete_answer() -> None:
    s = Host().load_plugin(local_reply(403, [], "denied")).http_stream()
    s.send_request_headers({":method": "POST", ":path": "/svc/M", ":authority": "a", **dict(GRPC)})
    out = s.downstream_response
    assert (out.headers.get("grpc-status"), out.body, out.complete) == ("7", b"", True)
