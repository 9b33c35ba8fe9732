"""Scenarios shared by the real-Envoy e2e tests and the Python-host parity runs.

A ``Scenario`` is a filter chain (Zig filters from ``filters/out``, each with its JSON
configuration) plus a list of requests. The same scenario is played

* through a real Envoy 1.40 (``run_envoy``: httpx over one keep-alive connection, the
  chain mounted via ECDS, the echo upstream behind the router), and
* through the Python host (``run_host``: ``Host`` with one plugin per filter; a chain is
  run by feeding the request the first plugin forwarded into the next one, and the
  response back through them in reverse order, as Envoy's encoder chain does).

Both produce one ``Observation`` per request holding exactly what is compared:

* the status code;
* the response headers a filter sets (``FILTER_RESPONSE_HEADERS``: ``www-authenticate``,
  ``retry-after``, ``x-ratelimit-limit/-remaining/-reset``), every value in order;
* the body of a local reply (any non-200 here; the 200 body is the echo and is not compared);
* for requests that reached the upstream, the request headers the scenario names in
  ``forwarded`` (claim headers, ``x-jwt-payload``, ``authorization``...), ``None`` when absent.

Headers added by Envoy's connection manager or router (``date``, ``server``,
``x-envoy-*``, ``x-request-id``, ``x-forwarded-proto``, ``content-length``...) are not compared.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "filters") not in sys.path:
    sys.path.insert(0, str(ROOT / "filters"))

FILTER_RESPONSE_HEADERS = ("www-authenticate", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining",
                           "x-ratelimit-reset")
AUTHORITY = "api.example"  # sent as Host / :authority: jwt_authn's default realm comes from it
ISS = "https://issuer.example"
AUD = "api"
JWKS_PATH = "/jwks.json"          # served by the echo upstream (set_response) for jwks_cluster
JWKS_BROKEN_PATH = "/no-jwks.json"  # not registered: the echo document is not a JWKS -> fetch fails


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


# ---------------------------------------------------------------- scenario model

@dataclass
class Req:
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    expect: int | None = None          # expected status (checked on both sides, so the test can fail)
    note: str = ""


@dataclass
class Scenario:
    name: str
    filters: list[tuple[str, str]]     # (filter name == wasm name, configuration JSON) in chain order
    requests: list[Req]
    forwarded: tuple[str, ...] = ()    # request headers compared at the upstream


@dataclass
class Observation:
    status: int
    headers: dict[str, list[str]]
    body: str | None
    forwarded: dict[str, str | None] | None

    def brief(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def _pick(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        k = k.lower()
        if k in FILTER_RESPONSE_HEADERS:
            out.setdefault(k, []).append(v)
    return out


def _forwarded(headers: dict[str, str], names: Sequence[str]) -> dict[str, str | None]:
    return {n: headers.get(n) for n in names}


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
            "remote_jwks": {"cluster": "jwks_cluster", "path": path, "authority": "jwks.example",
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


def unique(prefix: str) -> str:
    """A fresh rate-limit domain: shared data outlives ECDS reloads, so every run gets new buckets."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- the scenarios

def jwt_local_scenario(keys: Keys) -> Scenario:
    good = keys.token("alice")
    return Scenario(
        "jwt_local",
        [("jwt_authn", jwt_local_config(keys))],
        [
            Req("/api", bearer(good), 200, "valid token"),
            Req("/api", bearer(keys.token(exp_in=-3600)), 401, "expired"),
            Req("/api", bearer(keys.token(bad_signature=True)), 401, "bad signature"),
            Req("/api", {}, 401, "missing token"),
            Req("/api", {"authorization": "Basic YWxpY2U6cHc="}, 401, "no bearer token"),
            Req("/api", bearer(keys.token(aud="other")), 403, "wrong audience"),
            Req("/api", bearer("not.a.jwt"), 401, "malformed"),
            Req("/health", {}, 200, "bypassed path, no token"),
            Req("/health?x=1", bearer("garbage"), 200, "bypassed path, bad token not checked"),
            Req("/api", {**bearer(good), "x-jwt-sub": "mallory", "x-jwt-payload": "forged"}, 200,
                "spoofed claim headers are replaced"),
            Req("/api", bearer(keys.token("bob")), 200, "second subject"),
        ],
        forwarded=("x-jwt-sub", "x-jwt-payload", "authorization"),
    )


def jwt_realm_scenario(keys: Keys) -> Scenario:
    return Scenario(
        "jwt_realm",
        [("jwt_authn", jwt_local_config(keys, realm="realm.example"))],
        [Req("/api", {}, 401, "missing"), Req("/api", bearer(keys.token(exp_in=-600)), 401, "expired")],
    )


def jwt_remote_scenario(keys: Keys) -> Scenario:
    return Scenario(
        "jwt_remote",
        [("jwt_authn", jwt_remote_config())],
        [
            Req("/api", bearer(keys.token("carol")), 200, "first request waits for the JWKS fetch"),
            Req("/api", bearer(keys.token(bad_signature=True)), 401, "bad signature, cached JWKS"),
            Req("/api", bearer(keys.token("dave")), 200, "cached JWKS"),
            Req("/api", {}, 401, "missing"),
        ],
        forwarded=("x-jwt-sub", "authorization"),
    )


def jwt_remote_broken_scenario(keys: Keys) -> Scenario:
    return Scenario(
        "jwt_remote_broken",
        [("jwt_authn", jwt_remote_config(JWKS_BROKEN_PATH))],
        [Req("/api", bearer(keys.token()), 401, "JWKS fetch returns a non-JWKS document")],
    )


def ratelimit_scenario(domain: str) -> Scenario:
    return Scenario(
        "ratelimit",
        [("ratelimit", ratelimit_config(domain))],
        [
            Req("/api", {}, 200, "3 tokens -> remaining 2"),
            Req("/api", {}, 200, "remaining 1"),
            Req("/api", {}, 200, "remaining 0, reset 60"),
            Req("/api", {}, 429, "limited"),
            Req("/api/x?q=1", {}, 429, "same bucket (no descriptors)"),
            Req("/health", {}, 200, "unlimited route: no headers"),
            Req("/user", {"x-user": "a"}, 200),
            Req("/user", {"x-user": "a"}, 200),
            Req("/user", {"x-user": "a"}, 429),
            Req("/user", {"x-user": "b"}, 200, "another key"),
            Req("/user", {}, 200, "missing descriptor value, on_missing allow: not limited"),
        ],
    )


def chain_scenario(keys: Keys, domain: str) -> Scenario:
    alice, bob = keys.token("alice"), keys.token("bob")
    return Scenario(
        "chain",
        [("jwt_authn", jwt_local_config(keys)), ("ratelimit", chain_ratelimit_config(domain))],
        [
            Req("/api", bearer(alice), 200, "alice 1/2"),
            Req("/api", {**bearer(alice), "x-jwt-sub": "bob"}, 200, "alice 2/2 (spoofed sub ignored)"),
            Req("/api", bearer(alice), 429, "alice limited"),
            Req("/api", bearer(bob), 200, "bob has his own bucket"),
            Req("/api", {"x-jwt-sub": "carol"}, 401, "no token: jwt_authn answers before ratelimit"),
            Req("/api", bearer(keys.token("carol", exp_in=-3600)), 401, "expired"),
            Req("/health", {"x-jwt-sub": "zed"}, 200, "bypassed: the client's header keys the bucket"),
            Req("/health", {"x-jwt-sub": "zed"}, 200),
            Req("/health", {"x-jwt-sub": "zed"}, 429),
            Req("/health", {}, 200, "bypassed, no key: not limited"),
            Req("/api", bearer(bob), 200, "bob 2/2"),
            Req("/api", bearer(bob), 429, "bob limited"),
        ],
        forwarded=("x-jwt-sub", "authorization"),
    )


# ---------------------------------------------------------------- running a scenario

def publish_scenario(env: Any, scenario: Scenario) -> None:
    """Publish each filter's module + configuration to a running harness (ECDS)."""
    for name, config in scenario.filters:
        env.publish(name, wasm_path(name), configuration=config)


def run_envoy(env: Any, scenario: Scenario, listener: str = "main") -> list[Observation]:
    """Play the requests through Envoy, sequentially on one keep-alive connection."""
    out = []
    with httpx.Client(timeout=10) as client:
        for req in scenario.requests:
            r = client.get(env.url(req.path, listener=listener), headers={"host": AUTHORITY, **req.headers})
            fwd = None
            if r.status_code == 200 and r.headers.get("content-type") == "application/json":
                fwd = _forwarded(r.json()["headers"], scenario.forwarded)
            out.append(Observation(r.status_code, _pick(r.headers.multi_items()),
                                   None if r.status_code == 200 else r.text, fwd))
    return out


def new_host(upstream_port: int | None = None) -> Any:
    from proxywasm_host import Host

    # Real wall clock at the start: tokens are minted against time.time(). The host clock is
    # then frozen, which Envoy's is not; the scenarios avoid depending on sub-second refills.
    host = Host(start_time=time.time())
    host.add_cluster("jwks_cluster", f"http://127.0.0.1:{upstream_port}" if upstream_port else None)
    return host


def load_chain(host: Any, scenario: Scenario) -> list[Any]:
    return [host.load_plugin(wasm_path(name), configuration=config, name=name, root_id="", vm_id="")
            for name, config in scenario.filters]


ECHO_RESPONSE = {":status": "200", "content-type": "application/json"}


def host_request(host: Any, plugins: Sequence[Any], req: Req, forwarded: Sequence[str],
                 source: str = "127.0.0.1:40000") -> Observation:
    """One request through the chain of plugins, as Envoy's filter manager would run it."""
    headers: dict[str, str] | list[tuple[str, str]] = {
        ":method": "GET", ":path": req.path, ":authority": AUTHORITY, ":scheme": "http", **req.headers}
    streams = []
    reply = None
    for p in plugins:
        s = p.http_stream(properties={"source.address": source})
        streams.append(s)
        s.send_request_headers(headers, end_of_stream=True)
        for _ in range(5):  # bounded: a paused request waiting for a callout (remote JWKS)
            if not host.pending_http_calls or s.local_reply is not None or s.upstream_request.headers is not None:
                break
            host.dispatch_http_calls(timeout=5)
        if s.local_reply is not None:
            reply = s
            break
        if s.upstream_request.headers is None:
            raise AssertionError(f"{p.name}: request neither forwarded nor answered ({req.path})")
        headers = s.upstream_request.headers.items()
    fwd = None
    if reply is None:
        up = dict(headers)  # what the upstream would receive
        fwd = _forwarded({k: v for k, v in up.items()}, forwarded)
        resp: Any = ECHO_RESPONSE
        for s in reversed(streams):  # encoder chain: the filter closest to the router first
            s.send_response_headers(resp, end_of_stream=True)
            resp = s.downstream_response.headers.items()
        final = streams[0].downstream_response.headers
        body = None
    else:
        # The local reply goes through the encoder callbacks of the filters before it
        # (Envoy runs them for a local reply too).
        final = reply.downstream_response.headers
        idx = streams.index(reply)
        for s in reversed(streams[:idx]):
            s.send_response_headers(final.items(), end_of_stream=True)
            final = s.downstream_response.headers
        body = reply.local_reply.body.decode()
    for s in streams:
        s.complete()
    status = int(final.get(":status"))
    return Observation(status, _pick(final.items()), body, fwd)


def run_host(scenario: Scenario, upstream_port: int | None = None, host: Any = None) -> list[Observation]:
    host = host or new_host(upstream_port)
    plugins = load_chain(host, scenario)
    return [host_request(host, plugins, req, scenario.forwarded) for req in scenario.requests]


def check_expectations(scenario: Scenario, obs: Sequence[Observation], side: str) -> None:
    bad = [f"  #{i} {r.path} ({r.note}): expected {r.expect}, got {o.status} {o.brief()}"
           for i, (r, o) in enumerate(zip(scenario.requests, obs)) if r.expect is not None and o.status != r.expect]
    assert not bad, f"{side}: {scenario.name}:\n" + "\n".join(bad)


def diff(scenario: Scenario, envoy: Sequence[Observation], host: Sequence[Observation]) -> list[str]:
    out = []
    for i, (r, e, h) in enumerate(zip(scenario.requests, envoy, host)):
        if e != h:
            out.append(f"#{i} {r.path} ({r.note}):\n    envoy: {e.brief()}\n    host:  {h.brief()}")
    return out


def decode_payload(header_value: str) -> dict[str, Any]:
    pad = "=" * (-len(header_value) % 4)
    return json.loads(base64.urlsafe_b64decode(header_value + pad))
