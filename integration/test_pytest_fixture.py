"""The package's pytest plugin: the proxywasm_envoy fixture starts a real Envoy with a
filter, and a failing test's report carries Envoy's wasm log."""
from pathlib import Path

pytest_plugins = ["pytester"]

WAT = Path(__file__).parent / "wat" / "version_filter.wat"


def _plugin_args() -> list[str]:
    from importlib.metadata import entry_points

    if any(ep.value == "proxywasm_host.pytest_plugin" for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "proxywasm_host.pytest_plugin"]


def test_proxywasm_envoy_fixture(pytester):
    from proxywasm_host.envoy.wat import build_wat

    pytester.path.joinpath("filter.wasm").write_bytes(build_wat(WAT))
    pytester.makepyfile(
        """
        import httpx
        from proxywasm_host.envoy import WasmFilter

        def test_passes(proxywasm_envoy):
            env = proxywasm_envoy([WasmFilter("f", "filter.wasm", configuration="cfg")], concurrency=1)
            r = httpx.get(env.url("/"), headers={"x-allow": "1"})
            assert r.status_code == 200 and r.headers["x-filter-config"] == "cfg"

        def test_fails(proxywasm_envoy):
            proxywasm_envoy([WasmFilter("f", "filter.wasm", configuration="cfg")], concurrency=1)
            assert False
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args())
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*envoy wasm log (envoy0*"])
