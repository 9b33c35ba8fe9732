"""Parity for the Zig filters: each scenario of scenarios.py through a real Envoy 1.40 and the
host (proxywasm_host.parity), compared observation by observation: statuses, every client and
upstream header and body, the JWKS callouts, log lines and wasmcustom metrics (masks: parity.MASKED).

Envoy is the ground truth, and the statuses each scenario expects are checked on Envoy's side
of the report, so that both sides being wrong the same way cannot pass.

The host's clock starts at the real time (tokens are minted against it) and only moves when a
request says so (after_ms); Envoy's runs. The scenarios use 1-minute fill intervals, or let
enough time pass, so the few milliseconds a run takes do not change any header.
"""

from __future__ import annotations

import time
from typing import Callable

import pytest

from proxywasm_host.parity import Exchange, ParityReport, run_parity

from scenarios import (Case, Keys, chain_scenario, jwt_local_scenario, jwt_realm_scenario,
                       jwt_remote_503_scenario, jwt_remote_broken_scenario, jwt_remote_scenario, ratelimit_scenario,
                       refill_scenario, unique)

CASES: dict[str, Callable[[Keys], Case]] = {
    "jwt_local": jwt_local_scenario,
    "jwt_realm": jwt_realm_scenario,
    "jwt_remote": jwt_remote_scenario,
    "jwt_remote_broken": jwt_remote_broken_scenario,
    "jwt_remote_503": jwt_remote_503_scenario,
    "ratelimit": lambda keys: ratelimit_scenario(unique("parity")),
    "refill": lambda keys: refill_scenario(unique("refill")),
    "chain": lambda keys: chain_scenario(keys, unique("parity-chain")),
}


@pytest.fixture(scope="module")
def reports(keys: Keys) -> Callable[[str], tuple[Case, ParityReport]]:
    """Each scenario runs once per module: its parity test and its spot checks share the report."""
    done: dict[str, tuple[Case, ParityReport]] = {}

    def get(name: str) -> tuple[Case, ParityReport]:
        if name not in done:
            case = CASES[name](keys)
            done[name] = case, run_parity(case.scenario, start_time=time.time())
        return done[name]

    return get


@pytest.fixture(scope="module")
def envoy_side(reports: Callable[[str], tuple[Case, ParityReport]]) -> Callable[[str], list[Exchange]]:
    """Envoy's exchanges of a scenario, once its statuses are the expected ones."""
    def get(name: str) -> list[Exchange]:
        case, report = reports(name)
        bad = case.mismatches([x.status for x in report.envoy.exchanges])
        assert not bad, f"{name}: Envoy did not answer as expected:\n" + "\n".join(bad)
        return report.envoy.exchanges

    return get


def header(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k == name]


@pytest.mark.parametrize("name", list(CASES))
def test_scenario_parity(name: str, reports: Callable[[str], tuple[Case, ParityReport]],
                         envoy_side: Callable[[str], list[Exchange]]) -> None:
    """Envoy answers as expected, and the host exactly as Envoy (else every difference is shown)."""
    envoy_side(name)
    _, report = reports(name)
    assert report.identical, (f"{report.text()}\n--- Envoy wasm log ---\n{report.envoy.log_text}"
                              f"\n--- host filter log ---\n{report.host.log_text}")


def test_jwt_forwards_claims_and_answers_with_reasons(envoy_side: Callable[[str], list[Exchange]]) -> None:
    """Spot checks on Envoy's side of jwt_local, so that the comparison is not vacuous."""
    e = envoy_side("jwt_local")
    spoofed, expired, missing = e[9], e[1], e[3]
    assert header(spoofed.upstream[0], "x-jwt-sub") == ["alice"]
    assert len(header(spoofed.upstream[0], "x-jwt-payload")) == 1
    assert header(e[0].upstream[0], "authorization") == []  # forward: false
    assert expired.upstream is None and expired.client_body == b"Jwt is expired"
    assert header(expired.client_headers, "www-authenticate") == ['Bearer realm="api.example", error="invalid_token"']
    # jwt_authn's 401 carries its own content-type: text/plain
    assert [h for h in missing.client_headers if h[0] != "content-length"] == [("www-authenticate", 'Bearer realm="api.example"'),
                                          ("content-type", "text/plain")]
    assert header(envoy_side("jwt_realm")[0].client_headers, "www-authenticate") == ['Bearer realm="realm.example"']


def test_remote_jwks_is_fetched_once_from_its_cluster(envoy_side: Callable[[str], list[Exchange]]) -> None:
    first, *rest = envoy_side("jwt_remote")
    assert [c[:3] for c in first.callouts] == [("jwks_cluster", "GET", "/jwks.json")]
    assert all(x.callouts == [] for x in rest)  # cached
    assert header(first.upstream[0], "x-jwt-sub") == ["carol"]
    assert envoy_side("jwt_remote_broken")[0].client_body == b"Jwks remote fetch is failed"
    assert envoy_side("jwt_remote_503")[0].client_body == b"Jwks remote fetch is failed"


def test_ratelimit_headers(envoy_side: Callable[[str], list[Exchange]]) -> None:
    """The 429 carries the whole header list, in order."""
    e = envoy_side("ratelimit")
    assert [header(x.client_headers, "x-ratelimit-remaining") for x in e[:3]] == [["2"], ["1"], ["0"]]
    assert e[3].client_body == b"local_rate_limited"
    assert [h for h in e[3].client_headers if h[0] != "content-length"] == [("retry-after", "60"), ("x-ratelimit-limit", "3"), ("x-ratelimit-remaining", "0"),
                                       ("x-ratelimit-reset", "60"), ("content-type", "text/plain")]
    assert not any(k.startswith("x-ratelimit") for k, _ in e[5].client_headers)  # unlimited route


def test_refill_parity(envoy_side: Callable[[str], list[Exchange]]) -> None:
    """Drained, 600 ms pass (Envoy sleeps, the host's clock advances): exactly one more passes."""
    e = envoy_side("refill")
    assert header(e[2].client_headers, "retry-after") == ["1"]
    assert header(e[4].client_headers, "retry-after") == ["1"]


def test_chain_keys_the_limit_by_the_verified_subject(envoy_side: Callable[[str], list[Exchange]]) -> None:
    e = envoy_side("chain")
    assert header(e[1].upstream[0], "x-jwt-sub") == ["alice"]  # not the spoofed "bob"
    assert header(e[2].client_headers, "retry-after") == ["60"]
    # jwt_authn answered: ratelimit never ran, so no x-ratelimit-* on the 401
    assert e[4].status == 401 and not any(k.startswith("x-ratelimit") for k, _ in e[4].client_headers)
