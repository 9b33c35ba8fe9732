"""Benchmarks of the Zig filters through the project's host.

run() returns microseconds (median of many iterations) for:
  jwt_verify_<alg>_first_us   one request whose token is verified (signature checked; token cache off)
  jwt_verify_<alg>_cached_us  the same token again with the verified-token cache on (signature skipped)
  jwt_verify_es512_first_us   ES512 (P-521, built on std.crypto.ff) per verification
  jwt_verify_rs256_8192_first_us  RS256 with an 8192-bit key per verification
  ratelimit_decision_us       one request through the rate limiter (shared-data CAS round trip)
  ratelimit_limit_and_default_us  one request that takes a token from a matching limit and the default bucket
Each figure is the time of stream.send_request_headers only (stream creation excluded).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "filters"))
sys.path.insert(0, str(ROOT / "tests" / "filters"))
sys.path.insert(0, str(ROOT))

ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
HEADERS = {":method": "GET", ":path": "/api", ":authority": "example.com"}


def _time_request(plugin, headers: dict, iterations: int) -> float:
    samples = []
    for _ in range(iterations):
        stream = plugin.http_stream()
        t0 = time.perf_counter()
        stream.send_request_headers(headers, end_of_stream=True)
        samples.append(time.perf_counter() - t0)
        if stream.local_reply is not None:
            raise RuntimeError(f"benchmark request was rejected: {stream.local_reply}")
        stream.complete()
    return statistics.median(samples) * 1e6


def run(iterations: int = 200) -> dict[str, float]:
    from build import build_filter
    from filterkit import T0, Keys, jwt_config, mint, provider
    from proxywasm_host import Host

    jwt_wasm = build_filter("jwt_authn").read_bytes()
    rl_wasm = build_filter("ratelimit").read_bytes()
    keys = Keys()
    results: dict[str, float] = {}

    host = Host(start_time=T0)
    uncached = host.load_plugin(jwt_wasm, configuration=jwt_config(provider(keys), token_cache_size=0))
    cached = host.load_plugin(jwt_wasm, configuration=jwt_config(provider(keys), token_cache_size=16))
    for alg in ALGS:
        headers = HEADERS | {"authorization": f"Bearer {mint(keys, alg)}"}
        n = iterations if alg[:2] in ("HS", "Ed") else max(20, iterations // 4)
        results[f"jwt_verify_{alg.lower()}_first_us"] = _time_request(uncached, headers, n)
        _time_request(cached, headers, 1)  # fill the cache
        results[f"jwt_verify_{alg.lower()}_cached_us"] = _time_request(cached, headers, iterations)

    results.update(_big_keys(jwt_wasm, keys, iterations))

    host = Host(start_time=T0)
    rl = host.load_plugin(rl_wasm, configuration=json.dumps(
        {"bucket": {"max_tokens": 1_000_000_000, "fill_interval_ms": 1000}, "descriptors": [{"source": "header", "name": "x-user"}]}))
    results["ratelimit_decision_us"] = _time_request(rl, HEADERS | {"x-user": "alice"}, iterations * 5)
    big = {"max_tokens": 1_000_000_000, "fill_interval_ms": 1000}
    rl2 = host.load_plugin(rl_wasm, name="rl2", configuration=json.dumps(
        {"bucket": big, "descriptors": [{"source": "header", "name": "x-user", "key": "user"}],
         "limits": [{"entries": [{"key": "user"}], "bucket": big}]}))
    results["ratelimit_limit_and_default_us"] = _time_request(rl2, HEADERS | {"x-user": "alice"}, iterations * 5)
    return results


def _big_keys(jwt_wasm: bytes, keys, iterations: int) -> dict[str, float]:
    """ES512 and RSA-8192, the slowest verifications the filter supports (token cache off)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm
    from filterkit import T0, jwt_config, mint, provider
    from proxywasm_host import Host

    rsa8192 = rsa.generate_private_key(public_exponent=65537, key_size=8192)
    jwks = keys.jwks()
    jwks["keys"].append(RSAAlgorithm.to_jwk(rsa8192.public_key(), as_dict=True) | {"kid": "rsa8192"})
    plugin = Host(start_time=T0).load_plugin(jwt_wasm, configuration=jwt_config(provider(keys, local_jwks=jwks),
                                                                                token_cache_size=0))
    n = max(20, iterations // 4)
    es512 = HEADERS | {"authorization": f"Bearer {mint(keys, 'ES512')}"}
    rs8192 = HEADERS | {"authorization": f"Bearer {mint(keys, 'RS256', kid='rsa8192', key=rsa8192)}"}
    return {"jwt_verify_es512_first_us": _time_request(plugin, es512, n),
            "jwt_verify_rs256_8192_first_us": _time_request(plugin, rs8192, n)}


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:36s} {value:10.1f}")
