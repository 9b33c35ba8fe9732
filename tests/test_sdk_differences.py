"""Host-side pins of Envoy 1.40 behaviours found while auditing issue 9 with SDK-style modules
(the Envoy side of each: integration/test_sdk_differences.py)."""
from __future__ import annotations

from test_abi_completion import GRPC_IMPORTS, GRPC_SIGS
from test_envoy_observed import _pb
from watgen import build, records

from proxywasm_host import Host
from proxywasm_host.memory import serialize_pairs


def test_grpc_service_metadata_goes_before_the_calls_own():
    """A gRPC call to a serialized GrpcService: Envoy sends the service's initial_metadata first,
    then the metadata the call passed (measured through parity)."""
    service = _pb(1, _pb(1, b"backend")) + _pb(5, _pb(1, b"x-tenant") + _pb(2, b"blue"))
    call = "(call $rec (call $proxy_grpc_call {svc} {name} {m} {md} {msg} (i32.const 1000) (i32.const 0x300))) (i32.const 1)"
    strings = {"svc": service, "name": "pkg.Svc", "m": "Get", "msg": "req",
               "md": serialize_pairs([(b"x-meta", b"1")]), "mdk": "x"}
    wasm = build({"proxy_on_vm_start": call}, strings, imports=GRPC_IMPORTS, extra=GRPC_SIGS.format(mdk="{mdk}"))
    host = Host()
    host.add_cluster("backend")
    plugin = host.load_plugin(wasm)
    assert records(plugin.workers[0].vm) == [0]
    [grpc] = plugin.pending_grpc
    assert list(grpc.metadata.items()) == [("x-tenant", "blue"), ("x-meta", "1")]
