"""Build hand-written WAT test filters (wasmtime.wat2wasm) with simple placeholder substitution."""

from __future__ import annotations

import os
from pathlib import Path

import wasmtime


def build_wat(source: str | os.PathLike[str], replacements: dict[str, str] | None = None) -> bytes:
    """Compile a ``.wat`` file (or WAT text) to wasm bytes after literal replacements.

    Replacements must keep the byte length (hand-written WAT hard-codes string
    lengths), which is checked here rather than producing a subtly broken module.
    """
    text = Path(source).read_text() if not str(source).lstrip().startswith("(") else str(source)
    for old, new in (replacements or {}).items():
        if len(old.encode()) != len(new.encode()):
            raise ValueError(f"replacement {old!r} -> {new!r} changes the byte length")
        text = text.replace(old, new)
    return bytes(wasmtime.wat2wasm(text))
