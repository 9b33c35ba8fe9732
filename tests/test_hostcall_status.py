"""The status of every map and buffer hostcall in every phase of an HTTP filter, as Envoy 1.40
answers them (abi.md §2.2, §2.4). The probe filter (probe_filters.status_probe) logs one letter
per answer ("a" + WasmResult: a Ok, b NotFound, c BadArgument), a group per map type 0-7 (size,
get, pairs, add, replace, remove, set pairs) and per buffer type 0-8 (status, bytes, set). The
tables are Envoy's log lines, measured with integration/test_envoy_semantics.py, which also
checks the host against Envoy on the same scenarios."""
from __future__ import annotations

import pytest

from probe_filters import parse_probe_line, status_scenarios
from proxywasm_host.parity import run_host

START = [  # root context: on_vm_start and on_configure, for the canary, main-thread and worker VMs
    "vm_start ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac bbb aac",
    "configure ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac aac aac",
] * 3
REQUEST_HEADERS = "request_headers abaaaaa ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac bbb aac"
RESPONSE = [  # response phases (the body as data, then an empty end of stream), on_log, on_done
    "response_headers ccacccc ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac bbb aac",
    "response_body ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aac aaa aac aac bbb aac aac bbb aac",
    # the last chunk: asking for the response trailers adds them; they stay, mutable, through on_done
    "response_body ccacccc ccacccc ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc aac aaa aac aac bbb aac aac bbb aac",
    "log cbacccc cbacccc cbacccc abaaaaa cbacccc cbacccc cbacccc cbacccc aac aac aac aac bbb aac aac bbb aac",
    "done ccacccc ccacccc ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac bbb aac",
]
REQUEST_BODY = "request_body ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aaa aac aac aac bbb aac aac bbb aac"
STREAM_GROUP, ROOT_GROUP = "'wasm log probe:'", "'wasm log:'"
ENVOY = {
    "phases": {
        "'wasm log:'": START,
        "'wasm log probe:'": [
            REQUEST_HEADERS, REQUEST_BODY, REQUEST_BODY,
            "request_trailers ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac bbb aac",
            *RESPONSE,
            REQUEST_HEADERS, REQUEST_BODY, REQUEST_BODY,
            # no trailers from the client: the end of stream adds request trailers, kept to the end
            "request_body ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aaa aac aac aac bbb aac aac bbb aac",
            "response_headers ccacccc abaaaaa abaaaaa ccacccc ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac bbb aac",
            "response_body ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc aac aaa aac aac bbb aac aac bbb aac",
            "response_body ccacccc abaaaaa ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc aac aaa aac aac bbb aac aac bbb aac",
            "log cbacccc abaaaaa cbacccc abaaaaa cbacccc cbacccc cbacccc cbacccc aac aac aac aac bbb aac aac bbb aac",
            "done ccacccc abaaaaa ccacccc abaaaaa ccacccc ccacccc ccacccc ccacccc aac aac aac aac bbb aac aac bbb aac",
            REQUEST_HEADERS, *RESPONSE,
        ],
    },
    "callout": {
        # the callout's answer on the root context: its headers read-only, no trailers, its body read-only
        "'wasm log:'": START + ["http_call_response ccacccc ccacccc ccacccc ccacccc ccacccc ccacccc cbacccc ccacccc"
                                " aac aac aac aac aac aac aac bbb aac"] * 2,
        "'wasm log probe:'": [REQUEST_HEADERS, *RESPONSE] * 2,
    },
}


def probe_differences(expected: list[str], got: list[str]) -> list[str]:
    """Per log line, the map and buffer groups whose answers differ (empty: identical)."""
    out = [f"{len(got)} lines, expected {len(expected)}"] if len(got) != len(expected) else []
    for i, (want, have) in enumerate(zip(expected, got)):
        if want.split(" ")[0] != have.split(" ")[0]:
            out.append(f"line {i}: {have.split(' ')[0]}, expected {want.split(' ')[0]}")
            continue
        a, b = parse_probe_line(want), parse_probe_line(have)
        out += [f"line {i} {want.split(' ')[0]} {name}: {''.join(b[name])}, Envoy {''.join(a[name])}"
                for name in a if a[name] != b[name]]
    return out


@pytest.mark.parametrize("name", ["phases", "callout"])
def test_every_map_and_buffer_hostcall_answers_as_envoy_in_every_phase(name: str) -> None:
    side = run_host(status_scenarios()[name])
    stream = [message for _, message in side.logs.pop(STREAM_GROUP)]
    # root contexts: the VMs' lines, whichever thread's group they are in, in a stable order
    root = sorted(message for lines in side.logs.values() for _, message in lines)
    assert probe_differences(ENVOY[name][STREAM_GROUP], stream) == []
    assert probe_differences(sorted(ENVOY[name][ROOT_GROUP]), root) == []


def test_an_absent_body_reads_as_empty() -> None:
    """The response body during the request headers: Ok, size 0 and flags 0 (logged as "a" + value)."""
    assert run_host(status_scenarios()["absent_body_size"]).logs == {"'wasm log size:'": [("info", "aa")]}


def test_set_buffer_bytes_at_the_end_appends() -> None:
    """start == the buffer's size appends, as a start past the end does."""
    (exchange,) = run_host(status_scenarios()["append_at_the_end"]).exchanges
    assert exchange.upstream[1] == b"ab>>cd>>"


def test_abi_0_1_0_configuration_and_missing_values() -> None:
    """proxy_get_configuration: the VM configuration in on_vm_start, the plugin's in on_configure;
    in on_log a value of an absent map is Ok and empty (0.1.0 has no NotFound there)."""
    logs = run_host(status_scenarios()["legacy_reads"]).logs
    assert logs.pop("'wasm log legacy:'") == [("info", "aa")]
    assert sorted(m for lines in logs.values() for _, m in lines) == ["plugin-conf"] * 3 + ["vm-conf"] * 3
