"""proxy_http_call, the gRPC calls and proxy_get_status."""
from __future__ import annotations

from ..abi import WasmResult
from ..callouts import GrpcCallout, HttpCall
from ..grpc_service import parse_grpc_service
from ..headers import HeaderMap
from ..memory import deserialize_pairs
from .registry import hostcall


def http_call(
    vm, up_ptr: int, up_size: int, h_ptr: int, h_size: int, b_ptr: int, b_size: int,
    t_ptr: int, t_size: int, timeout_ms: int, ret_token: int,
) -> int:
    mem = vm.memory
    cluster = mem.read(up_ptr, up_size).decode("utf-8", "surrogateescape")
    headers = HeaderMap(deserialize_pairs(mem.read(h_ptr, h_size)) or [])
    body = mem.read(b_ptr, b_size)
    trailers = HeaderMap(deserialize_pairs(mem.read(t_ptr, t_size)) or [])
    if cluster not in vm.host.clusters:  # Envoy logs nothing for it (1.40, wasm:debug): the test report names it
        vm.host.undeclared_clusters.append(cluster)
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


hostcall("proxy_http_call", "uuuuuuuuiu")(http_call)


def get_status(vm, ret_code: int, ret_msg_ptr: int, ret_msg_size: int) -> int:
    code, message = vm.ctx.root.status
    vm.memory.write_u32(ret_code, code)
    return WasmResult.OK if vm.memory.copy_out(message, ret_msg_ptr, ret_msg_size) else WasmResult.INVALID_MEMORY_ACCESS


hostcall("proxy_get_status", "uuu")(get_status)


def _grpc_open(vm, up_ptr, up_size, svc_ptr, svc_size, m_ptr, m_size, md_ptr, md_size, is_stream: bool):
    mem = vm.memory
    upstream = mem.read(up_ptr, up_size)
    service = mem.read(svc_ptr, svc_size).decode("utf-8", "surrogateescape")
    method = mem.read(m_ptr, m_size).decode("utf-8", "surrogateescape")
    proto = parse_grpc_service(upstream)
    cluster = proto.cluster if proto else upstream.decode("utf-8", "surrogateescape")
    # the GrpcService's initial_metadata goes first, then the call's own (measured on Envoy 1.40)
    metadata = HeaderMap([*(proto.initial_metadata if proto else ()), *(deserialize_pairs(mem.read(md_ptr, md_size)) or [])])
    if cluster not in vm.host.clusters:
        vm.host.undeclared_clusters.append(cluster)
        return None  # Envoy: neither a GrpcService proto nor a known cluster
    token = vm.state.next_token(2 if is_stream else 1)
    return GrpcCallout(vm.host, vm.ctx.root, token, cluster, service, method, metadata.view(), is_stream)


def grpc_call(vm, up_ptr, up_size, svc_ptr, svc_size, m_ptr, m_size, md_ptr, md_size, msg_ptr, msg_size, timeout_ms, ret_token) -> int:
    call = _grpc_open(vm, up_ptr, up_size, svc_ptr, svc_size, m_ptr, m_size, md_ptr, md_size, False)
    if call is None:
        return WasmResult.PARSE_FAILURE
    call.message = vm.memory.read(msg_ptr, msg_size)
    call.timeout_ms = timeout_ms
    vm.memory.write_u32(ret_token, call.token)
    vm.host.pending_grpc.append(call)
    return WasmResult.OK


hostcall("proxy_grpc_call", "uuuuuuuuuuiu", note="upstream: a cluster name or a serialized GrpcService; answered by the test")(grpc_call)


def grpc_stream(vm, up_ptr, up_size, svc_ptr, svc_size, m_ptr, m_size, md_ptr, md_size, ret_token) -> int:
    call = _grpc_open(vm, up_ptr, up_size, svc_ptr, svc_size, m_ptr, m_size, md_ptr, md_size, True)
    if call is None:
        return WasmResult.PARSE_FAILURE
    vm.memory.write_u32(ret_token, call.token)
    vm.host.pending_grpc.append(call)
    return WasmResult.OK


hostcall("proxy_grpc_stream", "uuuuuuuuu", note="upstream: a cluster name or a serialized GrpcService; answered by the test")(grpc_stream)


_CALL, _STREAM = 1, 2  # a gRPC token's low two bits: 5, 9, … calls; 6, 10, … streams


def _lookup(vm, token: int, kinds: tuple[int, ...]) -> GrpcCallout | int:
    """The open call or stream, else the answer: Envoy reads what a token is from its low bits before
    it looks it up (measured on 1.40: close, cancel and send with 4 or 7 are BadArgument, with an
    unknown 6 NotFound)."""
    if token & 3 not in kinds:
        return WasmResult.BAD_ARGUMENT
    call = _find_grpc(vm, token)
    return WasmResult.NOT_FOUND if call is None else call


def _find_grpc(vm, token: int) -> GrpcCallout | None:
    for call in vm.host.pending_grpc:
        if call.token == token and call.root.vm is vm:
            return call
    return None


def grpc_send(vm, token: int, ptr: int, size: int, end_stream: int) -> int:
    call = _lookup(vm, token, (_STREAM,))
    if isinstance(call, int):
        return call
    call.sent.append(vm.memory.read(ptr, size))
    if end_stream:
        call.local_closed = True
    return WasmResult.OK


hostcall("proxy_grpc_send", "uuuu")(grpc_send)


def grpc_cancel(vm, token: int) -> int:
    call = _lookup(vm, token, (_CALL, _STREAM))
    if isinstance(call, int):
        return call
    call.cancelled = True
    vm.host.pending_grpc.remove(call)
    return WasmResult.OK


hostcall("proxy_grpc_cancel", "u")(grpc_cancel)


def grpc_close(vm, token: int) -> int:
    call = _lookup(vm, token, (_CALL, _STREAM))
    if isinstance(call, int):
        return call
    if call.is_stream:
        call.local_closed = True
    else:
        call.cancelled = True
        vm.host.pending_grpc.remove(call)
    return WasmResult.OK


hostcall("proxy_grpc_close", "u")(grpc_close)
