"""Build the Rust example filter (examples/rust, proxy-wasm crate) for wasm32 into a cache.

The build never writes inside the repository: cargo's target directory and the finished module
live in ``$PROXYWASM_CACHE_DIR`` (default ``~/.cache/proxywasm-host``) under ``rust-build/``.
The module is ``rust-build/<hash>/edge_guard.wasm``, where the hash covers the sources,
Cargo.toml, Cargo.lock, the cargo flags and the toolchain (``rustc -vV``, ``cargo -V``, the
linker); it is reused while the hash is unchanged.

A toolchain qualifies when it can produce wasm32-unknown-unknown code, in one of two ways:

* rustup with the target installed (``rustup target add wasm32-unknown-unknown``): a plain
  ``cargo build --target wasm32-unknown-unknown``;
* a rustc whose sysroot holds the standard library sources (Debian's ``rust-web-src``, or
  rustup's ``rust-src`` component): the standard library is compiled for wasm32 with
  ``-Zbuild-std`` (``RUSTC_BOOTSTRAP=1``), the first build takes 1-2 minutes.

Debian bookworm, no rustup downloads needed (bookworm-security ships Rust 1.96 as "rustc-web",
with LLVM 22; it replaces Debian's old ``rustc``/``cargo`` packages, not a rustup install)::

    apt-get update && apt-get install -y --no-install-recommends rustc-web cargo-web rust-web-src lld-22

``RUSTC``/``CARGO`` select the toolchain explicitly. Without ``rust-lld`` (rustup ships it,
Debian does not) the linker is ``wasm-ld`` from the LLVM version rustc was built with.

    python examples/rust/build_rust.py        # prints the .wasm path
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent
TARGET = "wasm32-unknown-unknown"
CRATE_WASM = "proxywasm_rust_example.wasm"  # what cargo names the cdylib
WASM_NAME = "edge_guard.wasm"
CARGO_ARGS = ["build", "--release", "--locked", "--target", TARGET]
BUILD_STD_ARGS = ["-Zbuild-std=std,panic_abort"]
TIMEOUT_S = 900

INSTALL_HINT = (
    "on Debian bookworm: `apt-get update && apt-get install -y --no-install-recommends "
    "rustc-web cargo-web rust-web-src lld-22` (Rust 1.96 from bookworm-security; it replaces Debian's "
    "`rustc`/`cargo` packages); with rustup: `rustup target add wasm32-unknown-unknown`"
)


class ToolchainMissing(RuntimeError):
    """No Rust toolchain here can build wasm32: the tests skip with this message."""


@dataclass(frozen=True)
class Toolchain:
    rustc: str
    cargo: str
    mode: str  # "target-installed" or "build-std"
    linker: str | None  # None: rustc's default (rust-lld)
    version: str  # rustc -vV + cargo -V

    def env(self) -> dict[str, str]:
        env = dict(os.environ, RUSTC=self.rustc)
        env.pop("RUSTFLAGS", None)  # flags would change std's build and are not part of the hash
        env.pop("CARGO_ENCODED_RUSTFLAGS", None)
        if self.mode == "build-std":
            env["RUSTC_BOOTSTRAP"] = "1"
        if self.linker:
            env["CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER"] = self.linker
        return env

    def cargo_args(self) -> list[str]:
        return [*CARGO_ARGS, *(BUILD_STD_ARGS if self.mode == "build-std" else [])]


def _out(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _candidates() -> list[tuple[str, str]]:
    """(rustc, cargo) pairs to try: $RUSTC/$CARGO, then PATH, then Debian's /usr/bin."""
    pairs = []
    if os.environ.get("RUSTC"):
        rustc = shutil.which(os.environ["RUSTC"]) or os.environ["RUSTC"]
        sibling = str(Path(rustc).with_name("cargo"))
        pairs.append((rustc, os.environ.get("CARGO") or sibling))
    for rustc in (shutil.which("rustc"), "/usr/bin/rustc"):
        if rustc and os.path.exists(rustc):
            pairs.append((rustc, str(Path(rustc).with_name("cargo"))))
    seen, unique = set(), []
    for pair in pairs:
        if pair not in seen:
            seen.add(pair)
            unique.append(pair)
    return unique


def _linker(rustc: str, sysroot: Path, verbose: str) -> tuple[bool, str | None]:
    """(usable, linker override): rust-lld when rustc ships it, else wasm-ld of rustc's LLVM major."""
    host = re.search(r"^host: (\S+)", verbose, re.M)
    if host and any((sysroot / "lib" / "rustlib" / host.group(1) / "bin" / n).exists() for n in ("rust-lld", "gcc-ld")):
        return True, None
    if shutil.which("rust-lld"):
        return True, None
    llvm = re.search(r"^LLVM version: (\d+)", verbose, re.M)
    if llvm:
        for path in (f"/usr/lib/llvm-{llvm.group(1)}/bin/wasm-ld", shutil.which(f"wasm-ld-{llvm.group(1)}")):
            if path and os.path.exists(path):
                return True, path
    return False, None


def _probe(rustc: str, cargo: str) -> tuple[Toolchain | None, str]:
    verbose = _out([rustc, "-vV"])
    cargo_v = _out([cargo, "-V"])
    if verbose is None or cargo_v is None:
        return None, f"{rustc}: rustc -vV / {cargo} -V failed"
    sysroot = Path((_out([rustc, "--print", "sysroot"]) or "").strip())
    release = re.search(r"^release: (\S+)", verbose, re.M)
    target_dir = sysroot / "lib" / "rustlib" / TARGET / "lib"
    target_std = list(target_dir.glob("libstd-*.rlib")) if target_dir.is_dir() else []
    rust_src = sysroot / "lib" / "rustlib" / "src" / "rust" / "library" / "Cargo.lock"
    # rustup installs the target's std for its own version only; Debian's libstd-rust-dev-wasm32
    # (rustc 1.63) shares /usr/lib/rustlib with rustc-web, so a std there may belong to another
    # rustc: prefer building std from matching sources when they are present.
    if rust_src.exists():
        mode = "build-std"
    elif target_std and "rustup" in str(sysroot):
        mode = "target-installed"
    else:
        return None, (f"{rustc} ({release.group(1) if release else '?'}): no {TARGET} standard library "
                      f"and no rust-src in {sysroot}")
    ok, linker = _linker(rustc, sysroot, verbose)
    if not ok:
        llvm = re.search(r"^LLVM version: (\d+)", verbose, re.M)
        major = llvm.group(1) if llvm else "N"
        return None, f"{rustc}: no rust-lld and no wasm-ld-{major} (apt-get install lld-{major})"
    return Toolchain(rustc, cargo, mode, linker, verbose + cargo_v + f"mode={mode} linker={linker}\n"), ""


def find_toolchain() -> Toolchain:
    reasons = []
    for rustc, cargo in _candidates():
        toolchain, reason = _probe(rustc, cargo)
        if toolchain:
            return toolchain
        reasons.append(reason)
    raise ToolchainMissing(
        "no Rust toolchain that builds wasm32 (" + ("; ".join(reasons) or "no rustc found") + "): " + INSTALL_HINT)


def _inputs() -> list[Path]:
    return [SRC / "Cargo.toml", SRC / "Cargo.lock", *sorted((SRC / "src").rglob("*.rs"))]


def source_hash(toolchain: Toolchain) -> str:
    h = hashlib.sha256(" ".join(toolchain.cargo_args()).encode() + b"\0" + toolchain.version.encode())
    for f in _inputs():
        h.update(f.relative_to(SRC).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def cache_root() -> Path:
    base = os.environ.get("PROXYWASM_CACHE_DIR") or Path.home() / ".cache" / "proxywasm-host"
    return Path(base) / "rust-build"


def build(force: bool = False) -> Path:
    """The path of the built module; runs cargo only when the cache has no copy for this hash."""
    toolchain = find_toolchain()
    final = cache_root() / source_hash(toolchain)
    wasm = final / WASM_NAME
    if wasm.exists() and not force:
        return wasm
    # One target directory per toolchain: source edits rebuild only this crate, not std.
    target_dir = cache_root() / ("target-" + hashlib.sha256(toolchain.version.encode()).hexdigest()[:12])
    cmd = [toolchain.cargo, *toolchain.cargo_args(), "--manifest-path", str(SRC / "Cargo.toml"),
           "--target-dir", str(target_dir)]
    proc = subprocess.run(cmd, env=toolchain.env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}")
    built = target_dir / TARGET / "release" / CRATE_WASM
    final.mkdir(parents=True, exist_ok=True)
    tmp = final / f"{WASM_NAME}.tmp-{os.getpid()}"
    shutil.copyfile(built, tmp)
    tmp.replace(wasm)
    return wasm


def module_for_tests() -> str:
    """The built module's path for a pytest fixture; skips (saying how to get a toolchain) only
    when no toolchain qualifies. A failing build fails the test."""
    import pytest

    try:
        return str(build())
    except ToolchainMissing as missing:
        pytest.skip(str(missing))


if __name__ == "__main__":
    t0 = time.monotonic()
    path = build(force="--force" in sys.argv)
    print(f"{path}  ({time.monotonic() - t0:.1f} s)")
