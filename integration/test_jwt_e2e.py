"""The Zig jwt_authn filter (filters/out/jwt_authn.wasm) in a real Envoy 1.40, driven with httpx.

One Envoy (two workers) serves the whole module; each test publishes the configuration it
needs through ECDS. Requests carry ``Host: api.example`` so the default realm is predictable.
"""

from __future__ import annotations

import json
import time
from typing import Iterator

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from proxywasm_host.envoy import EchoUpstream, EnvoyHarness, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness
from proxywasm_host.envoy.wat import build_wat

from scenarios import (AUTHORITY, ISS, JWKS_BROKEN_PATH, JWKS_PATH, Keys, bearer, decode_payload, jwt_local_config,
                       jwt_local_scenario, jwt_remote_config, wasm_path)


@pytest.fixture(scope="module")
def jwt_up(keys: Keys) -> Iterator[EchoUpstream]:
    with EchoUpstream() as up:
        up.set_response(JWKS_PATH, keys.jwks())
        yield up


@pytest.fixture(scope="module")
def jwt_env(jwt_up: EchoUpstream, keys: Keys) -> Iterator[EnvoyHarness]:
    spec = WasmFilter("jwt_authn", wasm_path("jwt_authn"), configuration=jwt_local_config(keys))
    with envoy_harness([spec], upstream=jwt_up, concurrency=2) as env:
        yield env


@pytest.fixture
def local(jwt_env: EnvoyHarness, keys: Keys) -> EnvoyHarness:
    jwt_env.publish("jwt_authn", configuration=jwt_local_config(keys))
    return jwt_env


def get(env: EnvoyHarness, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(env.url(path), headers={"host": AUTHORITY, **(headers or {})}, timeout=10)


def assert_401(r: httpx.Response, reason: str, *, error: bool = True) -> None:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.text == reason
    want = 'Bearer realm="api.example", error="invalid_token"' if error else 'Bearer realm="api.example"'
    assert r.headers.get_list("www-authenticate") == [want]


def test_valid_token_is_forwarded_with_claims(local: EnvoyHarness, keys: Keys) -> None:
    token = keys.token("alice")
    r = get(local, "/api/orders?id=7", bearer(token))
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen["x-jwt-sub"] == "alice"
    assert decode_payload(seen["x-jwt-payload"])["iss"] == ISS
    assert "authorization" not in seen  # forward: false
    assert r.json()["path"] == "/api/orders?id=7"
    assert "www-authenticate" not in r.headers


def test_expired_token(local: EnvoyHarness, keys: Keys) -> None:
    assert_401(get(local, "/api", bearer(keys.token(exp_in=-3600))), "Jwt is expired")


def test_token_within_clock_skew_is_accepted(local: EnvoyHarness, keys: Keys) -> None:
    # exp 30 s ago, default skew 60 s
    assert get(local, "/api", bearer(keys.token(exp_in=-30))).status_code == 200


def test_bad_signature(local: EnvoyHarness, keys: Keys) -> None:
    assert_401(get(local, "/api", bearer(keys.token(bad_signature=True))), "Jwt verification fails")


def test_missing_token(local: EnvoyHarness) -> None:
    assert_401(get(local, "/api"), "Jwt is missing", error=False)
    assert_401(get(local, "/api", {"authorization": "Basic YWxpY2U6cHc="}), "Jwt is missing", error=False)


def test_wrong_audience_is_403(local: EnvoyHarness, keys: Keys) -> None:
    r = get(local, "/api", bearer(keys.token(aud="someone-else")))
    assert r.status_code == 403 and r.text == "Audiences in Jwt are not allowed"


def test_bypassed_path_needs_no_token(local: EnvoyHarness) -> None:
    r = get(local, "/health")
    assert r.status_code == 200 and r.json()["path"] == "/health"
    r = get(local, "/health/deep?x=1", {"authorization": "Bearer not-checked"})
    assert r.status_code == 200
    assert r.json()["headers"]["authorization"] == "Bearer not-checked"  # bypass touches nothing


def test_spoofed_claim_headers_are_replaced(local: EnvoyHarness, keys: Keys) -> None:
    r = get(local, "/api", {**bearer(keys.token("alice")), "x-jwt-sub": "root", "x-jwt-payload": "e30"})
    assert r.status_code == 200
    seen = r.json()["header_list"]
    assert [v for k, v in seen if k == "x-jwt-sub"] == ["alice"]
    assert len([v for k, v in seen if k == "x-jwt-payload"]) == 1


def test_whole_local_scenario(local: EnvoyHarness, keys: Keys, play) -> None:
    play(local, jwt_local_scenario(keys))


def test_remote_jwks_served_from_cluster(jwt_env: EnvoyHarness, keys: Keys) -> None:
    """JWKS fetched with proxy_http_call from jwks_cluster (the echo upstream, set_response)."""
    jwt_env.publish("jwt_authn", configuration=jwt_remote_config())
    before = jwt_env.stats("jwks_fetch")
    # Two connections (Envoy may put them on different workers; each worker VM fetches its
    # own key set on its first request, which waits paused until the fetch completes).
    with httpx.Client(timeout=10) as c1, httpx.Client(timeout=10) as c2:
        rs = [c.get(jwt_env.url("/api"), headers={"host": AUTHORITY, **bearer(keys.token(f"u{i}"))})
              for i, c in enumerate((c1, c2, c1, c2))]
    assert [r.status_code for r in rs] == [200] * 4, [r.text for r in rs]
    assert [r.json()["headers"]["x-jwt-sub"] for r in rs] == ["u0", "u1", "u2", "u3"]
    after = jwt_env.stats("jwks_fetch")
    ok = {k: after[k] - before.get(k, 0) for k in after if k.endswith("jwks_fetch_success")}
    assert ok and all(v >= 1 for v in ok.values()), after
    r = get(jwt_env, "/api", bearer(keys.token(bad_signature=True)))
    assert r.status_code == 401 and r.text == "Jwt verification fails"
    assert r.headers["www-authenticate"] == 'Bearer realm="corp", error="invalid_token"'


def test_remote_jwks_fetch_failure(jwt_env: EnvoyHarness, jwt_up: EchoUpstream, keys: Keys) -> None:
    jwt_env.publish("jwt_authn", configuration=jwt_remote_config(JWKS_BROKEN_PATH))
    r = get(jwt_env, "/api", bearer(keys.token()))
    assert r.status_code == 401 and r.text == "Jwks remote fetch is failed"
    jwt_up.set_response("/jwks-503.json", keys.jwks(), status=503)
    jwt_env.publish("jwt_authn", configuration=jwt_remote_config("/jwks-503.json"))
    r = get(jwt_env, "/api", bearer(keys.token()))  # a 503 JWKS answer fails the request (no retry loop)
    assert r.status_code == 401 and r.text == "Jwks remote fetch is failed"


def test_invalid_configuration_is_refused_and_old_one_keeps_serving(local: EnvoyHarness, keys: Keys) -> None:
    from proxywasm_host.envoy import PublishError

    with pytest.raises(PublishError):
        local.publish("jwt_authn", configuration=json.dumps({"providers": [{"name": "x"}]}))
    assert get(local, "/api", bearer(keys.token())).status_code == 200
    assert get(local, "/api").status_code == 401


# A second Wasm filter that copies the properties jwt_authn set into request headers, so the
# echo upstream shows what a later filter can read (Envoy: filter state "wasm.<name>").
PROPERTY_READER_WAT = """
(module
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 256) "jwt_payload")
  (data (i32.const 272) "x-read-jwt-payload")
  (data (i32.const 304) "jwt_header")
  (data (i32.const 320) "x-read-jwt-header")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1))))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func $copy (param $name i32) (param $nlen i32) (param $hdr i32) (param $hlen i32)
    (if (i32.eqz (call $get_prop (local.get $name) (local.get $nlen) (i32.const 128) (i32.const 132)))
      (then (drop (call $add_hv (i32.const 0) (local.get $hdr) (local.get $hlen)
                                (i32.load (i32.const 128)) (i32.load (i32.const 132)))))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 4096))
    (call $copy (i32.const 256) (i32.const 11) (i32.const 272) (i32.const 18))
    (call $copy (i32.const 304) (i32.const 10) (i32.const 320) (i32.const 17))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
"""


def test_payload_and_header_properties_reach_a_later_wasm_filter(keys: Keys) -> None:
    cfg = json.loads(jwt_local_config(keys))
    cfg["providers"][0] |= {"payload_in_property": "jwt_payload", "header_in_property": "jwt_header"}
    chain = [WasmFilter("jwt_authn", wasm_path("jwt_authn"), configuration=json.dumps(cfg)),
             WasmFilter("reader", build_wat(PROPERTY_READER_WAT))]
    with EchoUpstream() as up, envoy_harness(chain, upstream=up, concurrency=1) as env:
        token = keys.token("carol")
        r = get(env, "/api", bearer(token))
        assert r.status_code == 200, r.text
        seen = r.json()["headers"]
        header_b64, payload_b64_, _ = token.split(".")
        assert json.loads(seen["x-read-jwt-payload"]) == decode_payload(payload_b64_)
        assert json.loads(seen["x-read-jwt-header"]) == decode_payload(header_b64)
        r = get(env, "/health")  # bypassed: no verification, no property
        assert r.status_code == 200 and "x-read-jwt-payload" not in r.json()["headers"]


def test_es512_and_query_token_in_envoy(jwt_env: EnvoyHarness) -> None:
    """ES512 (P-521) verified inside Envoy's V8, the token taken percent-encoded from the query."""
    key = ec.generate_private_key(ec.SECP521R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "p521"}
    jwt_env.publish("jwt_authn", configuration=json.dumps({"providers": [{
        "name": "p", "issuer": ISS, "local_jwks": {"keys": [jwk]}, "from_params": ["access_token"],
        "claim_to_headers": [{"claim_name": "sub", "header_name": "x-jwt-sub"}]}]}))
    token = pyjwt.encode({"iss": ISS, "sub": "dora", "exp": int(time.time()) + 600}, key, algorithm="ES512",
                         headers={"kid": "p521"})
    r = get(jwt_env, "/api?x=1&access_token=" + token.replace(".", "%2E"))
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["x-jwt-sub"] == "dora" and r.json()["path"] == "/api?x=1"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = get(jwt_env, "/api?access_token=" + forged)
    assert r.status_code == 401 and r.text == "Jwt verification fails"
