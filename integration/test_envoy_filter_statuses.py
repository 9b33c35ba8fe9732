"""The status Envoy 1.40's filter manager gets from each callback of the probes of
tests/filter_status_probes.py (its http:trace line "decode <phase> called: filter=... status=N"),
compared with what the host reports for the same module and request
(tests/test_filter_status_conversion.py pins it in the host)."""
from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import pytest

from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.static import StaticEnvoy, http_listener, plugin_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from filter_status_probes import BODY, ENVOY_STATUSES, TRAILERS, status_probes  # noqa: E402
from test_filter_status_conversion import MEASURED, host_statuses  # noqa: E402

#: a filter manager trace line for the probe's filter (the first Wasm filter is named wasm_0)
CALLED = re.compile(r"decode (headers|data|trailers) called: filter=wasm_0 status=(\d+)")


def _request() -> bytes:
    trailers = "".join(f"{k}: {v}\r\n" for k, v in TRAILERS.items())
    return (b"POST /a HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(BODY), BODY, trailers.encode()))


def envoy_statuses(tmp_path: Path, module: bytes) -> list[str]:
    """The statuses Envoy's filter manager logged for the probe's filter, once the request was
    answered or, for a probe that holds it, a second after it was sent."""
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(module)
    with EchoUpstream() as up, StaticEnvoy(http_listener([plugin_config("m", str(wasm))]), {"upstream": up.port},
                                           component_log_level="http:trace") as env:
        with socket.create_connection(("127.0.0.1", env.port)) as sock:
            sock.settimeout(1.0)
            sock.sendall(_request())
            try:
                sock.recv(4096)
            except socket.timeout:
                pass  # the probe holds the request: Envoy has called every callback it will
            time.sleep(0.2)  # the trace line of the last callback follows the answer
        return [ENVOY_STATUSES[phase][int(n)] for phase, n in CALLED.findall(env.log())]


@pytest.mark.parametrize("name", list(MEASURED))
def test_the_status_envoy_got_from_each_callback(tmp_path: Path, name: str) -> None:
    module = status_probes()[name]
    assert envoy_statuses(tmp_path, module) == host_statuses(module) == MEASURED[name]
