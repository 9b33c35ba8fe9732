"""proxy_get_property / proxy_set_property."""
from __future__ import annotations

from ..abi import WasmResult
from ..memory import split_property_path
from ..properties import SerializationFailure, resolve
from .registry import hostcall


def get_property(vm, path_ptr: int, path_size: int, ret_ptr: int, ret_size: int) -> int:
    path = split_property_path(vm.memory.read(path_ptr, path_size))
    try:
        value = resolve(vm.ctx, path)
    except SerializationFailure:
        return WasmResult.SERIALIZATION_FAILURE
    if value is None:
        return WasmResult.NOT_FOUND
    return WasmResult.OK if vm.memory.copy_out(value, ret_ptr, ret_size) else WasmResult.INVALID_MEMORY_ACCESS


hostcall("proxy_get_property", "uuuu")(get_property)


def set_property(vm, path_ptr: int, path_size: int, value_ptr: int, value_size: int) -> int:
    state = vm.ctx.filter_state
    if state is None:
        return WasmResult.NOT_FOUND
    path = split_property_path(vm.memory.read(path_ptr, path_size))
    state[path] = vm.memory.read(value_ptr, value_size)
    return WasmResult.OK


hostcall("proxy_set_property", "uuuu", note="stored as stream filter state, readable back with proxy_get_property")(set_property)
