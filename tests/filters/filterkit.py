"""Helpers shared by the filter tests and bench/filters_bench.py: keys for every
JWS algorithm, token minting against the virtual clock, and config builders."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "filters") not in sys.path:
    sys.path.insert(0, str(ROOT / "filters"))

T0 = 1_700_000_000  # virtual wall clock at the start of every test (seconds)


class Keys:
    """One key per algorithm family, with its JWK (public part) and kid."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa3072 = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        self.ec256 = ec.generate_private_key(ec.SECP256R1())
        self.ec384 = ec.generate_private_key(ec.SECP384R1())
        self.ec521 = ec.generate_private_key(ec.SECP521R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.hmac = b"0123456789abcdef" * 4 + b"-secret"  # >= 64 bytes: no PyJWT key-length warning for HS512

    def signing_key(self, alg: str):
        family = alg if alg in ("ES256", "ES384", "ES512", "EdDSA") else alg[:2]
        return {"HS": self.hmac, "RS": self.rsa, "PS": self.rsa, "ES256": self.ec256, "ES384": self.ec384,
                "ES512": self.ec521, "EdDSA": self.ed}[family]

    def kid(self, alg: str) -> str:
        family = alg if alg in ("ES256", "ES384", "ES512", "EdDSA") else alg[:2]
        return {"HS": "hmac", "RS": "rsa", "PS": "rsa", "ES256": "ec256", "ES384": "ec384", "ES512": "ec521",
                "EdDSA": "ed"}[family]

    def jwks(self, with_kid: bool = True) -> dict:
        keys = [
            (RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "rsa"),
            (ECAlgorithm.to_jwk(self.ec256.public_key(), as_dict=True), "ec256"),
            (ECAlgorithm.to_jwk(self.ec384.public_key(), as_dict=True), "ec384"),
            (ECAlgorithm.to_jwk(self.ec521.public_key(), as_dict=True), "ec521"),
            (OKPAlgorithm.to_jwk(self.ed.public_key(), as_dict=True), "ed"),
            (HMACAlgorithm.to_jwk(self.hmac, as_dict=True), "hmac"),
        ]
        out = []
        for k, kid in keys:
            k = dict(k)
            if with_kid:
                k["kid"] = kid
            out.append(k)
        return {"keys": out}


ISS = "https://issuer.example"
AUD = "api"


def mint(keys: Keys, alg: str = "RS256", claims: dict | None = None, *, kid: str | None | bool = True,
         key=None, headers: dict | None = None, now: int = T0) -> str:
    """A token with iss/aud/exp set relative to the virtual clock's start."""
    body = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 3600}
    body.update(claims or {})
    body = {k: v for k, v in body.items() if v is not None}
    hdr = dict(headers or {})
    if kid is True:
        hdr["kid"] = keys.kid(alg)
    elif isinstance(kid, str):
        hdr["kid"] = kid
    return jwt.encode(body, key if key is not None else keys.signing_key(alg), algorithm=alg, headers=hdr or None)


def provider(keys: Keys, **over) -> dict:
    p = {"name": "main", "issuer": ISS, "audiences": [AUD], "local_jwks": keys.jwks()}
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


def jwt_config(*providers: dict, **top) -> str:
    cfg = {"providers": list(providers)}
    cfg.update(top)
    return json.dumps(cfg)


def request(stream, token: str | None = None, path: str = "/api", extra: dict | None = None):
    h = {":method": "GET", ":path": path, ":authority": "example.com", ":scheme": "http"}
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    h.update(extra or {})
    return stream.send_request_headers(h, end_of_stream=True)
