"""The host clock (virtual, test-controlled) and tick periods."""
from __future__ import annotations

from ..abi import WasmResult
from .registry import hostcall


def get_current_time(vm, ret_time: int) -> int:
    vm.memory.write_u64(ret_time, vm.host.clock.now_ns)
    return WasmResult.OK


hostcall("proxy_get_current_time_nanoseconds", "u")(get_current_time)


def set_tick_period(vm, period_ms: int) -> int:
    root = vm.ctx.root
    root.tick_period_ms = period_ms
    root.next_tick_ns = vm.host.clock.now_ns + period_ms * 1_000_000
    return WasmResult.OK


hostcall("proxy_set_tick_period_milliseconds", "u")(set_tick_period)
