"""Mutations of Wasm module bytes, driven by a `random.Random` so that (seed, iteration)
reproduces a mutant exactly.

Blind byte edits mostly produce modules that wasmtime refuses to parse, which exercises
only the load path. The section-aware edits keep the module parseable more often, so
that mutants reach instantiation, linking and the guest callbacks: a byte inside a
function body, an `i32.const` immediate (re-encoding the body and section sizes), an
import or export name, the ABI marker, a section's declared size.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

HEADER = 8  # b"\0asm" + version
SEC_IMPORT, SEC_EXPORT, SEC_CODE, SEC_DATA = 2, 7, 10, 11

INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x40, 0x0B, 0x00, 0x10, 0x20, 0x41]
INTERESTING_I32 = [0, 1, -1, 2, 8, 0x7F, 0x80, 0xFFFF, 0x10000, 0x7FFFFFFF, -0x80000000, 0x3FFFFFFF, 1 << 24]
ABI_MARKERS = [b"proxy_abi_version_0_1_0", b"proxy_abi_version_0_2_0", b"proxy_abi_version_0_2_1",
               b"proxy_abi_version_0_3_0", b"proxy_abi_version_9_9_9"]
NAME_RE = re.compile(rb"(?:proxy|fd|env|wasi|_init|_start|malloc|memory|clock|random|environ|args|sched|proc)"
                     rb"[A-Za-z0-9_]*")


# -- LEB128 ------------------------------------------------------------------------------

def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); raises ValueError past the end."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ValueError("bad LEB")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        done = (value == 0 and not b & 0x40) or (value == -1 and b & 0x40)
        out.append(b if done else b | 0x80)
        if done:
            return bytes(out)


# -- sections ----------------------------------------------------------------------------

@dataclass
class Section:
    id: int
    start: int  # offset of the id byte
    payload: int  # offset of the payload
    end: int  # offset after the payload


def sections(wasm: bytes) -> list[Section]:
    """The top-level sections, as far as they parse (a mutant may be cut short)."""
    out, pos = [], HEADER
    while pos < len(wasm):
        try:
            size, payload = read_uleb(wasm, pos + 1)
        except ValueError:
            break
        end = payload + size
        if end > len(wasm):
            break
        out.append(Section(wasm[pos], pos, payload, end))
        pos = end
    return out


def find_section(wasm: bytes, sec_id: int) -> Section | None:
    return next((s for s in sections(wasm) if s.id == sec_id), None)


def function_bodies(wasm: bytes, code: Section) -> list[tuple[int, int]]:
    """(start, end) of each function body (after its size) in the code section."""
    try:
        count, pos = read_uleb(wasm, code.payload)
        out = []
        for _ in range(count):
            size, body = read_uleb(wasm, pos)
            out.append((body, body + size))
            pos = body + size
        return [b for b in out if b[1] <= code.end]
    except ValueError:
        return []


def replace_in_body(wasm: bytes, code: Section, body: tuple[int, int], at: int, old_len: int, new: bytes) -> bytes:
    """Replace wasm[at:at+old_len] inside `body` with `new`, re-encoding the body's and the
    code section's sizes so that the module still frames correctly."""
    start, end = body
    new_body = wasm[start:at] + new + wasm[at + old_len:end]
    size_pos = _size_field_start(wasm, code.payload, start)
    new_code_payload = wasm[code.payload:size_pos] + uleb(len(new_body)) + new_body + wasm[end:code.end]
    return wasm[:code.start] + bytes([code.id]) + uleb(len(new_code_payload)) + new_code_payload + wasm[code.end:]


def _size_field_start(wasm: bytes, search_from: int, body_start: int) -> int:
    """Where the LEB size that precedes `body_start` begins."""
    pos = body_start - 1
    while pos > search_from and wasm[pos - 1] & 0x80:
        pos -= 1
    return pos


# -- mutators: each takes (rng, wasm) and returns new bytes, or None if it does not apply --

def bit_flip(rng: random.Random, wasm: bytes) -> bytes:
    out = bytearray(wasm)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(HEADER, len(out)) if len(out) > HEADER else rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def byte_set(rng: random.Random, wasm: bytes) -> bytes:
    out = bytearray(wasm)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice(INTERESTING_BYTES + [rng.randrange(256)])
    return bytes(out)


def byte_insert(rng: random.Random, wasm: bytes) -> bytes:
    pos = rng.randrange(len(wasm) + 1)
    return wasm[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + wasm[pos:]


def byte_delete(rng: random.Random, wasm: bytes) -> bytes:
    pos = rng.randrange(len(wasm))
    return wasm[:pos] + wasm[pos + rng.randint(1, 16):]


def chunk_duplicate(rng: random.Random, wasm: bytes) -> bytes:
    a = rng.randrange(len(wasm))
    chunk = wasm[a:a + rng.randint(1, 64)]
    pos = rng.randrange(len(wasm) + 1)
    return wasm[:pos] + chunk + wasm[pos:]


def truncate(rng: random.Random, wasm: bytes) -> bytes:
    return wasm[:rng.randrange(len(wasm))]


def code_byte(rng: random.Random, wasm: bytes) -> bytes | None:
    """Change one byte of one function body: a different opcode, local index or immediate."""
    code = find_section(wasm, SEC_CODE)
    bodies = function_bodies(wasm, code) if code else []
    bodies = [b for b in bodies if b[1] > b[0]]
    if not bodies:
        return None
    start, end = rng.choice(bodies)
    out = bytearray(wasm)
    out[rng.randrange(start, end)] = rng.choice(INTERESTING_BYTES + [rng.randrange(256)])
    return bytes(out)


def const_tweak(rng: random.Random, wasm: bytes) -> bytes | None:
    """Replace the immediate of an `i32.const` (0x41) with an extreme value: pointers, sizes
    and counts the guest passes to hostcalls become hostile while the module stays valid."""
    code = find_section(wasm, SEC_CODE)
    bodies = function_bodies(wasm, code) if code else []
    for _ in range(8):
        if not bodies:
            return None
        body = rng.choice(bodies)
        hits = [m.start() for m in re.finditer(rb"\x41", wasm[body[0]:body[1]])]
        if not hits:
            continue
        at = body[0] + rng.choice(hits) + 1
        try:
            _, after = read_uleb(wasm, at)
        except ValueError:
            continue
        new = sleb(rng.choice(INTERESTING_I32 + [rng.randrange(-2**31, 2**31)]))
        return replace_in_body(wasm, code, body, at, after - at, new)
    return None


def _names(wasm: bytes, sec: Section) -> list[re.Match]:
    return [m for m in NAME_RE.finditer(wasm, sec.payload, sec.end) if len(m.group()) >= 3]


def _rename(rng: random.Random, wasm: bytes, sec_id: int, pool: list[bytes]) -> bytes | None:
    """Rename one import/export to another known name of the same length (a different
    hostcall or callback: a signature or ABI mismatch), or corrupt one of its characters."""
    sec = find_section(wasm, sec_id)
    names = _names(wasm, sec) if sec else []
    if not names:
        return None
    m = rng.choice(names)
    old = m.group()
    same_len = [n for n in pool if len(n) == len(old) and n != old]
    if same_len and rng.random() < 0.7:
        new = rng.choice(same_len)
    else:
        chars = bytearray(old)
        chars[rng.randrange(len(chars))] = rng.choice(b"_azAZ09\0\xff.")
        new = bytes(chars)
    return wasm[:m.start()] + new + wasm[m.end():]


def import_name(rng: random.Random, wasm: bytes, pool: list[bytes]) -> bytes | None:
    return _rename(rng, wasm, SEC_IMPORT, pool)


def export_name(rng: random.Random, wasm: bytes, pool: list[bytes]) -> bytes | None:
    return _rename(rng, wasm, SEC_EXPORT, pool)


def abi_marker(rng: random.Random, wasm: bytes) -> bytes | None:
    """Swap the ABI marker export for another version (known or unknown) or break it."""
    sec = find_section(wasm, SEC_EXPORT)
    if not sec:
        return None
    pos = wasm.find(b"proxy_abi_version_", sec.payload, sec.end)
    if pos < 0:
        return None
    new = rng.choice(ABI_MARKERS)
    if rng.random() < 0.2:
        new = new[:-1] + bytes([rng.randrange(256)])
    return wasm[:pos] + new + wasm[pos + len(new):]


def section_size(rng: random.Random, wasm: bytes) -> bytes | None:
    """Lie about one section's size (shorter, longer, or huge)."""
    secs = sections(wasm)
    if not secs:
        return None
    s = rng.choice(secs)
    size = s.end - s.payload
    new = rng.choice([0, max(0, size - 1), size + 1, size + rng.randint(2, 1000), 0xFFFFFFFF, rng.randrange(2**32)])
    return wasm[:s.start + 1] + uleb(new) + wasm[s.payload:]


BLIND = [bit_flip, byte_set, byte_insert, byte_delete, chunk_duplicate, truncate]
AWARE = [code_byte, const_tweak, abi_marker, section_size]
NAMED = [import_name, export_name]
#: const_tweak and export_name keep the module loadable (measured: 100% and 85%; blind edits
#: 0-20%), so they get more turns: most mutants should reach the guest, not just the parser.
WEIGHTS = {const_tweak: 6, export_name: 3, code_byte: 3, abi_marker: 2, bit_flip: 2, import_name: 2}


def mutate(rng: random.Random, wasm: bytes, pool: list[bytes]) -> tuple[bytes, list[str]]:
    """Apply 1-3 mutators; returns the mutant and the mutators' names, in order. Stacked
    mutators after the first are the validity-keeping ones, or the stack would rarely load."""
    mutators = BLIND + AWARE + NAMED
    weights = [WEIGHTS.get(fn, 1) for fn in mutators]
    applied: list[str] = []
    for n in range(rng.choice([1, 1, 1, 2, 3])):
        for _attempt in range(5):
            fn = rng.choices(mutators, weights)[0] if n == 0 else rng.choice([const_tweak, const_tweak, export_name])
            out = fn(rng, wasm, pool) if fn in NAMED else fn(rng, wasm)
            if out:
                wasm = out
                applied.append(fn.__name__)
                break
    return wasm, applied
