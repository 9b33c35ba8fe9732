"""Build the AssemblyScript example filter (examples/assemblyscript: assembly/, package*.json) into a cache.

The sources, the pinned package.json/package-lock.json and the asc flags are hashed; the
build runs in ``$PROXYWASM_CACHE_DIR`` (default ``~/.cache/proxywasm-host``) under
``as-build/<hash>/``, never inside the repository, and is reused while the hash is unchanged.

    python examples/assemblyscript/build_as.py        # prints the .wasm path
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent
ASC_ARGS = ["assembly/index.ts", "-b", "build/as_filter.wasm", "--use", "abort=abort_proc_exit", "-O3z", "--noAssert"]
WASM_NAME = "as_filter.wasm"
TIMEOUT_S = 300


class ToolchainMissing(RuntimeError):
    """node or npm is not installed: the tests skip with this message."""


def toolchain_missing_reason() -> str | None:
    """Why the AssemblyScript build cannot run here, or None if node and npm exist."""
    missing = [tool for tool in ("node", "npm", "npx") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not found on PATH (needed to build the AssemblyScript SDK filter)" if missing else None


def _inputs() -> list[Path]:
    files = [SRC / "package.json", SRC / "package-lock.json", *sorted((SRC / "assembly").glob("*.ts"))]
    return [f for f in files if f.exists()]


def source_hash() -> str:
    h = hashlib.sha256(" ".join(ASC_ARGS).encode())
    for f in _inputs():
        h.update(f.relative_to(SRC).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def cache_root() -> Path:
    base = os.environ.get("PROXYWASM_CACHE_DIR") or Path.home() / ".cache" / "proxywasm-host"
    return Path(base) / "as-build"


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n{proc.stdout}\n{proc.stderr}")


def build(force: bool = False) -> Path:
    """The path of the built module; builds it (npm ci + asc) only when the cache has no copy."""
    final = cache_root() / source_hash()
    wasm = final / "build" / WASM_NAME
    if wasm.exists() and not force:
        return wasm
    reason = toolchain_missing_reason()
    if reason:
        raise ToolchainMissing(reason)
    work = final.with_name(f"{final.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    work.mkdir(parents=True)
    try:
        for f in _inputs():
            dest = work / f.relative_to(SRC)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        install = "ci" if (work / "package-lock.json").exists() else "install"
        _run(["npm", install, "--no-audit", "--no-fund", "--loglevel=error"], work)
        _run(["npx", "--no-install", "asc", *ASC_ARGS], work)
        if not (work / "build" / WASM_NAME).exists():
            raise RuntimeError(f"asc produced no {WASM_NAME} in {work}")
        if force and final.exists():
            shutil.rmtree(final)
        try:
            work.rename(final)
        except OSError:  # a concurrent build won the race: keep its copy
            if not wasm.exists():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return wasm


def module_for_tests() -> str:
    """The built module's path for a pytest fixture; skips (with the reason) only when
    node/npm are missing and nothing is cached. A failing build fails the test."""
    import pytest

    reason = toolchain_missing_reason()
    if reason and not (cache_root() / source_hash()).exists():
        pytest.skip(reason)
    return str(build())


if __name__ == "__main__":
    t0 = time.monotonic()
    path = build(force="--force" in sys.argv)
    print(f"{path}  ({time.monotonic() - t0:.1f} s)")
