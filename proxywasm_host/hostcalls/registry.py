"""The one declarative registry of hostcalls.

Each entry says: import module and name, wasm signature, the ABI versions for which
Envoy 1.40 registers it, its support status here, and the handler. Linking a VM,
`proxywasm inspect`'s "imports Envoy lacks" and the README's support table all
read this table, so a hostcall is added in exactly one place.

Signature letters: ``u`` u32 (pointers, sizes, enums), ``i`` signed i32,
``I`` signed i64. Results: ``i`` (an i32 status/errno) or empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from ..abi import ALL_ABIS, AbiVersion

WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")

#: Hostcalls Envoy 1.40 allows while the VM starts (_initialize/_start/main); the
#: fd_fdstat pair is what the Go (wasip1) runtime calls there (seen in wasm:trace).
START_ALLOWED = frozenset(
    {
        "env.proxy_log",
        "wasi.fd_write",
        "wasi.fd_fdstat_get",
        "wasi.fd_fdstat_set_flags",
        "wasi.args_sizes_get",
        "wasi.args_get",
        "wasi.environ_sizes_get",
        "wasi.environ_get",
        "wasi.fd_prestat_get",
        "wasi.fd_prestat_dir_name",
        "wasi.clock_time_get",
        "wasi.random_get",
    }
)
#: Hostcalls cpp-host allows while the guest allocator runs.
ALLOC_ALLOWED = frozenset({"env.proxy_log", "wasi.fd_write", "wasi.clock_time_get", "wasi.poll_oneoff"})


@dataclass(frozen=True)
class Hostcall:
    module: str  # "env" or "wasi" (linked under both WASI module names)
    name: str
    params: str
    results: str
    abis: tuple[AbiVersion, ...]
    handler: Callable[..., int | None]
    support: str  # "yes", "partial" or "envoy-unimplemented"
    note: str

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def params_wasm(self) -> str:
        return self.params.replace("u", "i")

    @property
    def is_wasi(self) -> bool:
        return self.module == "wasi"


_REGISTRY: dict[tuple[str, str], Hostcall] = {}


def hostcall(
    name: str,
    params: str,
    results: str = "i",
    *,
    abis: tuple[AbiVersion, ...] = ALL_ABIS,
    module: str = "env",
    support: str = "yes",
    note: str = "",
) -> Callable[[Callable[..., int | None]], Callable[..., int | None]]:
    """`hostcall(name, params)(handler)`: register the handler of an import. Each area module calls
    it right after the handler, not as a decorator: mutmut (`make mutate`) leaves decorated
    functions alone, and the handlers are what it must mutate."""

    def register(fn: Callable[..., int | None]) -> Callable[..., int | None]:
        key = (module, name)
        if key in _REGISTRY:
            raise RuntimeError(f"hostcall {module}.{name} registered twice")
        _REGISTRY[key] = Hostcall(module, name, params, results, tuple(abis), fn, support, note)
        return fn

    return register


def _ensure_loaded() -> None:
    # Importing the area modules fills the registry.
    from . import (  # noqa: F401
        buffers,
        callouts,
        foreign,
        headers,
        logging,
        metrics,
        properties,
        shared,
        stream_control,
        time,
        wasi,
    )


def lookup(import_module: str, name: str, abi: AbiVersion) -> Hostcall | None:
    """The hostcall Envoy links for this import, or None if Envoy does not provide it."""
    _ensure_loaded()
    module = "wasi" if import_module in WASI_MODULES else import_module
    hc = _REGISTRY.get((module, name))
    if hc is None or abi not in hc.abis:
        return None
    return hc


def all_hostcalls() -> Iterator[Hostcall]:
    _ensure_loaded()
    return iter(sorted(_REGISTRY.values(), key=lambda h: (h.module != "env", h.name)))
