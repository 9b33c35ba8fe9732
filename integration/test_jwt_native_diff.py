"""Differential test: the same requests through Envoy's native ``envoy.filters.http.jwt_authn``
and our Zig ``jwt_authn`` (filters/out/jwt_authn.wasm), two listeners of ONE Envoy 1.40.

Both are configured alike: the same inline JWKS, issuer, audience, header and query locations,
``forward: false``, payload and ``sub`` headers. Ours runs with its native-compatible switches
(``value_prefix_match: envoy``, ``realm_from_uri``, ``max_token_bytes: 0``). For every request the
test compares what the client gets (status, body, ``www-authenticate``) and, when the request is
forwarded, what the upstream receives (path, token header, payload and claim headers).

Every divergence is listed in ``DIVERGENCES`` with both verdicts and the RFC section that
justifies ours; the README's jwt_authn table must list the same case ids. Any other difference,
or a divergence that stops diverging, fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from proxywasm_host.envoy import EchoUpstream, EnvoyHarness, ListenerSpec, StaticFilter, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

from scenarios import AUD, AUTHORITY, ISS, wasm_path

README = Path(__file__).resolve().parents[1] / "README.md"
HS_SECRET = b"diff-test-secret-0123456789abcdef"  # 33 bytes: usable for HS256 by both
SHORT_SECRET = b"short-8b"                         # RFC 7518 section 3.2: too short for HS256


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DiffKeys:
    """Signing keys: usable by both filters (hs, rs, rs2560, es512) and weak ones only native uses."""

    def __init__(self) -> None:
        self.rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rs2560 = rsa.generate_private_key(public_exponent=65537, key_size=2560)
        self.rs1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.es512 = ec.generate_private_key(ec.SECP521R1())

    def jwks(self) -> dict[str, Any]:
        return {"keys": [
            {"kty": "oct", "kid": "hs", "k": b64(HS_SECRET)},
            {"kty": "oct", "kid": "short", "k": b64(SHORT_SECRET)},
            RSAAlgorithm.to_jwk(self.rs.public_key(), as_dict=True) | {"kid": "rs"},
            RSAAlgorithm.to_jwk(self.rs2560.public_key(), as_dict=True) | {"kid": "rs2560"},
            RSAAlgorithm.to_jwk(self.rs1024.public_key(), as_dict=True) | {"kid": "weak"},
            ECAlgorithm.to_jwk(self.es512.public_key(), as_dict=True) | {"kid": "es512"},
            {"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": b64(b"\x01" * 57)},
        ]}

    def token(self, claims: dict[str, Any] | None = None, *, kid: str = "hs") -> str:
        now = int(time.time())
        body = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 600} | (claims or {})
        body = {k: v for k, v in body.items() if v is not None}
        alg, key = {"hs": ("HS256", HS_SECRET), "short": ("HS256", SHORT_SECRET), "rs": ("RS256", self.rs),
                    "rs2560": ("PS256", self.rs2560), "weak": ("RS256", self.rs1024),
                    "es512": ("ES512", self.es512)}[kid]
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def raw_hs(claims_json: str) -> str:
    """HS256 over exactly this payload text (duplicate names, wrong types PyJWT refuses to mint)."""
    h = b64(json.dumps({"alg": "HS256", "kid": "hs"}).encode())
    p = b64(claims_json.encode())
    sig = hmac.new(HS_SECRET, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


def native_filter(jwks: dict[str, Any]) -> StaticFilter:
    def provider(**over: Any) -> dict[str, Any]:
        return {"issuer": ISS, "audiences": [AUD], "local_jwks": {"inline_string": json.dumps(jwks)},
                "forward_payload_header": "x-jwt-payload",
                "claim_to_headers": [{"claim_name": "sub", "header_name": "x-jwt-sub"}]} | over
    return StaticFilter("envoy.filters.http.jwt_authn", {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {
            "main": provider(from_headers=[{"name": "authorization", "value_prefix": "Bearer "}, {"name": "x-token"}],
                             from_params=["access_token"]),
            "deflt": provider(),  # default token locations
        },
        "rules": [{"match": {"prefix": "/deflt"}, "requires": {"provider_name": "deflt"}},
                  {"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}],
    })


def wasm_config(jwks: dict[str, Any]) -> str:
    def provider(name: str, **over: Any) -> dict[str, Any]:
        return {"name": name, "issuer": ISS, "audiences": [AUD], "local_jwks": jwks,
                "value_prefix_match": "envoy", "forward_payload_header": "x-jwt-payload",
                "claim_to_headers": [{"claim_name": "sub", "header_name": "x-jwt-sub"}]} | over
    return json.dumps({
        "providers": [provider("main", from_headers=[{"name": "authorization", "value_prefix": "Bearer "},
                                                     {"name": "x-token"}],
                               from_params=["access_token"]),
                      provider("deflt")],
        "rules": [{"prefix": "/deflt", "requires": "deflt"}, {"prefix": "/", "requires": "main"}],
        "realm_from_uri": True, "max_token_bytes": 0,
    })


def cases(k: DiffKeys) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Case id -> (path, extra request headers)."""
    now = int(time.time())
    good, bad = k.token(), k.token({"exp": now - 3600})
    forged = k.token().rsplit(".", 1)[0] + "." + b64(b"\x00" * 32)

    def auth(t: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {t}")]

    return {
        "missing": ("/a", []),
        "valid-hs256": ("/a?x=1", auth(good)),
        "valid-rs256": ("/a", auth(k.token(kid="rs"))),
        "valid-es512": ("/a", auth(k.token(kid="es512"))),
        "valid-ps256-2560": ("/a", auth(k.token(kid="rs2560"))),
        "bad-signature": ("/a", auth(forged)),
        "expired": ("/a", auth(bad)),
        "not-yet-valid": ("/a", auth(k.token({"nbf": now + 3600}))),
        "wrong-issuer": ("/a", auth(k.token({"iss": "https://evil.example"}))),
        "wrong-audience": ("/a", auth(k.token({"aud": "other"}))),
        "aud-array-ok": ("/a", auth(k.token({"aud": ["x", AUD]}))),
        "aud-number": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": 5, "exp": now + 600})))),
        "aud-array-with-number": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": [AUD, 5], "exp": now + 600})))),
        "exp-string": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": AUD, "exp": str(now + 600)})))),
        "exp-fractional": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": AUD, "exp": now + 600.5})))),
        "exp-negative": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": AUD, "exp": -5})))),
        "exp-1e300": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": AUD, "exp": 1e300})))),
        "nbf-string": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": AUD, "nbf": "0"})))),
        "iat-string": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": AUD, "iat": "now"})))),
        "iss-number": ("/a", auth(raw_hs(json.dumps({"iss": 5, "aud": AUD})))),
        "sub-number": ("/a", auth(raw_hs(json.dumps({"iss": ISS, "aud": AUD, "sub": 5})))),
        "duplicate-claim": ("/a", auth(raw_hs(f'{{"iss": "{ISS}", "aud": "{AUD}", "aud": "other"}}'))),
        "alg-none": ("/a", auth(b64(b'{"alg":"none"}') + "." + b64(json.dumps({"iss": ISS}).encode()) + ".")),
        "crit-header": ("/a", auth(jwt.encode({"iss": ISS, "aud": AUD}, HS_SECRET, algorithm="HS256",
                                              headers={"kid": "hs", "crit": ["exp"]}))),
        "lowercase-bearer": ("/a", [("authorization", f"bearer {good}")]),
        "prefix-inside-value": ("/a", [("authorization", f"Token x, Bearer {good}")]),
        "two-spaces-after-prefix": ("/a", [("authorization", f"Bearer  {good}")]),
        "junk-after-token": ("/a", [("authorization", f"Bearer {good}, x")]),
        "query-token": (f"/a?b=1&access_token={good}&c=2", []),
        "query-percent-encoded": ("/a?access_token=" + good.replace(".", "%2E"), []),
        "header-good-query-bad": (f"/a?access_token={bad}", auth(good)),
        "header-bad-query-good": (f"/a?access_token={good}", auth(bad)),
        "header-and-query-good": (f"/a?access_token={good}", auth(good)),
        "query-repeated-good-bad": (f"/a?access_token={good}&access_token={bad}", []),
        "query-repeated-bad-good": (f"/a?access_token={bad}&access_token={good}", []),
        # Envoy joins repeated inline headers such as Authorization into one value before any filter runs,
        # so both filters see "Bearer a,Bearer b"; other headers stay separate lines.
        "authorization-repeated": ("/a", auth(good) + auth(good)),
        "x-token": ("/a", [("x-token", good)]),
        "x-token-repeated-good-bad": ("/a", [("x-token", good), ("x-token", bad)]),
        "x-token-repeated-good-good": ("/a", [("x-token", good), ("x-token", good)]),
        "realm-long-path": ("/a/" + "p" * 300, auth(forged)),
        "realm-forwarded-proto": ("/a?q", auth(forged) + [("x-forwarded-proto", "https")]),
        "large-token-12kb": ("/a", auth(k.token({"pad": "x" * 9000}))),  # max_token_bytes: 0 = no limit, as native
        "weak-rsa-1024-key": ("/a", auth(k.token(kid="weak"))),
        "short-hmac-key": ("/a", auth(k.token(kid="short"))),
        "default-locations-query": (f"/deflt?access_token={good}", []),
        "default-locations-header": ("/deflt", auth(good)),
    }


# id -> ((native status, body), (our status, body), why ours with the RFC section); body None for a forwarded request.
Verdict = tuple[int, "str | None"]
NOT_POSITIVE = "Jwt payload [exp] field is not a positive 64 bit integer"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
DIVERGENCES: dict[str, tuple[Verdict, Verdict, str]] = {
    "exp-negative": ((401, NOT_POSITIVE), (401, "Jwt is expired"),
                     "RFC 7519 §2: a NumericDate is any JSON number; -5 is a valid date in the past"),
    "exp-1e300": ((401, NOT_POSITIVE), (200, None),
                  "RFC 7519 §2: NumericDate is any JSON numeric value, large and non-integer ones included"),
    "crit-header": ((200, None), (401, "Jwt header [crit] is not supported"),
                    "RFC 7515 §4.1.11: a recipient that does not understand a `crit` extension must reject"),
    "query-repeated-good-bad": ((200, None), (401, "Jwt is expired"),
                                "RFC 6749 §3.1: request parameters must not be included more than once; "
                                "native verifies only the first value, ours verifies each"),
    "weak-rsa-1024-key": ((200, None), (401, NO_KEY), "RFC 7518 §3.3: RSA keys must be 2048 bits or larger (ours skips it)"),
    "short-hmac-key": ((200, None), (401, NO_KEY), "RFC 7518 §3.2: an HS256 key must be at least 32 bytes (ours skips it)"),
    "default-locations-query": ((200, None), (401, "Jwt is missing"),
                                "RFC 6750 §2.3 / §5.3: tokens in URIs should not be used; ours reads only "
                                "`Authorization: Bearer` unless `from_params` is configured"),
}


def observe(r: httpx.Response) -> dict[str, Any]:
    """What the client got and, when forwarded, what the upstream saw."""
    out: dict[str, Any] = {"status": r.status_code}
    if r.status_code == 200:
        echo = r.json()
        seen = {k.lower(): v for k, v in echo["header_list"]}
        out |= {"path": echo["path"], "authorization": seen.get("authorization"),
                "x-jwt-payload": seen.get("x-jwt-payload"), "x-jwt-sub": seen.get("x-jwt-sub")}
    else:
        out |= {"body": r.text, "www-authenticate": r.headers.get_list("www-authenticate")}
    return out


@pytest.fixture(scope="module")
def diff_keys() -> DiffKeys:
    return DiffKeys()


@pytest.fixture(scope="module")
def both(diff_keys: DiffKeys) -> Iterator[EnvoyHarness]:
    jwks = diff_keys.jwks()
    listeners = [ListenerSpec("native", [native_filter(jwks)]),
                 ListenerSpec("wasm", [WasmFilter("jwt_authn", wasm_path("jwt_authn"), configuration=wasm_config(jwks))])]
    with EchoUpstream() as up, envoy_harness(listeners=listeners, upstream=up, concurrency=1) as env:
        yield env


@pytest.fixture(scope="module")
def observed(both: EnvoyHarness, diff_keys: DiffKeys) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    with httpx.Client(timeout=10) as client:
        for case, (path, headers) in cases(diff_keys).items():
            out[case] = {side: observe(client.get(both.url(path, side), headers=[("host", AUTHORITY)] + headers))
                         for side in ("native", "wasm")}
    return out


def test_the_same_answer_except_the_listed_divergences(observed: dict[str, dict[str, dict[str, Any]]]) -> None:
    unexpected = {case: sides for case, sides in observed.items()
                  if case not in DIVERGENCES and sides["native"] != sides["wasm"]}
    assert not unexpected, json.dumps(unexpected, indent=1)[:6000]


@pytest.mark.parametrize("case", sorted(DIVERGENCES))
def test_each_listed_divergence_is_real_and_as_recorded(observed: dict[str, dict[str, dict[str, Any]]],
                                                       case: str) -> None:
    native, ours, _ = DIVERGENCES[case]
    sides = observed[case]
    got = {side: (v["status"], v.get("body")) for side, v in sides.items()}
    assert (got["native"], got["wasm"]) == (native, ours), sides


def test_the_readme_table_lists_every_divergence() -> None:
    text = README.read_text()
    start = text.index("#### Differences from the native filter")
    section = text[start:text.index("\n#", start + 1)]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))
    assert listed == set(DIVERGENCES), (sorted(listed - set(DIVERGENCES)), sorted(set(DIVERGENCES) - listed))


def test_the_realm_is_the_request_uri_as_native_builds_it(observed: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Pinned beyond equality: both give the truncated URI (so the comparison above is not vacuous)."""
    realm = observed["realm-long-path"]["native"]["www-authenticate"][0]
    assert realm == f'Bearer realm="http://{AUTHORITY}{("/a/" + "p" * 300)[:256]}", error="invalid_token"'
    assert observed["realm-forwarded-proto"]["wasm"]["www-authenticate"][0].startswith(f'Bearer realm="https://{AUTHORITY}/a?q"')


def test_the_keys_we_skip_are_named_in_envoys_log(both: EnvoyHarness) -> None:
    log = "\n".join(both.wasm_log())
    for kid, why in (("weak", "RSA key of 1024 bits is below 2048 (RFC 7518 section 3.3)"),
                     ("short", "HMAC key of 8 bytes is shorter than 32 (RFC 7518 section 3.2)"),
                     ("ed448", "unsupported curve Ed448 (Ed25519)")):
        assert f'(kid "{kid}"): {why}; key skipped' in log, kid
