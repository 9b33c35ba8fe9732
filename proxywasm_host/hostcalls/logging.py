"""proxy_log and proxy_get_log_level."""
from __future__ import annotations

from ..abi import ABI_0_2_1, LogLevel, WasmResult
from .registry import hostcall


@hostcall("proxy_log", "uuu")
def proxy_log(vm, level: int, ptr: int, size: int) -> int:
    if level > LogLevel.CRITICAL:
        return WasmResult.BAD_ARGUMENT
    message = vm.memory.read(ptr, size)
    if level >= vm.host.log_level:
        vm.ctx.log(LogLevel(level), message.decode("utf-8", "replace"))
    return WasmResult.OK


@hostcall("proxy_get_log_level", "u", abis=(ABI_0_2_1,))
def proxy_get_log_level(vm, ret_level: int) -> int:
    vm.memory.write_u32(ret_level, int(vm.host.log_level))
    return WasmResult.OK
