"""Fixtures for the Zig filter tests: the filters are built on demand (so a
fresh clone's `make test` works), keys are generated once per session, and
every test gets its own Host with a fixed virtual start time."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from filterkit import T0, Keys  # noqa: E402
from build import build_filter  # noqa: E402  (filterkit puts filters/ on sys.path)

from proxywasm_host import Host  # noqa: E402


@pytest.fixture(scope="session")
def jwt_wasm() -> bytes:
    return build_filter("jwt_authn").read_bytes()


@pytest.fixture(scope="session")
def ratelimit_wasm() -> bytes:
    return build_filter("ratelimit").read_bytes()


@pytest.fixture
def host() -> Host:
    h = Host(start_time=T0)
    h.add_cluster("jwks_cluster")
    return h


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()
