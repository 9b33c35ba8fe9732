"""The Zig ratelimit filter (filters/out/ratelimit.wasm) in a real Envoy 1.40, driven with httpx.

Envoy runs with ``--concurrency 2``: each worker has its own VM and the buckets live in
Envoy's process-wide shared data, so a limit must hold exactly across both workers.
Every test uses a fresh ``domain`` (bucket keys include it; shared data survives ECDS reloads).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Iterator

import httpx
import pytest

from proxywasm_host.envoy import EchoUpstream, EnvoyHarness, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

from scenarios import ratelimit_config, ratelimit_scenario, unique, wasm_path

CONNECTIONS = 8        # parallel keep-alive connections per burst
PER_CONNECTION = 4     # requests each: 32 per burst
LIMIT = 10             # max_tokens: 10 of the 32 may pass
ROUNDS = 300           # bursts, each on a fresh bucket key (the creation race needs a new key)


@pytest.fixture(scope="module")
def rl_env() -> Iterator[EnvoyHarness]:
    with EchoUpstream() as up:
        spec = WasmFilter("ratelimit", wasm_path("ratelimit"), configuration=ratelimit_config(unique("boot")))
        with envoy_harness([spec], upstream=up, concurrency=2) as env:
            yield env


def worker_connections(env: EnvoyHarness) -> dict[str, int]:
    """Accepted connections per worker (Envoy names listener stats after the configured
    address, 127.0.0.1_0 for both harness listeners; only "main" gets traffic here)."""
    out: dict[str, int] = {}
    for k, v in env.stats(r"^listener\..*\.worker_\d+\.downstream_cx_total$").items():
        w = k.split(".worker_")[1].split(".")[0]
        out[w] = out.get(w, 0) + v
    return out


def _filter_headers(r: httpx.Response) -> dict[str, list[str]]:
    names = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    return {n: r.headers.get_list(n) for n in names if n in r.headers}


def test_sequential_limits_and_headers(rl_env: EnvoyHarness, play) -> None:
    rl_env.publish("ratelimit", configuration=ratelimit_config(unique("seq")))
    obs = play(rl_env, ratelimit_scenario("unused"))  # the requests; the published domain above is what counts
    assert [o.headers.get_list("x-ratelimit-remaining") for o in obs[:3]] == [["2"], ["1"], ["0"]]
    assert [o.headers.get_list("x-ratelimit-reset") for o in obs[:3]] == [["0"], ["0"], ["60"]]
    limited = obs[3]
    assert limited.status_code == 429 and limited.text == "local_rate_limited"
    assert _filter_headers(limited) == {"retry-after": ["60"], "x-ratelimit-limit": ["3"],
                                        "x-ratelimit-remaining": ["0"], "x-ratelimit-reset": ["60"]}
    assert _filter_headers(obs[5]) == {}  # unlimited route


def test_burst_over_parallel_connections_admits_exactly_the_limit(rl_env: EnvoyHarness) -> None:
    """CONNECTIONS clients released together by a barrier, ROUNDS times, each round on a new
    bucket key: exactly LIMIT requests pass every round, whichever worker serves them."""
    rl_env.publish("ratelimit", configuration=json.dumps({
        "domain": unique("burst"), "bucket": {"max_tokens": LIMIT, "fill_interval": "1h"},
        "descriptors": [{"source": "header", "name": "x-burst"}], "response_headers": True}))
    before_cx = worker_connections(rl_env)
    before = rl_env.stats(r"ratelimit\.(allowed|limited)$")
    clients = [httpx.Client(timeout=10) for _ in range(CONNECTIONS)]
    admitted: list[int] = []
    remaining_seen: list[set[str]] = []
    t0 = time.monotonic()
    try:
        for c in clients:  # open every connection first (no x-burst header: not limited)
            assert c.get(rl_env.url("/warm")).status_code == 200
        for rnd in range(ROUNDS):
            if time.monotonic() - t0 > 60:
                pytest.fail(f"burst rounds too slow: {rnd} rounds in 60 s")
            barrier = threading.Barrier(CONNECTIONS)
            results: list[tuple[int, str | None]] = []
            lock = threading.Lock()

            def work(c: httpx.Client, key: str = f"r{rnd}") -> None:
                barrier.wait(timeout=10)
                got = []
                for _ in range(PER_CONNECTION):
                    r = c.get(rl_env.url("/b"), headers={"x-burst": key})
                    got.append((r.status_code, r.headers.get("x-ratelimit-remaining")))
                with lock:
                    results.extend(got)

            threads = [threading.Thread(target=work, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=20)
            assert len(results) == CONNECTIONS * PER_CONNECTION, f"round {rnd}: {len(results)} answers"
            assert {s for s, _ in results} <= {200, 429}, results
            admitted.append(sum(s == 200 for s, _ in results))
            remaining_seen.append({rem for s, rem in results if s == 200})
    finally:
        for c in clients:
            c.close()
    elapsed = time.monotonic() - t0
    print(f"\n{ROUNDS} bursts of {CONNECTIONS}x{PER_CONNECTION} in {elapsed:.2f}s; admitted per round: "
          f"{sorted(set(admitted))}; connections per worker: {worker_connections(rl_env)}")
    over = [(i, n) for i, n in enumerate(admitted) if n != LIMIT]
    assert not over, f"rounds admitting != {LIMIT}: {over}"
    # every admitted request saw a distinct remaining count: LIMIT-1 .. 0
    assert all(rem == {str(i) for i in range(LIMIT)} for rem in remaining_seen)
    after = rl_env.stats(r"ratelimit\.(allowed|limited)$")
    delta = {k.rsplit(".", 1)[1]: v - before.get(k, 0) for k, v in after.items()}
    assert delta == {"allowed": LIMIT * ROUNDS, "limited": (CONNECTIONS * PER_CONNECTION - LIMIT) * ROUNDS}
    # both workers served some of the connections
    cx = worker_connections(rl_env)
    used = {w: cx[w] - before_cx.get(w, 0) for w in cx}
    assert len(used) == 2 and all(n > 0 for n in used.values()), used


def _refill_attempt(env: EnvoyHarness) -> tuple[list[httpx.Response], list[httpx.Response]] | None:
    """Drain a fresh 2-token bucket (1 more every 500 ms), wait 0.6 s, send two more; None when
    the machine was too slow for the timing to mean anything (the caller tries again)."""
    env.publish("ratelimit", configuration=json.dumps({
        "domain": unique("refill"), "bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval_ms": 500},
        "response_headers": True}))
    with httpx.Client(timeout=10) as c:
        t0 = time.monotonic()
        got = [c.get(env.url("/r")) for _ in range(3)]
        drained_in = time.monotonic() - t0
        time.sleep(max(0.0, 0.6 - (time.monotonic() - t0)))
        t1 = time.monotonic()
        after = [c.get(env.url("/r")) for _ in range(2)]
        burst_in = time.monotonic() - t1
    return None if drained_in > 0.45 or burst_in > 0.35 else (got, after)


def test_refill_after_the_fill_interval(rl_env: EnvoyHarness) -> None:
    """2 tokens, 1 more every 500 ms (continuous refill): drain, wait 0.6 s, exactly one passes.
    A slow machine gets up to 5 attempts, each on a fresh bucket, then the test fails."""
    for _ in range(5):
        result = _refill_attempt(rl_env)
        if result is not None:
            break
    else:
        pytest.fail("5 attempts were all too slow for a 500 ms refill check (drain > 0.45 s or burst > 0.35 s)")
    got, after = result
    assert [r.status_code for r in got] == [200, 200, 429]
    assert got[2].headers["retry-after"] == "1" and got[2].headers["x-ratelimit-reset"] == "1"
    assert [r.status_code for r in after] == [200, 429], [r.text for r in after]
    assert after[0].headers["x-ratelimit-remaining"] == "0"
    assert after[1].headers["retry-after"] == "1"


def test_bounded_buckets_in_envoy(rl_env: EnvoyHarness) -> None:
    """max_buckets 4 is one shared-data entry of 4 records: 50 clients each get a fresh bucket
    (46 of them by evicting an active one, counted), and the 4 latest buckets stay exact."""
    rl_env.publish("ratelimit", configuration=json.dumps({
        "domain": unique("bounded"), "stat_prefix": "rl_bounded", "max_buckets": 4,
        "bucket": {"max_tokens": 1, "fill_interval": "1h"}, "descriptors": [{"source": "header", "name": "x-k"}]}))
    before = rl_env.stats(r"rl_bounded\.evicted$")
    with httpx.Client(timeout=10) as c:
        first = [c.get(rl_env.url("/k"), headers={"x-k": f"k{i}"}).status_code for i in range(50)]
        again = [c.get(rl_env.url("/k"), headers={"x-k": f"k{i}"}).status_code for i in range(46, 50)]
    assert first == [200] * 50 and again == [429] * 4
    evicted = {k: v - before.get(k, 0) for k, v in rl_env.stats(r"rl_bounded\.evicted$").items()}
    assert list(evicted.values()) == [46], evicted


def test_custom_status_body_headers_and_no_retry_after(rl_env: EnvoyHarness) -> None:
    rl_env.publish("ratelimit", configuration=json.dumps({
        "domain": unique("answer"), "bucket": {"max_tokens": 1, "fill_interval": "1m"}, "status": 503,
        "body": "slow down", "retry_after": False,
        "limited_response_headers": [{"name": "x-local-rate-limit", "value": "true"}]}))
    with httpx.Client(timeout=10) as c:
        ok, limited = c.get(rl_env.url("/a")), c.get(rl_env.url("/a"))
    assert ok.status_code == 200 and "x-local-rate-limit" not in ok.headers
    assert (limited.status_code, limited.text, limited.headers["content-type"]) == (503, "slow down", "text/plain")
    assert _filter_headers(limited) == {"x-ratelimit-limit": ["1"], "x-ratelimit-remaining": ["0"],
                                        "x-ratelimit-reset": ["60"]}
    assert limited.headers.get_list("x-local-rate-limit") == ["true"]


def test_client_ip_descriptor_uses_the_peer_address(rl_env: EnvoyHarness) -> None:
    rl_env.publish("ratelimit", configuration=json.dumps({
        "domain": unique("ip"), "bucket": {"max_tokens": 2, "fill_interval": "1m"},
        "descriptors": [{"source": "client_ip", "xff_trusted_hops": 1}]}))
    with httpx.Client(timeout=10) as c:
        # x-forwarded-for: with 1 trusted hop the last entry is the client
        a = [c.get(rl_env.url("/"), headers={"x-forwarded-for": "192.0.2.1"}).status_code for _ in range(3)]
        b = [c.get(rl_env.url("/"), headers={"x-forwarded-for": "192.0.2.2"}).status_code for _ in range(3)]
        peer = [c.get(rl_env.url("/")).status_code for _ in range(3)]
    assert a == b == peer == [200, 200, 429]
