"""The proxywasm_envoy fixture under pytest-xdist: two workers start real Envoys at the same
time, each on ports Envoy picked (no fixed port to collide on)."""
from __future__ import annotations

import pytest

from conftest import version_filter

pytest_plugins = ["pytester"]


def test_envoy_fixture_in_two_xdist_workers(pytester):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install pytest-xdist)")
    (pytester.path / "v1.wasm").write_bytes(version_filter("v1"))
    pytester.makepyfile(
        """
        import httpx
        import pytest
        from proxywasm_host.envoy import WasmFilter

        @pytest.mark.parametrize("n", range(4))
        def test_envoy(proxywasm_envoy, n):
            env = proxywasm_envoy([WasmFilter("demo", "v1.wasm", configuration=f"c{n}")], concurrency=1)
            r = httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=10)
            assert (r.status_code, r.headers["x-filter-config"]) == (200, f"c{n}")
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=4)
