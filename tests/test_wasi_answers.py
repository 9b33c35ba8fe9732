"""What Envoy 1.40 answers a guest's WASI calls, and pthread_equal, proc_exit and
emscripten_notify_memory_growth, measured through proxywasm_host.parity.run_parity with the
probe of tests/wasi_probes.py (identical in Envoy and the host, 2026-11-30; compared with Envoy again
by integration/test_envoy_wasi_answers.py). Each answer is a log line "<tag> <errno>:<the bytes
the call wrote, in hex>" ("aa": a byte it left alone); the other lines are what the calls logged."""
from __future__ import annotations

import logging
import struct

import pytest

from proxywasm_host import Host
from proxywasm_host.parity import Side, run_host
from wasi_probes import OUT, _call, wasi_probe, wasi_scenarios

#: Envoy 1.40's log for the "answers" scenario, line by line ("<level>|<message>")
ENVOY_ANSWERS = """\
info|hello world
info|write_stdout 00:0c000000
error|world
info|write_stderr 00:06000000
info|write_fd3 08:aaaaaaaa
info|tail
info|write_to_memory_end 00:04000000
info|write_past_memory_end 21:aaaaaaaa
info|write_2GiB_size 21:aaaaaaaa
info|write_empty 00:00000000
info|
info|write_newline 00:01000000
info|write_none 00:00000000
info|world
info|pwrite_stdout 00:06000000
error|world
info|pwrite_stderr 00:06000000
info|pwrite_fd5 08:aaaaaaaa
info|read 52:aaaaaaaa
info|pread 52:aaaaaaaa
info|seek 00:aaaaaaaaaaaaaaaaaaaaaaaa
info|close 00:
info|fdstat_1 00:000000000000000040000000000000000000000000000000
info|fdstat_2 00:000000000000000040000000000000000000000000000000
info|fdstat_3 08:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
info|set_flags 52:
info|set_rights_1 00:
info|set_rights_2 00:
info|set_rights_3 08:
info|set_rights_0 08:
info|prestat 08:aaaaaaaaaaaaaaaa
info|prestat_dir_name 52:aaaaaaaaaaaaaaaa
info|filestat 08:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
info|advise_1 00:
info|advise_9 00:
info|allocate_1 00:
info|allocate_2 00:
info|allocate_9 08:
info|datasync_1 00:
info|datasync_2 00:
info|datasync_9 08:
info|sync_1 00:
info|sync_2 00:
info|sync_9 08:
info|set_size_1 00:
info|set_size_2 00:
info|set_size_9 08:
info|set_times_1 00:
info|set_times_2 00:
info|set_times_9 08:
info|tell_1 00:0000000000000000
info|tell_2 00:0000000000000000
info|tell_9 08:aaaaaaaaaaaaaaaa
info|readdir 20:00000000aaaaaaaa
info|renumber_1_2 58:
info|renumber_2_1 58:
info|renumber_1_9 08:
info|renumber_9_1 08:
info|renumber_3_4 08:
info|path_open 44:aaaaaaaaaaaaaaaa
info|path_filestat_get 58:aaaaaaaa
info|path_create_directory 58:
info|path_remove_directory 58:
info|path_unlink_file 58:
info|path_rename 58:
info|path_filestat_set_times 58:
info|path_readlink 58:00000000aaaaaaaaaaaaaaaaaaaaaaaa
info|path_link 58:
info|path_symlink 58:
info|sock_accept 58:0000000000000000aaaaaaaaaaaaaaaa
info|sock_recv 58:000000000000aaaaaaaaaaaaaaaaaaaa
info|sock_send 58:00000000aaaaaaaaaaaaaaaaaaaaaaaa
info|sock_shutdown 58:
info|environ_sizes 00:0000000000000000
info|environ 00:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
info|args_sizes 00:0000000000000000
info|args 00:aaaaaaaaaaaaaaaa
info|clock_time_2 58:
info|clock_time_3 58:
info|clock_time_4 58:
info|clock_res_0 00:0100000000000000
info|clock_res_1 00:0100000000000000
info|clock_res_2 58:aaaaaaaaaaaaaaaa
info|clock_res_3 58:aaaaaaaaaaaaaaaa
info|clock_res_4 58:aaaaaaaaaaaaaaaa
info|random_64KiB 00:
info|random_64KiB_and_1 28:
info|random_0 00:aaaaaaaa
info|sched_yield 00:
info|poll_oneoff 00:00000000aaaaaaaaaaaaaaaaaaaaaaaa
info|pthread_equal_1_1 01:
info|pthread_equal_1_2 00:
info|pthread_equal_0_0 01:
info|after
"""

REQUEST = [(":method", "GET"), (":path", "/"), (":authority", "example.com")]


def _lines(side: Side) -> list[str]:
    return [f"{level}|{message}" for level, message in side.logs["'wasm log w:'"]]


def test_each_wasi_function_answers_as_envoy_does() -> None:
    """fd_write/fd_pwrite to stdout/stderr log at info/error (iovecs joined, one trailing newline cut,
    nothing at all for zero bytes), EFAULT for a buffer past memory, EBADF for other fds; the file
    system answers EBADF/ENOSYS/ENOTSUP/ENOENT, writing what Envoy writes; args are empty."""
    assert _lines(run_host(wasi_scenarios()["answers"])) == ENVOY_ANSWERS.splitlines()


def test_path_link_and_path_symlink_have_envoys_types() -> None:
    """Envoy 1.40 exports them one i32 short of WASI's types: it refuses a module that imports
    WASI's 7 and 5 parameters ("import type mismatch") and loads one with its 6 and 4."""
    scenarios = wasi_scenarios()
    assert "path_link" in (run_host(scenarios["links_with_wasi_types"]).refusal or "")
    assert run_host(scenarios["links_with_envoys_types"]).refusal is None


def _environ(environment: dict[str, str]) -> tuple[bytes, bytes]:
    """(what environ_sizes_get wrote, what environ_get wrote: pointers at OUT, strings at OUT + 16)."""
    questions = [("sizes", "", _call("environ_sizes_get", OUT, OUT + 4), 8),
                 ("environ", "", _call("environ_get", OUT, OUT + 16), 48)]
    plugin = Host().load_plugin(wasi_probe(questions), environment=environment, name="w")
    plugin.http_stream().send_request_headers(REQUEST, end_of_stream=True)
    sizes, environ = (bytes.fromhex(r.message.split(":")[1]) for r in plugin.logs[:2])
    return sizes, environ


def test_the_environment_reaches_the_guest_as_envoys_environ_does() -> None:
    """Envoy (vm_config.environment_variables ZZ=9, A=1, MID=x) answered 3 entries of 15 bytes: one
    pointer per entry at the array, each to its "NAME=VALUE\\0", the strings back to back from the
    buffer (in the order of Envoy's map, here ZZ, MID, A: an order nothing promises)."""
    sizes, environ = _environ({"ZZ": "9", "A": "1", "MID": "x"})
    assert struct.unpack("<II", sizes) == (3, 15)
    pointers = struct.unpack("<III", environ[:12])
    strings = environ[16:16 + 15]
    assert environ[12:16] == b"\xaa" * 4 and environ[31:] == b"\xaa" * 17  # nothing written past them
    entries = strings.split(b"\0")[:-1]
    assert sorted(entries) == [b"A=1", b"MID=x", b"ZZ=9"]
    starts = [OUT + 16 + sum(len(e) + 1 for e in entries[:i]) for i in range(3)]
    assert list(pointers) == starts


def test_no_environment_is_an_empty_environ() -> None:
    sizes, environ = _environ({})
    assert sizes == bytes(8) and environ == b"\xaa" * 48


def _random(seed: int) -> bytes:
    question = [("random", "", _call("random_get", OUT, 16), 16)]
    plugin = Host(seed=seed).load_plugin(wasi_probe(question), name="w")
    plugin.http_stream().send_request_headers(REQUEST, end_of_stream=True)
    return bytes.fromhex(plugin.logs[0].message.split(":")[1])


def test_random_get_fills_the_buffer_from_the_hosts_seed() -> None:
    """Envoy's bytes are random; the host's come from Host(seed=...): the same seed, the same bytes."""
    first = _random(7)
    assert first != b"\xaa" * 16 and len(set(first)) > 1
    assert _random(7) == first and _random(8) != first


@pytest.mark.parametrize("call", ["fd_seek", "fd_close", "proc_exit"])
def test_calls_envoy_only_traces_leave_its_trace_line(caplog: pytest.LogCaptureFixture, call: str) -> None:
    """Envoy 1.40 answers fd_seek and fd_close with 0 and returns from proc_exit, logging only
    "wasi_unstable <call>" at trace on its wasm logger (measured with wasm:trace); the host logs the
    same line at debug on proxywasm.host, and none in the filter's log."""
    args = {"fd_seek": (1, 0, 0, OUT), "fd_close": (1,)}
    questions = [("q", "", _call(call, *args[call]), 0)] if call in args else []  # the probe ends with proc_exit
    plugin = Host().load_plugin(wasi_probe(questions), name="w")
    with caplog.at_level(logging.DEBUG, logger="proxywasm.host"):
        plugin.http_stream().send_request_headers(REQUEST, end_of_stream=True)
    assert [r.getMessage() for r in caplog.records if r.name == "proxywasm.host"].count(f"wasi_unstable {call}") == 1
    assert [r.message for r in plugin.logs if "wasi_unstable" in r.message] == []
