"""Envoy side-by-side benchmark: the same route without a filter, with a no-op wasm filter,
and (when filters/out/*.wasm exist) our JWT / rate-limit wasm filters vs Envoy's native
jwt_authn / local_ratelimit configured equivalently.

All variants are listeners of ONE Envoy process and are measured interleaved in small
rounds, so machine noise hits every variant alike. The client is a bounded Python loop
on one keep-alive connection per listener (http.client, ~tens of µs of client cost), so
absolute numbers include client overhead; the differences are what matter.

    python bench/envoy_bench.py        # prints JSON
"""

from __future__ import annotations

import base64
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxywasm_host.envoy import EnvoyHarness, ListenerSpec, StaticFilter, WasmFilter  # noqa: E402
from proxywasm_host.envoy.wat import build_wat  # noqa: E402

REQUESTS_PER_VARIANT = 3000
ROUND = 100  # requests per variant per round (interleaving)
MAX_SECONDS = 120.0
ISS, AUD, SECRET = "https://issuer.example", "api", b"bench-secret-0123456789abcdef0123"


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _jwks() -> dict[str, Any]:
    return {"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": _b64(SECRET)}]}


def _token() -> str:
    import jwt  # pyjwt (dev dependency)

    now = int(time.time())
    return jwt.encode({"iss": ISS, "aud": AUD, "sub": "bench", "iat": now, "exp": now + 3600}, SECRET,
                      algorithm="HS256", headers={"kid": "k1"})


def native_jwt_authn() -> StaticFilter:
    """Envoy's jwt_authn with the same issuer/audience/inline JWKS as the wasm filter's config."""
    return StaticFilter("envoy.filters.http.jwt_authn", {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"main": {
            "issuer": ISS, "audiences": [AUD], "forward": True,
            "local_jwks": {"inline_string": json.dumps(_jwks())},
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}],
    })


def wasm_jwt_config() -> str:
    return json.dumps({"providers": [{"name": "main", "issuer": ISS, "audiences": [AUD], "local_jwks": _jwks()}]})


def native_local_ratelimit() -> StaticFilter:
    """Envoy's local_ratelimit with a bucket that never runs dry (measures the check, not 429s)."""
    return StaticFilter("envoy.filters.http.local_ratelimit", {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "bench_rl",
        "token_bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "rl_enabled", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"runtime_key": "rl_enforced", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
    })


def wasm_ratelimit_config() -> str:
    return json.dumps({"bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000,
                                  "fill_interval_ms": 1000}})


class _Client:
    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.headers = headers
        self.lat_us: list[float] = []
        self.busy_s = 0.0
        self.non_200 = 0

    def one(self) -> None:
        t0 = time.perf_counter()
        self.conn.request("GET", "/bench", headers=self.headers)
        r = self.conn.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        self.busy_s += dt
        self.lat_us.append(dt * 1e6)
        if r.status != 200:
            self.non_200 += 1


def run(requests_per_variant: int = REQUESTS_PER_VARIANT, log: Callable[[str], None] = lambda s: None) -> dict[str, float]:
    """Measure every available variant; returns ``{name_with_unit: value}``."""
    noop = build_wat(ROOT / "integration" / "wat" / "noop.wat")
    listeners = [ListenerSpec("direct", []), ListenerSpec("noop_wasm", [WasmFilter("noop", noop)])]
    headers: dict[str, dict[str, str]] = {"direct": {}, "noop_wasm": {}}
    pairs: list[tuple[str, str]] = [("noop_wasm", "direct")]
    out_dir = ROOT / "filters" / "out"
    skipped: list[str] = []
    if (out_dir / "jwt_authn.wasm").exists():
        tok = {"authorization": f"Bearer {_token()}"}
        listeners += [ListenerSpec("jwt_wasm", [WasmFilter("jwt_authn", out_dir / "jwt_authn.wasm",
                                                           configuration=wasm_jwt_config())]),
                      ListenerSpec("jwt_native", [native_jwt_authn()])]
        headers |= {"jwt_wasm": tok, "jwt_native": tok}
        pairs.append(("jwt_wasm", "jwt_native"))
    else:
        skipped.append("jwt (filters/out/jwt_authn.wasm missing)")
    if (out_dir / "ratelimit.wasm").exists():
        listeners += [ListenerSpec("ratelimit_wasm", [WasmFilter("ratelimit", out_dir / "ratelimit.wasm",
                                                                 configuration=wasm_ratelimit_config())]),
                      ListenerSpec("ratelimit_native", [native_local_ratelimit()])]
        headers |= {"ratelimit_wasm": {}, "ratelimit_native": {}}
        pairs.append(("ratelimit_wasm", "ratelimit_native"))
    else:
        skipped.append("ratelimit (filters/out/ratelimit.wasm missing)")
    for s in skipped:
        log(f"skipping {s}")

    results: dict[str, float] = {}
    with EnvoyHarness(listeners=listeners, concurrency=1, component_log_level="wasm:warn", log_level="warn") as env:
        results["envoy_startup_ms"] = env.startup_seconds * 1000
        clients = {name: _Client(env.port(name), headers[name]) for name in headers}
        for c in clients.values():  # warm-up: VMs, connections, JIT
            for _ in range(50):
                c.one()
            c.lat_us.clear()
            c.busy_s = 0.0
        for name in ("jwt_wasm", "jwt_native"):  # sanity: both really enforce the token
            if name in clients:
                c = http.client.HTTPConnection("127.0.0.1", env.port(name), timeout=5)
                c.request("GET", "/bench")
                results[f"envoy_{name}_no_token_status"] = float(c.getresponse().status)
                c.close()
        deadline = time.monotonic() + MAX_SECONDS
        done = 0
        while done < requests_per_variant and time.monotonic() < deadline:
            for c in clients.values():
                for _ in range(ROUND):
                    c.one()
            done += ROUND
        for c in clients.values():
            c.conn.close()
    for name, c in clients.items():
        if not c.lat_us:
            continue
        results[f"envoy_{name}_p50_us"] = statistics.median(c.lat_us)
        results[f"envoy_{name}_p99_us"] = statistics.quantiles(c.lat_us, n=100)[98]
        results[f"envoy_{name}_rps"] = len(c.lat_us) / c.busy_s
        results[f"envoy_{name}_non200_count"] = float(c.non_200)
    base = results["envoy_direct_p50_us"]
    for name in clients:
        if name != "direct":
            results[f"envoy_{name}_added_p50_us"] = results[f"envoy_{name}_p50_us"] - base
    for wasm_name, native_name in pairs[1:]:
        results[f"envoy_{wasm_name}_minus_native_p50_us"] = (
            results[f"envoy_{wasm_name}_p50_us"] - results[f"envoy_{native_name}_p50_us"])
    return results


if __name__ == "__main__":
    print(json.dumps(run(log=lambda s: print(s, file=sys.stderr)), indent=1, sort_keys=True))
