"""filters/build.py: incremental builds with no WASI imports (reproducible: integration/test_reproducible_build.py)."""
from __future__ import annotations

import pytest
import wasmtime

from build import FILTERS, build_filter


def test_build_is_incremental(tmp_path):
    out = build_filter("ratelimit", out_dir=tmp_path)
    stamp = tmp_path / "ratelimit.stamp.json"
    first = (out.stat().st_mtime_ns, stamp.stat().st_mtime_ns)
    again = build_filter("ratelimit", out_dir=tmp_path)
    assert again == out
    assert (out.stat().st_mtime_ns, stamp.stat().st_mtime_ns) == first  # nothing rewritten
    stamp.write_text("{}")                                               # stale stamp: rebuild
    build_filter("ratelimit", out_dir=tmp_path)
    assert stamp.read_text() != "{}"


@pytest.mark.parametrize("name", FILTERS)
def test_module_shape(name):
    module = wasmtime.Module(wasmtime.Engine(), build_filter(name).read_bytes())
    imports = {(i.module, i.name) for i in module.imports}
    assert imports and all(mod == "env" and n.startswith("proxy_") for mod, n in imports), imports
    exports = {e.name for e in module.exports}
    assert {"proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_configure",
            "proxy_on_request_headers", "memory"} <= exports
