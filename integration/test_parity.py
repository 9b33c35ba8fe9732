"""Parity: the same scenarios through a real Envoy 1.40 and through the Python host.

Envoy is the ground truth. For every request of a scenario (see ``scenarios.py``) both
sides must agree on:

* the status code;
* the response headers the filters set: ``www-authenticate``, ``retry-after``,
  ``x-ratelimit-limit``, ``x-ratelimit-remaining``, ``x-ratelimit-reset`` (all values, in order);
* the body of every local reply (401/403/429 reasons);
* for requests that reached the upstream, the scenario's forwarded request headers
  (``x-jwt-sub``, ``x-jwt-payload``, ``authorization``), including their absence.

Not compared: what Envoy's connection manager and router add (``date``, ``server``,
``x-envoy-*``, ``x-request-id``, ``x-forwarded-proto``, ``content-length``), and the 200
bodies (the echo upstream's JSON). ``test_local_reply_content_type`` compares the full
local-reply header list minus those, and documents a host bug.

Each scenario gets a fresh Envoy (fresh shared data) and a fresh ``Host`` whose clock
starts at the real time (tokens are minted against it). The host's clock is frozen while
Envoy's runs; the scenarios use 1-minute fill intervals so the few milliseconds a run
takes do not change any header.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterator

import httpx
import pytest

from proxywasm_host.envoy import EchoUpstream, WasmFilter
from proxywasm_host.envoy.fixtures import envoy_harness

from scenarios import (AUTHORITY, JWKS_PATH, Keys, Observation, Req, Scenario, chain_scenario, check_expectations,
                       diff, host_request, jwt_local_config, jwt_local_scenario, jwt_realm_scenario,
                       jwt_remote_broken_scenario, jwt_remote_scenario, load_chain, new_host, ratelimit_scenario,
                       run_envoy, run_host, unique, wasm_path)

SCENARIOS: dict[str, Callable[[Keys], Scenario]] = {
    "jwt_local": jwt_local_scenario,
    "jwt_realm": jwt_realm_scenario,
    "jwt_remote": jwt_remote_scenario,
    "jwt_remote_broken": jwt_remote_broken_scenario,
    "ratelimit": lambda keys: ratelimit_scenario(unique("parity")),
    "chain": lambda keys: chain_scenario(keys, unique("parity-chain")),
}


@pytest.fixture(scope="module")
def parity_up(keys: Keys) -> Iterator[EchoUpstream]:
    with EchoUpstream() as up:
        up.set_response(JWKS_PATH, keys.jwks())
        yield up


def envoy_for(sc: Scenario, up: EchoUpstream, concurrency: int = 1):
    return envoy_harness([WasmFilter(n, wasm_path(n), configuration=c) for n, c in sc.filters],
                         upstream=up, concurrency=concurrency)


def assert_parity(sc: Scenario, envoy: list[Observation], host: list[Observation]) -> None:
    check_expectations(sc, envoy, "envoy")
    check_expectations(sc, host, "host")
    problems = diff(sc, envoy, host)
    assert not problems, f"{sc.name}: host disagrees with Envoy:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_parity(name: str, keys: Keys, parity_up: EchoUpstream) -> None:
    sc = SCENARIOS[name](keys)
    with envoy_for(sc, parity_up) as env:
        envoy_obs = run_envoy(env, sc)
    host_obs = run_host(sc, parity_up.port)  # remote JWKS: the host's callout goes to the same upstream
    assert_parity(sc, envoy_obs, host_obs)


def test_refill_parity(keys: Keys, parity_up: EchoUpstream) -> None:
    """Drain, wait 0.6 s (Envoy: sleep; host: advance the virtual clock), drain again."""
    cfg = json.dumps({"domain": unique("refill"), "response_headers": True,
                      "bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval_ms": 500}})
    sc = Scenario("refill", [("ratelimit", cfg)],
                  [Req("/r", {}, 200), Req("/r", {}, 200), Req("/r", {}, 429)])
    after = Scenario("refill-after", sc.filters, [Req("/r", {}, 200), Req("/r", {}, 429)])
    with envoy_for(sc, parity_up) as env:
        t0 = time.monotonic()
        e1 = run_envoy(env, sc)
        drained = time.monotonic() - t0
        time.sleep(max(0.0, 0.6 - drained))
        t1 = time.monotonic()
        e2 = run_envoy(env, after)
        burst = time.monotonic() - t1
    if drained > 0.45 or burst > 0.35:
        pytest.skip(f"machine too slow for a 500 ms refill check (drain {drained:.3f}s, burst {burst:.3f}s)")
    host = new_host()
    plugins = load_chain(host, sc)
    h1 = [host_request(host, plugins, r, ()) for r in sc.requests]
    host.clock.advance(seconds=0.6)
    h2 = [host_request(host, plugins, r, ()) for r in after.requests]
    assert_parity(sc, e1, h1)
    assert_parity(after, e2, h2)
    assert e2[1].headers["retry-after"] == ["1"]


def _local_reply_headers_envoy(env, path: str, headers: dict[str, str]) -> list[tuple[str, str]]:
    r = httpx.get(env.url(path), headers={"host": AUTHORITY, **headers}, timeout=10)
    skip = {"date", "server", "content-length"}
    return [(k.lower(), v) for k, v in r.headers.multi_items() if k.lower() not in skip]


def test_local_reply_content_type(keys: Keys, parity_up: EchoUpstream) -> None:
    """jwt_authn's 401 carries its own content-type: text/plain. Every header except
    date/server/content-length (added by Envoy's codec/HCM) is compared, in order."""
    sc = Scenario("jwt-401", [("jwt_authn", jwt_local_config(keys))], [Req("/api", {}, 401)])
    with envoy_for(sc, parity_up) as env:
        envoy_headers = _local_reply_headers_envoy(env, "/api", {})
    host = new_host()
    (plugin,) = load_chain(host, sc)
    s = plugin.http_stream()
    s.send_request_headers({":method": "GET", ":path": "/api", ":authority": AUTHORITY}, end_of_stream=True)
    host_headers = [(k, v) for k, v in s.downstream_response.headers.items()
                    if k not in (":status", "date", "server", "content-length")]
    assert envoy_headers == [("www-authenticate", 'Bearer realm="api.example"'), ("content-type", "text/plain")]
    assert host_headers == envoy_headers


def test_ratelimit_local_reply_headers_match_exactly(keys: Keys, parity_up: EchoUpstream) -> None:
    """The 429 (no content-type from the filter): the whole header list matches, in order."""
    cfg = json.dumps({"domain": unique("h"), "bucket": {"max_tokens": 1, "fill_interval": "1m"}})
    sc = Scenario("rl-429", [("ratelimit", cfg)], [Req("/", {}, 200), Req("/", {}, 429)])
    with envoy_for(sc, parity_up) as env:
        httpx.get(env.url("/"), timeout=10)
        envoy_headers = _local_reply_headers_envoy(env, "/", {})
    host = new_host()
    (plugin,) = load_chain(host, sc)
    for _ in range(2):
        s = plugin.http_stream()
        s.send_request_headers({":method": "GET", ":path": "/", ":authority": AUTHORITY}, end_of_stream=True)
    host_headers = [(k, v) for k, v in s.downstream_response.headers.items()
                    if k not in (":status", "date", "server", "content-length")]
    assert envoy_headers == [("retry-after", "60"), ("x-ratelimit-limit", "1"), ("x-ratelimit-remaining", "0"),
                             ("x-ratelimit-reset", "60"), ("content-type", "text/plain")]
    assert host_headers == envoy_headers
