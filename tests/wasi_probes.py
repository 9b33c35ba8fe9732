"""A WAT filter that asks Envoy's WASI functions (and its other non-proxy imports) one question
each from a stream callback and logs every answer as "<tag> <errno, two digits>:<what it wrote, in
hex>" (each out-area is filled with 0xaa first, so a byte the call left alone reads "aa"). The same
module runs in the host (tests/test_wasi_answers.py) and in Envoy 1.40 through parity
(integration/test_envoy_probe_scenarios.py)."""
from __future__ import annotations

import zlib

from proxywasm_host.parity import Filter, Request, Scenario
from watgen import build

WASI = "wasi_snapshot_preview1"
#: wasm params of each import the probe asks (WASI preview1's types, i64 for offsets and times;
#: path_link and path_symlink as Envoy types them)
SIGNATURES = {
    "fd_write": "iiii", "fd_pwrite": "iiiji", "fd_read": "iiii", "fd_pread": "iiiji", "fd_seek": "ijii",
    "fd_close": "i", "fd_fdstat_get": "ii", "fd_fdstat_set_flags": "ii", "fd_fdstat_set_rights": "ijj",
    "fd_prestat_get": "ii", "fd_prestat_dir_name": "iii", "fd_filestat_get": "ii", "fd_advise": "ijji",
    "fd_allocate": "ijj", "fd_datasync": "i", "fd_sync": "i", "fd_filestat_set_size": "ij",
    "fd_filestat_set_times": "ijji", "fd_tell": "ii", "fd_readdir": "iiiji", "fd_renumber": "ii",
    "path_open": "iiiiijjii", "path_filestat_get": "iiiii", "path_create_directory": "iii",
    "path_remove_directory": "iii", "path_unlink_file": "iii", "path_rename": "iiiiii",
    "path_filestat_set_times": "iiiijji", "path_readlink": "iiiiii", "path_link": "iiiiii", "path_symlink": "iiii", "sock_accept": "iii", "sock_recv": "iiiiii",
    "sock_send": "iiiii", "sock_shutdown": "ii", "environ_sizes_get": "ii", "environ_get": "ii",
    "args_sizes_get": "ii", "args_get": "ii", "clock_time_get": "iji", "clock_res_get": "ii", "random_get": "ii",
    "sched_yield": "", "poll_oneoff": "iiii",
}
ENV_SIGNATURES = {"pthread_equal": "ii", "envoy_resolve_dns": "iii", "proxy_call_foreign_function": "iiiiii",
                  "proxy_log": "iii"}
VOID = {"proc_exit": "i", "emscripten_notify_memory_growth": "i"}  # imports without a result

IOV, OUT, LINE, TEXT = 0x200, 0x300, 0x2000, 0x3000
OUT_SIZE = 64
MEMORY_END = 4 << 16  # watgen's modules have 4 pages
WRITTEN = "fill"  # marker: the probe logs the out-area


def _sig(params: str, result: bool = True) -> str:
    types = " ".join({"i": "i32", "j": "i64"}[c] for c in params)
    return (f"(param {types})" if types else "") + (" (result i32)" if result else "")


def imports() -> dict[str, str]:
    out = {f"{WASI}.{n}": _sig(p) for n, p in SIGNATURES.items()}
    out.update({f"{WASI}.{n}": _sig(p, result=False) for n, p in VOID.items() if n == "proc_exit"})
    out.update({n: _sig(p) for n, p in ENV_SIGNATURES.items() if n != "proxy_log"})
    out["emscripten_notify_memory_growth"] = _sig("i", result=False)
    return out


def _call(name: str, *args: int | str) -> str:
    """A call of import `name`; an int argument is an i32 (i64 where the signature says so), a str is WAT."""
    params = {**SIGNATURES, **ENV_SIGNATURES, **VOID}[name]
    module = f"{WASI}." if name in SIGNATURES or name == "proc_exit" else ""
    rendered = [a if isinstance(a, str) else f"({'i64' if p == 'j' else 'i32'}.const {a})" for p, a in zip(params, args, strict=True)]
    return f"(call ${module}{name} {' '.join(rendered)})"


def _iovecs(*pieces: tuple[int, int]) -> str:
    return " ".join(f"(i32.store (i32.const {IOV + 8 * i}) (i32.const {ptr})) (i32.store (i32.const {IOV + 8 * i + 4})"
                    f" (i32.const {size}))" for i, (ptr, size) in enumerate(pieces))


#: TEXT holds "hello world\n"; the last 4 bytes of memory hold "tail"
HELLO = (TEXT, 6)
WORLD = (TEXT + 6, 6)

#: (tag, WAT that sets up the call, the call, how many bytes of OUT to log)
QUESTIONS: list[tuple[str, str, str, int]] = [
    ("write_stdout", _iovecs(HELLO, WORLD), _call("fd_write", 1, IOV, 2, OUT), 4),
    ("write_stderr", _iovecs(WORLD), _call("fd_write", 2, IOV, 1, OUT), 4),
    ("write_fd3", _iovecs(WORLD), _call("fd_write", 3, IOV, 1, OUT), 4),
    ("write_to_memory_end", _iovecs((MEMORY_END - 4, 4)), _call("fd_write", 1, IOV, 1, OUT), 4),
    ("write_past_memory_end", _iovecs((MEMORY_END - 3, 4)), _call("fd_write", 1, IOV, 1, OUT), 4),
    ("write_2GiB_size", _iovecs((TEXT, 0x80000000)), _call("fd_write", 1, IOV, 1, OUT), 4),
    ("write_empty", _iovecs((TEXT, 0)), _call("fd_write", 1, IOV, 1, OUT), 4),
    ("write_newline", _iovecs((TEXT + 11, 1)), _call("fd_write", 1, IOV, 1, OUT), 4),
    ("write_none", "", _call("fd_write", 2, IOV, 0, OUT), 4),
    ("pwrite_stdout", _iovecs(WORLD), _call("fd_pwrite", 1, IOV, 1, 7, OUT), 4),
    ("pwrite_stderr", _iovecs(WORLD), _call("fd_pwrite", 2, IOV, 1, 0, OUT), 4),
    ("pwrite_fd5", _iovecs(WORLD), _call("fd_pwrite", 5, IOV, 1, 0, OUT), 4),
    ("read", "", _call("fd_read", 0, IOV, 0, OUT), 4),
    ("pread", "", _call("fd_pread", 0, IOV, 0, 0, OUT), 4),
    ("seek", "", _call("fd_seek", 1, 0, 0, OUT), 12),
    ("close", "", _call("fd_close", 1), 0),
    ("fdstat_1", "", _call("fd_fdstat_get", 1, OUT), 24),
    ("fdstat_2", "", _call("fd_fdstat_get", 2, OUT), 24),
    ("fdstat_3", "", _call("fd_fdstat_get", 3, OUT), 24),
    ("set_flags", "", _call("fd_fdstat_set_flags", 1, 0), 0),
    *[(f"set_rights_{fd}", "", _call("fd_fdstat_set_rights", fd, 0, 0), 0) for fd in (1, 2, 3, 0)],
    ("prestat", "", _call("fd_prestat_get", 3, OUT), 8),
    ("prestat_dir_name", "", _call("fd_prestat_dir_name", 3, OUT, 8), 8),
    ("filestat", "", _call("fd_filestat_get", 1, OUT), 64),
    *[(f"advise_{fd}", "", _call("fd_advise", fd, 0, 0, 0), 0) for fd in (1, 9)],
    *[(f"allocate_{fd}", "", _call("fd_allocate", fd, 0, 0), 0) for fd in (1, 2, 9)],
    *[(f"datasync_{fd}", "", _call("fd_datasync", fd), 0) for fd in (1, 2, 9)],
    *[(f"sync_{fd}", "", _call("fd_sync", fd), 0) for fd in (1, 2, 9)],
    *[(f"set_size_{fd}", "", _call("fd_filestat_set_size", fd, 0), 0) for fd in (1, 2, 9)],
    *[(f"set_times_{fd}", "", _call("fd_filestat_set_times", fd, 0, 0, 0), 0) for fd in (1, 2, 9)],
    *[(f"tell_{fd}", "", _call("fd_tell", fd, OUT), 8) for fd in (1, 2, 9)],
    ("readdir", "", _call("fd_readdir", 3, TEXT, 8, 0, OUT), 8),
    *[(f"renumber_{a}_{b}", "", _call("fd_renumber", a, b), 0) for a, b in ((1, 2), (2, 1), (1, 9), (9, 1), (3, 4))],
    ("path_open", "", _call("path_open", 3, 0, TEXT, 5, 0, 0, 0, 0, OUT), 8),
    ("path_filestat_get", "", _call("path_filestat_get", 3, 0, TEXT, 5, OUT), 4),
    ("path_create_directory", "", _call("path_create_directory", 3, TEXT, 5), 0),
    ("path_remove_directory", "", _call("path_remove_directory", 3, TEXT, 5), 0),
    ("path_unlink_file", "", _call("path_unlink_file", 3, TEXT, 5), 0),
    ("path_rename", "", _call("path_rename", 3, TEXT, 5, 3, TEXT, 5), 0),
    ("path_filestat_set_times", "", _call("path_filestat_set_times", 3, 0, TEXT, 5, 0, 0, 0), 0),
    ("path_readlink", "", _call("path_readlink", 3, TEXT, 5, OUT + 8, 8, OUT), 16),
    ("path_link", "", _call("path_link", 3, 0, TEXT, 5, 3, TEXT), 0),
    ("path_symlink", "", _call("path_symlink", TEXT, 5, 3, TEXT), 0),
    ("sock_accept", "", _call("sock_accept", 3, 0, OUT), 16),
    ("sock_recv", "", _call("sock_recv", 3, IOV, 0, 0, OUT, OUT + 4), 16),
    ("sock_send", "", _call("sock_send", 3, IOV, 0, 0, OUT), 16),
    ("sock_shutdown", "", _call("sock_shutdown", 3, 0), 0),
    ("environ_sizes", "", _call("environ_sizes_get", OUT, OUT + 4), 8),
    ("environ", "", _call("environ_get", OUT, OUT + 16), 48),
    ("args_sizes", "", _call("args_sizes_get", OUT, OUT + 4), 8),
    ("args", "", _call("args_get", OUT, OUT + 8), 8),
    *[(f"clock_time_{c}", "", _call("clock_time_get", c, 1, OUT), 0) for c in (2, 3, 4)],
    *[(f"clock_res_{c}", "", _call("clock_res_get", c, OUT), 8) for c in (0, 1, 2, 3, 4)],
    ("random_64KiB", "", _call("random_get", 0x20000, 65536), 0),
    ("random_64KiB_and_1", "", _call("random_get", 0x20000, 65537), 0),
    ("random_0", "", _call("random_get", OUT, 0), 4),
    ("sched_yield", "", _call("sched_yield"), 0),
    ("poll_oneoff", "", _call("poll_oneoff", TEXT, OUT + 8, 0, OUT), 16),
    ("pthread_equal_1_1", "", _call("pthread_equal", 1, 1), 0),
    ("pthread_equal_1_2", "", _call("pthread_equal", 1, 2), 0),
    ("pthread_equal_0_0", "", _call("pthread_equal", 0, 0), 0),
]


#: names and arguments the foreign-function and log questions pass
STRINGS: dict[str, bytes | str] = {"compress": "compress", "uncompress": "uncompress", "clear": "clear_route_cache",
                                   "unknown": "no_such_function", "bad_name": b"compress\xff", "abc": "abc",
                                   "garbage": "not zlib", "empty_z": zlib.compress(b""), "bad_utf8": b"a\xffb",
                                   "host": "example.com"}


def _args(name: str) -> tuple[str, str]:
    return "{%s_ptr}" % name, "{%s_len}" % name


def _foreign(name: str, argument: str) -> str:
    return _call("proxy_call_foreign_function", *_args(name), *_args(argument), OUT, OUT + 4)


#: foreign functions, DNS and proxy_log: the status (a WasmResult) and, for foreign calls, the
#: (pointer, size) pair the call wrote at OUT
FOREIGN_QUESTIONS: list[tuple[str, str, str, int]] = [
    ("compress", "", _foreign("compress", "abc"), 8),
    ("compress_without_result", "", _call("proxy_call_foreign_function", *_args("compress"), *_args("abc"), 0, OUT + 4), 8),
    ("uncompress_garbage", "", _foreign("uncompress", "garbage"), 8),
    ("uncompress_to_nothing", "", _foreign("uncompress", "empty_z"), 8),
    ("clear_route_cache", "", _foreign("clear", "abc"), 8),
    ("unknown_function", "", _foreign("unknown", "abc"), 8),
    ("name_not_utf8", "", _foreign("bad_name", "abc"), 8),
    ("resolve_dns", "", _call("envoy_resolve_dns", *_args("host"), OUT), 4),
    ("resolve_dns_again", "", _call("envoy_resolve_dns", *_args("host"), OUT), 4),
    *[(f"log_level_{level}", "", _call("proxy_log", level, *_args("abc")), 0) for level in (5, 6, 7)],
    ("log_not_utf8", "", _call("proxy_log", 2, *_args("bad_utf8")), 0),
    ("log_past_memory_end", "", _call("proxy_log", 2, MEMORY_END - 3, 4), 0),
    ("log_to_memory_end", "", _call("proxy_log", 2, MEMORY_END - 4, 4), 0),
]


def _report() -> str:
    """$report(tag ptr, tag len, errno, out len): logs "<tag> <errno, two digits>:<OUT in hex>" at info."""
    return f"""
  (func $nibble (param $v i32) (result i32)
    (i32.add (local.get $v) (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $v) (i32.const 10)))))
  (func $report (param $tag i32) (param $len i32) (param $errno i32) (param $n i32) (local $p i32) (local $i i32)
    (memory.copy (i32.const {LINE}) (local.get $tag) (local.get $len))
    (local.set $p (i32.add (i32.const {LINE}) (local.get $len)))
    (i32.store8 (local.get $p) (i32.const 32))
    (i32.store8 offset=1 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $errno) (i32.const 10)) (i32.const 10))))
    (i32.store8 offset=2 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $errno) (i32.const 10))))
    (i32.store8 offset=3 (local.get $p) (i32.const 58))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (local.get $p) (call $nibble (i32.shr_u (i32.load8_u offset={OUT} (local.get $i)) (i32.const 4))))
      (i32.store8 offset=1 (local.get $p) (call $nibble (i32.and (i32.load8_u offset={OUT} (local.get $i)) (i32.const 15))))
      (local.set $p (i32.add (local.get $p) (i32.const 2)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (drop (call $proxy_log (i32.const 2) (i32.const {LINE}) (i32.sub (local.get $p) (i32.const {LINE})))))
"""


def wasi_probe(questions: list[tuple[str, str, str, int]] = QUESTIONS) -> bytes:
    """Asks `questions` from proxy_on_request_headers, then calls proc_exit and
    emscripten_notify_memory_growth (which answer nothing) and logs "after"."""
    strings = {**STRINGS, **{f"t{i}": tag for i, (tag, *_rest) in enumerate(questions)}}
    strings["after"] = "after"
    code = [f"(memory.copy (i32.const {TEXT}) {{text_ptr}} {{text_len}})",
            f"(i32.store (i32.const {MEMORY_END - 4}) (i32.const 0x6c696174))"]  # "tail"
    for i, (_tag, setup, call, n) in enumerate(questions):
        code.append(f"(memory.fill (i32.const {OUT}) (i32.const 0xaa) (i32.const {OUT_SIZE})) {setup}"
                    f" (call $report {{t{i}}} {call} (i32.const {n}))")
    code += [_call("proc_exit", 3), "(call $emscripten_notify_memory_growth (i32.const 0))",
             "(drop (call $proxy_log (i32.const 2) {after}))", "(i32.const 0)"]
    strings["text"] = "hello world\n"
    return build({"proxy_on_request_headers": " ".join(code)}, strings, imports=imports(), extra=_report())


def _links(link: int, symlink: int) -> bytes:
    """A module that imports path_link and path_symlink with this many i32 parameters."""
    return build({"proxy_on_request_headers": "(i32.const 0)"},
                 imports={f"{WASI}.path_link": _sig("i" * link), f"{WASI}.path_symlink": _sig("i" * symlink)})


def wasi_scenarios() -> dict[str, Scenario]:
    return {"links_with_wasi_types": Scenario([Filter(_links(7, 5), name="w")], [Request("GET", "/")]),
            "links_with_envoys_types": Scenario([Filter(_links(6, 4), name="w")], [Request("GET", "/")]),
            "answers": Scenario([Filter(wasi_probe(), name="w")], [Request("GET", "/")]),
            "foreign": Scenario([Filter(wasi_probe(FOREIGN_QUESTIONS), name="w")], [Request("GET", "/"), Request("GET", "/")])}
