"""Hot-swap a proxy-wasm filter that a running Envoy mounts through file-based ECDS.

Works for any HTTP filter with ``config_discovery.path_config_source`` and a
``watched_directory``: the repository's ``envoy/envoy.yaml``, the e2e harness,
or your own bootstrap. ``EnvoyHarness.publish`` and ``proxywasm envoy publish``
both call :func:`publish`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import yaml

from . import config as cfg
from .validate import PublishError, check_configuration, check_wasm_bytes, check_wasm_module, envoy_verdict, find_envoy

FAILURE_COUNTERS = ("update_rejected", "update_failure", "config_fail")


class PublishTimeout(PublishError):
    """Envoy gave no verdict on an update within the timeout (slow, or its admin stopped answering);
    the new ECDS file stays in place, so Envoy may still apply it."""


@dataclass
class PublishResult:
    """What ``publish`` did: ``changed`` is False when the config was identical (Envoy would ignore it)."""

    filter_name: str
    sha256: str
    wasm_path: str
    configuration: str
    version: str
    changed: bool
    validate_seconds: float  # the call -> the rename: the pre-flight checks (and copying the module)
    reload_seconds: float | None  # rename -> config_reload visible in /stats; None when not awaited (no admin_url)
    published_at: float  # time.monotonic() right after the rename
    checks: tuple[str, ...] = ()  # what judged it before Envoy: "parse" or "load" and "configure",
    # then "envoy-validate" or "envoy-validate (remembered)"

    @property
    def total_seconds(self) -> float | None:
        """The call -> Envoy applied it (the switch-over as ``publish`` sees it)."""
        return None if self.reload_seconds is None else self.validate_seconds + self.reload_seconds


_ADMIN: dict[int, httpx.Client] = {}  # per process: one keep-alive client (a new one costs ~70 ms of CPU: its SSL
_ADMIN_LOCK = threading.Lock()  # context); a forked child must not share the parent's sockets


def _admin_client() -> httpx.Client:
    with _ADMIN_LOCK:
        pid = os.getpid()
        if pid not in _ADMIN:
            _ADMIN.clear()
            _ADMIN[pid] = httpx.Client(trust_env=False)  # httpx clients are thread-safe
        return _ADMIN[pid]


def admin_stats(admin_url: str, regex: str = "", timeout: float = 5.0) -> dict[str, int]:
    """Counters and gauges from Envoy's ``/stats`` (histograms are skipped)."""
    r = _admin_client().get(admin_url.rstrip("/") + "/stats", params={"filter": regex} if regex else None,
                            timeout=timeout)
    text = r.raise_for_status().text
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def ecds_stats(admin_url: str, filter_name: str, timeout: float = 5.0) -> dict[str, int]:
    """``extension_config_discovery.http_filter.<filter_name>.*`` without the prefix."""
    prefix = f"extension_config_discovery.http_filter.{filter_name}."
    return {k[len(prefix):]: v for k, v in admin_stats(admin_url, "^" + re.escape(prefix), timeout).items()}


def published(ecds_file: str | os.PathLike[str], filter_name: str) -> dict[str, Any] | None:
    """What the ECDS file serves for ``filter_name`` (module, configuration, ids), or None if nothing."""
    try:
        doc = _load_yaml(Path(ecds_file).read_text())
    except (FileNotFoundError, yaml.YAMLError):
        return None
    resources = doc.get("resources") if isinstance(doc, dict) else None
    res = next((r for r in resources or [] if isinstance(r, dict) and r.get("name") == filter_name), None)
    tc = res.get("typed_config") if res else None
    config = tc.get("config") if isinstance(tc, dict) else None
    if not isinstance(config, dict):
        return None
    vm = config.get("vm_config") or {}
    vm_conf = str((vm.get("configuration") or {}).get("value", ""))
    conf = config.get("configuration") or {}
    return {
        "typed_config": tc,
        "plugin_name": config.get("name", ""),
        "root_id": config.get("root_id", ""),
        "vm_id": vm.get("vm_id", ""),
        # only a StringValue can be kept as it is; None makes publish ask for the configuration
        "configuration": conf.get("value", "") if str(conf.get("@type", "")).endswith(".StringValue") or not conf
        else None,
        "failure_policy": config.get("failure_policy", "FAIL_CLOSED"),
        "wasm_path": ((vm.get("code") or {}).get("local") or {}).get("filename"),
        "sha256": vm_conf[len("sha256:"):] if vm_conf.startswith("sha256:") else None,
    }


def _load_yaml(text: str) -> Any:
    """JSON (what ``publish`` writes) with the json module, YAML (a hand-written file) with libyaml if present."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, mode 0644 (mkstemp makes 0600; Envoy may be another user), rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)  # the move is what Envoy's inotify watch sees; in-place writes go unnoticed
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_ecds(ecds_file: str | os.PathLike[str], filter_name: str, typed_config: dict[str, Any] | None) -> str:
    """Atomically replace ``ecds_file`` with a DiscoveryResponse (no resources if ``typed_config`` is None)."""
    version = str(time.time_ns())
    doc = cfg.ecds_response(filter_name, version, typed_config)
    _atomic_write(Path(ecds_file), (json.dumps(doc, indent=2) + "\n").encode())  # JSON is valid YAML too
    return version


def _envoy_lines(log: Path | None, offset: int) -> list[str]:
    """Envoy's non-debug ``wasm``/``config`` log lines written after ``offset``."""
    if log is None:
        return []
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return [ln for ln in text.splitlines()
            if ("][wasm]" in ln or "][config]" in ln) and "][debug][" not in ln and "][trace][" not in ln]


def publish(
    ecds_file: str | os.PathLike[str],
    filter_name: str,
    wasm: str | os.PathLike[str] | bytes,
    configuration: str | None = None,
    *,
    root_id: str | None = None,
    vm_id: str | None = None,
    plugin_name: str | None = None,
    failure_policy: str | None = None,
    admin_url: str | None = None,
    wasm_dir: str | os.PathLike[str] | None = None,
    validate: bool = True,
    envoy_validate: bool = False,
    envoy_bin: str | None = None,
    clusters: Sequence[str] = (),
    envoy_log: str | os.PathLike[str] | None = None,
    timeout: float = 15.0,
    progress: Callable[[str], None] | None = None,
) -> PublishResult:
    """Check ``wasm`` + ``configuration``, then swap them into the ECDS file Envoy watches.

    1. The host loads the module as Envoy does (wasmtime compiles it, once per sha256,
       and finds ``proxy_abi_version_*``, the callbacks' signatures and the imports);
       without ``validate``, wasmtime only validates the bytes (no compile).
    2. The module is copied to ``<wasm_dir>/<filter_name>-<sha256>.wasm`` (default
       ``wasm_dir``: ``wasm/`` beside the ECDS directory); the config names that
       absolute path and carries ``sha256:<hex>`` as VM configuration, since Envoy
       ignores an update whose config is identical.
    3. With ``validate`` (the default), the host starts the plugin with this
       configuration (``proxy_on_vm_start``, ``proxy_on_configure``) and refuses what
       Envoy would refuse; without it Envoy's own refusal (step 5) judges module and configuration.
       With ``envoy_validate``, ``envoy --mode validate`` also runs (niced) on a throwaway
       bootstrap that holds exactly this filter config inline; its verdict is remembered per
       typed config (module sha256, configuration, root_id, vm_id, ...), so it runs once.
    4. The DiscoveryResponse goes to a temp file in the watched directory, chmod
       0644, and is renamed over ``ecds_file``.
    5. With ``admin_url``, waits until ``update_success`` and ``config_reload`` of
       ``extension_config_discovery.http_filter.<filter_name>`` increase; if
       ``update_rejected``/``update_failure``/``config_fail`` does, the previous
       ECDS file is put back and ``PublishError`` names Envoy's log lines (from
       ``envoy_log``, if given). Envoy keeps serving the previous filter. If Envoy
       gives no verdict within ``timeout``, ``PublishTimeout`` says so and the new
       file stays: Envoy may still apply it.

    ``None`` for ``configuration``, ``root_id``, ``vm_id``, ``plugin_name`` or
    ``failure_policy`` keeps the value the ECDS file holds now (else "", the
    filter name, FAIL_CLOSED). An identical config is not written
    (``changed=False``). Any refusal raises ``PublishError``. ``progress`` is told of slow steps.
    """
    ecds_file = Path(ecds_file).absolute()
    t0 = time.monotonic()
    data = bytes(wasm) if isinstance(wasm, (bytes, bytearray, memoryview)) else Path(wasm).read_bytes()
    what = f"{filter_name} module ({len(data)} bytes)"
    (check_wasm_module if validate else check_wasm_bytes)(data, what)
    sha = hashlib.sha256(data).hexdigest()
    dest = Path(wasm_dir).absolute() if wasm_dir is not None else ecds_file.parent.parent / "wasm"
    dest = dest / f"{filter_name}-{sha}.wasm"
    old = published(ecds_file, filter_name) or {}

    def keep(value: str | None, key: str, default: str) -> str:
        kept = value if value is not None else old.get(key, default)
        if kept is None:
            raise PublishError(f"{filter_name}: the published {key} of {ecds_file} is not a string, pass a new one")
        return kept

    configuration = keep(configuration, "configuration", "")
    plugin = {"name": keep(plugin_name, "plugin_name", filter_name), "root_id": keep(root_id, "root_id", ""),
              "vm_id": keep(vm_id, "vm_id", ""), "configuration": configuration}
    tc = cfg.wasm_typed_config(plugin_name=plugin["name"], root_id=plugin["root_id"], vm_id=plugin["vm_id"],
                               configuration=configuration, filename=str(dest), sha256=sha,
                               failure_policy=keep(failure_policy, "failure_policy", "FAIL_CLOSED"))
    if old.get("typed_config") == tc:  # Envoy hashes typed_config and ignores identical updates
        return PublishResult(filter_name, sha, str(dest), configuration, "", False, 0.0, 0.0, time.monotonic())
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(dest, data)
    checks = ["load", "configure"] if validate else ["parse"]
    if validate:
        check_configuration(data, **plugin, vm_configuration=f"sha256:{sha}", clusters=clusters, what=what)
    if envoy_validate:
        checks.append(_envoy_validate(tc, envoy_bin, clusters, progress))
    validate_s = time.monotonic() - t0
    before: dict[str, int] = {}
    if admin_url is not None:
        try:
            before = ecds_stats(admin_url, filter_name)
        except httpx.HTTPError as exc:
            raise PublishError(f"cannot reach Envoy's admin at {admin_url}: {exc}; nothing was published") from exc
    log = Path(envoy_log) if envoy_log is not None else None
    log_offset = log.stat().st_size if log is not None and log.exists() else 0
    previous = ecds_file.read_bytes() if ecds_file.exists() else None
    version = write_ecds(ecds_file, filter_name, tc)
    t_rename = time.monotonic()
    if admin_url is None:
        return PublishResult(filter_name, sha, str(dest), configuration, version, True, validate_s, None, t_rename,
                             tuple(checks))
    why, now = _await_update(admin_url, filter_name, before, ("config_reload", "update_success"), timeout)
    if why is None:
        return PublishResult(filter_name, sha, str(dest), configuration, version, True, validate_s,
                             time.monotonic() - t_rename, t_rename, tuple(checks))
    if now is None:  # no verdict: Envoy may still apply it, so the new file stays (never undo an accepted update)
        raise PublishTimeout(f"Envoy did not answer in time for {filter_name}: {why}; {ecds_file} now serves the new "
                             f"filter and Envoy may still apply it (see {admin_url}/stats?filter=extension_config)")
    if previous is not None:  # so that a restart does not load the refused config
        _atomic_write(ecds_file, previous)
        # Envoy takes the restored file too; let that pass so a next publish does not count it
        _await_update(admin_url, filter_name, now, ("update_success",), timeout)
    lines = _envoy_lines(log, log_offset)
    raise PublishError(f"Envoy refused the update of {filter_name} ({why}); the previous filter keeps serving"
                       + (":\n  " + "\n  ".join(lines[-12:]) if lines else ""))


def _envoy_validate(typed_config: dict[str, Any], envoy_bin: str | None, clusters: Sequence[str],
                    progress: Callable[[str], None] | None) -> str:
    """Envoy's own verdict on ``typed_config`` (remembered per typed config); returns how it was had."""
    try:
        bin_ = envoy_bin or find_envoy()
    except FileNotFoundError as exc:
        raise PublishError(f"{exc}; envoy --mode validate needs a local Envoy binary (or leave it out: "
                           "envoy_validate=False)") from exc
    if progress is not None:
        progress("checking the filter with envoy --mode validate")
    return "envoy-validate (remembered)" if envoy_verdict(typed_config, envoy_bin=bin_, clusters=clusters) \
        else "envoy-validate"


def _await_update(admin_url: str, filter_name: str, before: dict[str, int], needed: Sequence[str],
                  timeout: float) -> tuple[str | None, dict[str, int] | None]:
    """Poll the ECDS counters until all of ``needed`` passed ``before``.

    Returns (None, stats) on success, (why, stats) if Envoy refused the update, and
    (why, None) if it did not react within ``timeout`` or its admin stopped answering.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:  # a slow admin gets the time that is left, not a fixed per-request limit
            now = ecds_stats(admin_url, filter_name, timeout=max(deadline - time.monotonic(), 0.5))
        except httpx.HTTPError as exc:
            return f"admin {admin_url} did not answer within {timeout:g}s ({exc})", None
        # A refused module bumps config_reload too (with config_fail and update_rejected), so check the failure
        # counters first; Envoy moves all of them in one main-thread event, which also serves /stats.
        bad = [k for k in FAILURE_COUNTERS if now.get(k, 0) > before.get(k, 0)]
        if bad:
            return ", ".join(f"{k}+1" for k in bad), now
        if all(now.get(k, 0) > before.get(k, 0) for k in needed):
            return None, now
        if time.monotonic() > deadline:
            return f"no {' and '.join(needed)} increase within {timeout:g}s", None
        time.sleep(0.002)
