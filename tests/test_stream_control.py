"""proxy_continue_stream and proxy_close_stream where Envoy 1.40 does nothing with them, and a
network filter closing its UPSTREAM side (measured: integration/test_envoy_semantics.py)."""
from __future__ import annotations

from probe_filters import control_scenarios
from proxywasm_host import Host
from proxywasm_host.parity import Flow, run_host
from watgen import build, records


def test_continue_and_close_that_do_nothing() -> None:
    """An HTTP stream continuing a connection: Ok (DOWNSTREAM), Unimplemented (UPSTREAM); a root
    context continuing or closing any stream: Ok (letters: "a" + WasmResult)."""
    logs = run_host(control_scenarios()["http"]).logs
    assert logs.pop("'wasm log h:'") == [("info", "am")]
    assert [m for lines in logs.values() for _, m in lines] == ["aaaa"] * 3  # on_configure, three VMs


def test_continue_from_inside_the_headers_callback_that_stops() -> None:
    """Envoy posts the continue: it applies once the callback returned StopIteration, so the
    request goes on (a GET: a request with a body stalled in Envoy 1.40, not pinned)."""
    side = run_host(control_scenarios()["continue_inside_headers"])
    assert [(x.status, x.upstream is not None) for x in side.exchanges] == [(200, True), (200, True)]


def test_network_filter_closing_upstream_closes_its_connection() -> None:
    """Envoy closes the filter's own connection for UPSTREAM too: the downstream close callback
    (peer Local) runs, the upstream one does not, and nothing reaches the upstream."""
    side = run_host(control_scenarios()["tcp_close_upstream"])
    assert side.flows == [Flow(b"", b"", "proxy after chunk 1")]
    assert side.logs == {"'wasm log t:'": [("info", "a"), ("info", "downstream closed")]}
    assert "proxy_on_downstream_connection_close(2, 1)" in side.callbacks


def test_proxy_done_deletes_the_root_context_it_names() -> None:
    """A root context whose on_done said "not yet" calls proxy_done: on_delete(root id) follows the
    call; a module without on_delete just finishes."""
    for on_delete in ({"proxy_on_delete": "(call $rec (i32.add (i32.const 100) (local.get $ctx)))"}, {}):
        wasm = build({"proxy_on_done": "(i32.const 0)", "proxy_on_tick": "(call $rec (call $proxy_done))", **on_delete},
                     imports={"proxy_done": "(result i32)"})
        plugin = Host().load_plugin(wasm)
        plugin.shutdown()
        root = plugin.workers[0].root
        root.invoke("proxy_on_tick", root.id)
        assert records(plugin.workers[0].vm) == ([0, 100 + root.id] if on_delete else [0])


def test_abi_0_1_0_continue_response() -> None:
    """ABI 0.1.0's proxy_continue_response resumes the response (after the callback returns)."""
    wasm = build({"proxy_on_response_headers": "(call $rec (call $proxy_continue_response)) (i32.const 1)"}, abi="0_1_0")
    s = Host(connection_manager_defaults=False).load_plugin(wasm).http_stream()
    s.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
    assert s.send_response_headers({":status": "200"}).status == "StopAllIterationAndWatermark"
    assert records(s.vm) == [0] and s.downstream_response.headers[":status"] == "200"
    s.send_response_body(b"ok", end_of_stream=True)
    assert (s.downstream_response.body, s.downstream_response.complete) == (b"ok", True)
