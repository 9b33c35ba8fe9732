"""A Go network (TCP) filter: tcp_filter/main.go driven through `plugin.tcp_stream()`.

`send_downstream_data` is what the client writes (the filter's result is what the upstream
receives, in `upstream_received`); `send_upstream_data` is the upstream's answer
(`downstream_received`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host import Host
from proxywasm_host.abi import PeerType

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_go  # noqa: E402


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_go.module_for_tests("tcp_filter")


@pytest.fixture
def plugin(wasm):
    return Host().load_plugin(wasm, name="go_tcp")


def test_bytes_are_rewritten_both_ways(plugin):
    conn = plugin.tcp_stream(properties={"source.address": "192.0.2.7:40000"})
    assert conn.connect() == "Continue"
    assert conn.send_downstream_data(b"hello\n") == "Continue"
    assert conn.send_upstream_data(b"HI THERE\n") == "Continue"
    assert conn.send_downstream_data(b"bye\n") == "Continue"
    assert bytes(conn.upstream_received) == b"HELLO\nBYE\n"
    assert bytes(conn.downstream_received) == b"go> HI THERE\n"
    # How a tcp_proxy connection ends in Envoy when the client is done: the client half-closes,
    # the upstream finishes and closes (Envoy reports an upstream close of unknown type), then
    # tcp_proxy closes the client connection itself (a local close).
    conn.send_downstream_data(b"", end_of_stream=True)
    conn.send_upstream_data(b"", end_of_stream=True)
    conn.close("downstream", PeerType.LOCAL)
    assert [r.message for r in conn.logs] == [
        "new connection from 192.0.2.7:40000",
        "upstream closed (peer type 0)",
        "downstream closed (peer type 1)",
        "connection done: 10 bytes in, 9 bytes out, closed by filter: false",
    ]
    assert plugin.host.metrics["go_tcp.connections"] == 1
    assert plugin.host.metrics["go_tcp.downstream_bytes"] == 10


def test_quit_closes_the_connection_from_the_filter(plugin):
    conn = plugin.tcp_stream()
    conn.connect()
    conn.send_downstream_data(b"ping\n")
    assert conn.send_downstream_data(b"QUIT\r\n") == "StopIteration"
    assert bytes(conn.upstream_received) == b"PING\n"      # QUIT never reached the upstream
    assert conn.closed is not None
    # Envoy closes the connection right away: a local downstream close, then the teardown.
    assert [r.message for r in conn.logs][1:] == [
        "client said QUIT: closing",
        "downstream closed (peer type 1)",
        "connection done: 11 bytes in, 0 bytes out, closed by filter: true",
    ]


def test_connections_are_counted_across_streams(plugin):
    for _ in range(3):
        conn = plugin.tcp_stream()
        conn.connect()
        conn.close("upstream")
    assert plugin.host.metrics["go_tcp.connections"] == 3
    assert plugin.host.metrics["go_tcp.downstream_bytes"] == 0   # defined, never incremented
