"""Shared data (Envoy's CAS semantics) and shared queues, across every VM of the host."""
from __future__ import annotations

from ..abi import WasmResult
from .registry import hostcall


def get_shared_data(vm, key_ptr: int, key_size: int, ret_value_ptr: int, ret_value_size: int, ret_cas: int) -> int:
    entry = vm.host.shared_data.get(vm.memory.read(key_ptr, key_size), vm.plugin.vm_id)
    if entry is None:
        return WasmResult.NOT_FOUND
    value, cas = entry
    if not vm.memory.copy_out(value, ret_value_ptr, ret_value_size):
        return WasmResult.INVALID_MEMORY_ACCESS
    vm.memory.write_u32(ret_cas, cas)
    return WasmResult.OK


hostcall("proxy_get_shared_data", "uuuuu")(get_shared_data)


def set_shared_data(vm, key_ptr: int, key_size: int, value_ptr: int, value_size: int, cas: int) -> int:
    key = vm.memory.read(key_ptr, key_size)
    value = vm.memory.read(value_ptr, value_size)
    ok = vm.host.shared_data.set(key, value, cas, vm.plugin.vm_id)
    return WasmResult.OK if ok else WasmResult.CAS_MISMATCH


hostcall("proxy_set_shared_data", "uuuuu")(set_shared_data)


def register_queue(vm, name_ptr: int, name_size: int, ret_id: int) -> int:
    name = vm.memory.read(name_ptr, name_size).decode("utf-8", "surrogateescape")
    token = vm.host.queues.register(vm.plugin.vm_id, name, vm.ctx.root)
    vm.memory.write_u32(ret_id, token)
    return WasmResult.OK


hostcall("proxy_register_shared_queue", "uuu")(register_queue)


def resolve_queue(vm, vm_id_ptr: int, vm_id_size: int, name_ptr: int, name_size: int, ret_id: int) -> int:
    vm_id = vm.memory.read(vm_id_ptr, vm_id_size).decode("utf-8", "surrogateescape") or vm.plugin.vm_id
    name = vm.memory.read(name_ptr, name_size).decode("utf-8", "surrogateescape")
    token = vm.host.queues.resolve(vm_id, name)
    if token is None:
        return WasmResult.NOT_FOUND
    vm.memory.write_u32(ret_id, token)
    return WasmResult.OK


hostcall("proxy_resolve_shared_queue", "uuuuu")(resolve_queue)


def enqueue(vm, token: int, value_ptr: int, value_size: int) -> int:
    queues = vm.host.queues
    if token not in queues.queues:
        return WasmResult.NOT_FOUND
    queues.queues[token].append(vm.memory.read(value_ptr, value_size))
    owner = queues.owners[token]
    # Envoy posts on_queue_ready to the registering thread: it runs after this call.
    vm.state.after_call.append(lambda: _notify(owner, token))
    return WasmResult.OK


hostcall("proxy_enqueue_shared_queue", "uuu")(enqueue)


def _notify(owner, token: int) -> None:
    if owner.vm.failed is None and owner.vm.has("proxy_on_queue_ready"):
        owner.invoke("proxy_on_queue_ready", owner.id, token)


def dequeue(vm, token: int, ret_ptr: int, ret_size: int) -> int:
    queue = vm.host.queues.queues.get(token)
    if queue is None:
        return WasmResult.NOT_FOUND
    if not queue:
        return WasmResult.EMPTY
    if not vm.memory.copy_out(queue[0], ret_ptr, ret_size):
        return WasmResult.INVALID_MEMORY_ACCESS
    queue.pop(0)
    return WasmResult.OK


hostcall("proxy_dequeue_shared_queue", "uuu")(dequeue)
