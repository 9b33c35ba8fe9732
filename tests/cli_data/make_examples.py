"""Write the README's CLI example files into a directory: each *.wat here compiled to .wasm,
ratelimit.wasm (a copy of filter.wasm, so the ratelimit schema applies), corrupt.wasm and
the Envoy YAML files.

    python tests/cli_data/make_examples.py /tmp/clidemo && cd /tmp/clidemo && proxywasm inspect missing_import.wasm
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import wasmtime

HERE = Path(__file__).parent


def build(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for wat in HERE.glob("*.wat"):
        if wat.stem == "hint":  # a template (the toolchain tests fill in @HINT@)
            continue
        (dest / f"{wat.stem}.wasm").write_bytes(wasmtime.wat2wasm(wat.read_text()))
    shutil.copy(dest / "filter.wasm", dest / "ratelimit.wasm")
    (dest / "corrupt.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    for yaml in HERE.glob("*.yaml"):
        shutil.copy(yaml, dest / yaml.name)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIRECTORY")
    print(build(Path(sys.argv[1])))
