"""Envoy's attributes as proxy_get_property answers them in each phase of one request (POST
/p?q=1 with a 5-byte body, upstream 200 text/plain "ok"). The same request and attributes go
through a real Envoy 1.40 in integration/test_parity_feature.py::test_attributes_in_each_phase,
which found them identical; here they are pinned for the host alone."""
import struct

import pytest

from proxywasm_host import Host
from watgen import build, records

INTS = {"request.size", "request.total_size", "response.code", "response.flags", "response.grpc_status",
        "response.size", "response.total_size", "upstream.request_attempt_count"}
COMMON = {"request.protocol": b"HTTP/1.1", "request.size": 5, "response.flags": 0, "response.trailers": b"\0\0\0\0",
          "destination.address": b"127.0.0.1:10000", "source.address": b"127.0.0.1:54321", "connection.mtls": b"\0",
          "connection.requested_server_name": b"", "connection.tls_version": None, "xds.route_name": b"",
          "xds.cluster_name": b"upstream", "xds.filter_chain_name": b"", "plugin_name": b"attrs", "plugin_root_id": b"",
          "plugin_vm_id": b""}
REQUEST = {"request.path": b"/p?q=1", "request.url_path": b"/p", "request.host": b"example.com",
           "request.scheme": b"http", "request.method": b"POST", "request.referer": b"r", "request.useragent": b"ua",
           "request.query": b"q=1", "request.headers.host": b"example.com"}
UPSTREAM = {"upstream.address": b"127.0.0.1:8080", "upstream.local_address": b"127.0.0.1:49152",
            "upstream.transport_failure_reason": b"", "upstream.request_attempt_count": 1,
            "response.code": 200, "response.code_details": b"via_upstream", "response.grpc_status": 2,
            "response.headers.content-type": b"text/plain"}
EXPECTED = {
    "proxy_on_request_headers": {
        **COMMON, **REQUEST, **dict.fromkeys(UPSTREAM), "upstream.request_attempt_count": 0,
        "response.size": 0, "response.total_size": 0, "request.total_size": 162},
    "proxy_on_response_headers": {
        **COMMON, **dict.fromkeys(REQUEST), **UPSTREAM, "request.total_size": 5, "response.size": 0,
        "response.total_size": 77},
    "proxy_on_log": {
        **COMMON, **REQUEST, **UPSTREAM, "request.total_size": 167, "response.size": 2,
        "response.total_size": 123},  # the codec's date and server counted once the response went out
}


def _reads(names: list[str]) -> tuple[str, dict[str, str]]:
    """WAT that reads each property and records its status, pointer and size; its strings."""
    wat = "".join(f"(call $rec (call $proxy_get_property {{p{i}}} (i32.const 0x100) (i32.const 0x104)))"
                  " (call $rec (i32.load (i32.const 0x100))) (call $rec (i32.load (i32.const 0x104)))"
                  for i in range(len(names)))
    return wat, {f"p{i}": n.replace(".", "\0") for i, n in enumerate(names)}


def _values(s, names: list[str]) -> dict[str, bytes | None]:
    rec = records(s.vm)
    return {n: bytes(s.vm.memory.read(p, z)) if st == 0 else None
            for n, st, p, z in zip(names, rec[0::3], rec[1::3], rec[2::3])}


def attributes(callback: str) -> dict[str, object]:
    names = list(EXPECTED[callback])
    reads, strings = _reads(names)
    wasm = build({callback: reads + ("" if callback == "proxy_on_log" else " (i32.const 0)")}, strings)
    s = Host().load_plugin(wasm, name="attrs").http_stream()
    s.send_request_headers({":method": "POST", ":path": "/p?q=1", ":authority": "example.com", "x-a": "1",
                            "referer": "r", "user-agent": "ua", "content-length": "5"})
    s.send_request_body(b"hello", end_of_stream=False)
    s.send_request_body(b"", end_of_stream=True)
    s.send_response_headers({":status": "200", "content-type": "text/plain", "content-length": "2"})
    s.send_response_body(b"ok", end_of_stream=False)
    s.send_response_body(b"", end_of_stream=True)
    s.complete()
    return {n: struct.unpack("<q", raw)[0] if raw is not None and n in INTS else raw
            for n, raw in _values(s, names).items()}


@pytest.mark.parametrize("callback", list(EXPECTED))
def test_attributes_in_each_phase(callback: str) -> None:
    assert attributes(callback) == EXPECTED[callback]


def test_request_time_id_and_scheme_trailers_and_grpc_status_in_on_log():
    names = ["request.time", "request.id", "request.scheme", "response.trailers.x-t", "response.grpc_status",
             "response.code_details"]
    reads, strings = _reads(names)
    s = Host().load_plugin(build({"proxy_on_log": reads}, strings)).http_stream()
    s.send_request_headers({":method": "GET", ":path": "/g", ":authority": "a", "x-request-id": "rid-1"})
    s.send_response_headers({":status": "200", "content-type": "application/grpc"})
    s.send_response_trailers({"grpc-status": "7", "x-t": "1"})
    s.complete()
    seen = _values(s, names)
    assert struct.unpack("<q", seen["request.time"])[0] == s.start_time_ns
    assert (seen["request.id"], seen["request.scheme"], seen["response.trailers.x-t"]) == (b"rid-1", b"http", b"1")
    assert struct.unpack("<q", seen["response.grpc_status"])[0] == 7 and seen["response.code_details"] == b"via_upstream"


def test_a_local_replys_details_and_an_empty_path():
    cb = "(drop (call $proxy_send_local_response (i32.const 403) {d} {b} (i32.const 0) (i32.const 0) (i32.const -1)))"
    names = ["request.path", "response.code", "response.code_details"]
    reads, strings = _reads(names)
    wasm = build({"proxy_on_request_headers": cb + " (i32.const 1)", "proxy_on_log": reads},
                 {"d": "denied_here", "b": "no", **strings})
    # Envoy's codec refuses an empty request target: only without the connection manager can a filter see one
    s = Host(connection_manager_defaults=False).load_plugin(wasm).http_stream()
    s.send_request_headers({":method": "GET", ":path": "", ":authority": "a"})
    s.complete()
    got = _values(s, names)
    assert got["request.path"] == b"" and got["response.code_details"] == b"denied_here"
    assert struct.unpack("<q", got["response.code"])[0] == 403
