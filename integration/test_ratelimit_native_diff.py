"""The same requests through Envoy's native local_ratelimit and our Zig ratelimit filter, in one
Envoy 1.40 with two workers: each case is a pair of listeners, one with
``envoy.filters.http.local_ratelimit`` and one with filters/out/ratelimit.wasm configured to mean
the same thing. Every answer must match in status, body, content headers, the x-ratelimit-*
headers and the configured limited-response header, request by request; the burst rounds check
that neither admits more than the limit across workers. Divergences that remain by design are
listed in the README ("ratelimit configuration", "Ours and native local_ratelimit").
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx
import pytest

from proxywasm_host.envoy import EchoUpstream, EnvoyHarness, WasmFilter
from proxywasm_host.envoy.config import ListenerSpec, StaticFilter
from proxywasm_host.envoy.fixtures import envoy_harness

from scenarios import unique, wasm_path

LRL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
ALWAYS = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
COMPARED = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-local-rate-limit",
            "content-type", "content-length", "retry-after")
BURST_LIMIT = 10
BURST_CONNECTIONS = 8      # per side: 4 per worker with the listeners' exact balance
BURST_PER_CONNECTION = 4   # 32 requests per side per round, BURST_LIMIT may pass
BURST_ROUNDS = 150


def native(name: str, **fields: Any) -> StaticFilter:
    """local_ratelimit enabled and enforced for every request, with x-ratelimit-* headers."""
    return StaticFilter("envoy.filters.http.local_ratelimit", {
        "@type": LRL, "stat_prefix": name, "filter_enabled": ALWAYS, "filter_enforced": ALWAYS,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03", **fields})


def ours(name: str, **fields: Any) -> WasmFilter:
    """Our filter with the native defaults: x-ratelimit-* on every response, no retry-after."""
    cfg = {"domain": unique(name), "stat_prefix": f"ours_{name}", "response_headers": True, "retry_after": False,
           **fields}
    return WasmFilter(f"rl_{name}", wasm_path("ratelimit"), configuration=json.dumps(cfg))


def bucket(max_tokens: int, tokens_per_fill: int, interval: str) -> dict[str, Any]:
    return {"max_tokens": max_tokens, "tokens_per_fill": tokens_per_fill, "fill_interval": interval}


def user_rate_limits(key: str = "user", header: str = "x-user") -> list[dict[str, Any]]:
    return [{"actions": [{"request_headers": {"header_name": header, "descriptor_key": key}}]}]


NATIVE_USER_LIMITS = [
    {"entries": [{"key": "user", "value": "alice"}], "token_bucket": bucket(1, 1, "60s")},
    {"entries": [{"key": "user"}], "token_bucket": bucket(2, 1, "60s")},
]
OUR_USER = [{"source": "header", "name": "x-user", "key": "user"}]
OUR_USER_LIMITS = [
    {"entries": [{"key": "user", "value": "alice"}], "bucket": bucket(1, 1, "60s")},
    {"entries": [{"key": "user"}], "bucket": bucket(2, 1, "60s")},
]
LIMITED_HEADER = [{"header": {"key": "x-local-rate-limit", "value": "true"}}]
OUR_LIMITED_HEADER = [{"name": "x-local-rate-limit", "value": "true"}]


@dataclass
class Case:
    """A listener pair and the requests both get: (connection number, x-user or None)."""

    name: str
    native: StaticFilter
    ours: WasmFilter
    requests: list[tuple[int, str | None]] = field(default_factory=list)


def users(*names: str | None, conn: int = 0) -> list[tuple[int, str | None]]:
    return [(conn, u) for u in names]


CASES = [
    Case("bucket", native("bucket", token_bucket=bucket(3, 1, "60s")),
         ours("bucket", bucket=bucket(3, 1, "60s")), users(*[None] * 5)),
    Case("fractional", native("fractional", token_bucket=bucket(2, 1, "1.5s")),
         ours("fractional", bucket=bucket(2, 1, "1500ms")), users(None, None, None)),
    Case("limits", native("limits", token_bucket=bucket(10, 10, "60s"), rate_limits=user_rate_limits(),
                          descriptors=NATIVE_USER_LIMITS, status={"code": 503}, response_headers_to_add=LIMITED_HEADER),
         ours("limits", bucket=bucket(10, 10, "60s"), descriptors=OUR_USER, limits=OUR_USER_LIMITS, status=503,
              limited_response_headers=OUR_LIMITED_HEADER),
         users("alice", "alice", "bob", "bob", "bob", "carol", None, None)),
    Case("no_refund", native("no_refund", token_bucket=bucket(1, 1, "60s"), rate_limits=user_rate_limits(),
                             descriptors=NATIVE_USER_LIMITS),
         ours("no_refund", bucket=bucket(1, 1, "60s"), descriptors=OUR_USER, limits=OUR_USER_LIMITS),
         users(None, "dave", "dave", "dave", "alice", "alice")),
    Case("not_always_default", native("not_always_default", token_bucket=bucket(1, 1, "60s"),
                                      rate_limits=user_rate_limits(), descriptors=NATIVE_USER_LIMITS,
                                      always_consume_default_token_bucket=False),
         ours("not_always_default", bucket=bucket(1, 1, "60s"), descriptors=OUR_USER, limits=OUR_USER_LIMITS,
              always_consume_default_bucket=False),
         users("bob", "bob", "bob", None, None, "alice")),
    Case("per_connection", native("per_connection", token_bucket=bucket(2, 1, "60s"),
                                  local_rate_limit_per_downstream_connection=True),
         ours("per_connection", bucket=bucket(2, 1, "60s"), per_connection=True),
         users(None, None, None, conn=0) + users(None, None, None, conn=1) + users(None, conn=0)),
    Case("burst", native("burst", token_bucket=bucket(1000, 1000, "1s"), always_consume_default_token_bucket=False,
                         rate_limits=user_rate_limits("round", "x-round"),
                         descriptors=[{"entries": [{"key": "round"}], "token_bucket": bucket(BURST_LIMIT, 1, "3600s")}]),
         ours("burst", descriptors=[{"source": "header", "name": "x-round", "key": "round"}],
              limits=[{"entries": [{"key": "round"}], "bucket": bucket(BURST_LIMIT, 1, "1h")}])),
]


@pytest.fixture(scope="module")
def diff_env() -> Iterator[EnvoyHarness]:
    listeners = []
    for case in CASES:
        listeners += [ListenerSpec(f"native_{case.name}", [case.native]), ListenerSpec(f"ours_{case.name}", [case.ours])]
    with EchoUpstream() as up, envoy_harness(upstream=up, listeners=listeners, concurrency=2) as env:
        yield env


def answer(r: httpx.Response) -> dict[str, Any]:
    return {"status": r.status_code, "body": r.text if r.status_code != 200 else "(upstream)",
            **{h: r.headers.get(h) for h in COMPARED if h in r.headers and not (r.status_code == 200 and h.startswith("content-"))}}


def run(env: EnvoyHarness, case: Case) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The requests in order, each on its numbered keep-alive connection, each sent to the
    native listener and right after to ours, so both buckets see the same elapsed times."""
    clients: dict[tuple[str, int], httpx.Client] = {}
    try:
        out = []
        for conn, user in case.requests:
            pair = []
            for side in ("native", "ours"):
                c = clients.setdefault((side, conn), httpx.Client(timeout=10))
                r = c.get(env.url("/d", listener=f"{side}_{case.name}"), headers={"x-user": user} if user else {})
                pair.append(answer(r))
            out.append((pair[0], pair[1]))
        return out
    finally:
        for c in clients.values():
            c.close()


def same(native: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Equal answers; x-ratelimit-reset of 10 s or more may differ by one, since each side's
    request lands a few ms after the other's and a whole-second boundary can fall between
    (short waits, such as the 1.5 s case, must match exactly)."""
    if native == ours:
        return True
    n_reset, o_reset = native.get("x-ratelimit-reset"), ours.get("x-ratelimit-reset")
    if n_reset is None or o_reset is None or min(int(n_reset), int(o_reset)) < 10 or abs(int(n_reset) - int(o_reset)) > 1:
        return False
    return {**native, "x-ratelimit-reset": None} == {**ours, "x-ratelimit-reset": None}


@pytest.mark.parametrize("case", [c for c in CASES if c.requests], ids=lambda c: c.name)
def test_same_answers_as_native_local_ratelimit(diff_env: EnvoyHarness, case: Case) -> None:
    got = run(diff_env, case)
    print(f"\n{case.name}:\n" + "\n".join(f"  {req}  {n}" for req, (n, _) in zip(case.requests, got)))
    diffs = [f"#{i} {req}: native {n} ours {o}" for i, (req, (n, o)) in enumerate(zip(case.requests, got))
             if not same(n, o)]
    assert not diffs, "\n".join(diffs)
    assert {n["status"] for n, _ in got} > {200}  # the case reaches the limit


def burst_round(env: EnvoyHarness, clients: dict[str, list[httpx.Client]], key: str | None) -> dict[str, list[Any]]:
    """Every connection of both sides released together by one barrier, BURST_PER_CONNECTION
    requests each: the statuses per side (with headers and body when neither 200 nor 429)."""
    barrier = threading.Barrier(sum(len(cs) for cs in clients.values()))
    statuses: dict[str, list[Any]] = {side: [] for side in clients}
    lock = threading.Lock()

    def work(side: str, c: httpx.Client) -> None:
        barrier.wait(timeout=10)
        got = []
        for _ in range(BURST_PER_CONNECTION):
            r = c.get(env.url("/b", listener=f"{side}_burst"), headers={"x-round": key} if key else {})
            got.append(r.status_code if r.status_code in (200, 429) else (r.status_code, dict(r.headers), r.text))
        with lock:
            statuses[side] += got

    threads = [threading.Thread(target=work, args=(side, c)) for side, cs in clients.items() for c in cs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for side, got in statuses.items():
        unexpected = [s for s in got if s not in (200, 429)]  # (status, headers, body): shown whole
        assert len(got) == BURST_CONNECTIONS * BURST_PER_CONNECTION and not unexpected, (side, len(got), unexpected)
    return statuses


def test_burst_rounds_admit_exactly_the_limit_like_native(diff_env: EnvoyHarness) -> None:
    """BURST_ROUNDS rounds, each on a fresh descriptor value (a new bucket on both sides), with
    8 connections per side spread over both workers firing 4 requests each at once: native's
    process-wide atomic bucket and our shared-data CAS each admit exactly BURST_LIMIT."""
    before = diff_env.stats(r"listener\..*worker_\d+\.downstream_cx_total$")
    clients = {side: [httpx.Client(timeout=10) for _ in range(BURST_CONNECTIONS)] for side in ("native", "ours")}
    try:
        # Open every connection, and Envoy's upstream connections, with one unlimited burst (no
        # x-round): new upstream connects during the rounds would meet the echo server's listen backlog.
        warm = burst_round(diff_env, clients, None)
        assert {side: set(got) for side, got in warm.items()} == {"native": {200}, "ours": {200}}
        admitted = [{side: got.count(200) for side, got in burst_round(diff_env, clients, f"r{i}").items()}
                    for i in range(BURST_ROUNDS)]
    finally:
        for cs in clients.values():
            for c in cs:
                c.close()
    per_side = {side: sorted({a[side] for a in admitted}) for side in clients}
    print(f"\nadmitted per round over {BURST_ROUNDS} rounds: {per_side}")
    assert per_side == {"native": [BURST_LIMIT], "ours": [BURST_LIMIT]}
    after = diff_env.stats(r"listener\..*worker_\d+\.downstream_cx_total$")
    grew = {k for k, v in after.items() if v > before.get(k, 0)}
    assert {k.split(".worker_")[1].split(".")[0] for k in grew} == {"0", "1"}, grew
