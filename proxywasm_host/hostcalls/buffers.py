"""Buffers: bodies, configurations, callout responses, foreign-function arguments."""
from __future__ import annotations

from ..abi import ABI_0_1_0, BufferType, WasmResult
from ..context import Buffer
from .registry import hostcall

_MAX_BUFFER_TYPE = max(BufferType)
#: Envoy keeps a slot for these even when the phase has no such buffer: an empty, read-only buffer
#: (status Ok with size 0, bytes Ok, set BadArgument; measured on 1.40). The callout body and the
#: plugin configuration outside their callbacks are NotFound.
_ALWAYS_PRESENT = frozenset({BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY, BufferType.DOWNSTREAM_DATA,
                             BufferType.UPSTREAM_DATA, BufferType.GRPC_RECEIVE_BUFFER, BufferType.CALL_DATA})


def _buffer(vm, buffer_type: int) -> Buffer | None:
    buf = vm.ctx.get_buffer(buffer_type)
    if buf is None and buffer_type in _ALWAYS_PRESENT:
        return Buffer(b"", mutable=False)
    return buf


def get_buffer_bytes(vm, buffer_type: int, start: int, max_size: int, ret_ptr: int, ret_size: int) -> int:
    if buffer_type > _MAX_BUFFER_TYPE:
        return WasmResult.BAD_ARGUMENT
    buf = _buffer(vm, buffer_type)
    if buf is None:
        return WasmResult.NOT_FOUND
    data = bytes(buf.data[start : start + max_size])  # empty from a start past the end
    return WasmResult.OK if vm.memory.copy_out(data, ret_ptr, ret_size) else WasmResult.INVALID_MEMORY_ACCESS


hostcall("proxy_get_buffer_bytes", "uuuuu")(get_buffer_bytes)


def get_buffer_status(vm, buffer_type: int, ret_size: int, ret_flags: int) -> int:
    if buffer_type > _MAX_BUFFER_TYPE:
        return WasmResult.BAD_ARGUMENT
    buf = _buffer(vm, buffer_type)
    if buf is None:
        return WasmResult.NOT_FOUND
    vm.memory.write_u32(ret_size, len(buf.data))
    vm.memory.write_u32(ret_flags, 0)
    return WasmResult.OK


hostcall("proxy_get_buffer_status", "uuu")(get_buffer_status)


def set_buffer_bytes(vm, buffer_type: int, start: int, size: int, data_ptr: int, data_size: int) -> int:
    if buffer_type > _MAX_BUFFER_TYPE:
        return WasmResult.BAD_ARGUMENT
    buf = _buffer(vm, buffer_type)
    if buf is None:
        return WasmResult.NOT_FOUND
    if not buf.mutable:
        return WasmResult.BAD_ARGUMENT
    data = vm.memory.read(data_ptr, data_size)
    if start == 0:
        del buf.data[:size]
        buf.data[0:0] = data
    elif start >= len(buf.data):
        buf.data += data
    else:
        return WasmResult.BAD_ARGUMENT
    return WasmResult.OK


hostcall("proxy_set_buffer_bytes", "uuuuu", note="prepend (0,0), replace prefix (0,n) and append (start>=size) only, as Envoy")(set_buffer_bytes)


def get_configuration(vm, ret_ptr: int, ret_size: int) -> int:
    """ABI 0.1.0: the plugin configuration inside on_configure, else the VM configuration."""
    root = vm.ctx.root
    plugin = vm.ctx.plugin
    data = plugin.configuration if root.configuring else plugin.vm_configuration
    return WasmResult.OK if vm.memory.copy_out(data, ret_ptr, ret_size) else WasmResult.INVALID_MEMORY_ACCESS


hostcall("proxy_get_configuration", "uu", abis=(ABI_0_1_0,))(get_configuration)
