"""The host's limit on one log line (LINE_LIMIT bytes, the rest cut with a note; Envoy has none),
for proxy_log and fd_write alike, and that a long line is still checked against linear memory
in full as Envoy checks it (InvalidMemoryAccess / EFAULT for a byte past its end, measured with
short lines in tests/test_wasi_answers.py and tests/test_foreign_function_answers.py)."""
from __future__ import annotations

from proxywasm_host import Host
from proxywasm_host.logs import LINE_LIMIT
from watgen import build, records

PAGES = 4 + 40  # watgen's 4 pages, grown by 40
END = PAGES << 16
FD_WRITE = {"wasi_snapshot_preview1.fd_write": "(param i32 i32 i32 i32) (result i32)"}
REQUEST = [(":method", "GET"), (":path", "/"), (":authority", "example.com")]
NOTE = " more bytes cut by proxywasm-host]"


def _run(calls: list[str]) -> tuple[list[int], list[str]]:
    """Grows memory to END, fills it with "x" from 0x10000, makes each call and records its answer."""
    code = ("(drop (memory.grow (i32.const 40))) (memory.fill (i32.const 0x10000) (i32.const 120)"
            f" (i32.const {END - 0x10000})) " + " ".join(f"(call $rec {c})" for c in calls) + " (i32.const 0)")
    plugin = Host().load_plugin(build({"proxy_on_request_headers": code}, imports=FD_WRITE))
    plugin.http_stream().send_request_headers(REQUEST, end_of_stream=True)
    return records(plugin.workers[0].vm), [r.message for r in plugin.logs]


def _log(ptr: int, size: int) -> str:
    return f"(call $proxy_log (i32.const 2) (i32.const {ptr}) (i32.const {size}))"


def _write(*vectors: tuple[int, int]) -> str:
    """fd_write(1, …) of these (pointer, size) buffers; the iovec array is at 0x200."""
    stores = "".join(f"(i32.store (i32.const {0x200 + 8 * i}) (i32.const {p})) (i32.store (i32.const {0x204 + 8 * i})"
                     f" (i32.const {s})) " for i, (p, s) in enumerate(vectors))
    return f"(block (result i32) {stores}(call $wasi_snapshot_preview1.fd_write (i32.const 1) (i32.const 0x200)" \
           f" (i32.const {len(vectors)}) (i32.const 0x100)))"


def test_a_line_of_the_limit_is_logged_whole_and_one_byte_more_is_cut() -> None:
    answers, lines = _run([_log(0x10000, LINE_LIMIT), _log(0x10000, LINE_LIMIT + 1),
                           _write((0x10000, LINE_LIMIT - 3), (0x10000, 3)), _write((0x10000, LINE_LIMIT), (0x10000, 1))])
    assert answers == [0, 0, 0, 0]
    whole, cut = "x" * LINE_LIMIT, "x" * LINE_LIMIT + "... [1" + NOTE
    assert lines == [whole, cut, whole, cut]


def test_a_long_line_must_lie_in_memory_to_its_last_byte() -> None:
    size = LINE_LIMIT + 2  # longer than what the host copies
    answers, lines = _run([_log(END - size, size), _log(END - size + 1, size),
                           _write((END - size, size)), _write((END - size + 1, size))])
    assert answers == [0, 6, 0, 21]  # Ok, InvalidMemoryAccess; fd_write: 0, EFAULT
    assert lines == ["x" * LINE_LIMIT + "... [2" + NOTE] * 2
