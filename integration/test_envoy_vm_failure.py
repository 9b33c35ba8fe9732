"""What Envoy 1.40 does to a request under way when another request fails the VM (the probe of
tests/vm_failure_probes.py): "/a" sends its headers and half its body, "/b" traps, then "/a"
sends the rest, then "/c" starts; the host does the same (tests/test_stream_on_a_failed_vm.py)."""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.static import StaticEnvoy, http_listener, plugin_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_stream_on_a_failed_vm import host_outcome  # noqa: E402
from vm_failure_probes import FIRST, LATER, MEASURED, SECOND, trap_on_b  # noqa: E402


def _status(sock: socket.socket) -> int:
    return int(sock.recv(4096).split(b" ", 2)[1])


def _later(port: int) -> tuple[int, bool]:
    """The status of a request that starts after the failure, and whether the filter marked it."""
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.settimeout(10)
        c.sendall(b"GET /c HTTP/1.1\r\nhost: example.com\r\n\r\n")
        head = c.recv(4096).split(b"\r\n\r\n")[0].lower()
    return int(head.split(b" ", 2)[1]), b"\r\nx-seen: 1" in head


@pytest.mark.parametrize("policy", list(MEASURED))
def test_a_stream_under_way_fails_whatever_the_policy(tmp_path: Path, policy: str) -> None:
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(trap_on_b())
    config = plugin_config("m", str(wasm), failure_policy=policy.upper())
    with EchoUpstream(record=True) as up, StaticEnvoy(http_listener([config]), {"upstream": up.port}) as env, \
            socket.create_connection(("127.0.0.1", env.port)) as a, socket.create_connection(("127.0.0.1", env.port)) as b:
        for sock in (a, b):
            sock.settimeout(10)
        a.sendall(b"POST /a HTTP/1.1\r\nhost: example.com\r\ncontent-length: %d\r\n\r\n%s"
                  % (len(FIRST + SECOND), FIRST))
        time.sleep(0.5)  # Envoy has passed the first chunk on before the VM fails
        b.sendall(b"GET /b HTTP/1.1\r\nhost: example.com\r\n\r\n")
        assert _status(b) == 503
        a.sendall(SECOND)
        status = _status(a)
        later = _later(env.port) if policy in LATER else None
        complete = [r.body for r in up.received if r.path == "/a" and len(r.body) == len(FIRST + SECOND)]
    envoy = ((status, complete[0] if complete else None), later)
    assert envoy == host_outcome(policy) == (MEASURED[policy], LATER.get(policy))
