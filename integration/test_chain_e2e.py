"""jwt_authn then ratelimit in one Envoy 1.40 filter chain: the rate limiter is keyed by the
``x-jwt-sub`` claim header that jwt_authn forwards (and strips from clients)."""

from __future__ import annotations

import threading
from typing import Iterator

import httpx
import pytest

from proxywasm_host.envoy import EchoUpstream, EnvoyHarness, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

from scenarios import AUTHORITY, Keys, bearer, chain_ratelimit_config, chain_scenario, jwt_local_config, unique, wasm_path


@pytest.fixture(scope="module")
def chain_env(keys: Keys) -> Iterator[EnvoyHarness]:
    with EchoUpstream() as up:
        filters = [WasmFilter("jwt_authn", wasm_path("jwt_authn"), configuration=jwt_local_config(keys)),
                   WasmFilter("ratelimit", wasm_path("ratelimit"), configuration=chain_ratelimit_config(unique("c")))]
        with envoy_harness(filters, upstream=up, concurrency=2) as env:
            yield env


def test_chain_scenario(chain_env: EnvoyHarness, keys: Keys, play) -> None:
    domain = unique("chain")
    chain_env.publish("ratelimit", configuration=chain_ratelimit_config(domain))
    obs = play(chain_env, chain_scenario(keys, domain))
    # the bucket is the verified subject, not what the client claimed
    seen = obs[1].json()["headers"]
    assert seen.get("x-jwt-sub") == "alice" and "authorization" not in seen
    assert obs[2].headers.get_list("retry-after") == ["60"]
    # jwt_authn answered: ratelimit never ran, so no x-ratelimit-* on the 401
    assert obs[4].status_code == 401 and obs[4].headers.get_list("www-authenticate") == ['Bearer realm="api.example"']
    assert not any(k.startswith("x-ratelimit") for k in obs[4].headers)


def test_per_subject_limit_holds_across_workers(chain_env: EnvoyHarness, keys: Keys) -> None:
    """6 parallel connections send alice's token 3 times each: exactly 2 pass (max_tokens).
    A forged x-jwt-sub from mallory with alice's token still draws from alice's bucket."""
    chain_env.publish("ratelimit", configuration=chain_ratelimit_config(unique("par")))
    alice = keys.token("alice")
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        hdrs = {"host": AUTHORITY, **bearer(alice), **({"x-jwt-sub": f"mallory{i}"} if i % 2 else {})}
        with httpx.Client(timeout=10) as c:
            c.get(chain_env.url("/health"))  # connect first (bypassed, no key: not limited)
            barrier.wait(timeout=10)
            got = [c.get(chain_env.url("/api"), headers=hdrs).status_code for _ in range(3)]
        with lock:
            statuses.extend(got)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(statuses) == [200] * 2 + [429] * 16, statuses
    # another subject is unaffected
    r = httpx.get(chain_env.url("/api"), headers={"host": AUTHORITY, **bearer(keys.token("bob"))}, timeout=10)
    assert r.status_code == 200 and r.json()["headers"]["x-jwt-sub"] == "bob"
    assert r.headers["x-ratelimit-remaining"] == "1"
