"""The on-disk compile cache shared by processes that miss it at the same time (pytest-xdist
workers, parallel CLI runs): one of them compiles, the others wait and load its artifact."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from watgen import build

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 3

# Each worker says it is ready, waits for the start file, loads the module and prints whether it
# came from the cache.
LOADER = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from proxywasm_host import load_module
wasm = Path(sys.argv[1]).read_bytes()
start = Path(sys.argv[2])
(start.parent / f"ready-{{os.getpid()}}").touch()
while not start.exists():
    time.sleep(0.005)
print("cached" if load_module(wasm).from_cache else "compiled")
"""


def _big_module(tag: str) -> bytes:
    """A module that takes a while to compile, so that the workers overlap."""
    body = " ".join("(local.set $x (i32.add (i32.mul (local.get $x) (i32.const 31)) (i32.const 7)))" for _ in range(40))
    funcs = "".join(f'(func (export "f{i}") (param $x i32) (result i32) {body} (local.get $x))' for i in range(400))
    return build({}, {"unique": tag}, extra=funcs)


def test_processes_missing_the_cache_at_once_compile_once(tmp_path):
    wasm = tmp_path / "big.wasm"
    wasm.write_bytes(_big_module(f"processes-{id(tmp_path)}"))
    cache, start = tmp_path / "cache", tmp_path / "start"
    env = {"PROXYWASM_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", LOADER.format(root=str(ROOT)), str(wasm), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(WORKERS)]
    while len(list(tmp_path.glob("ready-*"))) < WORKERS and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    start.touch()
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["cached"] * (WORKERS - 1) + ["compiled"]
    assert sorted(p.suffix for p in cache.iterdir()) == [".cwasm", ".sha256"]  # no lock file left behind
