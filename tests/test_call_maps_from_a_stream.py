"""The callout-response maps (6, 7) asked with a stream as the current context, and the trailers a
filter added, as Envoy 1.40 answers them. Each map hostcall's status is a letter ("a" + WasmResult,
in the order of probe_filters.MAP_CALLS). Envoy's letters were measured through
proxywasm_host.parity.run_parity with maps_scenario() (the two phases below were identical in
Envoy and the host, and are since the gRPC metadata maps 4 and 5 are the root context's too);
the added trailers are the ones integration/test_parity_feature.py::test_trailers_a_filter_adds
compares with Envoy."""
from __future__ import annotations

from probe_filters import CALLOUT, CALLOUT_HEADERS, SAVE_CTX, parse_probe_line, probe_line
from proxywasm_host.parity import Filter, Request, Response, Scenario, run_host
from watgen import build

SET_CTX = "(drop (call $proxy_set_effective_context (i32.load (i32.const 0x10c))))"


def maps_probe() -> bytes:
    """Holds the request for a callout; its answer makes the stream current, probes every map and
    resumes the request; the response trailers probe again."""
    strings = {"key": "x-p", "one": "1", "two": "2", "empty": "", "auth": "auth", "callout": CALLOUT_HEADERS}
    return build({
        "proxy_on_request_headers": f"(drop {CALLOUT}) {SAVE_CTX} (i32.const 1)",
        "proxy_on_http_call_response": f"{SET_CTX} {probe_line('call')}"
                                       " (drop (call $proxy_continue_stream (i32.const 0)))",
        "proxy_on_response_trailers": probe_line("response_trailers") + " (i32.const 0)",
    }, strings)


def maps_scenario() -> Scenario:
    return Scenario([Filter(maps_probe(), name="maps")], [Request("GET", "/a")],
                    upstream=Response(200, {"content-type": "text/plain"}, "ok", trailers={"x-t": "1"}),
                    callouts={"auth": Response(200, {"x-c": "1"}, "cb", trailers={"x-ct": "2"})})


def _answers(phase: str) -> tuple[list[str], list[str]]:
    lines = [m for _, m in run_host(maps_scenario()).logs["'wasm log maps:'"]]
    (line,) = [line for line in lines if line.startswith(phase + " ")]
    groups = parse_probe_line(line)
    return groups["map 6"], groups["map 7"]


def test_call_maps_from_the_stream_made_current_in_the_callout_answer() -> None:
    assert _answers("call") == (list("cbacccc"), list("cbacccc"))


def test_call_maps_are_not_the_response_trailers_in_their_phase() -> None:
    assert _answers("response_trailers") == (list("ccacccc"), list("ccacccc"))


def trailers_probe() -> bytes:
    """Adds x-added: 7 as trailers from the last request and response body chunks; on_log logs
    the request trailers, then the response trailers."""
    def log(map_type: int) -> str:
        return (f"(drop (call $proxy_get_header_map_pairs (i32.const {map_type}) (i32.const 0x100) (i32.const 0x104)))"
                " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))")

    add = "(if (local.get $eos) (then (drop (call $proxy_add_header_map_value (i32.const {m}) {{k}} {{v}})))) (i32.const 0)"
    return build({"proxy_on_request_body": add.format(m=1), "proxy_on_response_body": add.format(m=3),
                  "proxy_on_log": log(1) + log(3)}, {"k": "x-added", "v": "7"})


def test_added_request_trailers_read_empty_in_on_log_and_response_ones_kept() -> None:
    side = run_host(Scenario([Filter(trailers_probe(), name="trailers")], [Request("POST", "/t", body=["a", "b"])]))
    request_trailers, response_trailers = [m for _, m in side.logs["'wasm log trailers:'"]]
    assert request_trailers == ""
    assert "x-added" in response_trailers and "7" in response_trailers


def test_grpc_metadata_maps_are_not_the_response_trailers_in_their_phase() -> None:
    """Maps 4 and 5 (a gRPC call's metadata) asked in on_response_trailers: Envoy 1.40 answers as for
    a map that is not there (measured through parity); the host served the response trailers."""
    lines = [m for _, m in run_host(maps_scenario()).logs["'wasm log maps:'"]]
    (line,) = [line for line in lines if line.startswith("response_trailers ")]
    groups = parse_probe_line(line)
    assert (groups["map 4"], groups["map 5"]) == (list("ccacccc"), list("ccacccc"))
