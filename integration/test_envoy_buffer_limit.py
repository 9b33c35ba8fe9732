"""What Envoy 1.40 answers a request whose body the filter of tests/buffer_limit_probes.py buffers,
about the default 1 MiB per_connection_buffer_limit_bytes: the body comes as one chunk, held (a
second) before the end of stream; the host answers the same (tests/test_buffer_limit_boundary.py)."""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.static import StaticEnvoy, http_listener, plugin_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from buffer_limit_probes import MEASURED, buffer_all  # noqa: E402
from test_buffer_limit_boundary import host_status  # noqa: E402


def _status(port: int, size: int) -> int:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"POST /a HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n" % size
                     + b"x" * size + b"\r\n")
        time.sleep(1.0)  # Envoy has buffered the chunk (or answered 413) before the end of stream
        try:
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # Envoy closed the connection after its 413
        return int(sock.recv(64).split(b" ", 2)[1])


@pytest.fixture(scope="module")
def envoy_port(tmp_path_factory: pytest.TempPathFactory):
    wasm = tmp_path_factory.mktemp("limit") / "m.wasm"
    wasm.write_bytes(buffer_all())
    with EchoUpstream() as up, StaticEnvoy(http_listener([plugin_config("m", str(wasm))]), {"upstream": up.port}) as env:
        yield env.port


@pytest.mark.parametrize("size", list(MEASURED))
def test_a_buffer_at_the_limit_is_taken_one_byte_over_is_413(envoy_port: int, size: int) -> None:
    assert _status(envoy_port, size) == host_status(size) == MEASURED[size]
