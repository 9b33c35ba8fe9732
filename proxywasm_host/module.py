"""Loading a Proxy-Wasm module: bytes, ABI detection, callback signatures, imports
checked against the hostcall registry, compilation with an on-disk cache.

Everything Envoy refuses at load time is refused here with ModuleLoadError.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Union

import wasmtime
from wasmtime import _ffi as ffi

from .abi import ABI_0_1_0, ABI_MARKERS, AbiVersion
from .errors import MissingImportError, ModuleLoadError
from .hostcalls import registry

WASM_MAGIC = b"\0asm"
ModuleSource = Union[str, os.PathLike, bytes, bytearray]

#: epoch ticks per second of the engine's deadline clock
EPOCH_HZ = 100


def _sig(params: str, results: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    conv = {"i": "i32", "I": "i64"}
    return tuple(conv[c] for c in params), tuple(conv[c] for c in results)


#: Callbacks Envoy looks up, with the signatures it requires ("Bad function signature" otherwise).
CALLBACK_SIGNATURES: dict[str, tuple[str, str]] = {
    "_initialize": ("", ""),
    "_start": ("", ""),
    "main": ("ii", "i"),
    "__main_void": ("", "i"),
    "malloc": ("i", "i"),
    "proxy_on_memory_allocate": ("i", "i"),
    "proxy_on_context_create": ("ii", ""),
    "proxy_on_vm_start": ("ii", "i"),
    "proxy_on_configure": ("ii", "i"),
    "proxy_validate_configuration": ("ii", "i"),
    "proxy_on_tick": ("i", ""),
    "proxy_on_done": ("i", "i"),
    "proxy_on_log": ("i", ""),
    "proxy_on_delete": ("i", ""),
    "proxy_on_new_connection": ("i", "i"),
    "proxy_on_downstream_data": ("iii", "i"),
    "proxy_on_upstream_data": ("iii", "i"),
    "proxy_on_downstream_connection_close": ("ii", ""),
    "proxy_on_upstream_connection_close": ("ii", ""),
    "proxy_on_request_headers": ("iii", "i"),
    "proxy_on_request_body": ("iii", "i"),
    "proxy_on_request_trailers": ("ii", "i"),
    "proxy_on_request_metadata": ("ii", "i"),
    "proxy_on_response_headers": ("iii", "i"),
    "proxy_on_response_body": ("iii", "i"),
    "proxy_on_response_trailers": ("ii", "i"),
    "proxy_on_response_metadata": ("ii", "i"),
    "proxy_on_http_call_response": ("iiiii", ""),
    "proxy_on_grpc_receive_initial_metadata": ("iii", ""),
    "proxy_on_grpc_receive": ("iii", ""),
    "proxy_on_grpc_receive_trailing_metadata": ("iii", ""),
    "proxy_on_grpc_close": ("iii", ""),
    "proxy_on_queue_ready": ("ii", ""),
    "proxy_on_foreign_function": ("iii", ""),
    "envoy_on_resolve_dns": ("iii", ""),
}
#: ABI 0.1.0 header callbacks take no end_of_stream argument.
CALLBACK_SIGNATURES_0_1 = {
    "proxy_on_request_headers": ("ii", "i"),
    "proxy_on_response_headers": ("ii", "i"),
}


def expected_callback_signature(name: str, abi: AbiVersion) -> tuple[str, str] | None:
    if abi == ABI_0_1_0:
        if name == "proxy_on_foreign_function":
            return None  # cpp-host only looks it up for 0.2.x
        if name in CALLBACK_SIGNATURES_0_1:
            return CALLBACK_SIGNATURES_0_1[name]
    return CALLBACK_SIGNATURES.get(name)


class _Engine:
    """One wasmtime engine per process, with epoch interruption for execution
    deadlines driven by a daemon ticker thread.

    Created on first use, not at import: wasmtime installs signal handlers for
    traps, and they must sit on top of Python's faulthandler (which pytest enables
    after importing plugins), or a guest trap would kill the process."""

    def __init__(self) -> None:
        self._engine: wasmtime.Engine | None = None
        self._ticker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._due = 0.0  # when the next epoch tick is due (monotonic seconds)

    @property
    def engine(self) -> wasmtime.Engine:
        with self._lock:
            if self._engine is None:
                cfg = wasmtime.Config()
                cfg.epoch_interruption = True
                ffi.wasmtime_config_memory_may_move_set(cfg.ptr(), False)
                self._engine = wasmtime.Engine(cfg)
            return self._engine

    def ensure_ticker(self) -> None:
        self.engine  # created before the ticker reads it
        with self._lock:
            if self._ticker is None:
                self._due = time.monotonic()
                self._ticker = threading.Thread(target=self._tick, name="proxywasm-epoch", daemon=True)
                self._ticker.start()

    def _tick(self) -> None:
        while True:
            time.sleep(1.0 / EPOCH_HZ)
            self.catch_up()

    def catch_up(self) -> None:
        """One epoch per 1/EPOCH_HZ s of real time, each tick not yet counted counted now. The
        ticker thread runs this every period, late when a hostcall held the GIL (otherwise a guest
        busy in hostcalls stretched a 1 s deadline to 2.5 s); a hostcall that ran the test's own
        Python code (a foreign function) runs it before the guest goes on, so that the guest meets
        a deadline that passed meanwhile whenever the ticker thread gets the GIL."""
        period = 1.0 / EPOCH_HZ
        engine = self._engine
        if self._ticker is None or engine is None:  # no VM yet: no deadline to keep
            return
        with self._tick_lock:
            now = time.monotonic()
            while self._due + period <= now:
                engine.increment_epoch()
                self._due += period


ENGINE = _Engine()


def cache_dir() -> Path:
    env = os.environ.get("PROXYWASM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "proxywasm-host"


def _engine_fingerprint() -> str:
    from importlib.metadata import version

    return f"wasmtime-{version('wasmtime')}-epoch-nomove"


_COMPILED: dict[str, wasmtime.Module] = {}
_COMPILED_LOCK = threading.Lock()


def compile_module(wasm: bytes, digest: str, name: str) -> tuple[wasmtime.Module, bool]:
    """Compile `wasm`, using the in-process and on-disk caches keyed by the module's
    sha256 and the engine version. Returns (module, came_from_cache)."""
    with _COMPILED_LOCK:
        if digest in _COMPILED:
            _COMPILED[digest] = module = _COMPILED.pop(digest)  # now the most recently used (LRU)
            return module, True
    engine = ENGINE.engine
    directory = trusted_cache_dir()
    if directory is None:
        module, cached = _compile(engine, wasm, name), False
    else:
        module, cached = _load_or_compile(engine, wasm, name, directory / f"{digest}-{_engine_fingerprint()}.cwasm")
    with _COMPILED_LOCK:
        _COMPILED[digest] = module
        while len(_COMPILED) > COMPILED_IN_PROCESS:
            _COMPILED.pop(next(iter(_COMPILED)))  # the least recently used: a long session's memory stays flat
    return module, cached


#: compiled modules kept in memory per process (the disk cache keeps them all)
COMPILED_IN_PROCESS = 32


def _compile(engine: wasmtime.Engine, wasm: bytes, name: str) -> wasmtime.Module:
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as e:
        raise ModuleLoadError(f"{name}: Failed to parse corrupted Wasm module: {_error_text(e)}") from None


def _load_or_compile(engine: wasmtime.Engine, wasm: bytes, name: str, path: Path) -> tuple[wasmtime.Module, bool]:
    """The cached artifact, or a compile stored for next time. Processes that miss the cache at
    once (pytest-xdist workers) compile one at a time: the later ones find the first one's artifact."""
    module = _load_cached(engine, path)
    if module is not None:
        return module, True
    with _exclusive(path.with_suffix(".lock")):
        module = _load_cached(engine, path)
        if module is not None:
            return module, True
        module = _compile(engine, wasm, name)
        _store_cached(module.serialize(), path)
        return module, False


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An flock on `lock`, a file removed on release (the cache holds only artifacts and their
    hashes). A waiter that wakes up holding a lock file already removed takes the new one."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield  # an unwritable cache only costs speed: compile without the lock
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield
                finally:
                    lock.unlink(missing_ok=True)
                return
        finally:
            os.close(fd)  # closing releases the lock


def trusted_cache_dir() -> Path | None:
    """The compile cache directory, created private; None (compile every time) when it is
    writable by others, as ssh refuses such a directory for its keys: anyone who can write
    there could make us run their machine code."""
    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = directory.stat().st_mode
    except OSError:
        return None
    if mode & 0o022:
        _warn_once(f"compile cache {directory} is writable by group or others (mode {mode & 0o777:o}): not used")
        return None
    return directory


def _load_cached(engine: wasmtime.Engine, path: Path) -> wasmtime.Module | None:
    """A cached artifact whose content still has the hash recorded when it was written;
    anything else (missing, corrupted, tampered, stale) is recompiled."""
    try:
        recorded = path.with_suffix(".sha256").read_text().strip()
        with open(path, "rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None
    if actual != recorded:
        _warn_once(f"compile cache entry {path.name} does not match its recorded hash: recompiling")
        return None
    try:
        return wasmtime.Module.deserialize_file(engine, str(path))
    except wasmtime.WasmtimeError:
        return None  # written by another wasmtime: recompile


def _store_cached(artifact: bytes, path: Path) -> None:
    try:
        for target, data in ((path, artifact), (path.with_suffix(".sha256"), hashlib.sha256(artifact).hexdigest().encode())):
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
    except OSError:
        pass  # an unwritable cache only costs speed


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logging.getLogger("proxywasm").warning(message)


def _error_text(e: Exception) -> str:
    """wasmtime's error and its cause on one line ('failed to parse ...: unexpected end-of-file (at offset 0xa)')."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and ln.strip() != "Caused by:"]
    lines = [ln.split(":", 1)[1].strip() if ln[:1].isdigit() and ":" in ln else ln for ln in lines]
    return ": ".join(lines) or type(e).__name__


@dataclass(frozen=True)
class ImportInfo:
    module: str
    name: str
    params: tuple[str, ...]
    results: tuple[str, ...]

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class ProxyWasmModule:
    """A validated, compiled Proxy-Wasm module ready to instantiate."""

    name: str
    wasm: bytes
    sha256: str
    abi: AbiVersion
    compiled: wasmtime.Module = field(repr=False)
    from_cache: bool = False

    @cached_property
    def exports(self) -> dict[str, wasmtime.FuncType | object]:
        return {e.name: e.type for e in self.compiled.exports}

    @cached_property
    def imports(self) -> list[ImportInfo]:
        out = []
        for imp in self.compiled.imports:
            ty = imp.type
            if isinstance(ty, wasmtime.FuncType):
                out.append(ImportInfo(imp.module, imp.name or "", tuple(map(str, ty.params)), tuple(map(str, ty.results))))
            else:
                out.append(ImportInfo(imp.module, imp.name or "", (), ()))
        return out

    def exported_functions(self) -> list[str]:
        return [n for n, t in self.exports.items() if isinstance(t, wasmtime.FuncType)]


def read_source(source: ModuleSource) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise ModuleLoadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModuleLoadError(f"{path}: is a directory, not a .wasm file") from None
    except OSError as e:
        raise ModuleLoadError(f"{path}: cannot read: {e.strerror}") from None


def load_module(source: ModuleSource, *, name: str | None = None) -> ProxyWasmModule:
    """Load and check a module the way Envoy does before it starts a VM."""
    wasm, label = read_source(source)
    label = name or label
    if wasm[:4] != WASM_MAGIC:
        raise ModuleLoadError(f"{label}: not a WebAssembly module (it does not start with \\0asm)")
    digest = hashlib.sha256(wasm).hexdigest()
    compiled, cached = compile_module(wasm, digest, label)
    mod = ProxyWasmModule(label, wasm, digest, AbiVersion("0.0.0"), compiled, cached)
    abis = [ABI_MARKERS[n] for n in mod.exports if n in ABI_MARKERS]
    if not abis:
        raise ModuleLoadError(
            f"{label}: Missing or unknown Proxy-Wasm ABI version "
            f"(no export named {', '.join(ABI_MARKERS)})"
        )
    mod.abi = max(abis, key=lambda a: a.tuple)
    check_callback_signatures(mod)
    check_imports(mod)
    return mod


def check_callback_signatures(mod: ProxyWasmModule) -> None:
    for name, ty in mod.exports.items():
        want = expected_callback_signature(name, mod.abi)
        if want is None or not isinstance(ty, wasmtime.FuncType):
            continue
        got = (tuple(map(str, ty.params)), tuple(map(str, ty.results)))
        if got != _sig(*want):
            raise ModuleLoadError(
                f"{mod.name}: Bad function signature for: {name}: exported as "
                f"({', '.join(got[0])}) -> ({', '.join(got[1])}), ABI {mod.abi} requires "
                f"({', '.join(_sig(*want)[0])}) -> ({', '.join(_sig(*want)[1])})"
            )


def check_imports(mod: ProxyWasmModule) -> None:
    missing = []
    for imp in mod.imports:
        hc = registry.lookup(imp.module, imp.name, mod.abi)
        if hc is None:
            missing.append(imp.qualname)
            continue
        want = _sig(hc.params_wasm, hc.results)
        if (imp.params, imp.results) != want:
            raise ModuleLoadError(
                f"{mod.name}: import {imp.qualname} has type ({', '.join(imp.params)}) -> "
                f"({', '.join(imp.results)}); Envoy provides ({', '.join(want[0])}) -> ({', '.join(want[1])})"
            )
    if missing:
        raise MissingImportError(mod.name, sorted(set(missing)), mod.abi)
