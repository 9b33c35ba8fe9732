"""Scenario data for the Zig filters (filters/out): signing keys and tokens, the filters'
configurations, and the parity scenarios with the status Envoy must answer to each request.

A ``Case`` is a ``proxywasm_host.parity.Scenario`` plus those expectations. test_parity.py
runs the scenario through a real Envoy 1.40 and the host (``proxywasm_parity``) and checks the
expectations on Envoy's side of the report, so that both sides being wrong the same way cannot
pass; the e2e tests play the same requests through an ECDS-mounted Envoy.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from proxywasm_host.parity import Filter, Request, Response, Scenario

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "filters") not in sys.path:
    sys.path.insert(0, str(ROOT / "filters"))

AUTHORITY = "api.example"  # sent as Host / :authority: jwt_authn's default realm comes from it
ISS = "https://issuer.example"
AUD = "api"
JWKS_CLUSTER = "jwks_cluster"     # jwt_remote_config's remote_jwks.cluster
JWKS_PATH = "/jwks.json"          # served by the echo upstream (set_response) in the e2e tests
JWKS_BROKEN_PATH = "/no-jwks.json"  # not registered there: the echo document is not a JWKS -> fetch fails


def wasm_path(name: str) -> str:
    """filters/out/<name>.wasm, built on demand (incremental: a no-op when up to date)."""
    from build import build_filter  # filters/build.py

    return str(build_filter(name))


# ---------------------------------------------------------------- keys and tokens

class Keys:
    """The signing key whose public half the filter trusts, and a second key with the same kid."""

    def __init__(self) -> None:
        self.good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = dict(RSAAlgorithm.to_jwk(self.good.public_key(), as_dict=True))
        jwk.update(kid="k1", alg="RS256", use="sig")
        return {"keys": [jwk]}

    def token(self, sub: str = "alice", *, exp_in: int = 600, aud: str = AUD, bad_signature: bool = False,
              extra: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        claims = {"iss": ISS, "aud": aud, "sub": sub, "iat": now, "exp": now + exp_in}
        claims.update(extra or {})
        key = self.other if bad_signature else self.good
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def payload_b64(token: str) -> str:
    return token.split(".")[1]


def decode_payload(header_value: str) -> dict[str, Any]:
    pad = "=" * (-len(header_value) % 4)
    return json.loads(base64.urlsafe_b64decode(header_value + pad))


def unique(prefix: str) -> str:
    """A fresh rate-limit domain: shared data outlives ECDS reloads, so every run gets new buckets."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- configurations

def jwt_local_config(keys: Keys, *, realm: str | None = None) -> str:
    cfg: dict[str, Any] = {
        "providers": [{
            "name": "main", "issuer": ISS, "audiences": [AUD], "local_jwks": keys.jwks(),
            "forward_payload_header": "x-jwt-payload",
            "claim_to_headers": [{"claim_name": "sub", "header_name": "x-jwt-sub"}],
        }],
        "rules": [{"prefix": "/health"}, {"prefix": "/", "requires": "main"}],
    }
    if realm is not None:
        cfg["realm"] = realm
    return json.dumps(cfg)


def jwt_remote_config(path: str = JWKS_PATH) -> str:
    return json.dumps({
        "providers": [{
            "name": "corp", "issuer": ISS, "audiences": [AUD],
            "remote_jwks": {"cluster": JWKS_CLUSTER, "path": path, "authority": "jwks.example",
                            "timeout_ms": 2000, "cache_duration_s": 600},
            "claim_to_headers": [{"claim_name": "sub", "header_name": "x-jwt-sub"}],
        }],
        "realm": "corp",
    })


def ratelimit_config(domain: str, **over: Any) -> str:
    cfg: dict[str, Any] = {
        "domain": domain,
        "bucket": {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": "1m"},
        "response_headers": True,
        "routes": [
            {"name": "health", "path": "/health", "unlimited": True},
            {"name": "per-user", "prefix": "/user", "bucket": {"max_tokens": 2, "tokens_per_fill": 1,
                                                               "fill_interval": "1m"},
             "descriptors": [{"source": "header", "name": "x-user"}]},
        ],
    }
    cfg.update(over)
    return json.dumps(cfg)


def chain_ratelimit_config(domain: str) -> str:
    """Keyed by the claim header jwt_authn forwards (x-jwt-sub)."""
    return json.dumps({
        "domain": domain,
        "bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "1m"},
        "descriptors": [{"source": "header", "name": "x-jwt-sub"}],
        "response_headers": True,
    })


# ---------------------------------------------------------------- scenarios with expectations

@dataclass
class Case:
    """A parity scenario and, per request, the status Envoy must answer and why."""

    name: str
    scenario: Scenario
    expect: list[tuple[int | None, str]]  # None: no expectation for that request

    def mismatches(self, statuses: Sequence[int]) -> list[str]:
        """The requests whose status is not the expected one (empty: all as expected)."""
        return [f"#{i} {r.path} ({note}): expected {want}, got {got}"
                for i, (r, (want, note), got) in enumerate(zip(self.scenario.requests, self.expect, statuses))
                if want is not None and want != got]


def _zig(name: str, configuration: str) -> Filter:
    return Filter(wasm_path(name), configuration=configuration, name=name)


def _case(name: str, filters: list[Filter], rows: list[tuple], **scenario: Any) -> Case:
    """rows: (path, headers, expected status, note[, after_ms]); every request carries Host: AUTHORITY."""
    requests = [Request(path=r[0], headers={"host": AUTHORITY, **r[1]}, after_ms=r[4] if len(r) > 4 else 0)
                for r in rows]
    return Case(name, Scenario(filters, requests, **scenario), [(r[2], r[3]) for r in rows])


def jwt_local_scenario(keys: Keys) -> Case:
    good = keys.token("alice")
    return _case("jwt_local", [_zig("jwt_authn", jwt_local_config(keys))], [
        ("/api", bearer(good), 200, "valid token"),
        ("/api", bearer(keys.token(exp_in=-3600)), 401, "expired"),
        ("/api", bearer(keys.token(bad_signature=True)), 401, "bad signature"),
        ("/api", {}, 401, "missing token"),
        ("/api", {"authorization": "Basic YWxpY2U6cHc="}, 401, "no bearer token"),
        ("/api", bearer(keys.token(aud="other")), 403, "wrong audience"),
        ("/api", bearer("not.a.jwt"), 401, "malformed"),
        ("/health", {}, 200, "bypassed path, no token"),
        ("/health?x=1", bearer("garbage"), 200, "bypassed path, bad token not checked"),
        ("/api", {**bearer(good), "x-jwt-sub": "mallory", "x-jwt-payload": "forged"}, 200,
         "spoofed claim headers are replaced"),
        ("/api", bearer(keys.token("bob")), 200, "second subject"),
    ])


def jwt_realm_scenario(keys: Keys) -> Case:
    return _case("jwt_realm", [_zig("jwt_authn", jwt_local_config(keys, realm="realm.example"))], [
        ("/api", {}, 401, "missing"),
        ("/api", bearer(keys.token(exp_in=-600)), 401, "expired"),
    ])


def jwks_answer(keys: Keys) -> Response:
    """What jwks_cluster answers to the filter's JWKS fetch."""
    return Response(200, {"content-type": "application/json"}, json.dumps(keys.jwks()))


def jwt_remote_scenario(keys: Keys) -> Case:
    return _case("jwt_remote", [_zig("jwt_authn", jwt_remote_config())], [
        ("/api", bearer(keys.token("carol")), 200, "first request waits for the JWKS fetch"),
        ("/api", bearer(keys.token(bad_signature=True)), 401, "bad signature, cached JWKS"),
        ("/api", bearer(keys.token("dave")), 200, "cached JWKS"),
        ("/api", {}, 401, "missing"),
    ], callouts={JWKS_CLUSTER: jwks_answer(keys)})


def jwt_remote_broken_scenario(keys: Keys) -> Case:
    """The JWKS fetch answers 200 with a document that is not a JWKS, then (a new Envoy) a 503."""
    return _case("jwt_remote_broken", [_zig("jwt_authn", jwt_remote_config(JWKS_BROKEN_PATH))], [
        ("/api", bearer(keys.token()), 401, "JWKS fetch returns a non-JWKS document"),
        ("/api", bearer(keys.token("erin")), 401, "still no key set"),
    ], callouts={JWKS_CLUSTER: Response(200, {"content-type": "application/json"}, '{"not": "a jwks"}')})


def jwt_remote_503_scenario(keys: Keys) -> Case:
    return _case("jwt_remote_503", [_zig("jwt_authn", jwt_remote_config())], [
        ("/api", bearer(keys.token()), 401, "JWKS fetch answers 503"),
    ], callouts={JWKS_CLUSTER: Response(503, {"content-type": "text/plain"}, "unavailable")})


def ratelimit_scenario(domain: str) -> Case:
    return _case("ratelimit", [_zig("ratelimit", ratelimit_config(domain))], [
        ("/api", {}, 200, "3 tokens -> remaining 2"),
        ("/api", {}, 200, "remaining 1"),
        ("/api", {}, 200, "remaining 0, reset 60"),
        ("/api", {}, 429, "limited"),
        ("/api/x?q=1", {}, 429, "same bucket (no descriptors)"),
        ("/health", {}, 200, "unlimited route: no headers"),
        ("/user", {"x-user": "a"}, 200, ""),
        ("/user", {"x-user": "a"}, 200, ""),
        ("/user", {"x-user": "a"}, 429, ""),
        ("/user", {"x-user": "b"}, 200, "another key"),
        ("/user", {}, 200, "missing descriptor value, on_missing allow: not limited"),
    ])


def refill_scenario(domain: str) -> Case:
    """2 tokens, 1 more every 500 ms: drain, let 600 ms pass (Envoy sleeps, the host's clock
    advances), exactly one more passes."""
    cfg = json.dumps({"domain": domain, "response_headers": True,
                      "bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval_ms": 500}})
    return _case("refill", [_zig("ratelimit", cfg)], [
        ("/r", {}, 200, "2 tokens"), ("/r", {}, 200, "1 token"), ("/r", {}, 429, "drained"),
        ("/r", {}, 200, "one token refilled", 600), ("/r", {}, 429, "drained again"),
    ])


def chain_scenario(keys: Keys, domain: str) -> Case:
    alice, bob = keys.token("alice"), keys.token("bob")
    return _case("chain", [_zig("jwt_authn", jwt_local_config(keys)), _zig("ratelimit", chain_ratelimit_config(domain))], [
        ("/api", bearer(alice), 200, "alice 1/2"),
        ("/api", {**bearer(alice), "x-jwt-sub": "bob"}, 200, "alice 2/2 (spoofed sub ignored)"),
        ("/api", bearer(alice), 429, "alice limited"),
        ("/api", bearer(bob), 200, "bob has his own bucket"),
        ("/api", {"x-jwt-sub": "carol"}, 401, "no token: jwt_authn answers before ratelimit"),
        ("/api", bearer(keys.token("carol", exp_in=-3600)), 401, "expired"),
        ("/health", {"x-jwt-sub": "zed"}, 200, "bypassed: the client's header keys the bucket"),
        ("/health", {"x-jwt-sub": "zed"}, 200, ""),
        ("/health", {"x-jwt-sub": "zed"}, 429, ""),
        ("/health", {}, 200, "bypassed, no key: not limited"),
        ("/api", bearer(bob), 200, "bob 2/2"),
        ("/api", bearer(bob), 429, "bob limited"),
    ])
