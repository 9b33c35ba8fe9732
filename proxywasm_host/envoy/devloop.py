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

from ..errors import ProxyWasmError
from ..module import load_module
from .config import ListenerSpec, WasmFilter
from .harness import EnvoyHarness
from .publish import published
from .validate import PublishError


@dataclass
class DevFilter:
    """A filter served by the dev loop: its built module, and its plugin configuration.

    ``config_file`` (if set and present) wins over ``configuration``: a JSON file, or
    an ECDS resource file (``.yaml``) whose StringValue configuration is used;
    editing it hot-reloads the configuration without a rebuild. ``sources`` (globs
    relative to the root) are the files whose change rebuilds this filter only.
    """

    name: str
    wasm: Path
    configuration: str = ""
    config_file: Path | None = None
    root_id: str = ""
    vm_id: str = ""
    sources: Sequence[str] = ()

    def current_configuration(self) -> str:
        if self.config_file is not None and self.config_file.exists():
            if self.config_file.suffix in (".yaml", ".yml"):
                return (published(self.config_file, self.name) or {}).get("configuration") or self.configuration
            return self.config_file.read_text()
        return self.configuration


#: in a build command, replaced by the names of the filters to rebuild (a command without it builds all)
FILTERS_ARG = "{filters}"


@dataclass
class DevLoopOptions:
    """Knobs of the loop; defaults match this repository's layout (filters/, filters/out/)."""

    build_command: Sequence[str] | None = None  # e.g. [python, "filters/build.py", FILTERS_ARG]; None = no rebuilds
    sources: Sequence[str] = ("filters/sdk/**/*.zig",)  # globs (relative to root) that rebuild every filter
    root: Path = field(default_factory=Path.cwd)
    watch: bool = True
    poll_interval: float = 0.5
    listen_port: int = 10000
    concurrency: int = 2
    upstream_port: int | None = None  # None: serve the built-in echo upstream
    component_log_level: str = "wasm:debug"
    # New code goes straight to Envoy, whose refusal keeps the previous filter (and is shown with its log lines):
    # the host's check of a new module costs one more compile, as long as Envoy's own (measured: make bench).
    # A configuration change is checked by the host first (a few ms: the module is compiled by then).
    preflight_code: bool = False


def default_filters(root: Path) -> list[DevFilter]:
    """jwt_authn and ratelimit from filters/out/, with the example configurations of envoy/ecds/<name>.yaml."""
    return [
        DevFilter(name, root / "filters" / "out" / f"{name}.wasm", config_file=root / "envoy" / "ecds" / f"{name}.yaml",
                  sources=(f"filters/{name}/**/*.zig",))
        for name in ("jwt_authn", "ratelimit")
    ]


def default_build_command(root: Path) -> list[str]:
    return [sys.executable, str(root / "filters" / "build.py"), FILTERS_ARG]


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


@dataclass
class _Watched:
    """What the loop last saw of one filter: the fingerprints of its code inputs and of its configuration."""

    code: str = ""
    config: str = ""


class _Loop:
    """One dev loop: which filter changed, rebuilding only those, publishing what changed."""

    def __init__(self, filters: Sequence[DevFilter], opts: DevLoopOptions, root: Path,
                 log: Callable[[str], None]) -> None:
        self.filters, self.opts, self.root, self.log = list(filters), opts, root, log
        self.build_cmd = list(opts.build_command) if opts.build_command is not None else None
        self.seen: dict[str, _Watched] = {}
        self.served: dict[str, tuple[str | None, str]] = {}

    def look_now(self) -> None:
        """Take the baseline (before the modules are read: a change from here on is seen)."""
        self.seen = {f.name: self._look(f) for f in self.filters}

    def _look(self, f: DevFilter) -> _Watched:
        code_inputs = [*self.opts.sources, *f.sources] if self.build_cmd is not None else []
        built = [f.wasm] if self.build_cmd is None else []  # modules built elsewhere: a new build of one is a change
        return _Watched(_fingerprint(self.root, code_inputs, built),
                        _fingerprint(self.root, (), [f.config_file] if f.config_file is not None else []))

    def build(self, names: Sequence[str]) -> bool:
        """Run the build for ``names`` (all of them when the command has no FILTERS_ARG); False if it failed."""
        if not self.build_cmd or not names:
            return True
        cmd = [a for arg in self.build_cmd for a in (names if arg == FILTERS_ARG else [arg])]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True)
        if proc.returncode != 0:
            self.log(f"build failed ({proc.returncode}), still serving the previous filters:\n"
                     f"{(proc.stdout + proc.stderr).strip()[-4000:]}")
            return False
        what = ", ".join(names) if FILTERS_ARG in self.build_cmd else "all filters"
        self.log(f"built {what} in {time.monotonic() - t0:.2f} s")
        return True

    def step(self, env: EnvoyHarness) -> None:
        """One poll: rebuild the filters whose code changed, publish those and the ones whose configuration did."""
        now = {f.name: self._look(f) for f in self.filters}
        code = [f.name for f in self.filters if now[f.name].code != self.seen[f.name].code]
        config = [f.name for f in self.filters if now[f.name].config != self.seen[f.name].config]
        self.seen = now
        built = bool(code) and self.build(code)  # a failed build still lets a configuration change through
        for f in self.filters:
            new_code = built and f.name in code
            if new_code or f.name in config:
                self.publish(env, f, new_code)

    def publish(self, env: EnvoyHarness, f: DevFilter, new_code: bool) -> None:
        """Publish ``f``'s configuration, with its module file if ``new_code`` (else the module it serves:
        after a failed build the file may be half written)."""
        served_sha = self.served.get(f.name, (None, ""))[0]
        if (new_code or served_sha is None) and not f.wasm.exists():
            return
        data = f.wasm.read_bytes() if new_code or served_sha is None else None
        sha = hashlib.sha256(data).hexdigest() if data is not None else served_sha
        conf = f.current_configuration()
        if self.served.get(f.name) == (sha, conf):
            return
        env.preflight = self.opts.preflight_code or sha == served_sha
        try:
            res = env.publish(f.name, data, configuration=conf)
        except PublishError as exc:
            self.log(f"{f.name}: update refused, previous filter keeps serving:\n{exc}")
            return
        self.served[f.name] = (sha, conf)
        if data is not None and not env.preflight:  # compile it for the host now: the next configuration check takes ms
            threading.Thread(target=_compile_quietly, args=(data, f.name), daemon=True, name="devloop-compile").start()
        self.log(f"{f.name}: reloaded {sha[:12]}, serving {res.total_seconds * 1000:.0f} ms after the publish "
                 f"(checks {res.validate_seconds * 1000:.0f} ms: {', '.join(res.checks)}; "
                 f"Envoy's switch-over {res.reload_seconds * 1000:.0f} ms)")


def _compile_quietly(data: bytes, name: str) -> None:
    """Fill the host's compile cache with a module Envoy already accepted (a failure shows at the next check)."""
    try:
        load_module(data, name=name)
    except ProxyWasmError:
        pass


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
    stop = stop or threading.Event()
    loop = _Loop(filters, opts, root, log)
    if not loop.build([f.name for f in filters]):
        missing = [f.name for f in filters if not f.wasm.exists()]
        if missing:
            log(f"cannot start: no module for {', '.join(missing)}")
            return 1
    for f in filters:
        if not f.wasm.exists():
            log(f"{f.name}: {f.wasm} does not exist yet; the listener answers 500 until it is built")
    loop.look_now()
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
        loop.served = {f.name: (env.current(f.name).get("sha256"), f.current_configuration()) for f in filters}
        while not stop.is_set() and (max_iterations is None or iterations < max_iterations):
            iterations += 1
            stop.wait(opts.poll_interval)
            if opts.watch:
                loop.step(env)
    except KeyboardInterrupt:
        log("stopping")
    finally:
        env.stop()
    return 0
