"""Guest linear memory: bounds-checked reads and writes, the guest allocator in
Envoy's order, and the byte formats of the ABI (serialized pairs, property paths).

Pointers and sizes arrive from the guest as u32. Anything outside linear memory
raises BadPointer, which the hostcall dispatcher turns into InvalidMemoryAccess
(or EFAULT for WASI) instead of touching Python memory.
"""
from __future__ import annotations

import ctypes
import struct
from itertools import chain
from typing import TYPE_CHECKING, Iterable, Sequence

from .abi import PAIRS_MAX_BYTES, PAIRS_MAX_COUNT

if TYPE_CHECKING:
    from .vm import Vm

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class BadPointer(Exception):
    """A guest pointer/size pair that does not lie inside linear memory."""


class GuestMemory:
    """The exported `memory` of one instance. Its base address never moves
    (the engine is configured with memory_may_move=False); its size may grow. Reads and writes
    go through a memoryview of it, renewed when the guest grows its memory."""

    def __init__(self, vm: "Vm", base: int, size_fn):
        self._vm = vm
        self._base = base
        self._size_fn = size_fn
        self._renew()

    def _renew(self) -> None:
        self.size = self._size_fn()
        array = (ctypes.c_char * self.size).from_address(self._base) if self.size else b""
        self._view = memoryview(array).cast("B")

    def detach(self) -> None:
        """The instance is gone: every access is out of bounds from now on."""
        self._base, self._size_fn = 0, lambda: 0
        self._renew()

    def _check(self, ptr: int, end: int) -> None:
        if end > self.size:
            self._renew()  # the guest may have grown its memory
            if end > self.size:
                raise BadPointer(f"[{ptr:#x}, {end:#x}) is outside linear memory of {self.size} bytes")

    def read(self, ptr: int, n: int) -> bytes:
        if n == 0:
            return b""
        end = ptr + n
        if end > self.size:
            self._check(ptr, end)
        return self._view[ptr:end].tobytes()

    def write(self, ptr: int, data: bytes) -> None:
        if data:
            end = ptr + len(data)
            if end > self.size:
                self._check(ptr, end)
            self._view[ptr:end] = data

    def read_u32(self, ptr: int) -> int:
        self._check(ptr, ptr + 4)
        return _U32.unpack_from(self._view, ptr)[0]

    def write_u32(self, ptr: int, value: int) -> None:
        self._check(ptr, ptr + 4)
        _U32.pack_into(self._view, ptr, value & 0xFFFFFFFF)

    def write_u64(self, ptr: int, value: int) -> None:
        self._check(ptr, ptr + 8)
        _U64.pack_into(self._view, ptr, value & 0xFFFFFFFFFFFFFFFF)

    def copy_out(self, data: bytes, ret_ptr_ptr: int, ret_size_ptr: int) -> bool:
        """Hand `data` to the guest as cpp-host's copyToPointerSize does: empty data is
        (ptr 0, size 0) without calling the allocator; otherwise the guest allocates
        exactly len(data) bytes and owns them. False if the allocator returned 0."""
        n = len(data)
        if n == 0:
            self.write_u32(ret_ptr_ptr, 0)
            self.write_u32(ret_size_ptr, 0)
            return True
        ptr = self._vm.allocate(n)
        if ptr == 0:
            return False
        self.write(ptr, data)
        self.write_u32(ret_ptr_ptr, ptr)
        self.write_u32(ret_size_ptr, n)
        return True


Pairs = Sequence[tuple[bytes, bytes]]


def serialize_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """u32 N, N x (u32 key_len, u32 value_len), then key\\0value\\0 for each pair."""
    strings = list(chain.from_iterable(pairs))  # key, value, key, value, ...
    if not strings:
        return b""
    sizes = struct.pack(f"<{len(strings) + 1}I", len(strings) // 2, *map(len, strings))
    return sizes + b"\0".join(strings) + b"\0"


def deserialize_pairs(buf: bytes) -> list[tuple[bytes, bytes]] | None:
    """Parse serialized pairs as cpp-host's PairsUtil::toPairs does: None for anything
    that is not exactly that shape (missing NULs, trailing bytes, over the limits).
    An empty buffer or a single NUL byte is the empty map."""
    if len(buf) == 0 or buf == b"\0":
        return []
    if len(buf) < 4 or len(buf) > PAIRS_MAX_BYTES:
        return None
    (n,) = _U32.unpack_from(buf, 0)
    if n > PAIRS_MAX_COUNT or 4 + 8 * n > len(buf):
        return None
    sizes = [struct.unpack_from("<II", buf, 4 + 8 * i) for i in range(n)]
    pos = 4 + 8 * n
    out: list[tuple[bytes, bytes]] = []
    for klen, vlen in sizes:
        end = pos + klen + 1 + vlen + 1
        if end > len(buf) or buf[pos + klen] != 0 or buf[end - 1] != 0:
            return None
        out.append((buf[pos : pos + klen], buf[pos + klen + 1 : end - 1]))
        pos = end
    if pos != len(buf):
        return None
    return out


def split_property_path(raw: bytes) -> tuple[str, ...]:
    """Property paths are segments joined by NUL (e.g. b"request\\0path"); a trailing NUL,
    as recent C++ SDK builds send, is ignored as Envoy ignores it."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return tuple(seg.decode("utf-8", "surrogateescape") for seg in raw.split(b"\0"))
