"""run_dev_loop (behind `proxywasm envoy up --watch`): edit source/config -> rebuild -> hot reload."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx

from proxywasm_host.envoy import EnvoyHarness
from proxywasm_host.envoy.devloop import DevFilter, DevLoopOptions, run_dev_loop

from conftest import WAT_DIR

BUILD = """
import sys
sys.path.insert(0, {repo!r})
from proxywasm_host.envoy.wat import build_wat
open("out/f.wasm", "wb").write(build_wat("src/f.wat"))
"""


def _wait_for(url: str, header: str, value: str, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = httpx.get(url, headers={"x-allow": "1"}, timeout=5)
        if last.headers.get(header) == value:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{header} never became {value!r}; last response headers {last and dict(last.headers)}")


def test_dev_loop_rebuilds_and_hot_reloads(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    wat = (WAT_DIR / "version_filter.wat").read_text()
    (tmp_path / "src" / "f.wat").write_text(wat.replace("@V", "d1"))
    (tmp_path / "build.py").write_text(BUILD.format(repo=str(Path(__file__).resolve().parents[1])))
    (tmp_path / "f.config").write_text("first")
    ready: list[EnvoyHarness] = []
    logs: list[str] = []
    stop = threading.Event()
    opts = DevLoopOptions(build_command=[sys.executable, "build.py"], sources=("src/*.wat",), root=tmp_path,
                          poll_interval=0.05, listen_port=0, concurrency=1)
    t = threading.Thread(target=run_dev_loop, daemon=True, kwargs=dict(
        filters=[DevFilter("jwt_authn", tmp_path / "out" / "f.wasm", config_file=tmp_path / "f.config")],
        options=opts, stop=stop, log=logs.append, max_iterations=2000, on_ready=ready.append))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not ready and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready, f"dev loop did not start: {logs}"
        env = ready[0]
        pid = env.pid
        url = env.url("/")
        r = _wait_for(url, "x-filter-version", "d1")
        assert r.headers["x-filter-config"] == "first"

        (tmp_path / "src" / "f.wat").write_text(wat.replace("@V", "d2"))
        _wait_for(url, "x-filter-version", "d2")
        (tmp_path / "f.config").write_text("second")
        _wait_for(url, "x-filter-config", "second")

        (tmp_path / "src" / "f.wat").write_text("(module (this is not wat")  # broken build
        deadline = time.monotonic() + 15
        while not any("build failed" in m for m in logs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("build failed" in m for m in logs), logs
        r = httpx.get(url, headers={"x-allow": "1"}, timeout=5)
        assert (r.status_code, r.headers["x-filter-version"]) == (200, "d2")
        assert env.pid == pid
    finally:
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive()
    assert any("jwt_authn: reloaded" in m for m in logs), logs
