"""A real Envoy from a static bootstrap: Wasm HTTP filters (or one network filter) in a chain
with their own VM configuration, vm_id and failure policy, route metadata, and any clusters.
Used by parity runs, which need what an ECDS-mounted filter cannot express; HTTP filters can
also come from ECDS files (`ecds_dir`) so that a run can reconfigure them (`reconfigure`)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .validate import find_envoy

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WASM_HTTP = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
WASM_NET = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
STRING = "type.googleapis.com/google.protobuf.StringValue"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SET_METADATA = "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config"
TYPED_EXTENSION = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
#: ECDS counters that say Envoy refused an update (it keeps the previous filter)
_ECDS_REFUSED = ("update_rejected", "update_failure", "config_fail")
#: "wasm log<prefix>: <message>" at a level, as Envoy prints a filter's log line (the prefix is
#: " <name> <root_id> <vm_id>" for streams, " <vm_id>" for root contexts, empty parts left out)
_WASM_LOG = re.compile(r"^\[[^\]]*\]\[(\d+)\]\[(\w+)\]\[wasm\] \[[^\]]*\] wasm log([^:]*): (.*)$")
_LEVEL_NAMES = {"warning": "warn"}
#: a wasm:trace line: "[<time>][<thread>][trace][wasm] [...wasm_vm.cc:N] [host->vm] proxy_on_…(…)"
_TRACE = re.compile(r"^\[[^\]]*\]\[(\d+)\]\[trace\]\[wasm\] \[[^\]]*wasm_vm\.cc:\d+\] (\[(?:host|vm)(?:->|<-)(?:host|vm)\] .*)$")


class EnvoyRefused(RuntimeError):
    """Envoy would not start with this configuration (e.g. it refused a module); `.log` has why."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def plugin_config(name: str, wasm: str, configuration: str = "", vm_configuration: str = "", root_id: str = "",
                  vm_id: str = "", failure_policy: str = "FAIL_CLOSED") -> dict[str, Any]:
    """envoy.extensions.wasm.v3.PluginConfig for a module file on disk."""
    return {"name": name, "root_id": root_id, "failure_policy": failure_policy,
            "configuration": {"@type": STRING, "value": configuration},
            "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                          "configuration": {"@type": STRING, "value": vm_configuration},
                          "code": {"local": {"filename": wasm}}}}


def cluster(name: str, port: int, http2: bool = False) -> dict[str, Any]:
    """A cluster of one local endpoint; `http2` for a gRPC service. Over HTTP/1.1 it passes
    trailers both ways (without enable_trailers Envoy drops an upstream response's trailers; measured)."""
    out = {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    protocol = {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {"enable_trailers": True}}
    out["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": HTTP_OPTIONS, "explicit_http_config": protocol}}
    return out


def http_listener(plugins: list[dict[str, Any]], route_metadata: dict[str, Any] | None = None,
                  ecds_dir: Path | None = None, dynamic_metadata: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Listener "main": the Wasm filters in order (wasm_0, wasm_1, …), then the router to cluster
    "upstream". With `ecds_dir`, each filter's config is served from an ECDS file there instead;
    `dynamic_metadata` (namespace -> values) is set by a set_metadata filter before them."""
    route: dict[str, Any] = {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
    if route_metadata:
        route["metadata"] = route_metadata
    filters = [{"name": f"wasm_{i}", "typed_config": {"@type": WASM_HTTP, "config": p}} for i, p in enumerate(plugins)]
    if ecds_dir is not None:
        for entry in filters:
            write_ecds(ecds_dir, entry["name"], entry["typed_config"]["config"])
        filters = [_discovered(ecds_dir, entry["name"]) for entry in filters]
    if dynamic_metadata:
        filters.insert(0, {"name": "set_metadata", "typed_config": {"@type": SET_METADATA, "metadata": [
            {"metadata_namespace": ns, "value": values} for ns, values in dynamic_metadata.items()]}})
    return {"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "connection_balance_config": {"exact_balance": {}},  # each new connection: the least busy worker
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                "@type": HCM, "stat_prefix": "main", "http_filters": [*filters, ROUTER],
                "http_protocol_options": {"enable_trailers": True},  # HTTP/1.1 drops trailers by default
                "route_config": {"name": "main_route", "virtual_hosts": [
                    {"name": "all", "domains": ["*"], "routes": [route]}]}}}]}]}


def _discovered(ecds_dir: Path, name: str) -> dict[str, Any]:
    """An http_filters entry whose config Envoy reads from `<ecds_dir>/<name>.json`, again each
    time a file is moved into that directory."""
    return {"name": name, "config_discovery": {"type_urls": [WASM_HTTP], "config_source": {
        "resource_api_version": "V3", "path_config_source": {
            "path": str(ecds_dir / f"{name}.json"), "watched_directory": {"path": str(ecds_dir)}}}}}


def write_ecds(ecds_dir: Path, name: str, plugin: dict[str, Any]) -> None:
    """Serve `plugin` as filter `name`'s ECDS config: a temp file renamed over the watched one
    (Envoy reacts to the move, not to writes in place)."""
    doc = {"version_info": str(time.time_ns()), "resources": [
        {"@type": TYPED_EXTENSION, "name": name, "typed_config": {"@type": WASM_HTTP, "config": plugin}}]}
    tmp = ecds_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(doc))
    os.rename(tmp, ecds_dir / f"{name}.json")


def tcp_listener(plugin: dict[str, Any]) -> dict[str, Any]:
    """Listener "main": one Wasm network filter, then tcp_proxy to cluster "upstream"."""
    return {"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "connection_balance_config": {"exact_balance": {}},  # each new connection: the least busy worker
            "filter_chains": [{"filters": [
                {"name": "wasm_tcp", "typed_config": {"@type": WASM_NET, "config": plugin}},
                {"name": "tcp", "typed_config": {"@type": TCP_PROXY, "stat_prefix": "tcp", "cluster": "upstream"}}]}]}


class StaticEnvoy:
    """One Envoy process from a static bootstrap (listener "main"), stopped on exit."""

    def __init__(self, listener: dict[str, Any], clusters: dict[str, int], *, concurrency: int = 1,
                 node: dict[str, Any] | None = None, component_log_level: str = "wasm:info",
                 start_timeout: float = 30.0, http2: set[str] | frozenset[str] = frozenset()):
        self.dir = Path(tempfile.mkdtemp(prefix="proxywasm-envoy-static-"))
        self.log_path = self.dir / "envoy.log"
        boot = {"node": node or {"id": "proxywasm-host", "cluster": "proxywasm-host"},
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
                "static_resources": {"listeners": [listener],
                                     "clusters": [cluster(n, p, n in http2) for n, p in clusters.items()]}}
        (self.dir / "bootstrap.json").write_text(json.dumps(boot, indent=1))
        self.args = [find_envoy(), "-c", str(self.dir / "bootstrap.json"), "--disable-hot-restart",
                     "--concurrency", str(concurrency), "--log-level", "info",
                     "--component-log-level", component_log_level,
                     "--admin-address-path", str(self.dir / "admin.txt"), "--drain-time-s", "1"]
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin = ""
        self.port = 0

    def __enter__(self) -> "StaticEnvoy":
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            if self.proc.poll() is not None:
                log = self.log()
                self.__exit__()
                raise EnvoyRefused(f"Envoy exited ({self.proc.returncode}): {_last_error(log)}", log)
            if time.monotonic() > deadline:
                self.__exit__()
                raise EnvoyRefused(f"Envoy was not ready within {self.start_timeout:.0f} s", self.log())
            time.sleep(0.05)
        listeners = httpx.get(self.admin + "/listeners?format=json", timeout=5).json()["listener_statuses"]
        self.port = {x["name"]: x["local_address"]["socket_address"]["port_value"] for x in listeners}["main"]
        return self

    def _ready(self) -> bool:
        admin = self.dir / "admin.txt"
        if not admin.exists() or not admin.read_text().strip():
            return False
        self.admin = "http://" + admin.read_text().strip()
        try:
            return httpx.get(self.admin + "/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)  # what a report needs was read from the log before

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        # bytes as Envoy wrote them: text mode would turn a \r inside a filter's message into \n
        return self.log_path.read_bytes().decode("utf-8", "replace") if self.log_path.exists() else ""

    def stats(self, prefix: str = "wasmcustom.") -> dict[str, str]:
        text = httpx.get(self.admin + "/stats", timeout=5).text
        return {k: v for k, _, v in (line.partition(": ") for line in text.splitlines()) if k.startswith(prefix)}

    def reconfigure(self, ecds_dir: Path, name: str, plugin: dict[str, Any], timeout: float = 15.0) -> str | None:
        """Publish a new config for ECDS filter `name` and wait for Envoy's verdict: None when it
        took it, else which refusal counter moved (it keeps serving the previous config)."""
        def counters() -> dict[str, int]:
            prefix = f"extension_config_discovery.http_filter.{name}."
            return {k.removeprefix(prefix): int(v) for k, v in self.stats(prefix).items() if v.isdigit()}

        before = counters()
        write_ecds(ecds_dir, name, plugin)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = counters()
            refused = [k for k in _ECDS_REFUSED if now.get(k, 0) > before.get(k, 0)]
            if refused:
                return ", ".join(refused)
            if now.get("config_reload", 0) > before.get("config_reload", 0):
                return None
            time.sleep(0.005)
        raise TimeoutError(f"Envoy did not take or refuse the new config of {name} within {timeout:g} s")

    def filter_logs(self) -> list[tuple[str, str, str, str]]:
        """(level, prefix, message, thread) of every filter log line, in order; thread is "main"
        (Envoy's main thread: base and canary VMs, the main thread's VM) or "worker". A message
        that spans lines (an embedded newline) is joined back."""
        out: list[tuple[str, str, str, str]] = []
        continuing = False
        log = self.log()
        # the thread of Envoy's first line ("initializing epoch 0") is its main thread: its id is Envoy's PID, as
        # Envoy sees it (in a container, not the PID of the process we started)
        first = re.match(r"\[[^\]]*\]\[(\d+)\]", log)
        main = first.group(1) if first else ""
        for line in log.split("\n"):  # not splitlines(): a message may hold \r, \v, \f
            m = _WASM_LOG.match(line)
            if m:
                thread = "main" if m.group(1) == main else "worker"
                out.append((_LEVEL_NAMES.get(m.group(2), m.group(2)), m.group(3), m.group(4), thread))
                continuing = True
            elif continuing and out and not line.startswith("[20"):
                level, name, message, thread = out[-1]
                out[-1] = (level, name, message + "\n" + line, thread)
            else:
                continuing = False
        return out


def trace_by_thread(log: str) -> dict[str, list[str]]:
    """The callbacks and hostcalls of a wasm:trace log, per Envoy thread id, in the host's
    `Host(trace=True)` format."""
    out: dict[str, list[str]] = {}
    for line in log.split("\n"):
        m = _TRACE.match(line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def _last_error(log: str) -> str:
    """Why Envoy stopped: its first Wasm error (the cause), else its last error."""
    lines = [line for line in log.splitlines() if "[critical]" in line or "[error]" in line]
    wasm = [line for line in lines if "][wasm]" in line]
    line = (wasm or lines or log.strip().splitlines() or ["no output"])[0 if wasm else -1]
    return line.split("] ", 3)[-1][:300]
