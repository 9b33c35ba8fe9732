#!/usr/bin/env python3
"""Build the Zig Proxy-Wasm filters to filters/out/<name>.wasm.

Reproducible: the same sources and Zig version give the same bytes (Zig embeds
no timestamps or absolute paths in a stripped wasm32-freestanding module).
Incremental: a stamp next to each output records a hash of every source file
that goes into it plus the Zig version; a matching stamp skips the build.

    python filters/build.py              # every filter
    python filters/build.py jwt_authn    # just one
    from build import build_filter       # (with filters/ on sys.path)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FILTERS_DIR = Path(__file__).resolve().parent
SDK_DIR = FILTERS_DIR / "sdk"
OUT_DIR = FILTERS_DIR / "out"
CACHE_DIR = OUT_DIR / ".zig-cache"
# Every filter lives in filters/<name>/main.zig and may import the SDK as "proxy_wasm".
FILTERS = ("jwt_authn", "ratelimit")


class BuildError(RuntimeError):
    """The Zig compiler failed; the message carries its output."""


def _zig_cmd() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


_zig_version_cache: str | None = None


def zig_version() -> str:
    global _zig_version_cache
    if _zig_version_cache is None:
        try:
            out = subprocess.run(_zig_cmd() + ["version"], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:  # pragma: no cover - environment problem
            raise BuildError(f"cannot run Zig ({' '.join(_zig_cmd())} version): {e}. "
                             "Install it with: pip install ziglang==0.17.1") from e
        _zig_version_cache = out.stdout.strip()
    return _zig_version_cache


def _sources(name: str) -> list[Path]:
    files = sorted((FILTERS_DIR / name).rglob("*.zig")) + sorted(SDK_DIR.rglob("*.zig"))
    return [f for f in files if f.is_file()]


def _stamp(name: str) -> dict:
    h = hashlib.sha256()
    for f in _sources(name):
        h.update(str(f.relative_to(FILTERS_DIR)).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return {"zig": zig_version(), "sources": h.hexdigest(), "flags": " ".join(_flags())}


def _flags() -> list[str]:
    return ["-target", "wasm32-freestanding", "-fno-entry", "-rdynamic", "-O", "ReleaseSmall", "-fstrip"]


def build_filter(name: str, *, force: bool = False, out_dir: Path | None = None, cache_dir: Path | None = None,
                 verbose: bool = False) -> Path:
    """Build one filter and return the path of its .wasm (skips work when up to date).
    `cache_dir` overrides Zig's local cache (a fresh one proves the output does not depend on it)."""
    main = FILTERS_DIR / name / "main.zig"
    if not main.is_file():
        raise BuildError(f"unknown filter {name!r}: {main} does not exist (known: {', '.join(FILTERS)})")
    out_dir = Path(out_dir) if out_dir else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    # Processes building the same filter at once (pytest-xdist workers) would write the same .tmp:
    # the later ones wait here, then find the first one's build up to date.
    with open(out_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return _build_locked(name, main, out_dir, force=force, cache_dir=cache_dir, verbose=verbose)


def _build_locked(name: str, main: Path, out_dir: Path, *, force: bool, cache_dir: Path | None, verbose: bool) -> Path:
    out = out_dir / f"{name}.wasm"
    stamp_file = out_dir / f"{name}.stamp.json"
    stamp = _stamp(name)
    if not force and out.is_file() and stamp_file.is_file():
        try:
            if json.loads(stamp_file.read_text()) == stamp:
                if verbose:
                    print(f"{name}: up to date ({out})")
                return out
        except ValueError:
            pass
    tmp = out.with_suffix(".wasm.tmp")
    cache = Path(cache_dir) if cache_dir else CACHE_DIR
    # Relative paths keep the command (and anything Zig might record) independent of the checkout location.
    cmd = _zig_cmd() + ["build-exe"] + _flags() + [
        "--cache-dir", os.path.relpath(cache, FILTERS_DIR),
        "--global-cache-dir", os.path.relpath(CACHE_DIR / "global", FILTERS_DIR),
        "--name", name,
        f"-femit-bin={tmp}",
        "--dep", "proxy_wasm", f"-Mroot={os.path.relpath(main, FILTERS_DIR)}",
        f"-Mproxy_wasm={os.path.relpath(SDK_DIR / 'proxy_wasm.zig', FILTERS_DIR)}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=FILTERS_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"building {name} failed (exit {proc.returncode}):\n{proc.stderr.strip()}\n"
                         f"command: {' '.join(cmd)}")
    os.replace(tmp, out)
    stamp_file.write_text(json.dumps(stamp, indent=1, sort_keys=True))
    if verbose:
        print(f"{name}: built {out} ({out.stat().st_size} bytes, {time.perf_counter() - t0:.1f} s)")
    return out


def build_all(names=None, *, force: bool = False, verbose: bool = False) -> dict[str, Path]:
    return {n: build_filter(n, force=force, verbose=verbose) for n in (names or FILTERS)}


def main(argv: list[str]) -> int:
    force = "--force" in argv
    names = [a for a in argv if not a.startswith("-")]
    try:
        build_all(names or None, force=force, verbose=True)
    except BuildError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
