"""Shared data and queues are keyed by VM id, as in Envoy 1.40: a plugin on VM id "a" reads what
another plugin on "a" wrote, one on "b" does not; a queue is resolved by an empty VM id (the
caller's own), by "a" from either VM, and not by an id that names no VM; names need not be UTF-8;
enqueueing on a module without proxy_on_queue_ready is Ok and nothing else happens. The lines are
what Envoy logged for tests/hostcall_edge_probes.shared_probe, measured through
proxywasm_host.parity.run_parity (a letter per status, "a" + WasmResult; "1": the same token)."""
from __future__ import annotations

from hostcall_edge_probes import shared_scenario
from proxywasm_host.parity import run_host

#: get "k", set "k", register "q\xff", resolve it by "", by "a", by "\xfe", same token, enqueue
FIRST_ON_A_VM = "shared baaaab1a"
AFTER_A_WRITE = "shared aaaaab1a"
ENVOY_LOGS = {
    "'wasm log a1 a1 a:'": [("info", FIRST_ON_A_VM), ("info", AFTER_A_WRITE)],
    "'wasm log a2 a2 a:'": [("info", AFTER_A_WRITE), ("info", AFTER_A_WRITE)],
    "'wasm log b1 b1 b:'": [("info", FIRST_ON_A_VM), ("info", AFTER_A_WRITE)],
}


def test_shared_data_and_queues_are_per_vm_id_as_in_envoy() -> None:
    side = run_host(shared_scenario())
    assert [e.status for e in side.exchanges] == [200, 200] and side.traps == []
    assert side.logs == ENVOY_LOGS
