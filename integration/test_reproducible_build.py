"""filters/build.py builds reproducibly: two clean builds of each filter, each with its own output
and Zig cache directory, give the same bytes. In `make e2e` (two full Zig builds per filter are
most of the time `make test` took)."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filters"))
from build import FILTERS, build_filter  # noqa: E402


@pytest.mark.parametrize("name", FILTERS)
def test_build_is_reproducible(tmp_path: Path, name: str) -> None:
    # Separate output and Zig cache directories: nothing is reused between the two builds.
    a = build_filter(name, force=True, out_dir=tmp_path / "a", cache_dir=tmp_path / "cache-a")
    b = build_filter(name, force=True, out_dir=tmp_path / "b", cache_dir=tmp_path / "cache-b")
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()
