"""What Envoy 1.40 answers proxy_call_foreign_function (its built-ins compress, uncompress and
clear_route_cache), envoy_resolve_dns and proxy_log at their edges, measured through
proxywasm_host.parity.run_parity with tests/wasi_probes.py (identical in Envoy and the host,
2026-11-30; compared with Envoy again by integration/test_envoy_wasi_answers.py). Each answer is a
log line "<tag> <WasmResult>:<the (pointer, size) or token the call wrote, in hex>" ("aa": left alone)."""
from __future__ import annotations

import pytest

from proxywasm_host import EnvoyWouldCrash, Host
from proxywasm_host.parity import Filter, Request, Scenario, run_host
from wasi_probes import OUT, STRINGS, _foreign, _report, imports, wasi_scenarios
from watgen import build

#: Envoy 1.40's log for the first request of the "foreign" scenario, line by line ("<level>|<message>"):
#: a result is copied into a buffer the guest allocates, an empty one too (uncompress_to_nothing
#: allocated 0 bytes at 0x800b); a failed call still writes (0, 0); without a result pointer only
#: the size is written; an unknown name (also one that is no UTF-8) is NotFound and writes nothing;
#: DNS tokens count 2, 3, … per VM; proxy_log takes levels 0-5 (6 and 7: BadArgument) and logs
#: bytes that are no UTF-8 (the host shows U+FFFD), InvalidMemoryAccess for a message past memory
ENVOY_ANSWERS = """\
info|compress 00:008000000b000000
info|compress_without_result 00:aaaaaaaa0b000000
info|uncompress_garbage 03:0000000000000000
info|uncompress_to_nothing 00:0b80000000000000
info|clear_route_cache 00:0000000000000000
info|unknown_function 01:aaaaaaaaaaaaaaaa
info|name_not_utf8 01:aaaaaaaaaaaaaaaa
info|resolve_dns 00:02000000
info|resolve_dns_again 00:03000000
critical|abc
info|log_level_5 00:
info|log_level_6 02:
info|log_level_7 02:
info|a�b
info|log_not_utf8 00:
info|log_past_memory_end 06:
info|tail
info|log_to_memory_end 00:
info|after
"""
#: the second request's answers that differ: the guest's allocations go on, and so do the DNS tokens
SECOND_REQUEST = {"info|compress": "info|compress 00:0b8000000b000000",
                  "info|uncompress_to_nothing": "info|uncompress_to_nothing 00:1680000000000000",
                  "info|resolve_dns": "info|resolve_dns 00:04000000",
                  "info|resolve_dns_again": "info|resolve_dns_again 00:05000000"}


def test_foreign_functions_dns_and_log_answer_as_envoy_does() -> None:
    side = run_host(wasi_scenarios()["foreign"])
    first = ENVOY_ANSWERS.splitlines()
    second = [SECOND_REQUEST.get(line.split(" ")[0], line) for line in first]
    assert [f"{level}|{message}" for level, message in side.logs["'wasm log w:'"]] == first + second


def _null_allocator_calls(*calls: tuple[str, str, str]) -> bytes:
    """(tag, function, argument string) each called and reported, with an allocator that answers 0."""
    strings = {**STRINGS, **{f"t{i}": tag for i, (tag, _, _) in enumerate(calls)}}
    fill = f"(memory.fill (i32.const {OUT}) (i32.const 0xaa) (i32.const 64))"
    code = " ".join(f"{fill} (call $report {{t{i}}} {_foreign(fn, arg)} (i32.const 8))"
                    for i, (_, fn, arg) in enumerate(calls)) + " (i32.const 0)"
    null_allocator = '(func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (i32.const 0))'
    return build({"proxy_on_request_headers": code}, strings, imports=imports(), allocator=(),
                 extra=_report() + null_allocator)


def test_a_null_buffer_for_an_empty_result_is_ok() -> None:
    side = run_host(Scenario([Filter(_null_allocator_calls(("to_nothing", "uncompress", "empty_z")), name="w")],
                             [Request("GET", "/")]))
    assert [message for _, message in side.logs["'wasm log w:'"]] == ["to_nothing 00:0000000000000000"]


def test_a_null_buffer_for_a_result_stops_the_test_as_envoy_dies() -> None:
    """Envoy 1.40 copies the result into the null buffer the guest allocator gave and its process
    dies (measured: the client's connection closed without a response)."""
    plugin = Host().load_plugin(_null_allocator_calls(("compress", "compress", "abc")))
    with pytest.raises(EnvoyWouldCrash, match=r"'compress': the guest's allocator returned 0 for the \d+-byte result"):
        plugin.http_stream().send_request_headers({":method": "GET", ":path": "/", ":authority": "a"})
