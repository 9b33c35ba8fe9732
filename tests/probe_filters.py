"""Small WAT filters that probe one Envoy behaviour each. The same module runs in the host
(tests/) and in Envoy 1.40 through parity (integration/test_envoy_semantics.py), so what the
host tests pin is what Envoy was seen to do."""
from __future__ import annotations

from proxywasm_host.memory import serialize_pairs
from proxywasm_host.parity import Connection, Filter, Request, Response, Scenario
from watgen import build

MAP_TYPES = range(8)  # request/response headers and trailers, gRPC metadata, callout headers/trailers
BUFFER_TYPES = range(9)  # bodies, connection data, callout and gRPC bodies, configurations, call data
#: what each map is asked, in order; a letter per answer ("a" + WasmResult) in the probe's log line
MAP_CALLS = ("size", "get", "pairs", "add", "replace", "remove", "set_pairs")
BUFFER_CALLS = ("status", "bytes", "set")
CALLOUT = "(call $proxy_http_call {auth} {callout} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 0x108))"
CALLOUT_HEADERS = serialize_pairs([(b":method", b"GET"), (b":path", b"/check"), (b":authority", b"auth")])
LINE = 0x2000  # where a probe writes its log line
SAVE_CTX = "(i32.store (i32.const 0x10c) (local.get $ctx))"
RESUME = "(drop (call $proxy_set_effective_context (i32.load (i32.const 0x10c)))) (drop (call $proxy_continue_stream (i32.const 0)))"


def _put(offset: int, value: str) -> str:
    """Store one byte of the log line: a constant, or "a" plus the status the expression returned."""
    return f"(i32.store8 (i32.const {LINE + offset}) {value})"


def _status(offset: int, call: str) -> str:
    return _put(offset, f"(i32.add (i32.const 97) {call})")


def _map_probe(m: int, at: int) -> list[str]:
    key, one, two = "{key}", "{one}", "{two}"
    return [
        _status(at, f"(call $proxy_get_header_map_size (i32.const {m}) (i32.const 0x110))"),
        _status(at + 1, f"(call $proxy_get_header_map_value (i32.const {m}) {key} (i32.const 0x118) (i32.const 0x11c))"),
        "(i32.store (i32.const 0x100) (i32.const 0)) (i32.store (i32.const 0x104) (i32.const 0))",
        _status(at + 2, f"(call $proxy_get_header_map_pairs (i32.const {m}) (i32.const 0x100) (i32.const 0x104))"),
        _status(at + 3, f"(call $proxy_add_header_map_value (i32.const {m}) {key} {one})"),
        _status(at + 4, f"(call $proxy_replace_header_map_value (i32.const {m}) {key} {two})"),
        _status(at + 5, f"(call $proxy_remove_header_map_value (i32.const {m}) {key})"),
        # the pairs read above written back: the map ends as it was
        _status(at + 6, f"(call $proxy_set_header_map_pairs (i32.const {m}) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))"),
    ]


def _buffer_probe(b: int, at: int) -> list[str]:
    return [
        _status(at, f"(call $proxy_get_buffer_status (i32.const {b}) (i32.const 0x110) (i32.const 0x114))"),
        _status(at + 1, f"(call $proxy_get_buffer_bytes (i32.const {b}) (i32.const 0) (i32.const 1) (i32.const 0x118) (i32.const 0x11c))"),
        _status(at + 2, f"(call $proxy_set_buffer_bytes (i32.const {b}) (i32.const 0) (i32.const 0) {{empty}})"),
    ]


def probe_line(tag: str) -> str:
    """WAT that asks every map and buffer hostcall of every type and logs
    "<tag> <map answers, a group per map> <buffer answers, a group per buffer>"."""
    code = [_put(i, f"(i32.const {ord(c)})") for i, c in enumerate(f"{tag} ")]
    at = len(tag) + 1
    for m in MAP_TYPES:
        code += _map_probe(m, at)
        at += len(MAP_CALLS)
        code.append(_put(at, "(i32.const 32)"))
        at += 1
    for b in BUFFER_TYPES:
        code += _buffer_probe(b, at)
        at += len(BUFFER_CALLS)
        code.append(_put(at, "(i32.const 32)"))
        at += 1
    code.append(f"(drop (call $proxy_log (i32.const 2) (i32.const {LINE}) (i32.const {at - 1})))")
    return " ".join(code)


def status_probe(callout: bool = False) -> bytes:
    """Logs the answer of every map and buffer hostcall in every phase an HTTP filter has. With
    `callout`, the request headers stop for a callout whose answer probes on the root context and
    resumes the request (so that no answer races the client's body)."""
    strings = {"key": "x-p", "one": "1", "two": "2", "empty": "", "auth": "auth", "callout": CALLOUT_HEADERS}
    ok = " (i32.const 0)"
    on_headers = probe_line("request_headers") + (f" (drop {CALLOUT}) {SAVE_CTX} (i32.const 1)" if callout else ok)
    return build({
        "proxy_on_vm_start": probe_line("vm_start") + " (i32.const 1)",
        "proxy_on_configure": probe_line("configure") + " (i32.const 1)",
        "proxy_on_request_headers": on_headers,
        "proxy_on_request_body": probe_line("request_body") + ok,
        "proxy_on_request_trailers": probe_line("request_trailers") + ok,
        "proxy_on_response_headers": probe_line("response_headers") + ok,
        "proxy_on_response_body": probe_line("response_body") + ok,
        "proxy_on_http_call_response": probe_line("http_call_response") + " " + RESUME,
        "proxy_on_log": probe_line("log"),
        "proxy_on_done": probe_line("done") + " (i32.const 1)",
    }, strings)


def parse_probe_line(line: str) -> dict[str, list[str]]:
    """A probe line as {"map N" | "buffer N": [status letters in call order]}."""
    _, *groups = line.split(" ")
    names = [f"map {m}" for m in MAP_TYPES] + [f"buffer {b}" for b in BUFFER_TYPES]
    return dict(zip(names, (list(g) for g in groups), strict=True))


def pause_for_callout() -> bytes:
    """Stops the request headers for a callout and resumes the request from its answer; the body
    and trailers callbacks only continue (the trace shows when each ran, with its arguments)."""
    strings = {"auth": "auth", "callout": CALLOUT_HEADERS}
    return build({
        "proxy_on_request_headers": f"(drop {CALLOUT}) {SAVE_CTX} (i32.const 1)",
        "proxy_on_http_call_response": RESUME,
        "proxy_on_request_body": "(i32.const 0)",
        "proxy_on_request_trailers": "(i32.const 0)",
    }, strings)


def local_reply(status: int, headers: list[tuple[bytes, bytes]], body: str = "", grpc_status: int = -1,
                details: bytes = b"probe") -> bytes:
    """Answers every request from its request headers; logs what its own response and body
    callbacks see, so that the phases after a local reply show in the trace and the log."""
    strings = {"details": details, "body": body or "-", "headers": serialize_pairs(headers), "seen": "response body"}
    body_arg = "{body}" if body else "(i32.const 0) (i32.const 0)"
    return build({
        "proxy_on_request_headers": f"(drop (call $proxy_send_local_response (i32.const {status}) {{details}} {body_arg}"
                                    f" {{headers}} (i32.const {grpc_status}))) (i32.const 0)",
        "proxy_on_request_body": "(i32.const 0)",
        "proxy_on_response_body": "(drop (call $proxy_log (i32.const 2) {seen})) (i32.const 0)",
    }, strings)


def trap_on_request_headers() -> bytes:
    return build({"proxy_on_request_headers": "unreachable", "proxy_on_request_body": "(i32.const 0)"})


def callout_with_body(headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """Sends one callout to cluster "auth" from its request headers and holds the request until the
    answer (a callout left behind may be cancelled with its stream in Envoy, before it reaches the
    cluster: a race)."""
    strings = {"auth": "auth", "headers": serialize_pairs(headers), "body": body or b"-"}
    body_arg = "{body}" if body else "(i32.const 0) (i32.const 0)"
    return build({"proxy_on_request_headers": "(i32.store (i32.const 0x110) (local.get $ctx))"
                                              f" (drop (call $proxy_http_call {{auth}} {{headers}} {body_arg}"
                                              " (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 0x108))) (i32.const 1)",
                  # the answer comes to the root context: make the stream current, then resume it
                  "proxy_on_http_call_response": "(drop (call $proxy_set_effective_context (i32.load (i32.const 0x110))))"
                                                 " (drop (call $proxy_continue_stream (i32.const 0)))"},
                 strings)


def status_scenarios() -> dict[str, Scenario]:
    """The requests the status probe sees: chunked bodies with and without trailers (without, the
    filter adds request trailers from the last chunk) and a GET; with a callout, two GETs."""
    return {
        "phases": Scenario([Filter(status_probe(), name="probe")], [
            Request("POST", "/a", body=["ab", "cd"], trailers={"x-t": "1"}), Request("POST", "/b", body=["ab", "cd"]),
            Request("GET", "/c")]),
        "callout": Scenario([Filter(status_probe(callout=True), name="probe")], [Request("GET", "/a"), Request("GET", "/b")],
                            callouts={"auth": Response(200, {"x-c": "1"}, "cb")}),
        "absent_body_size": Scenario([Filter(absent_body_size(), name="size")], [Request("GET", "/a")]),
        # chunked: with a content-length the appended bytes would spill into the next request
        "append_at_the_end": Scenario([Filter(append_at_the_end(), name="append")], [Request("POST", "/b", body=["ab", "cd"])]),
        "legacy_reads": Scenario([Filter(legacy_reads(), name="legacy", configuration="plugin-conf",
                                         vm_configuration="vm-conf")], [Request("GET", "/a")]),
    }


GRPC = {"content-type": "application/grpc", "te": "trailers"}


def answer_scenarios() -> dict[str, Scenario]:
    """Local answers: the fail-closed 503 after a trap (plain and gRPC requests, the trapping one
    and those after it), an empty-body reply whose filter gave a content-length, a reply to a gRPC
    request; and a callout whose filter gave a wrong content-length for its body."""
    callout_headers = [(b":method", b"POST"), (b":path", b"/cb"), (b":authority", b"auth"), (b"content-length", b"99")]
    return {
        "fail_closed": Scenario([Filter(trap_on_request_headers(), name="t")], [
            Request("POST", "/x", body="hello"), Request("POST", "/svc/M", GRPC, body="\0\0\0\0\0"), Request("GET", "/y")]),
        "empty_reply_with_content_length": Scenario(
            [Filter(local_reply(418, [(b"content-length", b"5"), (b"x-a", b"1")]), name="l")],
            [Request("POST", "/x", body=["ab", "cd"]), Request("GET", "/y")]),
        "grpc_reply": Scenario([Filter(local_reply(403, [(b"x-a", b"1")], "denied"), name="l")],
                               [Request("POST", "/svc/M", GRPC, body="\0\0\0\0\0")]),
        "callout_body": Scenario([Filter(callout_with_body(callout_headers, b"hello"), name="c")], [Request("GET", "/y")],
                                 callouts={"auth": Response()}),
        # the filter's gRPC status is used from 0 to 16; past that, the one of its HTTP status
        **{f"grpc_status_{code}": Scenario([Filter(local_reply(403, [], "no", grpc_status=code), name="l")], [
            Request("POST", "/svc/M", GRPC, body="\0\0\0\0\0"), Request("GET", "/")]) for code in (0, 16, 17)},
    }


def absent_body_size() -> bytes:
    """Logs the size and flags Envoy reports for the response body while the request headers run
    (no such body yet), each as "a" + value."""
    return build({"proxy_on_request_headers":
                  "(i32.store (i32.const 0x110) (i32.const 9)) (i32.store (i32.const 0x114) (i32.const 9))"
                  " (drop (call $proxy_get_buffer_status (i32.const 1) (i32.const 0x110) (i32.const 0x114)))"
                  f" {_status(0, '(i32.load (i32.const 0x110))')} {_status(1, '(i32.load (i32.const 0x114))')}"
                  f" (drop (call $proxy_log (i32.const 2) (i32.const {LINE}) (i32.const 2))) (i32.const 0)"})


def append_at_the_end() -> bytes:
    """Appends ">>" to each non-empty request body chunk with start = the chunk's size."""
    return build({"proxy_on_request_body": "(if (local.get $size) (then (drop (call $proxy_set_buffer_bytes (i32.const 0)"
                                           " (local.get $size) (i32.const 0) {tail})))) (i32.const 0)"}, {"tail": ">>"})


def legacy_reads() -> bytes:
    """ABI 0.1.0: logs proxy_get_configuration in on_vm_start and on_configure, and in on_log the
    status of a value read from the response trailers (absent) with the size it returned."""
    log_ret = "(drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"
    conf = f"(drop (call $proxy_get_configuration (i32.const 0x100) (i32.const 0x104))) {log_ret}"
    return build({
        "proxy_on_vm_start": conf + " (i32.const 1)",
        "proxy_on_configure": conf + " (i32.const 1)",
        "proxy_on_log": "(i32.store (i32.const 0x104) (i32.const 9))"
                        f" {_status(0, '(call $proxy_get_header_map_value (i32.const 3) {key} (i32.const 0x100) (i32.const 0x104))')}"
                        f" {_status(1, '(i32.load (i32.const 0x104))')}"
                        f" (drop (call $proxy_log (i32.const 2) (i32.const {LINE}) (i32.const 2)))",
    }, {"key": "x-p"}, abi="0_1_0")


def _letters(calls: list[str]) -> str:
    """WAT that logs the statuses of `calls` as letters ("a" + WasmResult)."""
    stores = " ".join(_status(i, call) for i, call in enumerate(calls))
    return f"{stores} (drop (call $proxy_log (i32.const 2) (i32.const {LINE}) (i32.const {len(calls)})))"


def control_scenarios() -> dict[str, Scenario]:
    """proxy_continue_stream / proxy_close_stream where they do nothing (an HTTP stream's connection
    types, a root context's stream types) and a network filter closing the UPSTREAM side."""
    cont, close = "(call $proxy_continue_stream (i32.const {}))", "(call $proxy_close_stream (i32.const {}))"
    http = build({
        "proxy_on_request_headers": _letters([cont.format(2), cont.format(3)]) + " (i32.const 0)",
        "proxy_on_configure": _letters([cont.format(0), close.format(0), cont.format(2), close.format(2)]) + " (i32.const 1)",
    })
    tcp = build({
        "proxy_on_new_connection": "(i32.const 0)",
        "proxy_on_downstream_data": f"(if (local.get $size) (then {_letters([close.format(3)])})) (i32.const 0)",
        "proxy_on_downstream_connection_close": "(drop (call $proxy_log (i32.const 2) {down}))",
        "proxy_on_upstream_connection_close": "(drop (call $proxy_log (i32.const 2) {up}))",
    }, {"down": "downstream closed", "up": "upstream closed"})
    # continued from inside the headers callback that then stops: Envoy resumes once it returned
    continue_inside = build({"proxy_on_request_headers": f"(drop {cont.format(0)}) (i32.const 1)"})
    return {
        "http": Scenario([Filter(http, name="h")], [Request()]),
        "continue_inside_headers": Scenario([Filter(continue_inside, name="c")], [Request(), Request("GET", "/b")]),
        "tcp_close_upstream": Scenario([Filter(tcp, name="t")], connections=[Connection(["hello", "more"])]),
    }
