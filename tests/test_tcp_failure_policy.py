"""A network filter whose VM traps, as Envoy 1.40 handles it (seen in its wasm:trace and on the
wire, through proxywasm_host.parity): the connection in progress is closed whatever the failure
policy (Envoy's failStream); with fail_open a later connection skips the filter (its bytes go
through untouched, no callbacks), with fail_closed it is closed."""
from __future__ import annotations

from proxywasm_host import Host
from watgen import build

TRAP_ON_4_BYTES = build({
    "proxy_on_downstream_data": "(if (i32.eq (local.get $size) (i32.const 4)) (then unreachable)) (i32.const 0)",
    "proxy_on_upstream_data": "(i32.const 0)",
})


def _trapped(policy: str):
    host = Host(trace=True)
    plugin = host.load_plugin(TRAP_ON_4_BYTES, failure_policy=policy, raise_on_trap=False)
    conn = plugin.tcp_stream()
    conn.connect()
    assert conn.send_downstream_data(b"ab") == "Continue"
    assert conn.send_downstream_data(b"trap") == "StopIteration"
    return host, plugin, conn


def test_fail_open_still_closes_the_connection_that_trapped() -> None:
    _, _, conn = _trapped("fail_open")
    assert conn.trap is not None and conn.closed is not None and conn.closed.startswith("closed after a failure")
    assert bytes(conn.upstream_received) == b"ab"


def test_fail_open_lets_a_later_connection_through_without_callbacks() -> None:
    host, plugin, _ = _trapped("fail_open")
    calls = len(host.trace)
    conn = plugin.tcp_stream()
    assert conn.connect() == "Continue"
    assert conn.send_downstream_data(b"ef") == "Continue" and conn.send_upstream_data(b"gh") == "Continue"
    assert (bytes(conn.upstream_received), bytes(conn.downstream_received), conn.closed) == (b"ef", b"gh", None)
    conn.close()
    assert len(host.trace) == calls  # the filter was skipped


def test_fail_closed_closes_a_later_connection() -> None:
    _, plugin, _ = _trapped("fail_closed")
    conn = plugin.tcp_stream()
    assert conn.connect() == "StopIteration" and conn.closed is not None
