"""run_dev_loop (behind `proxywasm envoy up --watch`): edit source/config -> rebuild that filter only -> hot reload."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import httpx

from proxywasm_host.envoy import EnvoyHarness
from proxywasm_host.envoy.devloop import FILTERS_ARG, DevFilter, DevLoopOptions, run_dev_loop

from conftest import WAT_DIR

BUILD = """
import sys
sys.path.insert(0, {repo!r})
from proxywasm_host.envoy.wat import build_wat
names = sys.argv[1:] or ["jwt_authn", "ratelimit"]
for name in names:
    open(f"out/{{name}}.wasm", "wb").write(build_wat(f"src/{{name}}.wat"))
with open("builds.log", "a") as log:
    log.write(" ".join(names) + "\\n")
"""


def _served(url: str) -> tuple[list[str], list[str]]:
    """The version tags and configurations of both filters on one response (each filter adds its own)."""
    r = httpx.get(url, headers={"x-allow": "1"}, timeout=5)
    assert r.status_code == 200, r.text
    return sorted(r.headers.get_list("x-filter-version")), sorted(r.headers.get_list("x-filter-config"))


def _wait_for(url: str, want: tuple[list[str], list[str]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := _served(url)) != want:
        assert time.monotonic() < deadline, f"served {got}, never {want}"
        time.sleep(0.05)


def _builds(root: Path) -> list[str]:
    return (root / "builds.log").read_text().splitlines()


def test_dev_loop_rebuilds_only_the_changed_filter_and_hot_reloads(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    wat = (WAT_DIR / "version_filter.wat").read_text()
    (tmp_path / "src" / "jwt_authn.wat").write_text(wat.replace("@V", "a1"))
    (tmp_path / "src" / "ratelimit.wat").write_text(wat.replace("@V", "b1"))
    (tmp_path / "build.py").write_text(BUILD.format(repo=str(Path(__file__).resolve().parents[1])))
    (tmp_path / "a.config").write_text("first")
    ready: list[EnvoyHarness] = []
    logs: list[str] = []
    stop = threading.Event()
    opts = DevLoopOptions(build_command=[sys.executable, "build.py", FILTERS_ARG], sources=(), root=tmp_path,
                          poll_interval=0.05, listen_port=0, concurrency=1)
    filters = [DevFilter("jwt_authn", tmp_path / "out" / "jwt_authn.wasm", config_file=tmp_path / "a.config",
                         sources=("src/jwt_authn.wat",)),
               DevFilter("ratelimit", tmp_path / "out" / "ratelimit.wasm", configuration="b-conf",
                         sources=("src/ratelimit.wat",))]
    t = threading.Thread(target=run_dev_loop, daemon=True, kwargs=dict(
        filters=filters, options=opts, stop=stop, log=logs.append, max_iterations=2000, on_ready=ready.append))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not ready and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready, f"dev loop did not start: {logs}"
        env = ready[0]
        pid = env.pid
        url = env.url("/")
        _wait_for(url, (["a1", "b1"], ["b-conf", "first"]))
        assert _builds(tmp_path) == ["jwt_authn ratelimit"]  # the first build: every filter

        (tmp_path / "src" / "jwt_authn.wat").write_text(wat.replace("@V", "a2"))
        _wait_for(url, (["a2", "b1"], ["b-conf", "first"]))
        assert _builds(tmp_path) == ["jwt_authn ratelimit", "jwt_authn"]  # only the filter whose source changed
        assert env.ecds_stats("ratelimit")["config_reload"] == 1  # the other one was not touched

        (tmp_path / "a.config").write_text("second")
        _wait_for(url, (["a2", "b1"], ["b-conf", "second"]))
        assert _builds(tmp_path) == ["jwt_authn ratelimit", "jwt_authn"]  # a configuration change needs no build

        reloads = env.ecds_stats("jwt_authn")["config_reload"]
        (tmp_path / "a.config").write_text("reject-this")  # the filter refuses it: the host's check says so
        deadline = time.monotonic() + 15
        while not any("the host's configure check refused" in m for m in logs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(m.startswith("jwt_authn: update refused, previous filter keeps serving:\nthe host's configure "
                                "check refused the filter config") for m in logs), logs
        assert env.ecds_stats("jwt_authn")["config_reload"] == reloads  # Envoy never saw it
        assert _served(url) == (["a2", "b1"], ["b-conf", "second"])

        (tmp_path / "src" / "jwt_authn.wat").write_text("(module (this is not wat")  # broken build
        deadline = time.monotonic() + 15
        while not any("build failed" in m for m in logs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("build failed" in m for m in logs), logs
        assert _served(url) == (["a2", "b1"], ["b-conf", "second"])
        (tmp_path / "a.config").write_text("third")  # the source is still broken: the configuration goes through
        _wait_for(url, (["a2", "b1"], ["b-conf", "third"]))  # with the module it serves (the build left 0 bytes)
        assert env.pid == pid
    finally:
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive()
    assert "built jwt_authn in" in "\n".join(logs)
    reloads = [m for m in logs if m.startswith("jwt_authn: reloaded")]
    # new code goes straight to Envoy (wasmtime only validates the bytes); a new configuration is checked by the host
    assert [re.sub(r"\d+", "N", re.sub(r"[0-9a-f]{12}", "SHA", m)) for m in reloads] == [
        "jwt_authn: reloaded SHA, serving N ms after the publish (checks N ms: parse; Envoy's switch-over N ms)",
        "jwt_authn: reloaded SHA, serving N ms after the publish (checks N ms: load, configure; "
        "Envoy's switch-over N ms)"] + ["jwt_authn: reloaded SHA, serving N ms after the publish (checks N ms: load, "
                                        "configure; Envoy's switch-over N ms)"], logs
