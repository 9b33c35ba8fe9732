"""`proxywasm envoy up --filter` serves your own module in a real Envoy, prints its admin URL and
a ready-to-paste publish command, and `proxywasm envoy publish` (no --admin, no --ecds) hot-swaps
that instance's filter; a publish Envoy gives no verdict on in time is not reported as refused
and is not rolled back."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import version_filter

REPO = Path(__file__).resolve().parent.parent


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxywasm_host", *argv], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Both processes share a private cache directory, where `envoy up` records its instance."""
    return {**os.environ, "PYTHONPATH": str(REPO), "PROXYWASM_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture
def envoy_up(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`proxywasm envoy up --filter demo=v1.wasm:first --port 0 --watch`: yields what it printed."""
    module = tmp_path / "v1.wasm"
    module.write_bytes(version_filter("v1"))
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "proxywasm_host", "envoy", "up", "--filter", f"demo={module}:first", "--port", "0",
         "--watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C works in a backgrounded run too
    printed: dict[str, str] = {"module": str(module)}
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # type: ignore[union-attr]
            if m := re.search(r"ready in \d+ ms: (http://\S+/)", line):
                printed["url"] = m.group(1)
            if line.startswith("admin: "):
                printed["admin"] = line.split(": ", 1)[1].strip()
            if line.startswith("publish a new build: "):
                printed["publish"] = line.split(": ", 1)[1].strip()
                break
            assert time.monotonic() < deadline
        assert {"url", "admin", "publish"} <= printed.keys(), (printed, proc.stderr.read() if proc.poll() else "")
        printed["proc"] = proc  # type: ignore[assignment]
        yield printed
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        print(f"envoy up printed:\n{out}\n{err}")  # shown with a failure


def _version(url: str) -> tuple[str, str]:
    r = httpx.get(url, headers={"x-allow": "1"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.headers["x-filter-version"], r.headers["x-filter-config"]


def test_envoy_up_serves_your_module_and_publish_targets_it(envoy_up, cli_env, tmp_path):
    assert _version(envoy_up["url"]) == ("v1", "first")
    assert envoy_up["publish"] == f"proxywasm envoy publish demo {shlex.quote(envoy_up['module'])}"
    assert httpx.get(envoy_up["admin"] + "/ready", timeout=5).text.strip() == "LIVE"
    v2 = tmp_path / "v2.wasm"
    v2.write_bytes(version_filter("v2"))
    # the printed command, with a new module and configuration: no --admin, no --ecds
    argv = shlex.split(envoy_up["publish"])[1:-1] + [str(v2), "--config", "second", "--json"]
    proc = _cli(*argv, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["admin"] == envoy_up["admin"] and result["reload_seconds"] is not None
    assert _version(envoy_up["url"]) == ("v2", "second")


def test_envoy_up_watch_reloads_a_rebuilt_module(envoy_up, tmp_path):
    module = Path(envoy_up["module"])
    tmp = module.with_suffix(".tmp")
    tmp.write_bytes(version_filter("v3"))
    tmp.replace(module)  # what a build does
    deadline = time.monotonic() + 30
    while _version(envoy_up["url"])[0] != "v3":
        assert time.monotonic() < deadline, "the dev loop did not reload the rebuilt module"
        time.sleep(0.2)
    assert _version(envoy_up["url"]) == ("v3", "first")  # the configuration given to --filter stays


def test_publish_without_a_verdict_in_time_is_not_a_refusal(envoy_up, cli_env, tmp_path):
    """An ECDS file this Envoy does not watch: its counters never move, so there is no verdict
    within --timeout. The new file stays (Envoy may still apply it), and serving is unchanged."""
    up = json.loads((Path(cli_env["PROXYWASM_CACHE_DIR"]) / "envoy-up.json").read_text())
    unwatched = tmp_path / "elsewhere" / "demo.json"
    unwatched.parent.mkdir()
    unwatched.write_text(Path(up["ecds"]["demo"]).read_text())
    v2 = tmp_path / "v2.wasm"
    v2.write_bytes(version_filter("v2"))
    proc = _cli("envoy", "publish", "demo", str(v2), "--ecds", str(unwatched), "--admin", envoy_up["admin"],
                "--timeout", "1", "--skip-envoy", env=cli_env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("proxywasm: error: Envoy did not answer in time for demo: no config_reload and "
                                  "update_success increase within 1s;"), proc.stderr
    assert "refused" not in proc.stderr
    assert f"sha256:{hashlib.sha256(v2.read_bytes()).hexdigest()}" in unwatched.read_text()  # not rolled back
    assert _version(envoy_up["url"]) == ("v1", "first")
