"""The parity feature itself (proxywasm_host.parity, `proxywasm parity`, the proxywasm_parity
fixture): identical where the host and Envoy agree, and a named difference where they do not."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import (KEPT_OPEN, Connection, Filter, Flow, GrpcReply, Request, Response, Scenario, Side,
                                   compare, run_parity)

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples" / "go"), str(ROOT / "examples" / "rust"), str(ROOT / "tests")]
import build_go  # noqa: E402
import build_rust  # noqa: E402
from watgen import build  # noqa: E402

GO_CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'


@pytest.fixture(scope="module")
def go_http() -> str:
    return build_go.module_for_tests("http_filter")


def go_scenario(wasm: str) -> Scenario:
    return Scenario(
        [Filter(wasm, configuration=GO_CONFIG, vm_configuration="region=eu-1", name="go_http")],
        [Request(headers={"x-go-replace": "old", "x-go-remove": "bye"}), Request(path="/admin/users"),
         Request("POST", "/upload", {"x-go-body": "buffer"}, body="hello world"),
         Request("POST", "/upload", {"x-go-body": "stream"}, body=["small ", "chunks"]),
         Request("POST", "/t", {"x-go-trailers": "1"}, body=["x"], trailers={"x-client-trailer": "1"})],
        upstream=Response(200, {"content-type": "text/plain"}, "from upstream"),
    )


def test_go_sdk_filter_is_identical(go_http: str, proxywasm_parity) -> None:
    report = proxywasm_parity(go_scenario(go_http))
    assert [x.status for x in report.envoy.exchanges] == [200, 403, 200, 200, 200]
    assert report.envoy.exchanges[2].upstream[1] == b"<<HELLO WORLD>>"  # the comparison saw real work
    assert sum(map(len, report.envoy.logs.values())) >= 10 and report.envoy.metrics["go_http.requests_total"] == 5


def test_a_wrong_host_setting_is_reported_by_observation(go_http: str) -> None:
    """Without the connection manager's defaults the host differs from Envoy exactly where they act:
    the upstream misses x-forwarded-proto/x-request-id, and the filter counts fewer headers."""
    report = run_parity(go_scenario(go_http), connection_manager_defaults=False)
    names = [d.observation for d in report.differences]
    assert "request 0: upstream" in names
    envoy_up, host_up = next(d for d in report.differences if d.observation == "request 0: upstream").envoy, \
        next(d for d in report.differences if d.observation == "request 0: upstream").host
    assert ("x-forwarded-proto", "http") in envoy_up[0] and ("x-forwarded-proto", "http") not in host_up[0]
    assert all(not n.startswith("filters loaded") for n in names)


def test_a_refused_module_is_a_refusal_on_both_sides() -> None:
    wasm = build({}, imports={"proxy_nope": "(param i32) (result i32)"})
    report = run_parity(Scenario([Filter(wasm)]))
    assert report.identical
    assert "missing import: env.proxy_nope" in report.envoy.refusal and "env.proxy_nope" in report.host.refusal


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxywasm_host.cli", "parity", *args], capture_output=True, text=True, timeout=120)


def test_cli_on_the_rust_sdk_filter() -> None:
    wasm = build_rust.module_for_tests()
    args = [wasm, "--config", "tag=green;block_prefix=/admin;auth_cluster=authz", "--callout", "authz=200:ok",
            "-H", "x-edge-remove: bye", "--requests", "3"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("identical (Envoy 1.40 vs host)\ncompared: 3 request(s) (Envoy's statuses: 200 200 200), ")
    doc = json.loads(_cli(*args, "--json").stdout)
    assert doc["identical"] is True and doc["differences"] == [] and len(doc["masked"]) >= 5


def test_cli_exits_1_and_prints_both_values_on_a_difference(tmp_path: Path) -> None:
    """A difference the README lists: Envoy's router adds x-envoy-expected-rq-timeout-ms to the
    request headers after the filters ran, so on_log sees it in Envoy only."""
    strings = {"k": "x-envoy-expected-rq-timeout-ms"}
    on_log = ("(if (i32.eqz (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104)))"
              " (then (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))))")
    path = tmp_path / "timeout_logger.wasm"
    path.write_bytes(build({"proxy_on_log": on_log}, strings))
    proc = _cli(str(path), "--requests", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("3 difference(s) (Envoy 1.40 vs host)")  # one cause, three observations:
    assert "log lines 'wasm log filter0:' from line 0:\n    envoy: [('info', '15000')]\n    host:  []" in proc.stdout
    assert "host:  ['env.proxy_get_header_map_value return: 1']" in proc.stdout  # NotFound in the host only


# --- network (TCP) filters ----------------------------------------------------------------------

def wat_tcp_filter() -> bytes:
    """A network filter in WAT: counts the client's bytes (counter wat_tcp.bytes) and logs each
    chunk; holds a chunk starting with "h" (StopIteration), closes the connection itself on one
    starting with "q", and prefixes the rest with "<"; prefixes what comes back with ">"."""
    strings = {"metric": "wat_tcp.bytes", "open": "open", "lt": "<", "gt": ">", "quit": "quit: closing",
               "down": "downstream closed", "up": "upstream closed", "done": "done"}
    return build({
        "proxy_on_configure": "(drop (call $proxy_define_metric (i32.const 0) {metric} (i32.const 0x200))) (i32.const 1)",
        "proxy_on_new_connection": "(drop (call $proxy_log (i32.const 2) {open})) (i32.const 0)",
        "proxy_on_downstream_data": """
    (if (i32.eqz (local.get $size)) (then (return (i32.const 0))))
    (drop (call $proxy_increment_metric (i32.load (i32.const 0x200)) (i64.extend_i32_u (local.get $size))))
    (drop (call $proxy_get_buffer_bytes (i32.const 2) (i32.const 0) (local.get $size) (i32.const 0x100) (i32.const 0x104)))
    (if (i32.eq (i32.load8_u (i32.load (i32.const 0x100))) (i32.const 113))
      (then (drop (call $proxy_log (i32.const 2) {quit}))
            (drop (call $proxy_close_stream (i32.const 2)))
            (return (i32.const 1))))
    (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (local.get $size)))
    (if (i32.eq (i32.load8_u (i32.load (i32.const 0x100))) (i32.const 104)) (then (return (i32.const 1))))
    (drop (call $proxy_set_buffer_bytes (i32.const 2) (i32.const 0) (i32.const 0) {lt}))
    (i32.const 0)""",
        "proxy_on_upstream_data": """
    (if (local.get $size) (then (drop (call $proxy_set_buffer_bytes (i32.const 3) (i32.const 0) (i32.const 0) {gt}))))
    (i32.const 0)""",
        "proxy_on_downstream_connection_close": "(drop (call $proxy_log (i32.const 2) {down}))",
        "proxy_on_upstream_connection_close": "(drop (call $proxy_log (i32.const 2) {up}))",
        "proxy_on_done": "(drop (call $proxy_log (i32.const 2) {done})) (i32.const 1)",
    }, strings)


def test_a_wat_network_filter_is_identical(proxywasm_parity) -> None:
    """Forwarded and echoed, closed by the filter, held: the flows, logs, counter and the close
    callbacks (upstream Unknown then downstream Local when the client ends; downstream Local only
    when the filter closes; none while it holds the client's end of stream) match Envoy's."""
    report = proxywasm_parity(Scenario([Filter(wat_tcp_filter(), name="wat_tcp")], connections=[
        Connection(["one\n", "two\n"]), Connection(["x", "quit\n", "never sent"]), Connection(["hold", "on"])]))
    assert report.envoy.flows == [Flow(b"<one\n<two\n", b"><one\n><two\n", "client"),
                                  Flow(b"<x", b"><x", "proxy after chunk 2"), Flow(b"", b"", KEPT_OPEN)]
    assert report.envoy.metrics == {"wat_tcp.bytes": 4 + 4 + 1 + 5 + 4 + 6 + 6}  # a held chunk is seen again
    assert [m for _, m in report.envoy.logs["'wasm log wat_tcp:'"]].count("downstream closed") == 2
    assert [c for c in report.envoy.callbacks if "connection_close" in c] == [
        "proxy_on_upstream_connection_close(2, 0)", "proxy_on_downstream_connection_close(2, 1)",
        "proxy_on_downstream_connection_close(3, 1)"]


def test_a_connection_difference_is_named() -> None:
    envoy = Side(flows=[Flow(b"<a", b"><a", "client")])
    host = Side(flows=[Flow(b"<a", b">a", "proxy after chunk 1"), Flow(b"", b"", "client")])
    assert [(d.observation, d.envoy, d.host) for d in compare(envoy, host)] == [
        ("connection 0: client received", b"><a", b">a"), ("connection 0: closed by", "client", "proxy after chunk 1"),
        ("connections", 1, 2)]


def test_cli_runs_a_network_filter(tmp_path: Path) -> None:
    path = tmp_path / "wat_tcp.wasm"
    path.write_bytes(wat_tcp_filter())
    proc = _cli(str(path), "--tcp", "one", "--tcp", "quit", "--tcp", "never sent", "--requests", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("identical (Envoy 1.40 vs host)\ncompared: 1 connection(s) (closed by: proxy after chunk 2), "
                                  "5 log line(s), 1 metric(s)")


def test_a_network_filter_that_traps_under_fail_open(proxywasm_parity) -> None:
    """Envoy closes the connection whose callback trapped even with fail_open; the next connection
    skips the failed filter (tests/test_tcp_failure_policy.py pins the host's side)."""
    wasm = build({"proxy_on_downstream_data": "(if (i32.eq (local.get $size) (i32.const 4)) (then unreachable)) (i32.const 0)"})
    report = proxywasm_parity(Scenario([Filter(wasm, failure_policy="fail_open")],
                                       connections=[Connection(["ab", "trap", "cd"]), Connection(["ef"])]))
    assert report.envoy.flows == [Flow(b"ab", b"ab", "proxy after chunk 2"), Flow(b"ef", b"ef", "client")]
    assert report.envoy.traps == ["proxy_on_downstream_data"]


#: the property paths the probe module reads, one log line each (the value, or "missing")
PROBED = ["xds.node.id", "xds.node.cluster", "xds.node.metadata.team", "xds.node.metadata.nested",
          "xds.node.metadata.num", "xds.node.metadata.flag", "xds.node.metadata.list", "xds.node.metadata.none",
          "xds.listener_direction", "xds.virtual_host_name", "xds.listener_metadata", "xds.cluster_metadata",
          "metadata", "metadata.filter_metadata", "metadata.filter_metadata.probe", "metadata.filter_metadata.probe.key",
          "xds.route_metadata", "xds.route_metadata.filter_metadata.r.k"]


def property_probe(paths: list[str], callback: str = "proxy_on_request_headers") -> bytes:
    """A WAT filter that logs the bytes of each property in `paths` (or "missing") in `callback`."""
    strings, body = {"miss": "missing"}, ""
    for i, path in enumerate(paths):
        strings[f"p{i}"] = path.replace(".", "\0")
        body += (f"(if (i32.eqz (call $proxy_get_property {{p{i}}} (i32.const 0x100) (i32.const 0x104)))"
                 " (then (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))))"
                 " (else (drop (call $proxy_log (i32.const 2) {miss}))))")
    return build({callback: body + ("" if callback == "proxy_on_log" else " (i32.const 0)")}, strings)


@pytest.mark.parametrize("configured", [False, True], ids=["defaults", "configured"])
def test_node_listener_and_metadata_properties(configured: bool, proxywasm_parity) -> None:
    """What an Envoy config can set and a filter read: the node (id, cluster, metadata as a Struct:
    numbers are doubles, a null cannot be read), the listener's direction, dynamic metadata (set by
    Envoy's set_metadata filter; read whole it is the Metadata message's protobuf bytes) and route
    metadata (a protobuf message with every kind of Struct value). One key per map read whole:
    Envoy orders a map's keys at random per process."""
    options = {"node": {"id": "n1", "cluster": "c1", "metadata": {
        "team": "edge", "nested": {"depth": "2"}, "num": 3, "flag": True, "list": ["a", 2], "none": None}},
        "listener_direction": "OUTBOUND", "dynamic_metadata": {"probe": {"key": "v1"}},
        "route_metadata": {"filter_metadata": {"r": {"k": [1.5, None, True, {"a": 2}]}}}} if configured else {}
    report = proxywasm_parity(Scenario([Filter(property_probe(PROBED), name="probe")], [Request()], **options))
    seen = dict(zip(PROBED, (m for _, m in report.envoy.logs["'wasm log probe:'"])))
    if configured:
        assert seen["xds.node.metadata.num"] == "\x00\x00\x00\x00\x00\x00\x08@"  # 3.0
        assert seen["xds.node.metadata.none"] == "missing"  # SerializationFailure
        assert seen["metadata"] == "\n\x16\n\x05probe\x12\r\n\x0b\n\x03key\x12\x04\x1a\x02v1"  # protobuf
        assert seen["xds.listener_direction"] == "\x02" + "\x00" * 7
        assert seen["xds.route_metadata.filter_metadata.r.k"] == "missing"  # a list holding a null
    else:
        assert seen["metadata"] == "" and seen["metadata.filter_metadata"] == "\x00" * 4


def grpc_probe(upstream: bytes | str = "echo_svc") -> bytes:
    """A WAT filter that pauses each request for a unary gRPC call (pkg.Echo/Say on cluster
    echo_svc, with metadata and the request's message), logs what the root context gets back (the
    message, or the status message), then resumes the request from the root context. `upstream` is
    the call's first argument: a cluster name or a serialized GrpcService."""
    from proxywasm_host.memory import serialize_pairs

    imports = {"proxy_grpc_call": "(param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)"}
    resume = "(drop (call $proxy_set_effective_context (i32.load (i32.const 0x310)))) (drop (call $proxy_continue_stream (i32.const 0)))"
    log_out = "(drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"
    callbacks = {
        "proxy_on_grpc_receive": "(drop (call $proxy_get_buffer_bytes (i32.const 5) (i32.const 0) (local.get 2)"
                                 f" (i32.const 0x100) (i32.const 0x104))) {log_out} {resume}",
        "proxy_on_grpc_close": f"(drop (call $proxy_get_status (i32.const 0x120) (i32.const 0x100) (i32.const 0x104))) {log_out} {resume}",
    }
    extra = "".join(f'(func (export "{n}") (param i32 i32 i32) {b})' for n, b in callbacks.items())
    strings = {"cl": upstream, "svc": "pkg.Echo", "m": "Say", "msg": "hello", "md": serialize_pairs([(b"x-meta", b"1")])}
    on_request = ("(i32.store (i32.const 0x310) (local.get $ctx))"
                  " (drop (call $proxy_grpc_call {cl} {svc} {m} {md} {msg} (i32.const 1000) (i32.const 0x300))) (i32.const 1)")
    return build({"proxy_on_request_headers": on_request}, strings, imports=imports, extra=extra)


@pytest.mark.parametrize("reply", [GrpcReply(b"hi back"), GrpcReply(status=7, status_message="not you"),
                                   GrpcReply(status=5)], ids=["ok", "denied", "empty-message"])
def test_a_grpc_callout(reply: GrpcReply, proxywasm_parity) -> None:
    """Envoy's gRPC client calls the service over HTTP/2 with the filter's metadata; the answer goes
    to the root context; a failure's message carries the response code details ("{via_upstream}")."""
    report = proxywasm_parity(Scenario([Filter(grpc_probe(), name="grpc")], [Request(), Request()],
                                       callouts={"echo_svc": reply}))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 200]
    assert e[0].callouts == [("echo_svc", "POST", "/pkg.Echo/Say", [("x-meta", "1")], b"hello")]
    expected = {0: "hi back", 7: "not you{via_upstream}", 5: "via_upstream"}[reply.status]
    assert report.envoy.logs["'wasm log:'"] == [("info", expected)] * 2


def test_what_the_connection_manager_does_to_a_clients_headers(proxywasm_parity) -> None:
    """Before any filter: a repeated header Envoy keeps inline reaches the filters as one value
    joined with "," (others stay separate lines), hop-by-hop headers and Envoy's internal x-envoy-*
    request headers are gone; an upstream's response likewise (its own inline set), with the
    router's x-envoy-upstream-service-time in place of the upstream's, and the remaining hop-by-hop
    headers dropped after the filters. The filter logs the header maps it sees."""
    def log_pairs(map_type: int) -> str:
        return (f"(drop (call $proxy_get_header_map_pairs (i32.const {map_type}) (i32.const 0x100) (i32.const 0x104)))"
                " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"
                " (i32.const 0)")

    repeated = [(n, v) for n in ("authorization", "x-token", "cookie", "accept", "expect", "x-forwarded-for", "te")
                for v in ("a", "b")]
    internal = [("x-envoy-retry-on", "5xx"), ("x-envoy-internal", "true"), ("x-envoy-original-path", "/x"),
                ("keep-alive", "timeout=5"), ("proxy-connection", "keep-alive")]
    answer = [(n, v) for n in ("cache-control", "set-cookie", "server") for v in ("a", "b")] + [
        ("keep-alive", "1"), ("proxy-connection", "x"), ("upgrade", "h2c"), ("x-envoy-upstream-service-time", "77")]
    timing = "(drop (call $proxy_remove_header_map_value (i32.const 2) {took}))"  # Envoy's value is a real duration
    seen = build({"proxy_on_request_headers": log_pairs(0), "proxy_on_response_headers": timing + log_pairs(2)},
                 {"took": "x-envoy-upstream-service-time"})
    report = proxywasm_parity(Scenario([Filter(seen, name="seen")], [Request(headers=repeated + internal)],
                                       upstream=Response(200, answer, "ok")))
    upstream = report.envoy.exchanges[0].upstream[0]
    assert ("authorization", "a,b") in upstream and [v for k, v in upstream if k == "x-token"] == ["a", "b"]
    assert not {"te", "keep-alive", "proxy-connection", "x-envoy-retry-on", "x-envoy-internal"} & {k for k, _ in upstream}
    client = report.envoy.exchanges[0].client_headers
    assert ("cache-control", "a,b") in client and [v for k, v in client if k == "set-cookie"] == ["a", "b"]
    assert not {"keep-alive", "proxy-connection", "upgrade"} & {k for k, _ in client}


def test_adding_to_a_header_envoy_keeps_inline(proxywasm_parity) -> None:
    """proxy_add_header_map_value on an inline header that is there appends to its value with ","
    (request: accept; response: cache-control, and an empty x-request-id just takes the value);
    on any other header it adds a line; replace removes every line and appends one."""
    add = "(drop (call $proxy_add_header_map_value (i32.const {map}) {{{name}}} {{v}}))"
    on_request = "".join(add.format(map=0, name=n) for n in ("acc", "cookie")) + \
        "(drop (call $proxy_replace_header_map_value (i32.const 0) {tok} {v})) (i32.const 0)"
    on_response = "".join(add.format(map=2, name=n) for n in ("cc", "sc", "xr")) + " (i32.const 0)"
    strings = {"acc": "accept", "cookie": "cookie", "tok": "x-token", "cc": "cache-control", "sc": "set-cookie",
               "xr": "x-request-id", "v": "Z"}
    wasm = build({"proxy_on_request_headers": on_request, "proxy_on_response_headers": on_response}, strings)
    report = proxywasm_parity(Scenario(
        [Filter(wasm, name="adds")],
        [Request(headers=[("x-token", "a"), ("accept", "a"), ("x-token", "b"), ("cookie", "c")])],
        upstream=Response(200, [("cache-control", "a"), ("set-cookie", "a"), ("x-request-id", "")], "ok")))
    e = report.envoy.exchanges[0]
    assert ("accept", "a,Z") in e.upstream[0] and e.upstream[0][-1] == ("x-token", "Z")
    assert ("cache-control", "a,Z") in e.client_headers and ("x-request-id", "Z") in e.client_headers
    assert [v for k, v in e.client_headers if k == "set-cookie"] == ["a", "Z"]


@pytest.mark.parametrize("mutation", ["remove", "set_pairs", "empty"])
def test_request_headers_without_x_forwarded_proto_find_no_route(mutation: str, proxywasm_parity) -> None:
    """After a filter changed the request headers Envoy's router matches the route again, and
    without x-forwarded-proto (removed, left out of proxy_set_header_map_pairs, or emptied) none
    matches: a local 404 with no body; the filter's response callback sees it."""
    from proxywasm_host.memory import serialize_pairs

    pairs = serialize_pairs([(b":authority", b"example.com"), (b":path", b"/"), (b":method", b"GET"),
                             (b":scheme", b"http")])
    change = {"remove": "(drop (call $proxy_remove_header_map_value (i32.const 0) {xfp}))",
              "set_pairs": "(drop (call $proxy_set_header_map_pairs (i32.const 0) {pairs}))",
              "empty": "(drop (call $proxy_replace_header_map_value (i32.const 0) {xfp} {empty}))"}[mutation]
    status = ("(drop (call $proxy_get_header_map_value (i32.const 2) {st} (i32.const 0x100) (i32.const 0x104)))"
              " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"
              " (i32.const 0)")
    wasm = build({"proxy_on_request_headers": change + " (i32.const 0)", "proxy_on_response_headers": status},
                 {"xfp": "x-forwarded-proto", "pairs": pairs, "empty": "", "st": ":status"})
    report = proxywasm_parity(Scenario([Filter(wasm, name="routes")], [Request(), Request()]))
    e = report.envoy.exchanges
    assert [(x.status, x.upstream, x.client_body) for x in e] == [(404, None, b"")] * 2
    assert report.envoy.logs["'wasm log routes:'"] == [("info", "404")] * 2


def test_a_local_reply_with_repeated_header_names(proxywasm_parity) -> None:
    """proxy_send_local_response keeps every header line the filter gave (joined for an inline one)."""
    from proxywasm_host.memory import serialize_pairs

    pairs = serialize_pairs([(b"x-t", b"1"), (b"x-t", b"2"), (b"cache-control", b"a"), (b"cache-control", b"b"),
                             (b"set-cookie", b"s1"), (b"set-cookie", b"s2")])
    cb = "(drop (call $proxy_send_local_response (i32.const 403) {d} {b} {h} (i32.const -1))) (i32.const 1)"
    report = proxywasm_parity(Scenario([Filter(build({"proxy_on_request_headers": cb}, {"d": "denied", "b": "no", "h": pairs}))],
                                       [Request()]))
    assert report.envoy.exchanges[0].client_headers[:5] == [
        ("x-t", "1"), ("x-t", "2"), ("cache-control", "a,b"), ("set-cookie", "s1"), ("set-cookie", "s2")]


#: attributes a filter reads in every phase (ports and times left out: they differ run to run)
ATTRIBUTES = """request.path request.url_path request.host request.scheme request.method request.referer request.useragent
request.protocol request.size request.total_size request.query request.headers.host response.code response.code_details
response.flags response.grpc_status response.size response.total_size response.trailers response.headers.content-type
destination.address source.address upstream.address upstream.local_address upstream.transport_failure_reason
upstream.request_attempt_count connection.mtls connection.requested_server_name connection.tls_version
xds.route_name xds.cluster_name xds.filter_chain_name plugin_name plugin_root_id plugin_vm_id""".split()


@pytest.mark.parametrize("callback", ["proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_log"])
def test_attributes_in_each_phase(callback: str, proxywasm_parity) -> None:
    """What proxy_get_property answers for Envoy's attributes in each phase, byte for byte."""
    report = proxywasm_parity(Scenario(
        [Filter(property_probe(ATTRIBUTES, callback), name="attrs")],
        [Request("POST", "/p?q=1", {"x-a": "1", "referer": "r", "user-agent": "ua"}, body="hello")],
        upstream=Response(200, {"content-type": "text/plain"}, "ok")))
    seen = dict(zip(ATTRIBUTES, (m for _, m in report.envoy.logs["'wasm log attrs:'"])))
    assert seen["request.headers.host"] == ("example.com" if callback != "proxy_on_response_headers" else "missing")


def test_trailers_a_filter_adds(proxywasm_parity) -> None:
    """Trailers added from the last body callback: the request's read as an empty map in on_log,
    the response's keep what the filter added."""
    def log(map_type: int) -> str:
        return (f"(drop (call $proxy_get_header_map_pairs (i32.const {map_type}) (i32.const 0x100) (i32.const 0x104)))"
                " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))")

    add = "(if (local.get $eos) (then (drop (call $proxy_add_header_map_value (i32.const {m}) {{k}} {{v}})))) (i32.const 0)"
    wasm = build({"proxy_on_request_body": add.format(m=1), "proxy_on_response_body": add.format(m=3),
                  "proxy_on_log": log(1) + log(3)}, {"k": "x-added", "v": "7"})
    report = proxywasm_parity(Scenario([Filter(wasm, name="trailers")], [
        Request("POST", "/t", body=["a", "b"]), Request("POST", "/t", body=["a"], trailers={"x-client": "1"})]))
    lines = [m for _, m in report.envoy.logs["'wasm log trailers:'"]]
    assert lines[0] == "" and "x-added" in lines[1]
