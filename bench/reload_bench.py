"""Hot reload of our real filters (filters/out/jwt_authn.wasm and ratelimit.wasm) in one Envoy while
paced clients keep sending: from the ``publish`` call to the first response the new version served,
for a code change and for a configuration-only change, and what the clients' throughput did meanwhile.

Each filter has its own listener and its own paced client (a separate process, so the clients do not
take the publishing process's GIL): one request every ``INTERVAL`` s on one keep-alive connection, a
missed slot is skipped rather than sent late, so at this light load a publish that slows Envoy shows up
as fewer responses per second. Every response carries a marker of the configuration that answered it
(ratelimit: ``x-ratelimit-limit`` = the bucket's max_tokens; jwt_authn: the header name its
``claim_to_headers`` gives the token's ``sub``, echoed by the upstream), and each publish sets a new one:
a code change publishes the module with a new custom section (new bytes, so Envoy compiles it and starts
new VMs, as after a rebuild) together with a new marker; a configuration change keeps the module.
"code" and "config" publish with the default checks (the host's load-and-configure check first);
"code_fast" with ``preflight=False`` (wasmtime only validates the bytes; Envoy's own refusal judges).

    python bench/reload_bench.py        # prints the figures
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxywasm_host.envoy import EnvoyHarness, ListenerSpec, WasmFilter  # noqa: E402

OUT = ROOT / "filters" / "out"
PUBLISHES = 10  # of each kind, per filter
INTERVAL = 0.01  # s between a paced client's requests: 100 requests/s per filter
GAP = 0.6  # s of quiet between publishes: the baseline throughput
TAIL = 0.25  # s after the switch-over still counted as "during the publish" (old VMs are torn down then)
SECRET = b"proxywasm-bench-reload-secret-32"
MARK_HEADER = "x-gen-"
KINDS = ("code", "config", "code_fast")


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_config(generation: int) -> str:
    return json.dumps({
        "providers": [{"name": "bench", "issuer": "https://issuer.example", "audiences": ["api"],
                       "local_jwks": {"keys": [{"kty": "oct", "kid": "k", "alg": "HS256", "k": _b64(SECRET)}]},
                       "claim_to_headers": [{"claim_name": "sub", "header_name": f"{MARK_HEADER}{generation}"}]}],
        "rules": [{"prefix": "/", "requires": "bench"}],
    })


def ratelimit_config(generation: int) -> str:
    limit = 10**8 + generation  # never runs dry: every request is answered 200
    return json.dumps({"bucket": {"max_tokens": limit, "tokens_per_fill": limit, "fill_interval": "1s"},
                       "response_headers": True})


CONFIGS: dict[str, Callable[[int], str]] = {"jwt_authn": jwt_config, "ratelimit": ratelimit_config}


def marker(name: str, generation: int) -> str:
    return f"{MARK_HEADER}{generation}" if name == "jwt_authn" else str(10**8 + generation)


def with_custom_section(wasm: bytes, tag: str) -> bytes:
    """The same module with one more custom section: new bytes (a new sha256) and the same code."""
    payload = bytes([len(b"bench")]) + b"bench" + tag.encode()
    assert len(payload) < 0x80, tag  # a one-byte LEB128 size
    return wasm + b"\x00" + bytes([len(payload)]) + payload


def _client(name: str, port: int, stop: Any, out: Any) -> None:  # pragma: no cover - runs in a child process
    """A paced keep-alive client; sends (name, its samples: end time, marker, ok) back when told to stop."""
    import http.client

    headers = {}
    if name == "jwt_authn":
        import jwt

        now = int(time.time())
        headers["authorization"] = "Bearer " + jwt.encode(
            {"iss": "https://issuer.example", "aud": "api", "sub": "bench", "exp": now + 3600}, SECRET,
            algorithm="HS256", headers={"kid": "k"})
    samples: list[tuple[float, str, bool]] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    slot = time.monotonic()
    while not stop.is_set():
        try:
            conn.request("GET", "/reload", headers=headers)
            r = conn.getresponse()
            body = r.read()
            if name == "jwt_authn":
                found = [h for h in json.loads(body)["headers"] if h.startswith(MARK_HEADER)] if r.status == 200 else []
                mark = found[0] if found else ""
            else:
                mark = r.getheader("x-ratelimit-limit") or ""
            samples.append((time.monotonic(), mark, r.status == 200))
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            samples.append((time.monotonic(), "", False))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        slot += INTERVAL
        now = time.monotonic()
        if slot < now:  # behind: skip the missed slots instead of sending them in a burst
            slot += (now - slot) // INTERVAL * INTERVAL + INTERVAL
        time.sleep(max(slot - now, 0))
    out.put((name, samples))


@dataclass
class Publish:
    name: str
    kind: str  # "code", "config" or "code_fast"
    called: float
    returned: float
    mark: str
    switch_over: float  # the switch-over publish() measured (rename -> Envoy's counters), s
    checks_s: float  # publish() before the rename, s
    served: float | None = None  # first response with the new marker

    @property
    def to_serving_ms(self) -> float:
        assert self.served is not None
        return (self.served - self.called) * 1000

    @property
    def window(self) -> tuple[float, float]:
        return self.called, max(self.served or self.returned, self.returned) + TAIL


def _publish_all(env: EnvoyHarness, modules: dict[str, bytes], log: Callable[[str], None]) -> list[Publish]:
    done: list[Publish] = []
    generation = 0
    for i in range(PUBLISHES):
        for name, wasm in modules.items():
            for kind in KINDS:
                generation += 1
                new = None if kind == "config" else with_custom_section(wasm, f"{os.getpid()}-{time.time_ns()}")
                env.preflight = kind != "code_fast"
                t0 = time.monotonic()
                res = env.publish(name, new, configuration=CONFIGS[name](generation))
                done.append(Publish(name, kind, t0, time.monotonic(), marker(name, generation),
                                    res.reload_seconds or 0.0, res.validate_seconds))
                log(f"{name} {kind} #{i + 1}: publish returned after {(done[-1].returned - t0) * 1000:.0f} ms "
                    f"(checks {res.validate_seconds * 1000:.0f} ms, switch-over {(res.reload_seconds or 0) * 1000:.0f} ms)")
                time.sleep(GAP)
    return done


def _rate(samples: list[tuple[float, str, bool]], spans: list[tuple[float, float]]) -> float:
    total = sum(b - a for a, b in spans)
    return sum(1 for t, _, _ in samples for a, b in spans if a <= t < b) / total if total > 0 else 0.0


def _quiet_spans(windows: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    spans, t = [], start
    for a, b in sorted(windows):
        if a > t:
            spans.append((t, a))
        t = max(t, b)
    return spans + ([(t, end)] if end > t else [])


def run(log: Callable[[str], None] = lambda s: None) -> dict[str, float]:
    modules = {name: (OUT / f"{name}.wasm").read_bytes() for name in CONFIGS if (OUT / f"{name}.wasm").exists()}
    if not modules:
        raise FileNotFoundError(f"no module in {OUT}: run `make filters` first")
    load_before = os.getloadavg()[0]
    listeners = [ListenerSpec(name, [WasmFilter(name, wasm, configuration=CONFIGS[name](0))])
                 for name, wasm in modules.items()]
    ctx = mp.get_context("spawn")
    with EnvoyHarness(listeners=listeners, component_log_level="wasm:warn", log_level="warn") as env:
        stop, queue = ctx.Event(), ctx.Queue()
        clients = {name: ctx.Process(target=_client, args=(name, env.port(name), stop, queue), daemon=True)
                   for name in modules}
        for p in clients.values():
            p.start()
        time.sleep(1.5)  # the clients start (a spawned interpreter) and warm up
        started = time.monotonic()
        publishes = _publish_all(env, modules, log)
        ended = time.monotonic()
        stop.set()
        samples = dict(queue.get(timeout=60) for _ in clients)
        for p in clients.values():
            p.join(timeout=10)
    return _figures(publishes, samples, started, ended, modules, load_before)


def _figures(publishes: list[Publish], samples: dict[str, list[tuple[float, str, bool]]], started: float,
             ended: float, modules: dict[str, bytes], load_before: float) -> dict[str, float]:
    for p in publishes:
        p.served = next((t for t, m, ok in samples[p.name] if t >= p.called and m == p.mark and ok), None)
    missing = [p for p in publishes if p.served is None]
    if missing:
        raise RuntimeError(f"{len(missing)} publishes never served, e.g. {missing[0]}")
    out: dict[str, float] = {}
    for kind in KINDS:
        mine = [p for p in publishes if p.kind == kind]
        out[f"reload_{kind}_publish_to_serving_ms"] = statistics.median(p.to_serving_ms for p in mine)
        out[f"reload_{kind}_publish_to_serving_max_ms"] = max(p.to_serving_ms for p in mine)
        out[f"reload_{kind}_checks_ms"] = statistics.median(p.checks_s * 1000 for p in mine)
        out[f"reload_{kind}_switch_over_ms"] = statistics.median(p.switch_over * 1000 for p in mine)
        for name in modules:
            out[f"reload_{kind}_{name}_publish_to_serving_ms"] = statistics.median(
                p.to_serving_ms for p in mine if p.name == name)
        windows = [p.window for p in mine]
        quiet = _quiet_spans([p.window for p in publishes], started, ended)
        during = sum(_rate(s, windows) for s in samples.values())
        base = sum(_rate(s, quiet) for s in samples.values())
        out[f"reload_{kind}_throughput_drop_pct"] = 100 * (1 - during / base) if base else 100.0
    out["reload_light_load_rps"] = sum(_rate(s, [(started, ended)]) for s in samples.values())
    out["reload_failed_requests"] = float(sum(not ok for s in samples.values() for _, _, ok in s))
    out["reload_publishes"] = float(len(publishes))
    for name, wasm in modules.items():
        out[f"reload_{name}_module_bytes"] = float(len(wasm))
    out["reload_loadavg_1m_before"] = load_before
    out["reload_loadavg_1m_after"] = os.getloadavg()[0]
    out["reload_cpus"] = float(os.cpu_count() or 0)
    return out


if __name__ == "__main__":
    for key, value in run(log=lambda s: print(s, file=sys.stderr, flush=True)).items():
        print(f"{key:50s} {value:10.1f}")
