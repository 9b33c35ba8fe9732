"""WAT HTTP filters that return what the ABI leaves open, a value above each callback's range, or
answer locally (or trap) inside a body or trailers callback: the status Envoy 1.40's filter
manager then gets for each callback (its http:trace line "decode <phase> called: ... status=N",
measured by integration/test_envoy_filter_statuses.py) is the status the host reports, pinned in
tests/test_filter_status_conversion.py. Each probe gets the same request: a POST whose body comes
in one chunk, then trailers."""
from __future__ import annotations

from proxywasm_host.abi import FilterStatus
from watgen import build

#: a local 403 without a body, then Continue (the callback's own answer)
REPLY = ("(drop (call $proxy_send_local_response (i32.const 403) {details} (i32.const 0) (i32.const 0)"
         " (i32.const 0) (i32.const 0) (i32.const -1))) (i32.const 0)")
BODY, TRAILERS = b"abcd", {"x-t": "1"}
#: Envoy's Http::FilterHeadersStatus, FilterDataStatus and FilterTrailersStatus values, by phase
ENVOY_STATUSES = {
    "headers": {0: FilterStatus.CONTINUE, 1: FilterStatus.STOP_ITERATION, 3: FilterStatus.STOP_ALL_ITERATION_AND_BUFFER,
                4: FilterStatus.STOP_ALL_ITERATION_AND_WATERMARK},
    "data": {0: FilterStatus.CONTINUE, 1: FilterStatus.STOP_ITERATION_AND_BUFFER,
             2: FilterStatus.STOP_ITERATION_AND_WATERMARK, 3: FilterStatus.STOP_ITERATION_NO_BUFFER},
    "trailers": {0: FilterStatus.CONTINUE, 1: FilterStatus.STOP_ITERATION},
}


def _probe(**answers: str) -> bytes:
    """Every request callback answers Continue unless `answers` (by phase) says otherwise."""
    bodies = {phase: answers.get(phase, "(i32.const 0)") for phase in ("headers", "body", "trailers")}
    return build({f"proxy_on_request_{phase}": body for phase, body in bodies.items()}, {"details": "probe"})


def status_probes() -> dict[str, bytes]:
    """The probe modules by name: the raw answers "5", "4", "2" are the smallest above the headers,
    body and trailers ranges."""
    return {
        "headers_5": _probe(headers="(i32.const 5)"),
        "body_4_trailers_2": _probe(body="(i32.const 4)", trailers="(i32.const 2)"),
        "reply_in_body": _probe(body=REPLY),
        "reply_in_trailers": _probe(trailers=REPLY),
        "trap_in_body": _probe(body="unreachable"),
        "trap_in_trailers": _probe(trailers="unreachable"),
    }
