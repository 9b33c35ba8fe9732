"""Metrics with Envoy's id encoding (counters 4,8,…; gauges 5,9,…; histograms 6,10,…)
and rules (counter deltas > 0, record on a counter adds, no get on histograms)."""
from __future__ import annotations

from ..abi import MetricType, WasmResult
from .registry import hostcall

_U64 = (1 << 64) - 1


def define_metric(vm, metric_type: int, name_ptr: int, name_size: int, ret_id: int) -> int:
    if metric_type > MetricType.HISTOGRAM:
        return WasmResult.BAD_ARGUMENT
    name = vm.memory.read(name_ptr, name_size).decode("utf-8", "surrogateescape")
    metric = vm.host.metrics.define(name, MetricType(metric_type))
    state = vm.state
    state.metric_next[metric_type] += 4
    metric_id = state.metric_next[metric_type] + metric_type
    state.metric_ids[metric_id] = metric
    vm.memory.write_u32(ret_id, metric_id)
    return WasmResult.OK


hostcall("proxy_define_metric", "uuuu")(define_metric)


def _metric(vm, metric_id: int):
    return vm.state.metric_ids.get(metric_id)


def _unknown(metric_id: int) -> int:
    """Envoy reads the type from an id's low bits first: an unknown counter or gauge id is NotFound
    for get and increment, any other id BadArgument (measured on 1.40: ids 1000..1003)."""
    return WasmResult.NOT_FOUND if metric_id & 3 in (MetricType.COUNTER, MetricType.GAUGE) else WasmResult.BAD_ARGUMENT


def increment_metric(vm, metric_id: int, delta: int) -> int:
    m = _metric(vm, metric_id)
    if m is None:
        return _unknown(metric_id)
    if m.type == MetricType.COUNTER:
        if delta <= 0:
            return WasmResult.BAD_ARGUMENT
        m.value = (m.value + delta) & _U64
    elif m.type == MetricType.GAUGE:
        m.value = (m.value + delta) & _U64
    else:
        return WasmResult.BAD_ARGUMENT
    return WasmResult.OK


hostcall("proxy_increment_metric", "uI")(increment_metric)


def record_metric(vm, metric_id: int, value: int) -> int:
    m = _metric(vm, metric_id)
    if m is None:
        return WasmResult.NOT_FOUND
    value &= _U64
    if m.type == MetricType.COUNTER:
        m.value = (m.value + value) & _U64
    elif m.type == MetricType.GAUGE:
        m.value = value
    else:
        m.values.append(value)
    return WasmResult.OK


hostcall("proxy_record_metric", "uI")(record_metric)


def get_metric(vm, metric_id: int, ret_value: int) -> int:
    m = _metric(vm, metric_id)
    if m is None:
        return _unknown(metric_id)
    if m.type == MetricType.HISTOGRAM:
        return WasmResult.BAD_ARGUMENT
    vm.memory.write_u64(ret_value, m.value)
    return WasmResult.OK


hostcall("proxy_get_metric", "uu")(get_metric)
