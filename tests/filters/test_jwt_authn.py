"""jwt_authn filter (filters/jwt_authn) run through the project's host."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from proxywasm_host import PluginRejected
from filterkit import AUD, ISS, T0, jwt_config, mint, provider, request

ALL_ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
            "EdDSA"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def load(host, wasm, config: str, **kw):
    return host.load_plugin(wasm, configuration=config, name="jwt", **kw)


def forwarded(stream) -> bool:
    """The request reached the upstream and no local reply was sent."""
    return stream.local_reply is None and stream.upstream_request.headers is not None


def assert_denied(stream, status: int, reason: str, *, error: bool = True, realm: str = "example.com"):
    lr = stream.local_reply
    assert lr is not None, "expected a local reply"
    assert lr.status_code == status, lr
    assert lr.body.decode() == reason
    client = stream.downstream_response.headers  # what the client receives
    assert client.get(":status") == str(status)
    challenge = client.get("www-authenticate")
    want = f'Bearer realm="{realm}"' + (', error="invalid_token"' if error else "")
    assert challenge == want


@pytest.fixture
def plugin(host, jwt_wasm, keys):
    return load(host, jwt_wasm, jwt_config(provider(keys, forward_payload_header="x-jwt-payload",
                                                    claim_to_headers=[{"claim_name": "sub", "header_name": "x-sub"}])))


# ---------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_every_algorithm_verifies_and_forwards(plugin, keys, alg):
    token = mint(keys, alg)
    s = plugin.http_stream()
    r = request(s, token)
    assert r.status == "Continue"
    assert forwarded(s)
    up = s.upstream_request.headers
    assert "authorization" not in up  # forward: false strips the token (Envoy default)
    assert up.get("x-jwt-payload") == token.split(".")[1]
    assert up.get("x-sub") == "alice"


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_without_kid_keys_of_the_matching_type_are_tried(host, jwt_wasm, keys, alg):
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks=keys.jwks(with_kid=False))))
    s = p.http_stream()
    request(s, mint(keys, alg, kid=False))
    assert forwarded(s)


@pytest.mark.parametrize("alg", ["RS256", "PS512"])
def test_rsa_3072_key(host, jwt_wasm, keys, alg):
    from jwt.algorithms import RSAAlgorithm
    jwk = RSAAlgorithm.to_jwk(keys.rsa3072.public_key(), as_dict=True) | {"kid": "big"}
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [jwk]})))
    s = p.http_stream()
    request(s, mint(keys, alg, kid="big", key=keys.rsa3072))
    assert forwarded(s)


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_signature_from_another_key_fails(host, jwt_wasm, keys, alg):
    other = {"HS": b"another-secret" * 5, "RS": keys.rsa_other, "PS": keys.rsa_other}
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    other["ES256"] = ec.generate_private_key(ec.SECP256R1())
    other["ES384"] = ec.generate_private_key(ec.SECP384R1())
    other["ES512"] = ec.generate_private_key(ec.SECP521R1())
    other["EdDSA"] = ed25519.Ed25519PrivateKey.generate()
    key = other.get(alg) or other[alg[:2]]
    p = load(host, jwt_wasm, jwt_config(provider(keys)))
    s = p.http_stream()
    request(s, mint(keys, alg, key=key))
    assert_denied(s, 401, "Jwt verification fails")


# ---------------------------------------------------------------- attacks


def forge(header: dict, payload: dict, sig: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(sig)}"


def test_alg_none_is_rejected(plugin, keys):
    payload = {"iss": ISS, "aud": AUD, "sub": "mallory", "exp": T0 + 3600}
    for token in (forge({"alg": "none"}, payload) + "", forge({"alg": "none"}, payload, b"x"),
                  forge({"alg": "None", "kid": "rsa"}, payload, b"x")):
        s = plugin.http_stream()
        request(s, token)
        assert s.local_reply is not None and s.local_reply.status_code == 401
        assert s.upstream_request.headers is None


def test_alg_none_with_empty_signature_is_bad_format(plugin):
    s = plugin.http_stream()
    request(s, forge({"alg": "none"}, {"iss": ISS}))  # "xxx.yyy." has an empty signature
    assert_denied(s, 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")


@pytest.mark.parametrize("with_kid", [True, False])
def test_hs256_signed_with_the_rsa_public_key_is_rejected(plugin, keys, with_kid):
    """Classic key-confusion attack: HMAC keyed with the RSA public key."""
    pem = keys.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT"} | ({"kid": "rsa"} if with_kid else {})
    payload = {"iss": ISS, "aud": AUD, "sub": "mallory", "exp": T0 + 3600}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    for secret in (pem, keys.rsa.public_key().public_numbers().n.to_bytes(256, "big")):
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        s = plugin.http_stream()
        request(s, f"{signing_input}.{b64(sig)}")
        expected = "Jwks doesn't have key to match kid or alg from Jwt" if with_kid else "Jwt verification fails"
        assert_denied(s, 401, expected)


def test_rs256_token_against_a_jwk_declared_for_another_alg(host, jwt_wasm, keys):
    from jwt.algorithms import RSAAlgorithm
    jwk = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True) | {"kid": "rsa", "alg": "PS256"}
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [jwk]})))
    s = p.http_stream()
    request(s, mint(keys, "RS256"))
    assert_denied(s, 401, "Jwks doesn't have key to match kid or alg from Jwt")
    s = p.http_stream()
    request(s, mint(keys, "PS256"))
    assert forwarded(s)


def _swap(token: str, part: int, new: str) -> str:
    parts = token.split(".")
    parts[part] = new
    return ".".join(parts)


def test_tampered_payload_header_and_signature(plugin, keys):
    token = mint(keys, "RS256")
    h, p, sig = token.split(".")
    payload = json.loads(unb64(p))
    payload["sub"] = "admin"
    header = json.loads(unb64(h))
    header["typ"] = "JOSE"
    raw_sig = bytearray(unb64(sig))
    raw_sig[len(raw_sig) // 2] ^= 0x01
    bad_tokens = (_swap(token, 1, b64(json.dumps(payload).encode())),
                  _swap(token, 0, b64(json.dumps(header).encode())),
                  _swap(token, 2, b64(bytes(raw_sig))))
    assert_only_original_verifies(plugin, token, bad_tokens)


def assert_only_original_verifies(plugin, token: str, bad_tokens) -> None:
    for bad in bad_tokens:
        s = plugin.http_stream()
        request(s, bad)
        assert_denied(s, 401, "Jwt verification fails")
    s = plugin.http_stream()
    request(s, token)
    assert forwarded(s)


def test_alg_switched_in_header_fails(plugin, keys):
    token = mint(keys, "RS256")
    header = json.loads(unb64(token.split(".")[0]))
    header["alg"] = "RS512"
    s = plugin.http_stream()
    request(s, _swap(token, 0, b64(json.dumps(header).encode())))
    assert_denied(s, 401, "Jwt verification fails")


RS = b'{"alg":"RS256"}'
BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"


@pytest.mark.parametrize("token,reason", [
    ("a.b", BAD_FORMAT),
    ("a.b.c.d", BAD_FORMAT),
    ("..", BAD_FORMAT),
    ("e*J.eyJ.c2ln", "Jwt header is an invalid Base64url encoded"),
    ("eyJhbGciOiJSUzI1NiJ9=.eyJ9.c2ln", "Jwt header is an invalid Base64url encoded"),
    (b64(b"{not json") + "." + b64(b"{}") + ".c2ln", "Jwt header is an invalid JSON"),
    (b64(b"[1,2]") + "." + b64(b"{}") + ".c2ln", "Jwt header is an invalid JSON"),
    (b64(b"{}") + "." + b64(b"{}") + ".c2ln", "Jwt header [alg] is not supported"),
    (b64(b'{"alg":"HS1"}') + "." + b64(b"{}") + ".c2ln", "Jwt header [alg] is not supported"),
    (b64(b'{"alg":"RS256","crit":["x"]}') + "." + b64(b"{}") + ".c2ln", "Jwt header [crit] is not supported"),
    (b64(RS) + ".e$$.c2ln", "Jwt payload is an invalid Base64url encoded"),
    (b64(RS) + "." + b64(b"nope") + ".c2ln", "Jwt payload is an invalid JSON"),
    (b64(RS) + "." + b64(b'{"a":1,"a":2}') + ".c2ln", "Jwt payload is an invalid JSON"),
    (b64(RS) + "." + b64(b"{}") + ".c2l!", "Jwt signature is an invalid Base64url encoded"),
])
def test_malformed_tokens(plugin, token, reason):
    s = plugin.http_stream()
    request(s, token)
    assert_denied(s, 401, reason)


def test_oversized_token(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys), max_token_bytes=1024))
    small = mint(keys, "ES256")
    big = mint(keys, "ES256", {"pad": "x" * 2000})
    s = p.http_stream()
    request(s, big)
    assert_denied(s, 401, "Jwt is too large")
    s = p.http_stream()
    request(s, small)
    assert forwarded(s)


def test_unknown_kid(plugin, keys):
    s = plugin.http_stream()
    request(s, mint(keys, "RS256", kid="rotated-away"))
    assert_denied(s, 401, "Jwks doesn't have key to match kid or alg from Jwt")


# ---------------------------------------------------------------- claims and clock


@pytest.mark.parametrize("claims,ok,reason", [
    ({"exp": T0 - 60}, False, "Jwt is expired"),          # now == exp + skew: rejected (RFC: must be before)
    ({"exp": T0 - 59}, True, None),
    ({"nbf": T0 + 60}, True, None),                        # now == nbf - skew: accepted
    ({"nbf": T0 + 61}, False, "Jwt not yet valid"),
    ({"exp": T0 - 59.5}, True, None),                      # fractional NumericDate
    ({"exp": T0 - 60.5}, False, "Jwt is expired"),
    ({"exp": None}, True, None),                           # no exp: accepted unless require_expiration
    ({"exp": "tomorrow"}, False, "Jwt payload [exp] field is not an integer"),
])
def test_exp_nbf_with_default_skew(plugin, keys, claims, ok, reason):
    s = plugin.http_stream()
    request(s, mint(keys, "ES256", claims))
    if ok:
        assert forwarded(s)
    else:
        assert_denied(s, 401, reason)


def test_expiry_follows_the_virtual_clock(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys, clock_skew_seconds=0)))
    token = mint(keys, "HS256", {"exp": T0 + 10, "nbf": T0 + 5})
    s = p.http_stream()
    request(s, token)
    assert_denied(s, 401, "Jwt not yet valid")
    host.clock.advance(seconds=5)
    s = p.http_stream()
    request(s, token)
    assert forwarded(s)
    host.clock.advance(seconds=4.999)
    s = p.http_stream()
    request(s, token)
    assert forwarded(s)
    host.clock.advance(seconds=0.001)
    s = p.http_stream()
    request(s, token)
    assert_denied(s, 401, "Jwt is expired")


def test_require_expiration(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys, require_expiration=True)))
    s = p.http_stream()
    request(s, mint(keys, "RS256", {"exp": None}))
    assert_denied(s, 401, "Jwt has no expiration")


@pytest.mark.parametrize("claims,status,reason", [
    ({"iss": "https://evil.example"}, 401, "Jwt issuer is not configured"),
    ({"iss": None}, 401, "Jwt issuer is not configured"),
    ({"aud": "other"}, 403, "Audiences in Jwt are not allowed"),
    ({"aud": ["x", "y"]}, 403, "Audiences in Jwt are not allowed"),
    ({"aud": None}, 403, "Audiences in Jwt are not allowed"),
    ({"aud": ["x", AUD]}, 200, None),
    ({"aud": AUD}, 200, None),
])
def test_issuer_and_audience(plugin, keys, claims, status, reason):
    s = plugin.http_stream()
    request(s, mint(keys, "RS256", claims))
    if status == 200:
        assert forwarded(s)
    else:
        assert_denied(s, status, reason)


def test_missing_token_challenge_has_no_error_code(plugin):
    s = plugin.http_stream()
    request(s, None)
    assert_denied(s, 401, "Jwt is missing", error=False)
    s = plugin.http_stream()
    request(s, None, extra={"authorization": "Basic dXNlcjpwYXNz"})
    assert_denied(s, 401, "Jwt is missing", error=False)


def test_configured_realm(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys), realm="api.example.org"))
    s = p.http_stream()
    request(s, "eA.eQ.eg")  # "x"."y"."z"
    assert_denied(s, 401, "Jwt header is an invalid JSON", realm="api.example.org")


# ---------------------------------------------------------------- token locations and forwarding


def test_custom_header_and_query_parameter(host, jwt_wasm, keys):
    cfg = jwt_config(provider(keys, from_headers=[{"name": "X-Api-Token", "value_prefix": "Token "}],
                              from_params=["access_token"]))
    p = load(host, jwt_wasm, cfg)
    token = mint(keys, "ES384")
    s = p.http_stream()
    request(s, None, extra={"x-api-token": f"Token {token}"})
    assert forwarded(s)
    assert "x-api-token" not in s.upstream_request.headers

    s = p.http_stream()
    request(s, None, path=f"/api/items?a=1&access_token={token}&b=2")
    assert forwarded(s)
    assert s.upstream_request.headers.get(":path") == "/api/items?a=1&b=2"

    s = p.http_stream()  # the default Authorization location is replaced by the configured ones
    request(s, token)
    assert_denied(s, 401, "Jwt is missing", error=False)


def test_forward_true_keeps_the_token(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys, forward=True)))
    token = mint(keys, "RS256")
    s = p.http_stream()
    request(s, token)
    assert s.upstream_request.headers.get("authorization") == f"Bearer {token}"


def test_claims_to_headers_and_anti_spoofing(host, jwt_wasm, keys):
    cfg = jwt_config(provider(keys, claim_to_headers=[
        {"claim_name": "sub", "header_name": "x-sub"},
        {"claim_name": "org.id", "header_name": "x-org"},
        {"claim_name": "roles", "header_name": "x-roles"},
        {"claim_name": "admin", "header_name": "x-admin"},
        {"claim_name": "absent", "header_name": "x-absent"},
    ]))
    p = load(host, jwt_wasm, cfg)
    token = mint(keys, "EdDSA", {"org": {"id": 42}, "roles": ["a", "b"], "admin": False})
    s = p.http_stream()
    request(s, token, extra={"x-absent": "spoofed", "x-sub": "spoofed"})
    up = s.upstream_request.headers
    assert up.get("x-sub") == "alice"
    assert up.get_all("x-sub") == ["alice"]
    assert up.get("x-org") == "42"
    assert up.get("x-roles") == "a,b"
    assert up.get("x-admin") == "false"
    assert "x-absent" not in up


# ---------------------------------------------------------------- rules


def test_rules(host, jwt_wasm, keys):
    other_iss = "https://other.example"
    cfg = jwt_config(
        provider(keys),
        provider(keys, name="other", issuer=other_iss, audiences=None),
        rules=[
            {"prefix": "/public"},
            {"path": "/login", "requires": "main", "allow_missing": True},
            {"prefix": "/any", "requires": ["main", "other"]},
            {"prefix": "/api", "requires": "main"},
        ])
    p = load(host, jwt_wasm, cfg)
    good = mint(keys, "RS256")
    other = mint(keys, "RS256", {"iss": other_iss, "aud": None})

    def run(path, token):
        s = p.http_stream()
        request(s, token, path=path)
        return s

    assert forwarded(run("/public/x", None))
    assert forwarded(run("/public/x", "garbage"))           # bypass: token not even looked at
    assert forwarded(run("/login", None))                   # allow_missing
    assert run("/login", "a.b.c").local_reply.status_code == 401  # present but invalid still fails
    assert forwarded(run("/login?next=/", good))
    assert forwarded(run("/any/1", good))
    assert forwarded(run("/any/1", other))                  # requires_any: second provider
    assert run("/api/1", other).local_reply.body == b"Jwt issuer is not configured"
    assert run("/api/1", None).local_reply.body == b"Jwt is missing"
    assert forwarded(run("/unmatched", None))               # no rule: no requirement (as Envoy)
    assert forwarded(run("/login/extra", None))             # exact path does not match as a prefix
    assert host.metrics["jwt_authn.denied"] == 3


def test_default_rule_requires_a_token_everywhere(plugin):
    s = plugin.http_stream()
    request(s, None, path="/anything")
    assert s.local_reply.status_code == 401


# ---------------------------------------------------------------- token cache


def test_cache_skips_verification_until_expiry(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys, clock_skew_seconds=0), token_cache_size=2))
    token = mint(keys, "RS256", {"exp": T0 + 30})
    for _ in range(3):
        s = p.http_stream()
        request(s, token)
        assert forwarded(s)
    assert host.metrics["jwt_authn.cache_hit"] == 2
    assert host.metrics["jwt_authn.allowed"] == 3
    host.clock.advance(seconds=30)
    s = p.http_stream()
    request(s, token)
    assert_denied(s, 401, "Jwt is expired")       # a cached token still expires
    assert host.metrics["jwt_authn.cache_hit"] == 2


def test_cache_is_bounded_and_can_be_disabled(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys), token_cache_size=2))
    tokens = [mint(keys, "HS256", {"n": i}) for i in range(3)]
    for t in tokens + tokens[:1]:        # the 3rd insert evicts the 1st (FIFO)
        request(p.http_stream(), t)
    assert host.metrics["jwt_authn.cache_hit"] == 0
    request(p.http_stream(), tokens[2])
    assert host.metrics["jwt_authn.cache_hit"] == 1

    host2 = type(host)(start_time=T0)
    p2 = load(host2, jwt_wasm, jwt_config(provider(keys), token_cache_size=0))
    for _ in range(2):
        request(p2.http_stream(), tokens[0])
    assert host2.metrics["jwt_authn.cache_hit"] == 0
    assert host2.metrics["jwt_authn.allowed"] == 2


def test_tampered_copy_of_a_cached_token_is_not_a_hit(plugin, keys, host):
    token = mint(keys, "ES256")
    request(plugin.http_stream(), token)
    h, p, s = token.split(".")
    payload = json.loads(unb64(p)) | {"sub": "admin"}
    st = plugin.http_stream()
    request(st, f"{h}.{b64(json.dumps(payload).encode())}.{s}")
    assert_denied(st, 401, "Jwt verification fails")


# ---------------------------------------------------------------- remote JWKS


def remote_provider(keys, **over):
    rj = {"cluster": "jwks_cluster", "path": "/.well-known/jwks.json", "authority": "issuer.example",
          "cache_duration_s": 600, "refresh_interval_s": 300}
    rj.update(over)
    return provider(keys, local_jwks=None, remote_jwks=rj)


def test_remote_jwks_pauses_then_resumes(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys)))
    token = mint(keys, "RS256")
    s1, s2 = p.http_stream(), p.http_stream()
    r1 = request(s1, token)
    r2 = request(s2, token)
    assert r1.status != "Continue" and r2.status != "Continue"
    assert s1.local_reply is None and s1.upstream_request.headers is None
    calls = p.pending_http_calls
    assert len(calls) == 1, "one fetch serves every waiting request"
    call = calls[0]
    assert call.cluster == "jwks_cluster"
    assert call.headers.get(":method") == "GET"
    assert call.headers.get(":path") == "/.well-known/jwks.json"
    assert call.headers.get(":authority") == "issuer.example"
    call.respond(status=200, headers={"content-type": "application/json"}, body=json.dumps(keys.jwks()).encode())
    assert forwarded(s1) and forwarded(s2)
    assert "authorization" not in s1.upstream_request.headers
    s3 = p.http_stream()
    assert request(s3, token).status == "Continue"
    assert not p.pending_http_calls
    assert host.metrics["jwt_authn.jwks_fetch_success"] == 1


def test_remote_jwks_resumed_request_can_still_fail(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys)))
    s = p.http_stream()
    request(s, mint(keys, "RS256", kid="unknown"))
    p.pending_http_calls[0].respond(status=200, body=json.dumps(keys.jwks()).encode())
    assert_denied(s, 401, "Jwks doesn't have key to match kid or alg from Jwt")


@pytest.mark.parametrize("how", ["fail", "503", "garbage", "nokeys"])
def test_remote_jwks_fetch_failure(host, jwt_wasm, keys, how):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys)))
    s = p.http_stream()
    request(s, mint(keys, "ES256"))
    call = p.pending_http_calls[0]
    if how == "fail":
        call.fail()
    elif how == "503":
        call.respond(status=503, body=b"no healthy upstream")
    elif how == "garbage":
        call.respond(status=200, body=b"<html>")
    else:
        call.respond(status=200, body=b'{"keys": []}')
    assert_denied(s, 401, "Jwks remote fetch is failed")
    assert host.metrics["jwt_authn.jwks_fetch_failed"] == 1
    # The next request tries again.
    s2 = p.http_stream()
    request(s2, mint(keys, "ES256"))
    assert len(p.pending_http_calls) == 1
    p.pending_http_calls[0].respond(status=200, body=json.dumps(keys.jwks()).encode())
    assert forwarded(s2)


def test_remote_jwks_unknown_cluster_fails_fast(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys, cluster="nowhere")))
    s = p.http_stream()
    request(s, mint(keys, "RS256"))
    assert_denied(s, 401, "Jwks remote fetch is failed")


def test_refresh_on_tick_keeps_cache_on_failure_and_rotates_keys(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys, cache_duration_s=600, refresh_interval_s=300)))
    host.clock.advance(seconds=300)          # first tick fetches before any request
    assert len(p.pending_http_calls) == 1
    p.pending_http_calls[0].respond(status=200, body=json.dumps(keys.jwks()).encode())
    token = mint(keys, "RS256", {"exp": T0 + 100000})
    s = p.http_stream()
    assert request(s, token).status == "Continue"

    host.clock.advance(seconds=300)          # refresh due; it fails; cached keys still valid
    assert len(p.pending_http_calls) == 1
    p.pending_http_calls[0].fail()
    assert any("keeping the cached key set" in rec.message for rec in p.logs)
    s = p.http_stream()
    assert request(s, token).status == "Continue"

    host.clock.advance(seconds=300)          # cache (fetched at +300 s) now expired; refresh rotates keys
    assert len(p.pending_http_calls) == 1
    from jwt.algorithms import RSAAlgorithm
    new = {"keys": [RSAAlgorithm.to_jwk(keys.rsa_other.public_key(), as_dict=True) | {"kid": "rsa2"}]}
    p.pending_http_calls[0].respond(status=200, body=json.dumps(new).encode())
    s = p.http_stream()
    request(s, token)
    assert_denied(s, 401, "Jwks doesn't have key to match kid or alg from Jwt")
    s = p.http_stream()
    request(s, mint(keys, "RS256", {"exp": T0 + 100000}, kid="rsa2", key=keys.rsa_other))
    assert forwarded(s)


def test_expired_cache_pauses_requests_again(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys, cache_duration_s=60, refresh_interval_s=60)))
    token = mint(keys, "EdDSA", {"exp": T0 + 100000})
    s = p.http_stream()
    request(s, token)
    p.pending_http_calls[0].respond(status=200, body=json.dumps(keys.jwks()).encode())
    assert forwarded(s)
    host.clock.advance(seconds=60)           # tick refresh fails; cache expires at the same moment
    p.pending_http_calls[0].fail()
    s = p.http_stream()
    assert request(s, token).status != "Continue"
    assert s.local_reply is None and len(p.pending_http_calls) == 1
    p.pending_http_calls[0].respond(status=200, body=json.dumps(keys.jwks()).encode())
    assert forwarded(s)


def test_stream_completed_while_waiting(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys)))
    s1, s2 = p.http_stream(), p.http_stream()
    request(s1, mint(keys, "RS256"))
    request(s2, mint(keys, "RS256"))
    s1.complete()                            # client went away
    p.pending_http_calls[0].respond(status=200, body=json.dumps(keys.jwks()).encode())
    assert forwarded(s2)


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("config,message", [
    ('{"providers": [{"name": "a", "issuer": 5, "local_jwks": {"keys": []}}]}', "jwt_authn: providers[0].issuer: expected string"),
    ("{}", "jwt_authn: providers: required field is missing"),
    ("not json", "jwt_authn: invalid JSON"),
    ('{"providers": []}', "jwt_authn: providers: at least one provider is required"),
    ('{"providers": [{"name": "a"}]}', "jwt_authn: providers[0]: exactly one of local_jwks or remote_jwks is required"),
    ('{"providers": [{"name": "a", "isuser": "x", "local_jwks": {"keys": []}}]}', "jwt_authn: providers[0].isuser: unknown field"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": []}}]}', "jwt_authn: providers[0].local_jwks.keys: no usable key"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}]}',
     "jwt_authn: providers[0].local_jwks.keys[0].n: RSA key of 17 bits is below 2048 (RFC 7518 section 3.3); key skipped"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}]}',
     "jwt_authn: providers[0].local_jwks.keys: no usable key"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "oct", "k": "***"}]}}]}',
     "jwt_authn: providers[0].local_jwks.keys[0].k: invalid base64url"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}}]}',
     "jwt_authn: providers[0].local_jwks.keys[0].x: wrong coordinate length for the curve"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "oct", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s", "alg": "none"}]}}]}',
     "jwt_authn: providers[0].local_jwks.keys[0].alg: unsupported algorithm"),
    ('{"providers": [{"name": "a", "remote_jwks": {"path": "/j", "authority": "h"}}]}',
     "jwt_authn: providers[0].remote_jwks.cluster: required field is missing"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "oct", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"}]}}], "rules": [{"prefix": "/", "requires": "b"}]}',
     'jwt_authn: rules[0].requires: unknown provider "b"'),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "oct", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"}]}}], "rules": [{"requires": "a"}]}',
     'jwt_authn: rules[0]: exactly one of "prefix" or "path" is required'),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "oct", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"}]}, "clock_skew_seconds": -1}]}',
     "jwt_authn: providers[0].clock_skew_seconds: must be between 0 and 86400"),
    ('{"providers": [{"name": "a", "local_jwks": {"keys": [{"kty": "oct", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"}]}},'
     ' {"name": "a", "local_jwks": {"keys": [{"kty": "oct", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"}]}}]}',
     'jwt_authn: providers[1].name: duplicate provider name "a"'),
])
def test_bad_configuration_names_the_field(host, jwt_wasm, config, message):
    with pytest.raises(PluginRejected) as exc:
        load(host, jwt_wasm, config)
    messages = [rec.message for rec in exc.value.logs]
    assert any(m.startswith(message) for m in messages), messages


def test_local_jwks_as_a_json_string(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks=json.dumps(keys.jwks()))))
    s = p.http_stream()
    request(s, mint(keys, "PS384"))
    assert forwarded(s)


# ---------------------------------------------------------------- ES512 and RSA sizes


def rsa_key(bits: int, cache=None):
    """An RSA key of `bits`; the slow 8192-bit one is kept in pytest's cache between runs."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    name = f"jwt_authn/rsa{bits}"
    if cache is not None and (pem := cache.get(name, None)):
        return serialization.load_pem_private_key(pem.encode(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if cache is not None:
        cache.set(name, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode())
    return key


@pytest.fixture(scope="session")
def rsa_keys(request) -> dict:
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    return {bits: rsa_key(bits, cache if bits >= 4096 else None) for bits in (2049, 2560, 3001, 8192)}


@pytest.mark.parametrize("bits", [2049, 2560, 3001, 8192])
@pytest.mark.parametrize("alg", ["RS256", "PS256", "RS512", "PS512"])
def test_rsa_keys_of_any_size_from_2048_bits(host, jwt_wasm, keys, rsa_keys, bits, alg):
    """2049 and 3001 bits: the modulus is not a whole number of bytes (PSS then encodes one byte less)."""
    from jwt.algorithms import RSAAlgorithm
    key = rsa_keys[bits]
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "big"}
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [jwk]})))
    token = mint(keys, alg, kid="big", key=key)
    s = p.http_stream()
    request(s, token)
    assert forwarded(s)
    h, pl, sig = token.split(".")
    raw_sig = bytearray(unb64(sig))
    raw_sig[-1] ^= 1
    s = p.http_stream()
    request(s, f"{h}.{pl}.{b64(bytes(raw_sig))}")
    assert_denied(s, 401, "Jwt verification fails")


def test_rsa_signature_not_below_the_modulus_fails(host, jwt_wasm, keys):
    n = keys.rsa.public_key().public_numbers().n
    token = mint(keys, "RS256")
    h, pl, _ = token.split(".")
    s = load(host, jwt_wasm, jwt_config(provider(keys))).http_stream()
    request(s, f"{h}.{pl}.{b64((n + 1).to_bytes(256, 'big'))}")
    assert_denied(s, 401, "Jwt verification fails")


P521_ORDER = 0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409


def test_es512_rejects_tampering_and_out_of_range_scalars(plugin, keys):
    token = mint(keys, "ES512")
    h, pl, sig = token.split(".")
    raw = unb64(sig)
    assert len(raw) == 132
    n = P521_ORDER
    r, s_ = int.from_bytes(raw[:66], "big"), int.from_bytes(raw[66:], "big")
    flipped = bytearray(raw)
    flipped[70] ^= 0x10
    bad_sigs = (bytes(flipped),
                raw[:66] + (s_ + n).to_bytes(66, "big"),  # s >= n
                (r + n).to_bytes(66, "big") + raw[66:],   # r >= n
                bytes(66) + raw[66:],                     # r = 0
                raw[:-1])                                 # 131 bytes
    assert_only_original_verifies(plugin, token, [f"{h}.{pl}.{b64(bad)}" for bad in bad_sigs])


def test_es512_signature_with_low_s_form_also_verifies(plugin, keys):
    """ECDSA signatures (r, s) and (r, n - s) are both valid; JWS does not require low-s."""
    token = mint(keys, "ES512")
    h, pl, sig = token.split(".")
    raw = unb64(sig)
    n = P521_ORDER
    other = raw[:66] + (n - int.from_bytes(raw[66:], "big")).to_bytes(66, "big")
    st = plugin.http_stream()
    request(st, f"{h}.{pl}.{b64(other)}")
    assert forwarded(st)


# ---------------------------------------------------------------- unusable JWKS keys


def unusable_keys(keys) -> list[tuple[dict, str]]:
    """Keys this filter must not or cannot use, each with the reason its log line gives."""
    from jwt.algorithms import RSAAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p521 = json.loads(json.dumps(keys.jwks()["keys"][3]))  # ec521
    p521["y"] = p521["x"]
    return [
        (RSAAlgorithm.to_jwk(weak.public_key(), as_dict=True) | {"kid": "weak"},
         'keys[0].n (kid "weak"): RSA key of 1024 bits is below 2048 (RFC 7518 section 3.3)'),
        ({"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": b64(b"\x01" * 57)},
         'keys[1].crv (kid "ed448"): unsupported curve Ed448 (Ed25519)'),
        ({"kty": "EC", "crv": "P-192", "kid": "p192", "x": "AA", "y": "AA"},
         'keys[2].crv (kid "p192"): unsupported curve P-192 (P-256, P-384 or P-521)'),
        ({"kty": "XYZ", "kid": "odd"}, 'keys[3].kty (kid "odd"): unsupported key type XYZ (oct, RSA, EC or OKP)'),
        ({"kty": "oct", "kid": "short", "k": b64(b"s" * 31)},
         'keys[4].k (kid "short"): HMAC key of 31 bytes is shorter than 32 (RFC 7518 section 3.2)'),
        ({"kty": "oct", "kid": "short512", "alg": "HS512", "k": b64(b"s" * 63)},
         'keys[5].k (kid "short512"): HMAC key of 63 bytes is shorter than 64 (RFC 7518 section 3.2)'),
        (p521 | {"kid": "offcurve"}, 'keys[6].x (kid "offcurve"): point is not on the curve'),
    ]


def test_unusable_keys_are_skipped_with_a_log_line_each(host, jwt_wasm, keys):
    bad = unusable_keys(keys)
    good = keys.jwks()["keys"]
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [k for k, _ in bad] + good})))
    skipped = [r.message for r in p.logs if r.message.endswith("; key skipped")]
    assert skipped == [f"jwt_authn: providers[0].local_jwks.{why}; key skipped" for _, why in bad]
    s = p.http_stream()
    request(s, mint(keys, "ES512"))
    assert forwarded(s)
    s = p.http_stream()
    request(s, mint(keys, "HS256", kid="short", key=b"s" * 31))
    assert_denied(s, 401, "Jwks doesn't have key to match kid or alg from Jwt")


def test_a_jwks_without_any_usable_key_refuses_the_configuration(host, jwt_wasm, keys):
    with pytest.raises(PluginRejected) as exc:
        load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [k for k, _ in unusable_keys(keys)]})))
    messages = [r.message for r in exc.value.logs]
    assert sum(m.endswith("; key skipped") for m in messages) == 7
    assert "jwt_authn: providers[0].local_jwks.keys: no usable key" in messages


def test_remote_jwks_skips_unusable_keys_with_a_log_line(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(remote_provider(keys)))
    s = p.http_stream()
    request(s, mint(keys, "ES384"))
    bad = unusable_keys(keys)
    body = {"keys": [k for k, _ in bad] + keys.jwks()["keys"]}
    p.pending_http_calls[0].respond(status=200, body=json.dumps(body).encode())
    assert forwarded(s)
    skipped = [r.message for r in p.logs if r.message.endswith("; key skipped")]
    assert skipped == [f"jwt_authn: providers[0].remote_jwks.{why}; key skipped" for _, why in bad]


def test_hmac_key_without_alg_serves_only_the_algorithms_it_is_long_enough_for(host, jwt_wasm, keys):
    secret = b"z" * 40
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [{"kty": "oct", "kid": "k", "k": b64(secret)}]})))
    s = p.http_stream()
    request(s, mint(keys, "HS256", kid="k", key=secret))
    assert forwarded(s)
    s = p.http_stream()
    request(s, mint(keys, "HS384", kid="k", key=secret))  # 40 < 48 bytes
    assert_denied(s, 401, "Jwks doesn't have key to match kid or alg from Jwt")


# ---------------------------------------------------------------- claim types


def hs_token(claims: dict, secret: bytes = b"0123456789abcdef" * 4 + b"-secret") -> str:
    """An HS256 token with exactly these claims (PyJWT refuses to mint some of the malformed ones)."""
    header = b64(json.dumps({"alg": "HS256", "kid": "hmac"}).encode())
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


BASE = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": T0 + 3600}


@pytest.mark.parametrize("claims,reason", [
    ({"aud": 5}, "Jwt payload [aud] field is not a string or string list"),
    ({"aud": [AUD, 5]}, "Jwt payload [aud] field is not a string or string list"),
    ({"aud": {"a": AUD}}, "Jwt payload [aud] field is not a string or string list"),
    ({"aud": None}, "Jwt payload [aud] field is not a string or string list"),
    ({"exp": "tomorrow"}, "Jwt payload [exp] field is not an integer"),
    ({"exp": True}, "Jwt payload [exp] field is not an integer"),
    ({"nbf": "0"}, "Jwt payload [nbf] field is not an integer"),
    ({"iat": [T0]}, "Jwt payload [iat] field is not an integer"),
    ({"iss": 5}, "Jwt payload [iss] field is not a string"),
    ({"sub": 5}, "Jwt payload [sub] field is not a string"),
    ({"jti": 5}, "Jwt payload [jti] field is not a string"),
])
def test_registered_claims_of_the_wrong_type_are_401(plugin, claims, reason):
    s = plugin.http_stream()
    request(s, hs_token(BASE | claims))
    assert_denied(s, 401, reason)


def test_aud_type_is_checked_even_without_configured_audiences(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys, audiences=None)))
    s = p.http_stream()
    request(s, hs_token(BASE | {"aud": 7}))
    assert_denied(s, 401, "Jwt payload [aud] field is not a string or string list")


@pytest.mark.parametrize("claims", [{"iat": T0 + 0.5}, {"exp": 1e300}, {"exp": 10**30}, {"nbf": -5}, {"aud": []} | {"aud": [AUD]}])
def test_numeric_dates_of_any_json_number_form(plugin, claims):
    s = plugin.http_stream()
    request(s, hs_token(BASE | claims))
    assert forwarded(s)


# ---------------------------------------------------------------- several tokens, query decoding, prefixes


def two_location_plugin(host, jwt_wasm, keys, **over):
    return load(host, jwt_wasm, jwt_config(provider(
        keys, from_headers=[{"name": "authorization", "value_prefix": "Bearer "}, {"name": "x-token"}],
        from_params=["access_token"], **over)))


def run(p, path: str, headers=None):
    s = p.http_stream()
    h = [(":method", "GET"), (":path", path), (":authority", "example.com"), (":scheme", "http")] + list(headers or [])
    s.send_request_headers(h, end_of_stream=True)
    return s


def test_query_token_is_percent_decoded_and_removed(host, jwt_wasm, keys):
    p = two_location_plugin(host, jwt_wasm, keys)
    token = mint(keys, "ES256")
    s = run(p, "/api?a=1&access_token=" + token.replace(".", "%2E").replace("-", "%2d") + "&b=%41")
    assert forwarded(s)
    assert s.upstream_request.headers.get(":path") == "/api?a=1&b=%41"
    s = run(p, "/api?access%5Ftoken=" + token)  # the parameter name is decoded too
    assert forwarded(s)
    assert s.upstream_request.headers.get(":path") == "/api"


def test_every_token_is_verified_and_any_invalid_one_fails(host, jwt_wasm, keys):
    p = two_location_plugin(host, jwt_wasm, keys)
    good, other_good = mint(keys, "ES256"), mint(keys, "RS256", {"sub": "bob"})
    bad = mint(keys, "ES256", {"exp": T0 - 3600})
    auth = lambda t: ("authorization", f"Bearer {t}")  # noqa: E731
    xtok = lambda t: ("x-token", t)  # noqa: E731
    # Repeated lines use x-token: Envoy joins repeated Authorization lines into one value before filters run.
    cases = [
        (f"/api?access_token={bad}", [auth(good)]),
        (f"/api?access_token={good}", [auth(bad)]),
        (f"/api?access_token={good}&access_token={bad}", []),
        (f"/api?access_token={bad}&access_token={good}", []),
        ("/api", [xtok(good), xtok(bad)]),
        ("/api", [xtok(bad), xtok(good)]),
        ("/api", [auth(good), xtok(bad)]),
    ]
    for path, headers in cases:
        assert_denied(run(p, path, headers), 401, "Jwt is expired")
    s = run(p, f"/api?access_token={other_good}&x=1", [auth(good), xtok(good), xtok(other_good)])
    assert forwarded(s)
    up = s.upstream_request.headers
    assert "authorization" not in up and "x-token" not in up and up.get(":path") == "/api?x=1"


@pytest.mark.parametrize("mode,value,ok", [
    ("anchored", "Bearer {t}", True),
    ("anchored", "bearer {t}", True),
    ("anchored", "x Bearer {t}", False),
    ("envoy", "Bearer {t}", True),
    ("envoy", "Bearer \t {t}", True),
    ("envoy", "bearer {t}", False),
    ("envoy", "x Bearer {t}", True),
    ("envoy", "Token=Bearer {t}", True),
])
def test_value_prefix_match_modes(host, jwt_wasm, keys, mode, value, ok):
    p = load(host, jwt_wasm, jwt_config(provider(keys, value_prefix_match=mode)))
    s = p.http_stream()
    request(s, None, extra={"authorization": value.format(t=mint(keys, "HS256"))})
    if ok:
        assert forwarded(s)
    else:
        assert_denied(s, 401, "Jwt is missing", error=False)


def test_envoy_prefix_mode_without_prefix_takes_the_whole_value(host, jwt_wasm, keys):
    cfg = jwt_config(provider(keys, value_prefix_match="envoy", from_headers=[{"name": "x-token"}]))
    p = load(host, jwt_wasm, cfg)
    token = mint(keys, "HS256")
    s = p.http_stream()
    request(s, None, extra={"x-token": token})
    assert forwarded(s)
    s = p.http_stream()
    request(s, None, extra={"x-token": f"t={token}"})
    assert_denied(s, 401, "Jwt header is an invalid Base64url encoded")


# ---------------------------------------------------------------- realm, properties, token size


@pytest.mark.parametrize("path,extra,realm", [
    ("/api?x=1", {}, "http://example.com/api?x=1"),
    ("/api", {"x-forwarded-proto": "https"}, "https://example.com/api"),
    ("/api/" + "y" * 300, {}, "http://example.com" + ("/api/" + "y" * 300)[:256]),
    ("/api", {"x-envoy-original-path": "/orig"}, "http://example.com/orig"),
])
def test_realm_from_the_request_uri_as_envoy_builds_it(host, jwt_wasm, keys, path, extra, realm):
    p = load(host, jwt_wasm, jwt_config(provider(keys), realm_from_uri=True))
    s = p.http_stream()
    request(s, None, path=path, extra=extra)
    assert_denied(s, 401, "Jwt is missing", error=False, realm=realm)
    s = p.http_stream()
    request(s, "a.b.c", path=path, extra=extra)
    assert s.downstream_response.headers.get("www-authenticate") == f'Bearer realm="{realm}", error="invalid_token"'


def test_payload_and_header_as_properties_for_later_filters(host, jwt_wasm, keys):
    p = load(host, jwt_wasm, jwt_config(provider(keys, payload_in_property="jwt_payload", header_in_property="jwt_header")))
    token = mint(keys, "ES512", {"roles": ["a"]})
    s = p.http_stream()
    request(s, token)
    assert forwarded(s)
    h, pl, _ = token.split(".")
    assert s.filter_state[("jwt_payload",)] == unb64(pl)
    assert s.filter_state[("jwt_header",)] == unb64(h)
    s = p.http_stream()
    request(s, mint(keys, "ES512", {"exp": T0 - 3600}))
    assert s.filter_state == {}


def padded_tokens(keys) -> dict[int, str]:
    """HS256 tokens by length, padded with a "pad" claim (lengths near 8192 and one of 50 KB)."""
    out = {}
    n0 = (8192 - len(mint(keys, "HS256", {"pad": ""}))) * 3 // 4
    for n in list(range(n0 - 4, n0 + 5)) + [37000]:
        t = mint(keys, "HS256", {"pad": "x" * n})
        out[len(t)] = t
    return out


def test_max_token_bytes_default_is_8192(host, jwt_wasm, keys):
    tokens = padded_tokens(keys)
    at_most = max(n for n in tokens if n <= 8192)
    above = min(n for n in tokens if n > 8192)
    assert 8190 <= at_most and above <= 8194
    p = load(host, jwt_wasm, jwt_config(provider(keys)))
    s = p.http_stream()
    request(s, tokens[at_most])
    assert forwarded(s)
    s = p.http_stream()
    request(s, tokens[above])
    assert_denied(s, 401, "Jwt is too large")


def test_max_token_bytes_boundary_and_no_limit(host, jwt_wasm, keys):
    token = mint(keys, "HS256")
    for limit, ok in ((len(token), True), (len(token) - 1, False)):
        s = load(host, jwt_wasm, jwt_config(provider(keys, name=f"p{limit}"), max_token_bytes=limit)).http_stream()
        request(s, token)
        assert forwarded(s) if ok else s.local_reply.body == b"Jwt is too large"
    big = max(padded_tokens(keys).items())[1]
    assert len(big) > 49000
    s = load(host, jwt_wasm, jwt_config(provider(keys, name="unlimited"), max_token_bytes=0)).http_stream()
    request(s, big)
    assert forwarded(s)


@pytest.mark.parametrize("top,message", [
    ({"realm": "x", "realm_from_uri": True}, 'jwt_authn: realm_from_uri: cannot be combined with "realm"'),
    ({"max_token_bytes": -1}, "jwt_authn: max_token_bytes: must be between 0 and 1048576"),
])
def test_new_top_level_fields_are_validated(host, jwt_wasm, keys, top, message):
    with pytest.raises(PluginRejected) as exc:
        load(host, jwt_wasm, jwt_config(provider(keys), **top))
    assert message in [r.message for r in exc.value.logs]


@pytest.mark.parametrize("over,message", [
    ({"value_prefix_match": "loose"}, 'jwt_authn: providers[0].value_prefix_match: expected "anchored" or "envoy"'),
    ({"payload_in_property": ""}, "jwt_authn: providers[0].payload_in_property: must be 1 to 256 bytes without NUL"),
    ({"header_in_property": 5}, "jwt_authn: providers[0].header_in_property: expected string"),
])
def test_new_provider_fields_are_validated(host, jwt_wasm, keys, over, message):
    with pytest.raises(PluginRejected) as exc:
        load(host, jwt_wasm, jwt_config(provider(keys, **over)))
    assert message in [r.message for r in exc.value.logs]


# ---------------------------------------------------------------- what `proxywasm validate` knows


@pytest.mark.parametrize("top,over,bad", [
    ({"realm_from_uri": True, "max_token_bytes": 0}, {"value_prefix_match": "envoy", "payload_in_property": "p",
                                                      "header_in_property": "h"}, None),
    ({"realm_from_uri": "yes"}, {}, "realm_from_uri"),
    ({"max_token_bytes": -1}, {}, "max_token_bytes"),
    ({}, {"value_prefix_match": "loose"}, "providers[0].value_prefix_match"),
    ({}, {"payload_in_property": ""}, "providers[0].payload_in_property"),
    ({}, {"header_in_property": 5}, "providers[0].header_in_property"),
])
def test_schema_and_filter_agree_on_the_new_fields(host, jwt_wasm, keys, top, over, bad):
    from proxywasm_host.filter_schemas import SCHEMAS, check
    cfg = json.loads(jwt_config(provider(keys, **over), **top))
    problems = check(SCHEMAS["jwt_authn"], cfg)
    if bad is None:
        assert problems == []
        load(host, jwt_wasm, json.dumps(cfg))
    else:
        assert len(problems) == 1 and problems[0].startswith(f"{bad}: "), problems
        with pytest.raises(PluginRejected):
            load(host, jwt_wasm, json.dumps(cfg))


def test_es512_with_many_keys(host, jwt_wasm, keys):
    """Random keys and messages exercise the P-521 field's carries and reductions."""
    signers = [ec.generate_private_key(ec.SECP521R1()) for _ in range(8)]
    jwks = {"keys": [ECAlgorithm.to_jwk(k.public_key(), as_dict=True) | {"kid": f"e{i}"} for i, k in enumerate(signers)]}
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks=jwks)))
    for i, key in enumerate(signers):
        token = mint(keys, "ES512", {"n": i}, kid=f"e{i}", key=key)
        s = p.http_stream()
        request(s, token)
        assert forwarded(s), i
        s = p.http_stream()
        request(s, mint(keys, "ES512", {"n": i}, kid=f"e{(i + 1) % len(signers)}", key=key))
        assert_denied(s, 401, "Jwt verification fails")


def test_p521_coordinates_not_below_p_are_refused(host, jwt_wasm, keys):
    good = keys.jwks()["keys"][3]
    p_bytes = b64((2**521 - 1).to_bytes(66, "big"))
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [good, good | {"kid": "bad", "x": p_bytes}]})))
    assert [r.message for r in p.logs if r.message.endswith("key skipped")] == [
        'jwt_authn: providers[0].local_jwks.keys[1].x (kid "bad"): point is not on the curve; key skipped']


def test_rsa_keys_outside_the_supported_range_are_skipped(host, jwt_wasm, keys):
    from jwt.algorithms import RSAAlgorithm
    good = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True)
    huge_n = b64((1 << 16391 | 1).to_bytes(2049, "big"))  # 16392 bits, odd
    bad = [good | {"kid": "huge", "n": huge_n}, good | {"kid": "even-e", "e": b64(b"\x01\x00\x00")}]
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": bad + [good | {"kid": "rsa"}]})))
    assert [r.message for r in p.logs if r.message.endswith("key skipped")] == [
        'jwt_authn: providers[0].local_jwks.keys[0].n (kid "huge"): RSA key of 16392 bits is above 16384; key skipped',
        'jwt_authn: providers[0].local_jwks.keys[1].e (kid "even-e"): invalid RSA exponent (odd, above 1, at most 32 bits);'
        ' key skipped']
    s = p.http_stream()
    request(s, mint(keys, "RS256"))
    assert forwarded(s)


SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")  # RFC 8017 section 9.2, note 1


def test_rs256_with_a_modulus_at_the_16384_bit_limit(host, jwt_wasm, keys):
    """The largest modulus accepted. A real 16384-bit key takes minutes to generate; verification needs only n
    and e, so n here is the product of the 32 primes of 16 RSA-1024 keys and the signature is made by CRT."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    primes = []
    for _ in range(16):
        numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_numbers()
        primes += [numbers.p, numbers.q]
    n = math.prod(primes)
    assert 16368 < n.bit_length() <= 16384
    k = (n.bit_length() + 7) // 8
    header = b64(json.dumps({"alg": "RS256", "kid": "max"}).encode())
    payload = b64(json.dumps({"iss": ISS, "aud": AUD, "sub": "max", "exp": T0 + 60}).encode())
    t = SHA256_DIGEST_INFO + hashlib.sha256(f"{header}.{payload}".encode()).digest()
    m = int.from_bytes(b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t, "big")
    s = sum(pow(m % p, pow(65537, -1, p - 1), p) * (n // p) * pow(n // p, -1, p) for p in primes) % n
    assert pow(s, 65537, n) == m
    jwk = {"kty": "RSA", "kid": "max", "n": b64(n.to_bytes(k, "big")), "e": "AQAB"}
    p = load(host, jwt_wasm, jwt_config(provider(keys, local_jwks={"keys": [jwk]})))
    token = f"{header}.{payload}.{b64(s.to_bytes(k, 'big'))}"
    assert_only_original_verifies(p, token, [f"{header}.{payload}.{b64((s + 1).to_bytes(k, 'big'))}"])
