"""Foreign functions: Envoy's built-ins that need no Envoy internals, plus a
registry tests fill (`host.foreign_functions[name] = fn(bytes) -> bytes`).
Unknown names answer NotFound, as in Envoy. Also Envoy's and Emscripten's extra imports."""
from __future__ import annotations

import zlib

from ..abi import WasmResult
from ..errors import EnvoyWouldCrash
from ..module import ENGINE
from .registry import hostcall

#: name -> fn(arguments) -> its result, or None when it produces none (Envoy's clear_route_cache
#: never asks for a result buffer)
BUILTINS = {
    "compress": zlib.compress,
    "uncompress": zlib.decompress,
    "clear_route_cache": lambda _args: None,
}


def call_foreign_function(vm, name_ptr: int, name_size: int, args_ptr: int, args_size: int, ret_ptr: int, ret_size: int) -> int:
    """As Envoy 1.40 runs one (measured through parity): a result is copied into a buffer the guest
    allocates (also an empty one), and (buffer, size) is written even when the function fails
    ((0, 0) then); with a null ret_ptr nothing is allocated and only the size is written."""
    name = vm.memory.read(name_ptr, name_size).decode("utf-8", "surrogateescape")
    fn = vm.host.foreign_functions.get(name) or BUILTINS.get(name)
    if fn is None:
        return WasmResult.NOT_FOUND
    try:
        result, status = fn(vm.memory.read(args_ptr, args_size)), WasmResult.OK
    except zlib.error:
        result, status = None, WasmResult.SERIALIZATION_FAILURE
    finally:
        ENGINE.catch_up()  # the test's function may have run past the guest's deadline
    if ret_ptr:
        address = 0
        if result is not None:
            address = vm.allocate(len(result))
            if not address and result:
                raise EnvoyWouldCrash(f"proxy_call_foreign_function {name!r}: the guest's allocator returned 0 for "
                                      f"the {len(result)}-byte result; Envoy 1.40 copies into it and its process dies "
                                      "(measured: the client's connection closed unanswered)")
            vm.memory.write(address, result)
        vm.memory.write_u32(ret_ptr, address)
    vm.memory.write_u32(ret_size, len(result or b""))
    return status


hostcall("proxy_call_foreign_function", "uuuuuu", support="partial", note="compress, uncompress, clear_route_cache built in; others from host.foreign_functions")(call_foreign_function)

def resolve_dns(vm, addr_ptr: int, addr_size: int, ret_token: int) -> int:
    vm.memory.read(addr_ptr, addr_size)
    vm.state.dns_token += 1
    vm.memory.write_u32(ret_token, vm.state.dns_token)
    return WasmResult.OK


hostcall("envoy_resolve_dns", "uuu", support="partial", note="returns a token; answers are never delivered")(resolve_dns)


def pthread_equal(vm, a: int, b: int) -> int:
    return int(a == b)


hostcall("pthread_equal", "uu")(pthread_equal)


def notify_memory_growth(vm, index: int) -> None:
    return None


hostcall("emscripten_notify_memory_growth", "u", results="")(notify_memory_growth)
