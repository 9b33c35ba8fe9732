"""The README's support table, generated from the hostcall registry and the
callback table, so the documentation cannot drift from the code.

    python -m proxywasm_host.support   # prints the Markdown tables
"""
from __future__ import annotations

from .abi import ALL_ABIS
from .hostcalls.registry import all_hostcalls
from .module import CALLBACK_SIGNATURES

#: How the host drives each callback (Envoy 1.40 behaviour it follows).
CALLBACK_NOTES: dict[str, str] = {
    "_initialize": "VM start, hostcalls restricted as in Envoy",
    "_start": "VM start when there is no _initialize",
    "main": "after _initialize, with (0, 0)",
    "__main_void": "after _initialize when there is no main",
    "malloc": "guest allocator, preferred (Envoy's order)",
    "proxy_on_memory_allocate": "guest allocator when there is no malloc",
    "proxy_on_context_create": "root contexts at start; stream contexts lazily",
    "proxy_on_vm_start": "per root context, with the VM configuration size",
    "proxy_on_configure": "per root context; `Plugin.reload()` for updates",
    "proxy_validate_configuration": "not called (Envoy does not call it)",
    "proxy_on_tick": "`host.clock.advance()`",
    "proxy_on_done": "stream teardown; `Plugin.shutdown()` for roots",
    "proxy_on_log": "stream teardown (HTTP: before on_done; TCP: after)",
    "proxy_on_delete": "teardown, or after `proxy_done`",
    "proxy_on_new_connection": "`TcpStream.connect()`",
    "proxy_on_downstream_data": "`TcpStream.send_downstream_data()`",
    "proxy_on_upstream_data": "`TcpStream.send_upstream_data()`",
    "proxy_on_downstream_connection_close": "`TcpStream.close('downstream')`",
    "proxy_on_upstream_connection_close": "`TcpStream.close('upstream')`, or upstream end of stream",
    "proxy_on_request_headers": "`send_request_headers()`",
    "proxy_on_request_body": "`send_request_body()`, and on resume with the buffered body",
    "proxy_on_request_trailers": "`send_request_trailers()`",
    "proxy_on_request_metadata": "not called (no HTTP/2 METADATA frames)",
    "proxy_on_response_headers": "`send_response_headers()`, and for local replies",
    "proxy_on_response_body": "`send_response_body()`, and for local replies",
    "proxy_on_response_trailers": "`send_response_trailers()`",
    "proxy_on_response_metadata": "not called (no HTTP/2 METADATA frames)",
    "proxy_on_http_call_response": "`HttpCall.respond() / fail() / timeout()`",
    "proxy_on_grpc_receive_initial_metadata": "`GrpcCallout.receive_initial_metadata()`",
    "proxy_on_grpc_receive": "`GrpcCallout.receive()`",
    "proxy_on_grpc_receive_trailing_metadata": "`GrpcCallout.receive_trailing_metadata()`",
    "proxy_on_grpc_close": "`GrpcCallout.close()`",
    "proxy_on_queue_ready": "after an enqueue, on the registering root context",
    "proxy_on_foreign_function": "not called (Envoy calls it for no built-in event)",
    "envoy_on_resolve_dns": "not called (DNS answers are not emulated)",
}


def hostcall_table() -> str:
    rows = ["| import | ABI | support | notes |", "|---|---|---|---|"]
    for hc in all_hostcalls():
        abis = "all" if hc.abis == ALL_ABIS else ", ".join(hc.abis)
        module = "wasi_snapshot_preview1 / wasi_unstable" if hc.is_wasi else hc.module
        rows.append(f"| `{module}.{hc.name}` | {abis} | {hc.support} | {hc.note} |")
    return "\n".join(rows)


def callback_table() -> str:
    rows = ["| export | how the host calls it |", "|---|---|"]
    for name in CALLBACK_SIGNATURES:
        rows.append(f"| `{name}` | {CALLBACK_NOTES[name]} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(hostcall_table())
    print()
    print(callback_table())
