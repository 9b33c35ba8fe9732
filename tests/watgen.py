"""Build small Proxy-Wasm test modules from WAT snippets.

Every module gets: the ABI marker, memory, a bump allocator (named as the test
asks: proxy_on_memory_allocate, malloc, or both), default lifecycle callbacks,
the common `env` imports of its ABI, string constants in a data segment, and
`$rec`, which appends an i32 to a record array the test reads back from guest
memory (so a test sees exactly the status codes the hostcalls returned).
"""
from __future__ import annotations

from typing import Mapping

import wasmtime

RET_PTR = 0x100  # scratch out-pointers for hostcalls
RET_SIZE = 0x104
REC_COUNT = 0x3FC
REC_BASE = 0x400
STRINGS_BASE = 0x1000
HEAP_BASE = 0x8000

IMPORTS_COMMON = {
    "proxy_log": "(param i32 i32 i32) (result i32)",
    "proxy_get_header_map_value": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_get_header_map_pairs": "(param i32 i32 i32) (result i32)",
    "proxy_set_header_map_pairs": "(param i32 i32 i32) (result i32)",
    "proxy_add_header_map_value": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_replace_header_map_value": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_remove_header_map_value": "(param i32 i32 i32) (result i32)",
    "proxy_get_header_map_size": "(param i32 i32) (result i32)",
    "proxy_get_buffer_bytes": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_set_buffer_bytes": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_get_buffer_status": "(param i32 i32 i32) (result i32)",
    "proxy_send_local_response": "(param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
    "proxy_get_property": "(param i32 i32 i32 i32) (result i32)",
    "proxy_set_property": "(param i32 i32 i32 i32) (result i32)",
    "proxy_http_call": "(param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
    "proxy_set_effective_context": "(param i32) (result i32)",
    "proxy_get_shared_data": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_set_shared_data": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_set_tick_period_milliseconds": "(param i32) (result i32)",
    "proxy_get_current_time_nanoseconds": "(param i32) (result i32)",
    "proxy_define_metric": "(param i32 i32 i32 i32) (result i32)",
    "proxy_increment_metric": "(param i32 i64) (result i32)",
    "proxy_record_metric": "(param i32 i64) (result i32)",
    "proxy_get_metric": "(param i32 i32) (result i32)",
    "proxy_get_status": "(param i32 i32 i32) (result i32)",
}
IMPORTS_0_2 = {
    "proxy_continue_stream": "(param i32) (result i32)",
    "proxy_close_stream": "(param i32) (result i32)",
}
IMPORTS_0_2_1 = {"proxy_get_log_level": "(param i32) (result i32)"}
IMPORTS_0_1 = {
    "proxy_continue_request": "(result i32)",
    "proxy_continue_response": "(result i32)",
    "proxy_get_configuration": "(param i32 i32) (result i32)",
}

DEFAULTS = {
    "proxy_on_context_create": ("(param $ctx i32) (param $parent i32)", ""),
    "proxy_on_vm_start": ("(param $root i32) (param $size i32) (result i32)", "i32.const 1"),
    "proxy_on_configure": ("(param $root i32) (param $size i32) (result i32)", "i32.const 1"),
}
SIGNATURES = {
    "proxy_on_request_headers": "(param $ctx i32) (param $n i32) (param $eos i32) (result i32)",
    "proxy_on_response_headers": "(param $ctx i32) (param $n i32) (param $eos i32) (result i32)",
    "proxy_on_request_body": "(param $ctx i32) (param $size i32) (param $eos i32) (result i32)",
    "proxy_on_response_body": "(param $ctx i32) (param $size i32) (param $eos i32) (result i32)",
    "proxy_on_request_trailers": "(param $ctx i32) (param $n i32) (result i32)",
    "proxy_on_response_trailers": "(param $ctx i32) (param $n i32) (result i32)",
    "proxy_on_http_call_response": "(param $root i32) (param $token i32) (param $nh i32) (param $body i32) (param $nt i32)",
    "proxy_on_tick": "(param $root i32)",
    "proxy_on_queue_ready": "(param $root i32) (param $q i32)",
    "proxy_on_log": "(param $ctx i32)",
    "proxy_on_done": "(param $ctx i32) (result i32)",
    "proxy_on_delete": "(param $ctx i32)",
    "proxy_on_foreign_function": "(param $root i32) (param $fid i32) (param $size i32)",
    "proxy_on_new_connection": "(param $ctx i32) (result i32)",
    "proxy_on_downstream_data": "(param $ctx i32) (param $size i32) (param $eos i32) (result i32)",
    "proxy_on_upstream_data": "(param $ctx i32) (param $size i32) (param $eos i32) (result i32)",
    "proxy_on_downstream_connection_close": "(param $ctx i32) (param $peer i32)",
    "proxy_on_upstream_connection_close": "(param $ctx i32) (param $peer i32)",
    "_initialize": "",
    "_start": "",
}
SIGNATURES_0_1 = {
    "proxy_on_request_headers": "(param $ctx i32) (param $n i32) (result i32)",
    "proxy_on_response_headers": "(param $ctx i32) (param $n i32) (result i32)",
}


def _escape(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


class Strings:
    """String constants laid out in the data segment; `s.name` is the offset,
    `s.len_name`… use `ptr_len(name)` in WAT as `(i32.const off) (i32.const len)`."""

    def __init__(self, strings: Mapping[str, bytes | str]):
        self.offsets: dict[str, tuple[int, int]] = {}
        self.blob = bytearray()
        for name, value in strings.items():
            data = value.encode() if isinstance(value, str) else value
            self.offsets[name] = (STRINGS_BASE + len(self.blob), len(data))
            self.blob += data + b"\0"

    def fmt(self) -> dict[str, str]:
        out = {}
        for name, (off, size) in self.offsets.items():
            out[name] = f"(i32.const {off}) (i32.const {size})"
            out[name + "_ptr"] = f"(i32.const {off})"
            out[name + "_len"] = f"(i32.const {size})"
        return out


def module_wat(
    callbacks: Mapping[str, str],
    strings: Mapping[str, bytes | str] | None = None,
    *,
    abi: str = "0_2_1",
    allocator: tuple[str, ...] = ("proxy_on_memory_allocate",),
    extra: str = "",
    imports: Mapping[str, str] | None = None,
) -> str:
    st = Strings(strings or {})
    fmt = st.fmt()
    imps = dict(IMPORTS_COMMON)
    if abi == "0_1_0":
        imps.update(IMPORTS_0_1)
    else:
        imps.update(IMPORTS_0_2)
        if abi == "0_2_1":
            imps.update(IMPORTS_0_2_1)
    imps.update(imports or {})
    lines = ["(module"]
    for name, sig in imps.items():
        module, _, fname = name.rpartition(".")
        lines.append(f'  (import "{module or "env"}" "{fname}" (func ${name} {sig}))')
    lines.append("  (memory (export \"memory\") 4)")
    lines.append(f"  (global $bump (mut i32) (i32.const {HEAP_BASE}))")
    lines.append(f'  (func (export "proxy_abi_version_{abi}"))')
    for name in allocator:
        lines.append(
            f'  (func (export "{name}") (param $n i32) (result i32) (local $p i32)'
            " (local.set $p (global.get $bump)) (global.set $bump (i32.add (global.get $bump) (local.get $n)))"
            " (local.get $p))"
        )
    lines.append(
        f"  (func $rec (param $v i32) (i32.store (i32.add (i32.const {REC_BASE}) (i32.shl (i32.load (i32.const {REC_COUNT})) (i32.const 2))) (local.get $v))"
        f" (i32.store (i32.const {REC_COUNT}) (i32.add (i32.load (i32.const {REC_COUNT})) (i32.const 1))))"
    )
    sigs = dict(SIGNATURES)
    if abi == "0_1_0":
        sigs.update(SIGNATURES_0_1)
    for name, (sig, body) in DEFAULTS.items():
        if name not in callbacks:
            lines.append(f'  (func (export "{name}") {sig} {body})')
    for name, body in callbacks.items():
        sig = sigs.get(name) or DEFAULTS.get(name, ("",))[0]
        lines.append(f'  (func (export "{name}") {sig}\n    {body.format(**fmt)}\n  )')
    lines.append(extra.format(**fmt) if extra else "")
    if st.blob:
        lines.append(f'  (data (i32.const {STRINGS_BASE}) "{_escape(bytes(st.blob))}")')
    lines.append(")")
    return "\n".join(lines)


def build(callbacks: Mapping[str, str], strings: Mapping[str, bytes | str] | None = None, **kw) -> bytes:
    return wasmtime.wat2wasm(module_wat(callbacks, strings, **kw))


def records(vm) -> list[int]:
    """The i32 values the guest passed to $rec, in order (read from guest memory)."""
    n = vm.memory.read_u32(REC_COUNT)
    return [vm.memory.read_u32(REC_BASE + 4 * i) for i in range(n)]


def out_bytes(vm) -> bytes:
    """The bytes a hostcall returned through the scratch (RET_PTR, RET_SIZE) pair."""
    return vm.memory.read(vm.memory.read_u32(RET_PTR), vm.memory.read_u32(RET_SIZE))
