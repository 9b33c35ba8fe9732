"""The same harness with Envoy from the envoyproxy/envoy:v1.40.0 image (skips without an engine)."""

from __future__ import annotations

import httpx
import pytest

from proxywasm_host.envoy import DOCKER_IMAGE, EchoUpstream, WasmFilter
from proxywasm_host.envoy.fixtures import docker_unavailable_reason, envoy_harness

_reason = docker_unavailable_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"Docker test skipped: {_reason}")


def test_envoy_in_docker_proxies_and_hot_reloads(upstream: EchoUpstream, wasm_v1: bytes, wasm_v2: bytes) -> None:
    with envoy_harness([WasmFilter("jwt_authn", wasm_v1, configuration="d1")], upstream=upstream,
                       use_docker=True, start_timeout=120) as env:
        assert env.docker_image == DOCKER_IMAGE
        r = httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=10)
        assert (r.status_code, r.headers["x-filter-version"]) == (200, "v1")
        pid = env.pid
        env.publish("jwt_authn", wasm_v2, configuration="d2")
        r = httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=10)
        assert (r.headers["x-filter-version"], r.headers["x-filter-config"]) == ("v2", "d2")
        assert env.pid == pid
