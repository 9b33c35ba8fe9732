"""Locate (building on demand) the project's filter modules for benchmarks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def filter_module(name: str) -> bytes:
    out = ROOT / "filters" / "out" / f"{name}.wasm"
    subprocess.run([sys.executable, str(ROOT / "filters" / "build.py"), name], check=True, capture_output=True)
    if not out.is_file():
        raise FileNotFoundError(out)
    return out.read_bytes()


def jwt_module() -> bytes:
    return filter_module("jwt_authn")
