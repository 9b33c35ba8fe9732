"""ratelimit filter (filters/ratelimit) run through the project's host."""
from __future__ import annotations

import hashlib
import json

import pytest

from proxywasm_host import PluginRejected
from proxywasm_host.filter_schemas import SCHEMAS, check
from proxywasm_host.host import SharedData


def load(host, wasm, config: dict | str, **kw):
    text = config if isinstance(config, str) else json.dumps(config)
    return host.load_plugin(wasm, configuration=text, name="rl", **kw)


def hit(plugin, path="/", headers=None, worker=0, ip="10.0.0.1"):
    s = plugin.http_stream(worker=worker, properties={"source.address": f"{ip}:1234"})
    h = {":method": "GET", ":path": path, ":authority": "example.com"}
    h.update(headers or {})
    s.send_request_headers(h, end_of_stream=True)
    return s


def allowed(s) -> bool:
    return s.local_reply is None and s.upstream_request.headers is not None


def count(plugin, n, **kw) -> int:
    return sum(allowed(hit(plugin, **kw)) for _ in range(n))


SETS = 16384 // 4  # the default max_buckets over 4 records per shared-data entry
RECORD = 48        # id (16) | credit u128 | last refill ns u64 | full-again ns u64, little-endian


def bucket_location(values=(), *, domain="default", route="default", tag="values", conn=None, sets=SETS):
    """(shared-data key, record id) of a bucket, as filters/ratelimit/store.zig derives them."""
    ident = f"{domain}\0{route}\0" + (f"conn={conn}\0" if conn is not None else "") + f"{tag}\0"
    ident += "".join("-" if v is None else f"{len(v.encode())}:{v}" for v in values)
    digest = hashlib.sha256(ident.encode()).digest()
    return f"ratelimit:{domain}:{sets}:{int.from_bytes(digest[16:24], 'little') % sets}".encode(), digest[:16]


def record(host, *values, **kw) -> tuple[int, int, int] | None:
    """(credit, last, full_at) of a bucket's record in shared data, or None when it has none."""
    key, rid = bucket_location(values, **kw)
    found = host.shared_data.get(key)
    value = found[0] if found else b""
    for i in range(0, len(value), RECORD):
        if value[i:i + 16] == rid:
            r = value[i:i + RECORD]
            return (int.from_bytes(r[16:32], "little"), int.from_bytes(r[32:40], "little"),
                    int.from_bytes(r[40:48], "little"))
    return None


BUCKET = {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval_ms": 1000}


def test_burst_admits_exactly_max_tokens(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": BUCKET})
    results = [allowed(hit(p)) for _ in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert host.metrics["ratelimit.allowed"] == 5
    assert host.metrics["ratelimit.limited"] == 3


def test_429_response(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "3s"}})
    count(p, 2)
    s = hit(p)
    assert s.local_reply.status_code == 429
    assert s.local_reply.body == b"local_rate_limited"
    h = s.downstream_response.headers
    assert h.get(":status") == "429"
    assert h.get("retry-after") == "3"
    assert h.get("x-ratelimit-limit") == "2"
    assert h.get("x-ratelimit-remaining") == "0"
    assert h.get("x-ratelimit-reset") == "3"
    host.clock.advance(seconds=1)
    assert hit(p).downstream_response.headers.get("retry-after") == "2"


def test_continuous_refill_with_the_virtual_clock(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": BUCKET})      # 5 tokens per second = one per 200 ms
    assert count(p, 10) == 5
    host.clock.advance(seconds=0.199)
    assert count(p, 3) == 0
    host.clock.advance(seconds=0.001)
    assert count(p, 3) == 1
    host.clock.advance(seconds=0.5)                          # 2.5 tokens: 2 whole, half carried over
    assert count(p, 5) == 2
    host.clock.advance(seconds=0.1)                          # the carried half completes a token
    assert count(p, 5) == 1
    host.clock.advance(seconds=60)                           # refill is capped at max_tokens
    assert count(p, 20) == 5


def test_per_client_ip_buckets(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 2, "fill_interval_ms": 1000},
                                    "descriptors": [{"source": "client_ip"}]})
    assert count(p, 4, ip="10.0.0.1") == 2
    assert count(p, 4, ip="10.0.0.2") == 2
    assert record(host, "10.0.0.1") is not None and record(host, "10.0.0.2") is not None
    assert record(host, "10.0.0.3") is None


@pytest.mark.parametrize("hops,xff,client", [
    (1, "1.1.1.1, 2.2.2.2", "2.2.2.2"),
    (2, "1.1.1.1, 2.2.2.2", "1.1.1.1"),
    (3, "1.1.1.1, 2.2.2.2", "10.9.9.9"),     # fewer entries than trusted hops: the peer address
    (0, "1.1.1.1", "10.9.9.9"),               # no trusted hops: XFF is ignored (it can be forged)
])
def test_x_forwarded_for_trusted_hops(host, ratelimit_wasm, hops, xff, client):
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 1, "fill_interval_ms": 1000},
                                    "descriptors": [{"source": "client_ip", "xff_trusted_hops": hops}]})
    assert allowed(hit(p, headers={"x-forwarded-for": xff}, ip="10.9.9.9"))
    assert record(host, client) is not None


def test_header_descriptor_and_missing_values(host, ratelimit_wasm):
    cfg = {"bucket": {"max_tokens": 1, "fill_interval_ms": 1000}, "descriptors": [{"source": "header", "name": "X-User"}]}
    p = load(host, ratelimit_wasm, cfg)
    assert count(p, 3, headers={"x-user": "a"}) == 1
    assert count(p, 3, headers={"x-user": "b"}) == 1
    assert count(p, 3) == 3                         # on_missing "allow" (default): not limited

    host2 = type(host)(start_time=0)
    p2 = load(host2, ratelimit_wasm, cfg | {"on_missing": "shared"})
    assert count(p2, 3) == 1                         # all requests without the header share a bucket


def test_claim_header_and_path_descriptors(host, ratelimit_wasm):
    cfg = {"bucket": {"max_tokens": 2, "fill_interval_ms": 1000},
           "descriptors": [{"source": "header", "name": "x-jwt-sub"}, {"source": "path"}]}
    p = load(host, ratelimit_wasm, cfg)
    assert count(p, 3, path="/a?x=1", headers={"x-jwt-sub": "alice"}) == 2
    assert count(p, 3, path="/a?x=2", headers={"x-jwt-sub": "alice"}) == 0   # query ignored: same bucket
    assert count(p, 3, path="/b", headers={"x-jwt-sub": "alice"}) == 2
    assert count(p, 3, path="/a", headers={"x-jwt-sub": "bob"}) == 2
    assert record(host, "alice", "/a") is not None


def test_route_overrides(host, ratelimit_wasm):
    cfg = {
        "bucket": {"max_tokens": 4, "fill_interval_ms": 1000},
        "routes": [
            {"name": "health", "path": "/health", "unlimited": True},
            {"name": "api", "prefix": "/api", "bucket": {"max_tokens": 2, "fill_interval_ms": 1000}},
        ],
    }
    p = load(host, ratelimit_wasm, cfg)
    assert count(p, 5, path="/api/x") == 2
    assert count(p, 5, path="/other") == 4
    assert count(p, 50, path="/health") == 50
    assert count(p, 5, path="/healthz") == 0        # exact route only: falls to the drained default bucket
    assert host.metrics["ratelimit.allowed"] == 6   # unlimited routes make no decision, so are not counted


def test_no_default_bucket_means_unlimited(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"routes": [{"prefix": "/x", "bucket": {"max_tokens": 1, "fill_interval_ms": 1000}}]})
    assert count(p, 5, path="/y") == 5
    assert count(p, 5, path="/x") == 1


def test_headers_on_allowed_responses(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval_ms": 2000},
                                    "response_headers": True})
    seen = []
    for _ in range(3):
        s = hit(p)
        s.send_response_headers({":status": "200"}, end_of_stream=True)
        h = s.downstream_response.headers
        seen.append((h.get("x-ratelimit-limit"), h.get("x-ratelimit-remaining"), h.get("x-ratelimit-reset")))
        s.complete()
    assert seen == [("3", "2", "0"), ("3", "1", "0"), ("3", "0", "2")]
    s = hit(p)
    h = s.downstream_response.headers
    assert h.get(":status") == "429"
    assert h.get_all("x-ratelimit-limit") == ["3"]   # not added twice when the local reply passes the filter


def test_without_response_headers_option_allowed_responses_are_untouched(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": BUCKET})
    s = hit(p)
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    assert "x-ratelimit-limit" not in s.downstream_response.headers


@pytest.mark.parametrize("max_tokens", [1, 7, 10])
def test_two_workers_share_one_bucket(host, ratelimit_wasm, max_tokens):
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": max_tokens, "fill_interval_ms": 60000}}, workers=2)
    results = [allowed(hit(p, worker=i % 2)) for i in range(30)]
    assert sum(results) == max_tokens
    assert results == [True] * max_tokens + [False] * (30 - max_tokens)
    assert host.metrics["ratelimit.allowed"] == max_tokens
    assert host.metrics["ratelimit.limited"] == 30 - max_tokens
    host.clock.advance(seconds=60)
    assert sum(allowed(hit(p, worker=i % 2)) for i in range(30)) == max_tokens


def test_cas_retry_when_another_writer_races(host, ratelimit_wasm):
    """A write between the filter's read and its CAS write must make it retry, not over-admit."""
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 3, "fill_interval_ms": 60000}}, workers=2)
    assert allowed(hit(p, worker=0))
    key, _ = bucket_location()
    value, cas = host.shared_data.get(key)
    assert len(value) == RECORD
    # Another process drains the bucket: same layout, zero credit.
    assert host.shared_data.set(key, value[:16] + bytes(16) + value[32:], cas)
    assert not allowed(hit(p, worker=1))
    assert not allowed(hit(p, worker=0))


class _RacingSharedData(SharedData):
    """The host's real shared data, except that right after the first read that finds
    `key` missing, `racer()` runs: a whole request on another worker VM, i.e. what a
    second Envoy worker can do between this worker's get and its set."""

    def __init__(self, key: bytes, racer):
        super().__init__()
        self.key, self.racer, self.fired = key, racer, False

    def get(self, key, vm_id=""):
        found = super().get(key, vm_id)
        if found is None and key == self.key and not self.fired:
            self.fired = True
            self.racer()
        return found


@pytest.mark.parametrize("max_tokens", [1, 3])
def test_creating_a_bucket_races_safely(host, ratelimit_wasm, max_tokens):
    """Two workers both read NotFound for a new key: only max_tokens requests may pass.

    With cas 0 (unconditional) for the creation, worker 0's write erased the token
    worker 1 took, and both were admitted: max_tokens + 1 in total (seen in Envoy with
    --concurrency 2 about once per 400 bursts)."""
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": max_tokens, "fill_interval_ms": 60000}}, workers=2)
    raced = []
    host.shared_data = _RacingSharedData(bucket_location()[0], lambda: raced.append(allowed(hit(p, worker=1))))
    first = allowed(hit(p, worker=0))
    assert raced == [True]
    rest = [allowed(hit(p, worker=i % 2)) for i in range(2 * max_tokens)]
    assert first + raced[0] + sum(rest) == max_tokens, (first, raced, rest)
    assert host.metrics["ratelimit.allowed"] == max_tokens


def test_fractional_second_retry_after_and_reset_round_up(host, ratelimit_wasm):
    """A 1500 ms fill interval: the wait is 1.5 s, so both headers say 2 (rounded up, as Envoy's
    x-ratelimit-reset does); a client that waits only the rounded-down 1 s finds no token."""
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval_ms": 1500},
                                    "response_headers": True})
    s = hit(p)
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    assert s.downstream_response.headers.get("x-ratelimit-reset") == "2"   # the last token taken: 1.5 s to the next
    waits = []
    for step in (0, 1.0, 0.499, 0.001):                 # waits left: 1.5 s, 0.5 s, 1 ms, none
        host.clock.advance(seconds=step)
        s = hit(p)
        h = s.downstream_response.headers if s.local_reply else {}
        waits.append((allowed(s), h.get("retry-after"), h.get("x-ratelimit-reset")))
    assert waits == [(False, "2", "2"), (False, "1", "1"), (False, "1", "1"), (True, None, None)]


def test_fractional_seconds_with_several_tokens_per_fill(host, ratelimit_wasm):
    """2 tokens per 2.5 s is one token per 1.25 s: the wait after a drain rounds up to 2, and
    the half-token carried past a refill shortens the next wait to 0.625 s (1)."""
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "2500ms"}})
    assert count(p, 3) == 2
    h = hit(p).downstream_response.headers
    assert (h.get("retry-after"), h.get("x-ratelimit-reset")) == ("2", "2")
    host.clock.advance(seconds=1.875)                   # 1.5 tokens: one taken, half a token left
    assert count(p, 2) == 1
    h = hit(p).downstream_response.headers
    assert (h.get("retry-after"), h.get("x-ratelimit-reset")) == ("1", "1")


def test_status_body_and_headers_of_the_limited_response(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {
        "bucket": {"max_tokens": 1, "fill_interval": "1m"}, "status": 503, "body": "slow down",
        "limited_response_headers": [{"name": "X-Local-Rate-Limit", "value": "true"},
                                     {"name": "x-a", "value": "1"}]})
    assert allowed(hit(p))
    s = hit(p)
    assert (s.local_reply.status_code, s.local_reply.body, s.local_reply.details) == (503, b"slow down", "local_rate_limited")
    h = s.downstream_response.headers
    assert h.get(":status") == "503"
    assert h.get("x-local-rate-limit") == "true"
    assert h.get("x-a") == "1"
    assert h.get("retry-after") == "60"
    assert h.get("x-ratelimit-limit") == "1"


def test_retry_after_can_be_left_out(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 1, "fill_interval": "1m"}, "retry_after": False})
    count(p, 1)
    h = hit(p).downstream_response.headers
    assert h.get(":status") == "429"
    assert "retry-after" not in h
    assert h.get("x-ratelimit-reset") == "60"


def test_per_connection_buckets(host, ratelimit_wasm):
    """per_connection: each downstream connection has its own bucket (native's
    local_rate_limit_per_downstream_connection), whichever worker it is on."""
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 2, "fill_interval": "1m"}, "per_connection": True},
             workers=2)

    def on(conn, worker=0):
        s = p.http_stream(worker=worker, properties={"connection.id": conn})
        s.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
        return allowed(s)

    assert [on(7) for _ in range(3)] == [True, True, False]
    assert [on(8, worker=1) for _ in range(3)] == [True, True, False]
    assert record(host, conn=7) is not None and record(host, conn=8) is not None
    assert record(host) is None                          # no process-wide bucket


def test_without_per_connection_every_connection_shares_the_bucket(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 2, "fill_interval": "1m"}})
    results = []
    for conn in (7, 8, 9):
        s = p.http_stream(properties={"connection.id": conn})
        s.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"}, end_of_stream=True)
        results.append(allowed(s))
    assert results == [True, True, False]


LIMITS = {
    "bucket": {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1m"},
    "descriptors": [{"source": "header", "name": "x-user", "key": "user"}],
    "limits": [
        {"entries": [{"key": "user"}], "bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "1m"}},
        {"entries": [{"key": "user", "value": "alice"}], "bucket": {"max_tokens": 1, "tokens_per_fill": 1,
                                                                     "fill_interval": "1m"}},
    ],
    "response_headers": True,
}


def limit_headers(s) -> tuple:
    if s.downstream_response.headers is None or s.downstream_response.headers.get(":status") is None:
        s.send_response_headers({":status": "200"}, end_of_stream=True)
    h = s.downstream_response.headers
    return h.get(":status"), h.get("x-ratelimit-limit"), h.get("x-ratelimit-remaining")


def test_limits_exact_value_wildcard_and_default_bucket(host, ratelimit_wasm):
    """An exact entry wins over a wildcard listed before it; a wildcard gives each value its own
    bucket; a request without the value uses the default bucket; the headers describe the
    limit's bucket; with always_consume_default_bucket (default) the default bucket pays too."""
    p = load(host, ratelimit_wasm, LIMITS)
    user = lambda u: limit_headers(hit(p, headers={"x-user": u} if u else {}))  # noqa: E731
    assert [user("alice"), user("alice")] == [("200", "1", "0"), ("429", "1", "0")]
    assert [user("bob"), user("bob"), user("bob")] == [("200", "2", "1"), ("200", "2", "0"), ("429", "2", "0")]
    assert user("carol") == ("200", "2", "1")
    # default bucket: 10, minus alice 1, bob 2, carol 1 (the denials took nothing from it)
    assert user(None) == ("200", "10", "5")
    assert record(host, "bob", tag="limit0") is not None
    assert record(host, tag="limit1") is not None


def test_limits_without_always_consuming_the_default_bucket(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, LIMITS | {"always_consume_default_bucket": False})
    for u in ("alice", "bob", "bob", "carol"):
        limit_headers(hit(p, headers={"x-user": u}))
    assert limit_headers(hit(p)) == ("200", "10", "9")


def test_a_default_bucket_denial_keeps_the_limit_token_taken(host, ratelimit_wasm):
    """Like native local_ratelimit: buckets are taken in order (the limit's, then the default),
    and a denial by the default bucket does not give the limit's token back."""
    p = load(host, ratelimit_wasm, LIMITS | {"bucket": {"max_tokens": 1, "fill_interval": "1m"}})
    assert limit_headers(hit(p)) == ("200", "1", "0")             # drains the default bucket
    assert limit_headers(hit(p, headers={"x-user": "dave"})) == ("429", "1", "0")   # the default's headers
    credit, _, _ = record(host, "dave", tag="limit0")
    assert credit == 1 * 60 * 10**9                                # dave's bucket: 2 tokens, one taken
    assert host.metrics["ratelimit.limited"] == 1


def test_route_limits_and_several_descriptors(host, ratelimit_wasm):
    p = load(host, ratelimit_wasm, {"routes": [{
        "name": "api", "prefix": "/api",
        "descriptors": [{"source": "header", "name": "x-tenant"}, {"source": "path"}],
        "limits": [{"entries": [{"key": "x-tenant", "value": "t1"}, {"key": "path", "value": "/api/slow"}],
                    "bucket": {"max_tokens": 1, "fill_interval": "1m"}}]}]})
    t1 = {"x-tenant": "t1"}
    assert count(p, 3, path="/api/slow", headers=t1) == 1
    assert count(p, 3, path="/api/fast", headers=t1) == 3          # no limit matches, no default bucket
    assert count(p, 3, path="/api/slow", headers={"x-tenant": "t2"}) == 3
    assert count(p, 3, path="/other") == 3


class _CountingSharedData(SharedData):
    """The host's real shared data, remembering every key written and the largest value."""

    def __init__(self):
        super().__init__()
        self.keys: set[bytes] = set()
        self.largest = 0

    def set(self, key, value, cas=0, vm_id=""):
        ok = super().set(key, value, cas, vm_id)
        if ok:
            self.keys.add(bytes(key))
            self.largest = max(self.largest, len(value))
        return ok


def test_100k_distinct_keys_keep_shared_data_bounded(host, ratelimit_wasm):
    """The ABI has no delete: 100,000 clients must not mean 100,000 keys. With max_buckets 256
    the filter writes at most 64 entries of at most 4 records (192 bytes)."""
    host.shared_data = counting = _CountingSharedData()
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 2, "fill_interval": "1h"}, "max_buckets": 256,
                                    "descriptors": [{"source": "header", "name": "x-client"}]})
    for i in range(100_000):
        s = hit(p, headers={"x-client": f"client-{i}"})
        assert allowed(s), i
        s.complete()
    assert len(counting.keys) == 64                     # every entry used, none beyond max_buckets / 4
    assert all(k.startswith(b"ratelimit:default:64:") for k in counting.keys)
    assert counting.largest == 4 * RECORD
    # every bucket was still active (1 of 2 tokens left): all but the first 256 evicted one
    assert host.metrics["ratelimit.evicted"] >= 100_000 - 256


def test_a_full_bucket_makes_room_without_loss_an_active_one_is_evicted_and_counted(host, ratelimit_wasm):
    """max_buckets 4: one set of 4 records. A bucket that refilled to full is the same as a new
    one, so reusing its record loses nothing (evicted stays 0); when all 4 are active, the one
    that will be full soonest gives way and its client starts again from a full bucket."""
    p = load(host, ratelimit_wasm, {"bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "1s"},
                                    "max_buckets": 4, "descriptors": [{"source": "header", "name": "x-client"}]})
    c = lambda name, n: count(p, n, headers={"x-client": name})  # noqa: E731
    assert [c("a", 3), c("b", 3), c("c", 3), c("d", 2)] == [2, 2, 2, 2]
    host.clock.advance(seconds=2)                           # all four full again
    assert c("e", 1) == 1 and host.metrics["ratelimit.evicted"] == 0
    assert c("e", 2) == 1                                   # e's bucket is exact: 2 in total
    host.clock.advance(seconds=0.5)
    assert [c("a", 1), c("b", 1), c("c", 1)] == [1, 1, 1]   # a, b, c drained again (they had refilled)
    assert host.metrics["ratelimit.evicted"] == 0
    host.clock.advance(seconds=0.1)
    assert c("f", 1) == 1                                   # 5 active buckets for 4 records
    assert host.metrics["ratelimit.evicted"] == 1


@pytest.mark.parametrize("config,message", [
    ({"bucket": {"max_tokens": "5", "fill_interval_ms": 1000}}, "ratelimit: bucket.max_tokens: expected integer"),
    ({"bucket": {"max_tokens": 0, "fill_interval_ms": 1000}}, "ratelimit: bucket.max_tokens: must be between 1 and 1000000000"),
    ({"bucket": {"max_tokens": 5}}, "ratelimit: bucket.fill_interval_ms: required field is missing"),
    ({"bucket": {"max_tokens": 5, "fill_interval": "soon"}}, "ratelimit: bucket.fill_interval: expected a duration"),
    ({"bucket": {"max_tokens": 5, "fill_interval_ms": 1000, "burst": 1}}, "ratelimit: bucket.burst: unknown field"),
    ({"routes": [{"prefix": "/a"}]}, "ratelimit: routes[0].bucket: required field is missing"),
    ({"routes": [{"bucket": BUCKET}]}, 'ratelimit: routes[0]: exactly one of "prefix" or "path" is required'),
    ({"descriptors": [{"source": "cookie"}]}, 'ratelimit: descriptors[0].source: expected "client_ip", "header" or "path"'),
    ({"descriptors": [{"source": "header"}]}, "ratelimit: descriptors[0].name: required field is missing"),
    ({"on_missing": "deny"}, 'ratelimit: on_missing: expected "allow" or "shared"'),
    ({"status": 200}, "ratelimit: status: must be between 400 and 599"),
    ({"retry_after": "no"}, "ratelimit: retry_after: expected boolean"),
    ({"per_connection": 1}, "ratelimit: per_connection: expected boolean"),
    ({"max_buckets": 2}, "ratelimit: max_buckets: must be between 4 and 16777216"),
    ({"limited_response_headers": [{"name": ":status", "value": "1"}]},
     "ratelimit: limited_response_headers[0].name: not a header name"),
    ({"limited_response_headers": [{"name": "x-a", "value": "a\r\nb: c"}]},
     "ratelimit: limited_response_headers[0].value: must not contain CR, LF or NUL"),
    ({"limited_response_headers": [{"name": "x-a"}]}, "ratelimit: limited_response_headers[0].value: required field is missing"),
    ({"limited_response_headers": [{"name": "x-a", "value": "1"}, {"name": "X-A", "value": "2"}]},
     "ratelimit: limited_response_headers[1].name: x-a is given twice"),
    ({"limits": [{"entries": [], "bucket": BUCKET}]}, 'ratelimit: limits: needs "descriptors" to match against'),
    ({"descriptors": [{"source": "path"}], "limits": [{"entries": [{"key": "user"}], "bucket": BUCKET}]},
     'ratelimit: limits[0].entries[0].key: expected "path"'),
    ({"descriptors": [{"source": "path"}], "limits": [{"entries": [], "bucket": BUCKET}]},
     "ratelimit: limits[0].entries: expected 1 entries, one per descriptor"),
    ({"descriptors": [{"source": "path"}], "limits": [{"entries": [{"key": "path"}]}]},
     "ratelimit: limits[0].bucket: required field is missing"),
    ({"descriptors": [{"source": "path"}], "on_missing": "shared", "limits": [{"entries": [{"key": "path"}], "bucket": BUCKET}]},
     'ratelimit: on_missing: not used with "limits"'),
    ({"descriptors": [{"source": "header", "name": "x", "key": ""}]}, "ratelimit: descriptors[0].key: must not be empty"),
    ("[1]", "ratelimit: configuration: expected object"),
    ("{", "ratelimit: invalid JSON"),
])
def test_bad_configuration_is_rejected_with_the_field(host, ratelimit_wasm, config, message):
    with pytest.raises(PluginRejected) as exc:
        load(host, ratelimit_wasm, config)
    messages = [rec.message for rec in exc.value.logs]
    assert any(m.startswith(message) for m in messages), messages


@pytest.mark.parametrize("config,message", [
    ({"status": 200}, "status: 200 is out of range; allowed: 400..599"),
    ({"max_buckets": 3}, "max_buckets: 3 is out of range; allowed: 4..16777216"),
    ({"retry_after": "no"}, "retry_after: expected boolean, got string 'no'"),
    ({"per_connection": 1}, "per_connection: expected boolean, got integer 1"),
    ({"always_consume_default_bucket": None}, "always_consume_default_bucket: expected boolean, got null"),
    ({"descriptors": [{"source": "path", "key": 3}]}, "descriptors[0].key: expected string, got integer 3"),
    ({"descriptors": [{"source": "path"}], "limits": [{"entries": [{"key": "path", "valu": "/x"}], "bucket": BUCKET}]},
     "limits[0].entries[0].valu: unknown field; allowed: key, value"),
    ({"descriptors": [{"source": "path"}], "limits": [{"entries": [{"key": "path"}]}]}, "limits[0].bucket: required field is missing"),
    ({"routes": [{"prefix": "/", "limits": {"entries": []}}]}, "routes[0].limits: expected array, got object"),
    ({"limited_response_headers": [{"name": "x-a"}]}, "limited_response_headers[0].value: required field is missing"),
    ({"limited_response_headers": [{"name": ":status", "value": "1"}]},
     "limited_response_headers[0].name: ':status' is not allowed; allowed: a string matching"),
])
def test_validate_schema_knows_the_new_fields(host, ratelimit_wasm, config, message):
    """`proxywasm validate`'s schema reports what the filter itself refuses, naming the field."""
    errors = check(SCHEMAS["ratelimit"], config)
    assert any(e.startswith(message) for e in errors), errors
    with pytest.raises(PluginRejected):
        load(host, ratelimit_wasm, config)


def test_validate_schema_accepts_every_new_field(host, ratelimit_wasm):
    config = LIMITS | {"status": 503, "retry_after": False, "per_connection": True, "max_buckets": 64,
                       "always_consume_default_bucket": False, "body": "x",
                       "limited_response_headers": [{"name": "x-local-rate-limit", "value": "true"}],
                       "routes": [{"prefix": "/a", "limits": LIMITS["limits"], "descriptors": LIMITS["descriptors"]}]}
    assert check(SCHEMAS["ratelimit"], config) == []
    load(host, ratelimit_wasm, config)
