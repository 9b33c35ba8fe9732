"""Fixtures for the real-Envoy e2e tests (logic lives in proxywasm_host.envoy.fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from scenarios import Keys

from proxywasm_host.envoy import EchoUpstream, EnvoyHarness, WasmFilter
from proxywasm_host.envoy.fixtures import echo_upstream, envoy_harness, harness_report_sections
from proxywasm_host.envoy.wat import build_wat

WAT_DIR = Path(__file__).parent / "wat"


def version_filter(tag: str = "v1") -> bytes:
    """The test filter with its 2-character version tag set (see wat/version_filter.wat)."""
    return build_wat(WAT_DIR / "version_filter.wat", {"@V": tag})


@pytest.fixture(scope="session")
def wasm_v1() -> bytes:
    return version_filter("v1")


@pytest.fixture(scope="session")
def wasm_v2() -> bytes:
    return version_filter("v2")


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    with echo_upstream() as up:
        yield up


@pytest.fixture
def envoy(upstream: EchoUpstream, wasm_v1: bytes) -> Iterator[EnvoyHarness]:
    """Envoy with the version filter v1 mounted via ECDS as `jwt_authn` (config "cfg-one")."""
    with envoy_harness([WasmFilter("jwt_authn", wasm_v1, configuration="cfg-one")], upstream=upstream) as env:
        yield env


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for title, text in harness_report_sections(getattr(item, "funcargs", {})):
            rep.sections.append((title, text))


@pytest.fixture(scope="session")
def keys() -> "Keys":
    """RSA signing keys for the Zig jwt_authn filter e2e tests (see scenarios.py)."""
    from scenarios import Keys

    return Keys()


@pytest.fixture(scope="session")
def play() -> Any:
    """``play(env, case)``: a scenario's requests (scenarios.py) through an ECDS-mounted Envoy
    harness, in order on one keep-alive connection; fails unless each status is the expected one.
    Returns the httpx responses (the e2e tests check Envoy alone; test_parity.py compares)."""
    import httpx

    def run(env: EnvoyHarness, case: Any) -> list[httpx.Response]:
        with httpx.Client(timeout=10) as client:
            out = [client.request(r.method, env.url(r.path), headers=r.headers) for r in case.scenario.requests]
        bad = case.mismatches([r.status_code for r in out])
        assert not bad, f"{case.name}:\n" + "\n".join(bad)
        return out

    return run
