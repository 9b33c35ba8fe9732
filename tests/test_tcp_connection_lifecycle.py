"""A connection's life in the host's TcpStream as Envoy 1.40 lives it (each measured there: the
probes of tests/tcp_probes.py through parity, and a root-context tick driving a connection):
opening before the first data, resuming after a stop in on_new_connection, what a closed
connection's id answers, teardown once, failure policies, and the errors a test gets when it
drives a connection wrongly."""
from __future__ import annotations

import pytest

from proxywasm_host import Host, StreamStateError
from proxywasm_host.abi import PeerType
from watgen import build, records

SAVE_CTX = "(i32.store (i32.const 0x10c) (local.get $ctx))"
#: the root context's tick moves to the saved connection and records what that answered
TICK = ("(call $rec (call $proxy_set_effective_context (i32.load (i32.const 0x10c))))"
        " (drop (call $proxy_continue_stream (i32.const 2)))")


def _traced(wasm: bytes, **options):
    host = Host(trace=True)
    return host, host.load_plugin(wasm, **options)


def _callbacks(host: Host) -> list[str]:
    return [line.split("] ", 1)[1] for line in host.trace if line.startswith("[host->vm] proxy_on_")
            and "memory_allocate" not in line]


def test_data_before_connect_opens_the_connection_first() -> None:
    """Envoy calls on_new_connection before the first data callback."""
    host, plugin = _traced(build({"proxy_on_new_connection": "(i32.const 0)", "proxy_on_downstream_data": "(i32.const 0)"}))
    conn = plugin.tcp_stream()
    assert conn.send_downstream_data(b"hi") == "Continue"
    assert _callbacks(host)[-3:] == ["proxy_on_context_create(2, 1)", "proxy_on_new_connection(2)",
                                     "proxy_on_downstream_data(2, 2, 0)"]


def _stopped_on_new_connection():
    host, plugin = _traced(build({
        "proxy_on_new_connection": f"{SAVE_CTX} (i32.const 1)", "proxy_on_tick": TICK,
        "proxy_on_downstream_data": "(i32.const 0)"}))
    conn = plugin.tcp_stream()
    assert conn.connect() == "StopIteration"
    return host, plugin, conn


def _tick(plugin) -> None:
    root = plugin.workers[0].root
    root.invoke("proxy_on_tick", root.id)


@pytest.mark.parametrize("eos", [True, False], ids=["client ended", "client still sending"])
def test_continue_after_a_stop_in_on_new_connection_delivers_what_the_client_sent(eos: bool) -> None:
    """Measured on 1.40 with a root tick that continues the connection after the client sent "ab",
    "cd" (and its end of stream): one on_downstream_data with all 4 bytes (and the end of stream),
    then everything goes upstream; the tick's proxy_set_effective_context to the open connection
    answers Ok. From then on the filter reads each chunk as it comes."""
    host, plugin, conn = _stopped_on_new_connection()
    for chunk in (b"ab", b"cd"):
        assert conn.send_downstream_data(chunk) == "StopIteration"
    if eos:
        assert conn.send_downstream_data(b"", end_of_stream=True) == "StopIteration"
    assert conn.upstream_received == b""
    _tick(plugin)
    assert records(conn.vm) == [0]
    assert _callbacks(host)[-2:] == ["proxy_on_tick(1)", f"proxy_on_downstream_data(2, 4, {int(eos)})"]
    assert conn.upstream_received == b"abcd"
    if not eos:
        assert conn.send_downstream_data(b"ef") == "Continue"
        assert _callbacks(host)[-1] == "proxy_on_downstream_data(2, 2, 0)"
        assert conn.upstream_received == b"abcdef"


def test_continue_before_the_client_sent_anything_calls_nothing_until_it_does() -> None:
    host, plugin, conn = _stopped_on_new_connection()
    _tick(plugin)
    assert _callbacks(host)[-1] == "proxy_on_tick(1)"
    assert conn.send_downstream_data(b"ab") == "Continue" and conn.upstream_received == b"ab"


def test_a_closed_connection_is_no_context_any_more() -> None:
    """Measured on 1.40: a root tick after the connection ended gets BadArgument from
    proxy_set_effective_context with its id."""
    wasm = build({"proxy_on_new_connection": f"{SAVE_CTX} (i32.const 0)", "proxy_on_tick": TICK})
    plugin = Host().load_plugin(wasm)
    conn = plugin.tcp_stream()
    conn.connect()
    conn.close()
    root = plugin.workers[0].root
    root.invoke("proxy_on_tick", root.id)
    assert records(conn.vm) == [2]


def test_teardown_runs_once_in_tcp_order() -> None:
    """on_done then on_log then on_delete (Envoy 1.40), once, however often the test completes."""
    host, plugin = _traced(build({"proxy_on_new_connection": "(i32.const 0)", "proxy_on_upstream_connection_close": "",
                                  "proxy_on_done": "(i32.const 1)", "proxy_on_log": "", "proxy_on_delete": ""}))
    conn = plugin.tcp_stream()
    conn.connect()
    conn.close("upstream")
    conn.complete()
    conn.close("downstream", PeerType.LOCAL)
    assert _callbacks(host)[-6:] == [
        "proxy_on_context_create(2, 1)", "proxy_on_new_connection(2)", "proxy_on_upstream_connection_close(2, 2)",
        "proxy_on_done(2)", "proxy_on_log(2)", "proxy_on_delete(2)"]


def test_a_connection_never_opened_runs_no_callback() -> None:
    host, plugin = _traced(build({"proxy_on_downstream_connection_close": "", "proxy_on_done": "(i32.const 1)"}))
    calls = len(host.trace)
    conn = plugin.tcp_stream()
    conn.close()
    conn.complete()
    assert len(host.trace) == calls


def test_upstream_data_without_end_of_stream_keeps_the_upstream_open() -> None:
    """Only the upstream's end of stream brings the upstream close callback (peer Unknown)."""
    host, plugin = _traced(build({"proxy_on_upstream_data": "(i32.const 0)", "proxy_on_upstream_connection_close": ""}))
    conn = plugin.tcp_stream()
    assert conn.send_upstream_data(b"ab") == "Continue"
    assert conn.send_upstream_data(b"cd") == "Continue"
    assert not any("connection_close" in c for c in _callbacks(host))
    conn.send_upstream_data(b"", end_of_stream=True)
    assert _callbacks(host)[-1] == "proxy_on_upstream_connection_close(2, 0)"
    assert conn.downstream_received == b"abcd"


def test_held_upstream_data_reports_stop_iteration_until_let_through() -> None:
    plugin = Host().load_plugin(build({"proxy_on_upstream_data": "(i32.lt_u (local.get $size) (i32.const 5))"}))
    conn = plugin.tcp_stream()
    assert conn.send_upstream_data(b"hold") == "StopIteration"
    assert conn.send_upstream_data(b"on") == "Continue"
    assert conn.downstream_received == b"holdon"


TRAP = build({"proxy_on_downstream_data": "unreachable"})


def _after_a_trap(policy: str):
    plugin = Host().load_plugin(TRAP, failure_policy=policy, raise_on_trap=False)
    plugin.tcp_stream().send_downstream_data(b"x")
    return plugin.tcp_stream()


def test_fail_closed_says_why_a_later_connection_closed() -> None:
    conn = _after_a_trap("fail_closed")
    assert conn.connect() == "StopIteration"
    assert conn.closed == "closed after a failure: the VM failed earlier"
    with pytest.raises(StreamStateError, match=r"^the connection is closed \(closed after a failure: the VM failed earlier\)$"):
        conn.send_downstream_data(b"y")


def test_fail_open_passes_every_chunk_both_ways() -> None:
    conn = _after_a_trap("fail_open")
    for chunk in (b"ab", b"cd"):
        assert conn.send_downstream_data(chunk) == "Continue" and conn.send_upstream_data(chunk.upper()) == "Continue"
    assert (conn.upstream_received, conn.downstream_received) == (b"abcd", b"ABCD")


def test_driving_a_connection_wrongly_names_the_problem() -> None:
    conn = Host().load_plugin(build({})).tcp_stream()
    conn.connect()
    with pytest.raises(StreamStateError, match=r"^the connection is already open$"):
        conn.connect()
    with pytest.raises(ValueError, match=r"^peer must be 'downstream' or 'upstream', not 'sideways'$"):
        conn.close("sideways")
    with pytest.raises(TypeError, match=r"^send_downstream_data: end_of_stream must be bool"):
        conn.send_downstream_data(b"x", end_of_stream=1)  # type: ignore[arg-type]
    conn.close()
    with pytest.raises(StreamStateError, match=r"^the connection is closed \(downstream closed\)$"):
        conn.send_upstream_data(b"x")
