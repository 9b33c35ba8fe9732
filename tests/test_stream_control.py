"""proxy_continue_stream and proxy_close_stream where Envoy 1.40 does nothing with them, and a
network filter closing its UPSTREAM side (measured: integration/test_envoy_semantics.py)."""
from __future__ import annotations

from probe_filters import control_scenarios
from proxywasm_host.parity import Flow, run_host


def test_continue_and_close_that_do_nothing() -> None:
    """An HTTP stream continuing a connection: Ok (DOWNSTREAM), Unimplemented (UPSTREAM); a root
    context continuing or closing any stream: Ok (letters: "a" + WasmResult)."""
    logs = run_host(control_scenarios()["http"]).logs
    assert logs.pop("'wasm log h:'") == [("info", "am")]
    assert [m for lines in logs.values() for _, m in lines] == ["aaaa"] * 3  # on_configure, three VMs


def test_network_filter_closing_upstream_closes_its_connection() -> None:
    """Envoy closes the filter's own connection for UPSTREAM too: the downstream close callback
    (peer Local) runs, the upstream one does not, and nothing reaches the upstream."""
    side = run_host(control_scenarios()["tcp_close_upstream"])
    assert side.flows == [Flow(b"", b"", "proxy after chunk 1")]
    assert side.logs == {"'wasm log t:'": [("info", "a"), ("info", "downstream closed")]}
    assert "proxy_on_downstream_connection_close(2, 1)" in side.callbacks
