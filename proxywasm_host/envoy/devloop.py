"""``proxywasm envoy up [--watch]``: run Envoy with the project's filters and hot-reload them on change.

The CLI only parses arguments and calls ``run_dev_loop``; everything else is here.
Polling (not inotify) keeps it dependency-free and works on every filesystem.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .config import ListenerSpec, WasmFilter
from .harness import EnvoyHarness
from .publish import published
from .validate import PublishError


@dataclass
class DevFilter:
    """A filter served by the dev loop: its built module, and its plugin configuration.

    ``config_file`` (if set and present) wins over ``configuration``: a JSON file, or
    an ECDS resource file (``.yaml``) whose StringValue configuration is used;
    editing it hot-reloads the configuration without a rebuild.
    """

    name: str
    wasm: Path
    configuration: str = ""
    config_file: Path | None = None
    root_id: str = ""
    vm_id: str = ""

    def current_configuration(self) -> str:
        if self.config_file is not None and self.config_file.exists():
            if self.config_file.suffix in (".yaml", ".yml"):
                return (published(self.config_file, self.name) or {}).get("configuration") or self.configuration
            return self.config_file.read_text()
        return self.configuration


@dataclass
class DevLoopOptions:
    """Knobs of the loop; defaults match this repository's layout (filters/, filters/out/)."""

    build_command: Sequence[str] | None = None  # e.g. [python, "filters/build.py"]; None = no rebuilds
    sources: Sequence[str] = ("filters/**/*.zig",)  # globs (relative to root) that trigger a rebuild
    root: Path = field(default_factory=Path.cwd)
    watch: bool = True
    poll_interval: float = 0.5
    listen_port: int = 10000
    concurrency: int = 2
    upstream_port: int | None = None  # None: serve the built-in echo upstream
    component_log_level: str = "wasm:debug"


def default_filters(root: Path) -> list[DevFilter]:
    """jwt_authn and ratelimit from filters/out/, with the example configurations of envoy/ecds/<name>.yaml."""
    return [
        DevFilter(name, root / "filters" / "out" / f"{name}.wasm", config_file=root / "envoy" / "ecds" / f"{name}.yaml")
        for name in ("jwt_authn", "ratelimit")
    ]


def default_build_command(root: Path) -> list[str]:
    return [sys.executable, str(root / "filters" / "build.py")]


def _fingerprint(root: Path, globs: Sequence[str], extra: Sequence[Path]) -> str:
    h = hashlib.sha256()
    files = sorted({p for g in globs for p in root.glob(g)} | {p for p in extra if p.exists()})
    for p in files:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()


def run_dev_loop(
    filters: Sequence[DevFilter] | None = None,
    options: DevLoopOptions | None = None,
    *,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
    max_iterations: int | None = None,
    on_ready: Callable[[EnvoyHarness], None] | None = None,
) -> int:
    """Start Envoy with ``filters`` mounted via ECDS, then (with ``watch``) rebuild and hot-reload.

    Returns a process exit code: 0 after Ctrl-C / ``stop`` / ``max_iterations``,
    1 if Envoy could not start. A failing build or a refused module is reported
    through ``log`` and the previous filter keeps serving.
    """
    opts = options or DevLoopOptions()
    root = opts.root.resolve()
    filters = list(filters) if filters is not None else default_filters(root)
    build_cmd = list(opts.build_command) if opts.build_command is not None else None
    stop = stop or threading.Event()

    def build() -> bool:
        if not build_cmd:
            return True
        t0 = time.monotonic()
        proc = subprocess.run(build_cmd, cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"build failed ({proc.returncode}), still serving the previous filters:\n"
                f"{(proc.stdout + proc.stderr).strip()[-4000:]}")
            return False
        log(f"build ok in {time.monotonic() - t0:.2f}s")
        return True

    if build_cmd and not build():
        missing = [f.name for f in filters if not f.wasm.exists()]
        if missing:
            log(f"cannot start: no module for {', '.join(missing)}")
            return 1
    for f in filters:
        if not f.wasm.exists():
            log(f"{f.name}: {f.wasm} does not exist yet; the listener answers 500 until it is built")
    watched = [f.config_file for f in filters if f.config_file is not None]
    if build_cmd is None:  # modules built elsewhere: a new build of one is a change
        watched += [f.wasm for f in filters]
    last = _fingerprint(root, opts.sources, watched)  # before reading them: a change from here on is seen
    specs = [WasmFilter(f.name, f.wasm.read_bytes() if f.wasm.exists() else None,
                        configuration=f.current_configuration(), root_id=f.root_id, vm_id=f.vm_id)
             for f in filters]
    env = EnvoyHarness(
        listeners=[ListenerSpec("main", specs, port=opts.listen_port), ListenerSpec("direct", [])],
        upstream_port=opts.upstream_port, concurrency=opts.concurrency,
        component_log_level=opts.component_log_level,
    )
    iterations = 0
    try:  # one try from start() on: a Ctrl-C anywhere below still stops Envoy
        try:
            env.start()
        except Exception as exc:  # noqa: BLE001 - reported to the user
            log(f"Envoy failed to start: {exc}")
            return 1
        log(f"Envoy {env.pid} ready in {env.startup_seconds * 1000:.0f} ms: {env.url('/')} "
            f"(admin {env.admin_url}, log {env.log_path})")
        if on_ready is not None:
            on_ready(env)
        published = {f.name: (env.current(f.name).get("sha256"), f.current_configuration()) for f in filters}
        while opts.watch and not stop.is_set():
            if max_iterations is not None and iterations >= max_iterations:
                break
            iterations += 1
            stop.wait(opts.poll_interval)
            now = _fingerprint(root, opts.sources, watched)
            if now == last:
                continue
            last = now
            if not build():
                continue
            for f in filters:
                if not f.wasm.exists():
                    continue
                data = f.wasm.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                conf = f.current_configuration()
                if published.get(f.name) == (sha, conf):
                    continue
                try:
                    res = env.publish(f.name, data, configuration=conf)
                except PublishError as exc:
                    log(f"{f.name}: update refused, previous filter keeps serving:\n{exc}")
                    continue
                published[f.name] = (sha, conf)
                log(f"{f.name}: reloaded {sha[:12]} in {res.reload_seconds * 1000:.0f} ms "
                    f"(validate {res.validate_seconds * 1000:.0f} ms)")
        if not opts.watch:
            while not stop.is_set() and (max_iterations is None or iterations < max_iterations):
                iterations += 1
                stop.wait(opts.poll_interval)
    except KeyboardInterrupt:
        log("stopping")
    finally:
        env.stop()
    return 0
