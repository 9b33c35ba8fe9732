"""Header and trailer maps: get/set pairs, get/add/replace/remove one value, size.

A map that is not available in the current phase answers as Envoy does:
pairs-get is Ok with an empty map, everything else BadArgument (§2.2, §2.4).
"""
from __future__ import annotations

from ..abi import ABI_0_1_0, MapType, WasmResult
from ..headers import INLINE_REQUEST_HEADERS, INLINE_RESPONSE_HEADERS, HeaderMap
from ..memory import deserialize_pairs, serialize_pairs
from .registry import hostcall

_MAX_MAP_TYPE = max(MapType)


def _map(vm, map_type: int, mutable: bool):
    return vm.ctx.get_map(map_type, mutable)


def get_pairs(vm, map_type: int, ret_ptr: int, ret_size: int) -> int:
    if map_type > _MAX_MAP_TYPE:
        return WasmResult.BAD_ARGUMENT
    m = _map(vm, map_type, False)
    data = serialize_pairs(m.pairs) if m is not None else b""
    return WasmResult.OK if vm.memory.copy_out(data, ret_ptr, ret_size) else WasmResult.INVALID_MEMORY_ACCESS


hostcall("proxy_get_header_map_pairs", "uuu")(get_pairs)


def set_pairs(vm, map_type: int, ptr: int, size: int) -> int:
    if map_type > _MAX_MAP_TYPE:
        return WasmResult.BAD_ARGUMENT
    m = _map(vm, map_type, True)
    if m is None:
        return WasmResult.BAD_ARGUMENT
    pairs = deserialize_pairs(vm.memory.read(ptr, size)) or []
    m.pairs = []  # Envoy removes every header, then adds the pairs one by one
    for key, value in pairs:
        _add(m, map_type, _key(map_type, key), value)
    return WasmResult.OK


hostcall("proxy_set_header_map_pairs", "uuu")(set_pairs)


def get_value(vm, map_type: int, key_ptr: int, key_size: int, ret_ptr: int, ret_size: int) -> int:
    if map_type > _MAX_MAP_TYPE:
        return WasmResult.BAD_ARGUMENT
    key = _key(map_type, vm.memory.read(key_ptr, key_size))
    m = _map(vm, map_type, False)
    legacy = vm.abi == ABI_0_1_0
    if m is None:
        stream = vm.ctx.stream
        if stream is not None and stream.in_log:  # access-log phase: absent map reads as missing
            return _missing(vm, legacy, ret_ptr, ret_size)
        return WasmResult.BAD_ARGUMENT
    value = m.get(key)
    if value is None:
        return _missing(vm, legacy, ret_ptr, ret_size)
    return WasmResult.OK if vm.memory.copy_out(value, ret_ptr, ret_size) else WasmResult.INVALID_MEMORY_ACCESS


hostcall("proxy_get_header_map_value", "uuuuu")(get_value)


def _missing(vm, legacy: bool, ret_ptr: int, ret_size: int) -> int:
    if legacy:  # ABI 0.1.0: Ok with an empty value
        vm.memory.copy_out(b"", ret_ptr, ret_size)
        return WasmResult.OK
    return WasmResult.NOT_FOUND


def _mutate(vm, map_type: int, key_ptr: int, key_size: int):
    if map_type > _MAX_MAP_TYPE:
        return None, None
    return _map(vm, map_type, True), _key(map_type, vm.memory.read(key_ptr, key_size))


def _key(map_type: int, key: bytes) -> bytes:
    """The key Envoy's header map uses: lower-cased, and in request headers "host" is :authority
    (measured on 1.40: get, add, replace and remove of "host" act on :authority)."""
    key = key.lower()
    return b":authority" if key == b"host" and map_type == MapType.HTTP_REQUEST_HEADERS else key


def _add(m: HeaderMap, map_type: int, key: bytes, value: bytes) -> None:
    """Envoy's addCopy: a header it keeps inline that is there gets the value appended with ","."""
    if key in _INLINE.get(map_type, ()):
        m.add_inline(key, value)
    else:
        m.add(key, value)


def add_value(vm, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int) -> int:
    m, key = _mutate(vm, map_type, key_ptr, key_size)
    if m is None:
        return WasmResult.BAD_ARGUMENT
    _add(m, map_type, key, vm.memory.read(value_ptr, value_size))
    return WasmResult.OK


hostcall("proxy_add_header_map_value", "uuuuu")(add_value)
#: the header maps whose inline headers Envoy joins on add (trailers and callout maps have none measured)
_INLINE = {MapType.HTTP_REQUEST_HEADERS: INLINE_REQUEST_HEADERS, MapType.HTTP_RESPONSE_HEADERS: INLINE_RESPONSE_HEADERS}


def replace_value(vm, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int) -> int:
    m, key = _mutate(vm, map_type, key_ptr, key_size)
    if m is None:
        return WasmResult.BAD_ARGUMENT
    m.replace(key, vm.memory.read(value_ptr, value_size))
    return WasmResult.OK


hostcall("proxy_replace_header_map_value", "uuuuu")(replace_value)


def remove_value(vm, map_type: int, key_ptr: int, key_size: int) -> int:
    m, key = _mutate(vm, map_type, key_ptr, key_size)
    if m is None:
        return WasmResult.BAD_ARGUMENT
    m.remove(key)
    return WasmResult.OK


hostcall("proxy_remove_header_map_value", "uuu")(remove_value)


def get_size(vm, map_type: int, ret_size: int) -> int:
    if map_type > _MAX_MAP_TYPE:
        return WasmResult.BAD_ARGUMENT
    m = _map(vm, map_type, True)  # Envoy sizes the mutable map: BadArgument in on_log too
    if m is None:
        return WasmResult.BAD_ARGUMENT
    vm.memory.write_u32(ret_size, m.byte_size())
    return WasmResult.OK


hostcall("proxy_get_header_map_size", "uu", note="Envoy answers HeaderMap::byteSize(), not the serialized size")(get_size)
