"""proxy_log and proxy_get_log_level."""
from __future__ import annotations

from ..abi import ABI_0_2_1, LogLevel, WasmResult
from ..logs import LINE_LIMIT, clip
from .registry import hostcall


#: the levels a guest may log at, by value (a filter may log per request: no enum lookups here)
_LEVELS = tuple(level for level in LogLevel if level <= LogLevel.CRITICAL)
_OK, _BAD_ARGUMENT = WasmResult.OK, WasmResult.BAD_ARGUMENT


def proxy_log(vm, level: int, ptr: int, size: int) -> int:
    if level >= len(_LEVELS):
        return _BAD_ARGUMENT
    if size > LINE_LIMIT:
        vm.memory.read(ptr + size - 1, 1)  # the whole range must be valid, as in Envoy
    message = vm.memory.read(ptr, min(size, LINE_LIMIT + 1))
    if level >= vm.host.log_level:
        vm.ctx.log(_LEVELS[level], message.decode("utf-8", "replace") if size <= LINE_LIMIT else clip(message, size))
    return _OK


hostcall("proxy_log", "uuu")(proxy_log)


def proxy_get_log_level(vm, ret_level: int) -> int:
    vm.memory.write_u32(ret_level, int(vm.host.log_level))
    return WasmResult.OK


hostcall("proxy_get_log_level", "u", abis=(ABI_0_2_1,))(proxy_get_log_level)
