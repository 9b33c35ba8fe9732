"""proxy_http_call, the gRPC calls and proxy_get_status."""
from __future__ import annotations

from ..abi import WasmResult
from ..callouts import HttpCall
from ..headers import HeaderMap
from ..memory import deserialize_pairs
from .registry import hostcall


@hostcall("proxy_http_call", "uuuuuuuuiu")
def http_call(
    vm, up_ptr: int, up_size: int, h_ptr: int, h_size: int, b_ptr: int, b_size: int,
    t_ptr: int, t_size: int, timeout_ms: int, ret_token: int,
) -> int:
    mem = vm.memory
    cluster = mem.read(up_ptr, up_size).decode("utf-8", "surrogateescape")
    headers = HeaderMap(deserialize_pairs(mem.read(h_ptr, h_size)) or [])
    body = mem.read(b_ptr, b_size)
    trailers = HeaderMap(deserialize_pairs(mem.read(t_ptr, t_size)) or [])
    if cluster not in vm.host.clusters:
        return WasmResult.BAD_ARGUMENT
    if any(headers.get(k) is None for k in (b":path", b":method", b":authority")):
        return WasmResult.BAD_ARGUMENT
    if timeout_ms < 0:
        return WasmResult.BAD_ARGUMENT
    mem.write_u32(ret_token, 0)  # the pointer is validated before the call starts
    if body:
        headers.replace(b"content-length", str(len(body)).encode())
    token = vm.state.next_token(0)
    mem.write_u32(ret_token, token)
    call = HttpCall(vm.host, vm.ctx.root, token, cluster, headers.view(), body, trailers.view(), timeout_ms)
    vm.host.pending_http_calls.append(call)
    return WasmResult.OK


@hostcall("proxy_get_status", "uuu")
def get_status(vm, ret_code: int, ret_msg_ptr: int, ret_msg_size: int) -> int:
    code, message = vm.ctx.root.status
    vm.memory.write_u32(ret_code, code)
    return WasmResult.OK if vm.memory.copy_out(message, ret_msg_ptr, ret_msg_size) else WasmResult.INVALID_MEMORY_ACCESS


_GRPC_NOTE = "gRPC callouts are not emulated yet: answers as Envoy does for an unknown cluster"


@hostcall("proxy_grpc_call", "uuuuuuuuuuiu", support="partial", note=_GRPC_NOTE)
def grpc_call(vm, *args: int) -> int:
    return WasmResult.PARSE_FAILURE


@hostcall("proxy_grpc_stream", "uuuuuuuuu", support="partial", note=_GRPC_NOTE)
def grpc_stream(vm, *args: int) -> int:
    return WasmResult.PARSE_FAILURE


@hostcall("proxy_grpc_send", "uuuu", support="partial", note=_GRPC_NOTE)
def grpc_send(vm, token: int, ptr: int, size: int, end_stream: int) -> int:
    return WasmResult.BAD_ARGUMENT


@hostcall("proxy_grpc_cancel", "u", support="partial", note=_GRPC_NOTE)
def grpc_cancel(vm, token: int) -> int:
    return WasmResult.NOT_FOUND


@hostcall("proxy_grpc_close", "u", support="partial", note=_GRPC_NOTE)
def grpc_close(vm, token: int) -> int:
    return WasmResult.NOT_FOUND
