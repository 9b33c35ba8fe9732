"""Bodies, pause/resume, local replies, close (abi.md §0.23, §0.27–0.29, §2.4, §2.6)."""
import pytest

from proxywasm_host import Host, StreamStateError
from proxywasm_host.memory import deserialize_pairs, serialize_pairs
from watgen import build, out_bytes, records

REQ = {":method": "POST", ":path": "/", ":authority": "example.com"}
SEND_403 = "(drop (call $proxy_send_local_response (i32.const 403) {details} {body} {hdrs} (i32.const -1)))"
HDRS = b"\x01\0\0\0\x03\0\0\0\x01\0\0\0x-a\x001\0"


def _plugin(callbacks, strings=None, **kw):
    return Host(connection_manager_defaults=False).load_plugin(build(callbacks, strings), **kw)


def test_pause_buffers_body_and_next_callback_sees_whole_buffer():
    p = _plugin({"proxy_on_request_body": "(call $rec (local.get $size)) (if (result i32) (local.get $eos) (then (i32.const 0)) (else (i32.const 1)))"})
    s = p.http_stream()
    s.send_request_headers(REQ)
    r1 = s.send_request_body(b"aaa", end_of_stream=False)
    assert r1.status == "StopIterationAndBuffer" and s.upstream_request.body == b""
    r2 = s.send_request_body(b"bb", end_of_stream=True)
    assert r2.status == "Continue"
    assert records(s.vm) == [3, 5]
    assert s.upstream_request.body == b"aaabb" and s.upstream_request.complete


def test_set_buffer_bytes_supports_only_envoys_three_forms():
    cb = (
        "(call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) {pre}))"  # prepend
        " (call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0xffffffff) (i32.const 0) {post}))"  # append
        " (call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 1) (i32.const 1) {post}))"  # middle: refused
        " (call $rec (call $proxy_set_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0) {post}))"  # immutable
        " (call $rec (call $proxy_get_buffer_status (i32.const 0) (i32.const 0x100) (i32.const 0x104))) (call $rec (i32.load (i32.const 0x100)))"
        " (i32.const 0)"
    )
    p = _plugin({"proxy_on_request_body": cb}, {"pre": "<<", "post": ">>"})
    s = p.http_stream()
    s.send_request_headers(REQ)
    s.send_request_body(b"body", end_of_stream=True)
    assert records(s.vm) == [0, 0, 2, 2, 0, 8]
    assert s.upstream_request.body == b"<<body>>"


def test_replace_prefix_and_get_buffer_bytes_window():
    cb = (
        "(call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 2) {new}))"
        " (call $rec (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 1) (i32.const 3) (i32.const 0x100) (i32.const 0x104)))"
        " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"
        " (call $rec (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 99) (i32.const 3) (i32.const 0x100) (i32.const 0x104)))"
        " (call $rec (i32.load (i32.const 0x104)))"
        " (call $rec (call $proxy_get_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 3) (i32.const 0x100) (i32.const 0x104)))"
        " (i32.const 0)"
    )
    p = _plugin({"proxy_on_request_body": cb}, {"new": "XYZ"})
    s = p.http_stream()
    s.send_request_headers(REQ)
    s.send_request_body(b"abcdef", end_of_stream=True)
    # replaced "ab" by "XYZ"; read 3 bytes from offset 1; start past the end -> Ok, empty; response body absent -> Ok,
    # empty (Envoy 1.40 keeps an empty buffer: tests/test_hostcall_status.py)
    assert records(s.vm) == [0, 0, 0, 0, 0]
    assert s.logs[0].message == "YZc"
    assert s.upstream_request.body == b"XYZcdef"


def test_local_reply_runs_response_callbacks_and_forces_stop():
    p = _plugin(
        {
            "proxy_on_request_headers": SEND_403 + " (i32.const 0)",
            "proxy_on_response_headers": "(call $rec (local.get $eos)) (drop (call $proxy_add_header_map_value (i32.const 2) {k} {v})) (i32.const 0)",
            "proxy_on_response_body": "(call $rec (local.get $size)) (call $rec (local.get $eos)) (i32.const 0)",
        },
        {"details": "denied by filter", "body": "denied", "hdrs": HDRS, "k": "x-seen", "v": "1"},
    )
    s = p.http_stream()
    r = s.send_request_headers(REQ)
    assert r.action == 0 and r.status == "StopAllIterationAndWatermark"
    lr = s.local_reply
    assert (lr.status_code, lr.body, lr.headers, lr.details, lr.grpc_status) == (403, b"denied", [("x-a", "1")], "denied_by_filter", None)
    assert records(s.vm) == [0, 6, 1]  # on_response_headers(eos=0), on_response_body(6, eos=1)
    assert s.downstream_response.headers.items() == [
        (":status", "403"), ("x-a", "1"), ("content-length", "6"), ("content-type", "text/plain"), ("x-seen", "1")
    ]
    assert s.downstream_response.body == b"denied"
    assert s.upstream_request.headers is None
    with pytest.raises(StreamStateError, match="answered locally"):
        s.send_response_headers({":status": "200"})
    assert s.send_request_body(b"late").status == "NotCalled"  # Envoy drops what the client still sends
    assert s.upstream_request.body == b""


@pytest.mark.parametrize(
    "headers, body, expected",
    [  # measured on Envoy 1.40: what the filter's on_response_headers sees
        ([(b"content-type", b"application/json"), (b"x-a", b"1")], "{}", [(":status", "418"), ("content-type", "application/json"), ("x-a", "1"), ("content-length", "2")]),
        ([(b"content-length", b"99"), (b"x-a", b"1")], "abc", [(":status", "418"), ("content-length", "3"), ("x-a", "1"), ("content-type", "text/plain")]),
        ([(b"content-type", b"application/json")], "", [(":status", "418")]),
    ],
)
def test_local_reply_headers_as_envoy_builds_them(headers, body, expected):
    body_arg = "{body}" if body else "(i32.const 0) (i32.const 0)"
    p = _plugin(
        {
            "proxy_on_request_headers": f"(drop (call $proxy_send_local_response (i32.const 418) {{d}} {body_arg} {{h}} (i32.const -1))) (i32.const 0)",
            "proxy_on_response_headers": "(drop (call $proxy_get_header_map_pairs (i32.const 2) (i32.const 0x100) (i32.const 0x104))) (i32.const 0)",
        },
        {"d": "d", "body": body or "-", "h": serialize_pairs(headers)},
    )
    s = p.http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    seen = deserialize_pairs(out_bytes(s.vm)) if s.vm.memory.read_u32(0x104) else []
    assert [(k.decode(), v.decode()) for k, v in seen] == expected
    client = s.downstream_response.headers.items()
    assert client == (expected if body else expected + [("content-length", "0")])


def test_local_reply_during_response_goes_straight_to_client():
    p = _plugin({"proxy_on_response_headers": SEND_403 + " (i32.const 0)"}, {"details": "d", "body": "no", "hdrs": HDRS})
    s = p.http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    r = s.send_response_headers({":status": "200", "x-up": "1"})
    assert r.status == "StopAllIterationAndWatermark"
    assert s.downstream_response.headers[":status"] == "403"
    assert "x-up" not in s.downstream_response.headers
    assert s.downstream_response.body == b"no"
    # the upstream's body is discarded; no body callback runs (measured on Envoy 1.40)
    assert s.send_response_body(b"upstream body", end_of_stream=True).status == "NotCalled"
    assert s.downstream_response.body == b"no"


def test_paused_request_resumed_from_callout_response_delivers_buffered_body():
    host = Host(connection_manager_defaults=False)
    host.add_cluster("auth")
    call = "(call $rec (call $proxy_http_call {cluster} {hdrs} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 500) (i32.const 0x108)))"
    wasm = build(
        {
            "proxy_on_request_headers": call + " (i32.store (i32.const 0x10c) (local.get $ctx)) (i32.const 1)",
            "proxy_on_http_call_response": "(call $rec (local.get $root)) (call $rec (local.get $token)) (call $rec (local.get $nh))"
            " (call $rec (call $proxy_set_effective_context (i32.load (i32.const 0x10c))))"
            " (call $rec (call $proxy_continue_stream (i32.const 0)))",
            "proxy_on_request_body": "(call $rec (i32.const 77)) (call $rec (local.get $size)) (call $rec (local.get $eos)) (i32.const 0)",
        },
        {"cluster": "auth", "hdrs": serialize_pairs([(b":method", b"GET"), (b":authority", b"example"), (b":path", b"/")])},
    )
    s = host.load_plugin(wasm).http_stream()
    assert s.send_request_headers(REQ).status == "StopAllIterationAndWatermark"
    assert s.send_request_body(b"part1-", end_of_stream=False).status == "NotCalled"
    s.send_request_body(b"part2", end_of_stream=True)
    assert s.upstream_request.headers is None
    (pending,) = host.pending_http_calls
    assert (pending.token, pending.cluster, pending.headers[":path"]) == (4, "auth", "/")
    pending.respond(200, {"x-r": "1"}, b"ok")
    # response on root context 1 with token 4 and 3 headers (x-envoy-upstream-service-time added); continue delivers the buffered body
    assert records(s.vm) == [0, 1, 4, 3, 0, 0, 77, 11, 1]
    assert s.upstream_request.body == b"part1-part2" and s.upstream_request.complete


def test_close_stream_resets_both_directions():
    p = _plugin({"proxy_on_request_headers": "(call $rec (call $proxy_close_stream (i32.const 0))) (call $rec (call $proxy_close_stream (i32.const 9))) (i32.const 0)"})
    s = p.http_stream()
    s.send_request_headers(REQ)
    assert records(s.vm) == [0, 2]
    assert s.reset_details == "wasm_close_stream" and s.upstream_request.reset


def test_continue_stream_upstream_is_unimplemented():
    p = _plugin({"proxy_on_request_headers": "(call $rec (call $proxy_continue_stream (i32.const 3))) (call $rec (call $proxy_continue_stream (i32.const 7))) (i32.const 0)"})
    s = p.http_stream()
    s.send_request_headers(REQ)
    assert records(s.vm) == [12, 2]


def test_response_body_pause_and_trailers():
    p = _plugin(
        {
            "proxy_on_response_body": "(call $rec (local.get $size)) (i32.const 1)",
            "proxy_on_response_trailers": "(call $rec (local.get $n)) (i32.const 0)",
        }
    )
    s = p.http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    s.send_response_headers({":status": "200"})
    s.send_response_body(b"12", end_of_stream=False)
    s.send_response_body(b"345", end_of_stream=False)
    assert s.downstream_response.body == b""
    s.send_response_trailers({"grpc-status": "0"})
    assert records(s.vm) == [2, 5, 1]
    assert s.downstream_response.body == b"12345"
    assert s.downstream_response.trailers["grpc-status"] == "0" and s.downstream_response.complete


def test_abi_0_1_continue_request():
    p = Host(connection_manager_defaults=False).load_plugin(
        build({"proxy_on_request_headers": "(call $rec (call $proxy_continue_request)) (i32.const 1)"}, abi="0_1_0")
    )
    s = p.http_stream()
    assert s.send_request_headers(REQ, end_of_stream=True).status == "StopAllIterationAndWatermark"
    assert records(s.vm) == [0]


@pytest.mark.parametrize("returns, status, forwarded", [
    ("(i32.const 0)", "Continue", True), ("(i32.const 1)", "StopIteration", False),
    ("(i32.const 7)", "StopIteration", False), (None, "NotCalled", True)])
def test_trailers_phase_results(returns, status, forwarded):
    """What send_request_trailers reports (callback, the guest's raw return, Envoy's status) and
    whether the trailers went on: Continue forwards them and ends the request; any other return is
    StopIteration (cpp-host's conversion); a filter without the callback lets them through."""
    wasm = build({"proxy_on_request_trailers": returns} if returns else {})
    s = Host().load_plugin(wasm).http_stream()
    s.send_request_headers({":method": "POST", ":path": "/", ":authority": "a"})
    s.send_request_body(b"x", end_of_stream=False)
    r = s.send_request_trailers({"x-t": "1"})
    raw = int(returns.split()[1].rstrip(")")) if returns else None
    assert (r.callback, r.action, r.status, r.stopped) == ("proxy_on_request_trailers", raw, status, not forwarded)
    up = s.upstream_request
    assert (up.trailers is not None, up.complete) == (forwarded, forwarded)
    assert s.request.iteration == ("continue" if forwarded else "stop_trailers")
    assert s.request.end_seen


def test_trailers_after_a_local_reply_are_dropped():
    cb = "(drop (call $proxy_send_local_response (i32.const 403) {d} {b} (i32.const 0) (i32.const 0) (i32.const -1))) (i32.const 1)"
    s = Host().load_plugin(build({"proxy_on_request_body": cb, "proxy_on_request_trailers": "(i32.const 0)"},
                                 {"d": "no", "b": "denied"})).http_stream()
    s.send_request_headers({":method": "POST", ":path": "/", ":authority": "a"})
    s.send_request_body(b"x", end_of_stream=False)
    r = s.send_request_trailers({"x-t": "1"})
    assert (r.callback, r.action, r.status) == ("proxy_on_request_trailers", None, "NotCalled")
    assert s.upstream_request.trailers is None and s.downstream_response.headers[":status"] == "403"
