"""Continue / close / local reply (deferred until the guest call returns, as in
Envoy), effective context, proxy_done and the ABI 0.1.0 variants."""
from __future__ import annotations

import re

from ..abi import ABI_0_1_0, ABI_0_2, StreamType, WasmResult
from ..context import LocalReply
from ..memory import deserialize_pairs
from .registry import hostcall


def _continue(vm, stream_type: int) -> int:
    if stream_type == StreamType.UPSTREAM:
        return WasmResult.UNIMPLEMENTED
    if stream_type > StreamType.UPSTREAM:
        return WasmResult.BAD_ARGUMENT
    ctx = vm.ctx
    stream = ctx.stream
    if stream is not None and stream_type in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE):
        stream.defer(lambda: stream.continue_direction(stream_type))
    elif stream_type == StreamType.DOWNSTREAM and hasattr(ctx, "resume_reading"):
        vm.state.after_call.append(ctx.resume_reading)
    return WasmResult.OK


def continue_stream(vm, stream_type: int) -> int:
    return _continue(vm, stream_type)


hostcall("proxy_continue_stream", "u", abis=ABI_0_2, note="UPSTREAM answers Unimplemented, as in Envoy")(continue_stream)


def continue_request(vm) -> int:
    return _continue(vm, StreamType.HTTP_REQUEST)


hostcall("proxy_continue_request", "", abis=(ABI_0_1_0,))(continue_request)


def continue_response(vm) -> int:
    return _continue(vm, StreamType.HTTP_RESPONSE)


hostcall("proxy_continue_response", "", abis=(ABI_0_1_0,))(continue_response)


def clear_route_cache(vm) -> int:
    return WasmResult.OK


hostcall("proxy_clear_route_cache", "", abis=(ABI_0_1_0,))(clear_route_cache)


def close_stream(vm, stream_type: int) -> int:
    if stream_type > StreamType.UPSTREAM:
        return WasmResult.BAD_ARGUMENT
    ctx = vm.ctx
    stream = ctx.stream
    if stream is not None and stream_type in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE):
        stream.defer(stream.close_stream)
    elif stream_type in (StreamType.DOWNSTREAM, StreamType.UPSTREAM) and hasattr(ctx, "close_connection"):
        # Envoy closes the filter's own (downstream) connection for either: on_downstream_connection_close
        vm.state.after_call.append(ctx.close_connection)
    return WasmResult.OK


hostcall("proxy_close_stream", "u", abis=ABI_0_2)(close_stream)


def send_local_response(
    vm, status: int, details_ptr: int, details_size: int, body_ptr: int, body_size: int,
    headers_ptr: int, headers_size: int, grpc_status: int,
) -> int:
    mem = vm.memory
    details = mem.read(details_ptr, details_size).decode("utf-8", "replace")
    body = mem.read(body_ptr, body_size)
    pairs = deserialize_pairs(mem.read(headers_ptr, headers_size)) or []
    reply = LocalReply(
        status,
        body,
        [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in pairs],
        re.sub(r"\s", "_", details),
        grpc_status if 0 <= grpc_status <= 16 else None,
    )
    stream = vm.ctx.stream
    if stream is not None:
        stream.defer(lambda: stream.send_local_reply(reply))
    return WasmResult.OK


hostcall("proxy_send_local_response", "uuuuuuui")(send_local_response)


def set_effective_context(vm, context_id: int) -> int:
    ctx = vm.calling_ctx if context_id == 0 else vm.state.contexts.get(context_id)
    if ctx is None:
        return WasmResult.BAD_ARGUMENT
    vm.ctx = ctx
    return WasmResult.OK


hostcall("proxy_set_effective_context", "u", note="0 means the calling context, as in cpp-host")(set_effective_context)


def done(vm) -> int:
    root = vm.ctx.root
    if not root.pending_done:
        return WasmResult.NOT_FOUND
    root.pending_done = False
    vm.state.after_call.append(lambda: root.invoke("proxy_on_delete", root.id) if vm.has("proxy_on_delete") else None)
    return WasmResult.OK


hostcall("proxy_done", "")(done)
