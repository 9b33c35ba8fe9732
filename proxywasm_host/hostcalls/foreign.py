"""Foreign functions: Envoy's built-ins that need no Envoy internals, plus a
registry tests fill (`host.foreign_functions[name] = fn(bytes) -> bytes`).
Unknown names answer NotFound, as in Envoy. Also Envoy's and Emscripten's extra imports."""
from __future__ import annotations

import zlib

from ..abi import WasmResult
from .registry import hostcall

BUILTINS = {
    "compress": zlib.compress,
    "uncompress": zlib.decompress,
    "clear_route_cache": lambda _args: b"",
}


def call_foreign_function(vm, name_ptr: int, name_size: int, args_ptr: int, args_size: int, ret_ptr: int, ret_size: int) -> int:
    name = vm.memory.read(name_ptr, name_size).decode("utf-8", "surrogateescape")
    fn = vm.host.foreign_functions.get(name) or BUILTINS.get(name)
    if fn is None:
        return WasmResult.NOT_FOUND
    try:
        result = fn(vm.memory.read(args_ptr, args_size))
    except zlib.error:
        return WasmResult.SERIALIZATION_FAILURE
    return WasmResult.OK if vm.memory.copy_out(result or b"", ret_ptr, ret_size) else WasmResult.INVALID_MEMORY_ACCESS


hostcall("proxy_call_foreign_function", "uuuuuu", support="partial", note="compress, uncompress, clear_route_cache built in; others from host.foreign_functions")(call_foreign_function)


def resolve_dns(vm, addr_ptr: int, addr_size: int, ret_token: int) -> int:
    vm.memory.read(addr_ptr, addr_size)
    vm.memory.write_u32(ret_token, vm.state.next_token(0))
    return WasmResult.OK


hostcall("envoy_resolve_dns", "uuu", support="partial", note="returns a token; answers are never delivered")(resolve_dns)


def pthread_equal(vm, a: int, b: int) -> int:
    return int(a == b)


hostcall("pthread_equal", "uu")(pthread_equal)


def notify_memory_growth(vm, index: int) -> None:
    return None


hostcall("emscripten_notify_memory_growth", "u", results="")(notify_memory_growth)
