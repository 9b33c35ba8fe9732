"""Network-filter semantics pinned in the host with the probe scenarios of tests/tcp_probes.py:
each expected value is what Envoy 1.40 did with the same module and client (parity runs them in
integration/test_envoy_probe_scenarios.py)."""
from __future__ import annotations

from probe_filters import parse_probe_line
from tcp_probes import tcp_scenarios
from proxywasm_host.parity import KEPT_OPEN, Flow, run_host

ALLOC = "proxy_on_memory_allocate(1)"


def test_upstream_data_held_by_the_filter_comes_again_with_the_next() -> None:
    """StopIteration on upstream data keeps it in Envoy's buffer: the next callback sees the 4 held
    bytes and the 2 new ones, and lets all 6 through to the client."""
    side = run_host(tcp_scenarios()["upstream_hold"])
    assert side.flows == [Flow(b"holdon", b"holdon", "client")]
    assert [c for c in side.callbacks if "upstream_data" in c] == [
        "proxy_on_upstream_data(2, 4, 0)", "proxy_on_upstream_data(2, 6, 0)", "proxy_on_upstream_data(2, 0, 1)"]


def test_continue_reading_from_the_data_callback_and_after_a_close() -> None:
    """Held client bytes go upstream with the chunk whose callback continued (then stopped); a
    continue after the filter closed the connection forwards nothing. Close callbacks: upstream
    (peer Unknown) then downstream (Local) when the client ends, downstream only after the filter's
    close; no teardown callbacks (the module has none) and each context's callbacks once."""
    side = run_host(tcp_scenarios()["continue_reading"])
    assert side.flows == [Flow(b"abxhycz", b"abxhycz", "client"), Flow(b"ab", b"ab", "proxy after chunk 3")]
    assert side.logs == {"'wasm log c:'": [("info", "upstream closed"), ("info", "downstream closed"),
                                            ("info", "downstream closed")]}
    assert side.callbacks == [
        "proxy_on_context_create(2, 1)", "proxy_on_downstream_data(2, 2, 0)", ALLOC, ALLOC, ALLOC,
        "proxy_on_downstream_data(2, 2, 0)", ALLOC, "proxy_on_downstream_data(2, 4, 0)", ALLOC, ALLOC,
        "proxy_on_downstream_data(2, 1, 0)", ALLOC, ALLOC, ALLOC, "proxy_on_downstream_data(2, 0, 1)",
        "proxy_on_upstream_connection_close(2, 0)", "proxy_on_downstream_connection_close(2, 1)",
        "proxy_on_context_create(3, 1)", "proxy_on_downstream_data(3, 2, 0)", ALLOC, ALLOC, ALLOC,
        "proxy_on_downstream_data(3, 2, 0)", ALLOC, "proxy_on_downstream_data(3, 3, 0)", ALLOC, ALLOC, ALLOC,
        "proxy_on_downstream_connection_close(3, 1)"]


def test_a_stop_in_on_new_connection_holds_everything() -> None:
    """After on_new_connection returns StopIteration Envoy reads nothing: no data callback, the
    client's end of stream held, the connection kept open."""
    side = run_host(tcp_scenarios()["new_connection_stop"])
    assert side.flows == [Flow(b"", b"", KEPT_OPEN)]
    assert side.callbacks == ["proxy_on_context_create(2, 1)", "proxy_on_new_connection(2)"]
    assert side.logs == {}


def test_a_network_filter_continuing_or_closing_http_streams_gets_ok_and_nothing_happens() -> None:
    side = run_host(tcp_scenarios()["http_stream_types"])
    assert side.logs == {"'wasm log h:'": [("info", "aaaa")]}
    assert side.flows == [Flow(b"hello", b"hello", "client")]


def _expected_probe(own_buffer: int | None) -> dict[str, list[str]]:
    """What Envoy answered in a network filter's callbacks: BadArgument for every header-map call
    but the pairs read (Ok, empty); Ok for the buffer reads of HTTP bodies, connection data,
    gRPC bodies and call data and BadArgument for their writes (both Ok on the callback's own
    data); NotFound for the callout body and the plugin configuration."""
    out = {f"map {m}": list("ccacccc") for m in range(8)}
    for b in range(9):
        out[f"buffer {b}"] = list("bbb" if b in (4, 7) else "aaa" if b == own_buffer else "aac")
    return out


def test_hostcall_status_in_each_network_filter_callback() -> None:
    side = run_host(tcp_scenarios()["status"])
    lines = [m for _, m in side.logs["'wasm log s:'"]]
    assert [line.split(" ")[0] for line in lines] == [
        "new_connection", "downstream_data", "upstream_data", "downstream_data", "upstream_data",
        "upstream_close", "downstream_close", "done", "log"]
    for line in lines:
        own = {"downstream_data": 2, "upstream_data": 3}.get(line.split(" ")[0])
        assert parse_probe_line(line) == _expected_probe(own), line
    assert side.callbacks == [
        "proxy_on_context_create(2, 1)", "proxy_on_new_connection(2)", "proxy_on_downstream_data(2, 5, 0)",
        ALLOC, "proxy_on_upstream_data(2, 5, 0)", ALLOC, "proxy_on_downstream_data(2, 0, 1)",
        "proxy_on_upstream_data(2, 0, 1)", "proxy_on_upstream_connection_close(2, 0)",
        "proxy_on_downstream_connection_close(2, 1)", "proxy_on_done(2)", "proxy_on_log(2)"]


def test_filter_state_and_upstream_address_of_a_connection() -> None:
    """A property the filter set when the connection opened reads back in every later callback;
    upstream.address is NotFound in on_new_connection (tcp_proxy has not started) and answers
    once the upstream sent data, in the close callbacks too."""
    side = run_host(tcp_scenarios()["properties"])
    up = "127.0.0.1:PORT"
    assert [m for _, m in side.logs["'wasm log p:'"]] == [
        "kept", "missing",  # on_new_connection
        "kept",  # downstream data
        "kept", up,  # upstream data
        "kept",  # the client's end of stream
        "kept", up,  # the upstream's end of stream
        "kept", up, "kept", up]  # upstream close, downstream close
