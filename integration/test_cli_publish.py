"""`proxywasm envoy publish` against Envoy running the repository's envoy/envoy.yaml (copied, ports freed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import jwt
import pytest

from proxywasm_host.cli import main
from proxywasm_host.envoy import EchoUpstream, find_envoy
from proxywasm_host.envoy.publish import ecds_stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "filters"))
from build import build_filter  # noqa: E402

SECRET = b"proxywasm-dev-secret-change-me!!"  # the oct key of envoy/ecds/jwt_authn.yaml
START_TIMEOUT = 15.0


@contextmanager
def repo_envoy(root: Path, upstream_port: int) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """Envoy from ``root/envoy`` (a copy of the repo's envoy/): yields (process, listener URL, admin URL).

    Listener and admin ports become 0 (Envoy picks free ones), the upstream port that of the echo server.
    """
    conf = root / "envoy" / "envoy.yaml"
    text = conf.read_text()
    for old, new in (("port_value: 10000", "port_value: 0"), ("port_value: 19000", "port_value: 0"),
                     ("port_value: 18080", f"port_value: {upstream_port}")):
        assert old in text
        text = text.replace(old, new)
    conf.write_text(text)
    admin_file = root / "admin-address.txt"
    with open(root / "envoy.log", "wb") as log:
        proc = subprocess.Popen(
            [find_envoy(), "-c", "envoy.yaml", "--disable-hot-restart", "--concurrency", "1",
             "--admin-address-path", str(admin_file), "--component-log-level", "wasm:info"],
            cwd=conf.parent, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (admin_file.exists() and admin_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, (root / "envoy.log").read_text()[-3000:]
            time.sleep(0.02)
        admin = f"http://{admin_file.read_text().strip()}"
        while not ready(admin):
            assert proc.poll() is None and time.monotonic() < deadline, (root / "envoy.log").read_text()[-3000:]
            time.sleep(0.02)
        listeners = httpx.get(admin + "/listeners?format=json", timeout=2).json()["listener_statuses"]
        port = listeners[0]["local_address"]["socket_address"]["port_value"]
        yield proc, f"http://127.0.0.1:{port}", admin
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def ready(admin: str) -> bool:
    """Envoy's /ready is 200; a refused or timed-out admin request (still starting, or a loaded
    machine) is a no for now, retried until the start deadline."""
    try:
        return httpx.get(admin + "/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """tmp_path/envoy = the repo's envoy.yaml + ecds/, tmp_path/filters/out = freshly built modules."""
    (tmp_path / "envoy").mkdir()
    shutil.copy(REPO / "envoy" / "envoy.yaml", tmp_path / "envoy" / "envoy.yaml")
    shutil.copytree(REPO / "envoy" / "ecds", tmp_path / "envoy" / "ecds")
    (tmp_path / "filters" / "out").mkdir(parents=True)
    for name in ("jwt_authn", "ratelimit"):
        shutil.copy(build_filter(name), tmp_path / "filters" / "out" / f"{name}.wasm")
    return tmp_path


def test_cli_publish_hot_swaps_the_repo_config(repo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ecds = repo_copy / "envoy" / "ecds" / "ratelimit.yaml"
    module = repo_copy / "filters" / "out" / "ratelimit.wasm"
    (repo_copy / "corrupt.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    with EchoUpstream() as up, repo_envoy(repo_copy, up.port) as (proc, url, admin):
        pid = proc.pid
        target = ["--ecds", str(ecds), "--admin", admin]
        token = jwt.encode({"iss": "https://issuer.example", "aud": "api", "sub": "alice",
                            "exp": int(time.time()) + 600}, SECRET, algorithm="HS256", headers={"kid": "dev"})
        # the checked-in configs: a valid token is needed for /api, which has a 20-token bucket per subject
        assert httpx.get(url + "/api/x", timeout=5).status_code == 401
        r = httpx.get(url + "/api/x", headers={"authorization": f"Bearer {token}"}, timeout=5)
        assert (r.status_code, r.json()["headers"]["x-jwt-sub"], r.headers["x-ratelimit-limit"]) == (200, "alice", "20")

        assert main(["envoy", "publish", "ratelimit", str(module), "--json",
                     "--config", '{"bucket": {"max_tokens": 1, "fill_interval": "1h"}}', *target]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["ok"] and res["changed"] and res["reload_seconds"] > 0  # how long: `make bench`
        assert [httpx.get(url + "/health", timeout=5).status_code for _ in range(2)] == [200, 429]
        accepted = ecds.read_bytes()

        # a corrupt module is refused by the pre-flight: Envoy never sees it
        assert main(["envoy", "publish", "ratelimit", str(repo_copy / "corrupt.wasm"), *target]) == 1
        err = capsys.readouterr().err
        assert err == ("proxywasm: error: ratelimit module (15 bytes): Failed to parse corrupted Wasm module: "
                       "failed to parse WebAssembly module: unexpected end-of-file (at offset 0xa)\n")
        # the host's configure check refuses a bad configuration with the filter's log line: Envoy never sees it
        assert main(["envoy", "publish", "ratelimit", str(module), "--config", '{"bucket": {"max_tokens": "x"}}',
                     *target]) == 1
        err = capsys.readouterr().err
        assert err == ("proxywasm: error: the host's configure check refused the filter config: plugin ratelimit "
                       f"(ratelimit module ({module.stat().st_size} bytes)): proxy_on_configure returned false "
                       "(Failed to configure base Wasm plugin)\n    filter log lines:\n"
                       "    [error] ratelimit: bucket.max_tokens: expected integer\n")
        assert ecds.read_bytes() == accepted
        # without the pre-flight, Envoy itself refuses a bad configuration; the ECDS file is put back
        assert main(["envoy", "publish", "ratelimit", str(module), "--skip-envoy",
                     "--config", '{"bucket": {"max_tokens": "x"}}', *target]) == 1
        err = capsys.readouterr().err
        assert err.startswith("proxywasm: error: Envoy refused the update of ratelimit (update_rejected+1")
        assert len(err.splitlines()) == 1  # no envoy_log given to the CLI: just the one line
        assert ecds.read_bytes() == accepted

        # the last accepted filter keeps serving, in the same process
        r = httpx.get(url + "/health", timeout=5)
        assert (r.status_code, r.headers["x-ratelimit-limit"]) == (429, "1")
        assert proc.poll() is None and proc.pid == pid
        stats = ecds_stats(admin, "ratelimit")
        # update_success: initial, accepted, restored; config_reload also counts the refused update
        assert {k: stats[k] for k in ("update_success", "update_rejected", "config_reload")} == {
            "update_success": 3, "update_rejected": 1, "config_reload": 4}
        # jwt_authn shares the watched directory: it re-read its file but did not reload
        assert ecds_stats(admin, "jwt_authn")["config_reload"] == 1
