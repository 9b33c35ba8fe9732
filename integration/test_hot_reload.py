"""Hot reload of filter code and configuration through ECDS while clients keep sending requests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx
import pytest

from proxywasm_host.envoy import EnvoyHarness, PublishError
from proxywasm_host.envoy.wat import build_wat

from conftest import WAT_DIR

MAX_REQUESTS = 20_000  # per client loop
MAX_SECONDS = 30.0  # hard stop for each client loop
WAIT_SECONDS = 10.0  # how long a step may wait for what the clients see


@dataclass
class Sample:
    start: float
    end: float
    status: int
    version: str
    config: str


@dataclass
class ClientLoop:
    """A bounded request loop: one keep-alive connection, or a new connection per request."""

    url: str
    keepalive: bool
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    seen: threading.Condition = field(default_factory=threading.Condition)  # notified at each sample

    def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if self.keepalive else 0)
        deadline = time.monotonic() + MAX_SECONDS
        with httpx.Client(limits=limits, timeout=5) as client:
            for _ in range(MAX_REQUESTS):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                t0 = time.monotonic()
                try:
                    r = client.get(self.url, headers={"x-allow": "1"})
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self.seen:
                    self.samples.append(Sample(t0, time.monotonic(), r.status_code,
                                               r.headers.get("x-filter-version", ""),
                                               r.headers.get("x-filter-config", "")))
                    self.seen.notify_all()

    def wait_for(self, what: str, pred: Callable[[list[Sample]], bool]) -> None:
        """Wait until the samples so far satisfy `pred` (an event per sample, bounded)."""
        with self.seen:
            assert self.seen.wait_for(lambda: pred(self.samples), WAIT_SECONDS), (
                f"{'keep-alive' if self.keepalive else 'new-connection'} client never saw {what}; "
                f"errors {self.errors[:3]}, last {self.samples[-1:]}")

    def start(self) -> "ClientLoop":
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=MAX_SECONDS + 10)


def first_new(samples: list[Sample], after: float, pred) -> Sample | None:  # type: ignore[no-untyped-def]
    return next((s for s in samples if s.end >= after and pred(s)), None)


def test_hot_reload_code_then_config_under_load(envoy: EnvoyHarness, wasm_v2: bytes) -> None:
    pid = envoy.pid
    loops = [ClientLoop(envoy.url("/reload"), keepalive=True).start(),
             ClientLoop(envoy.url("/reload"), keepalive=False).start()]
    try:
        for lp in loops:
            lp.wait_for("5 responses", lambda samples: len(samples) >= 5)
        code = envoy.publish("jwt_authn", wasm_v2)  # code swap v1 -> v2, same config
        assert code.checks == ("load", "configure")  # the host's pre-flight, no envoy --mode validate
        for lp in loops:
            lp.wait_for("v2", lambda samples: any(s.version == "v2" for s in samples))
        conf = envoy.publish("jwt_authn", configuration="cfg-two")  # config swap, same code
        for lp in loops:
            lp.wait_for("cfg-two", lambda samples: any(s.config == "cfg-two" for s in samples))

        # a broken build is refused with a message naming the problem ...
        with pytest.raises(PublishError, match="not a WebAssembly module"):
            envoy.publish("jwt_authn", b"\0asn garbage that is not wasm")
        with pytest.raises(PublishError, match="Failed to parse corrupted Wasm module"):
            envoy.publish("jwt_authn", wasm_v2[: len(wasm_v2) // 2])
        with pytest.raises(PublishError, match="Missing or unknown Proxy-Wasm ABI version"):
            envoy.publish("jwt_authn", build_wat(WAT_DIR / "no_abi.wat"))
        with pytest.raises(PublishError, match="proxy_does_not_exist"):
            envoy.publish("jwt_authn", build_wat(WAT_DIR / "missing_import.wat"))
        # on_configure returns false: the host's configure check refuses it, Envoy never sees it
        with pytest.raises(PublishError, match=r"the host's configure check refused the filter config: "
                                               r"plugin jwt_authn .*: proxy_on_configure returned false"):
            envoy.publish("jwt_authn", configuration="reject-this-config")
        refused_at = time.monotonic()
        for lp in loops:
            lp.wait_for("5 responses after the refused updates",
                        lambda samples: sum(s.start > refused_at for s in samples) >= 5)
            # a fast publish leaves a short window: the load is the clients' count, not how long the steps took
            lp.wait_for("51 responses in all", lambda samples: len(samples) > 50)
    finally:
        for lp in loops:
            lp.finish()

    assert envoy.pid == pid, "Envoy was restarted"
    assert envoy.current("jwt_authn")["configuration"] == "cfg-two"
    report = []
    for lp in loops:
        kind = "keep-alive" if lp.keepalive else "new-connection"
        assert not lp.errors, f"{kind}: {len(lp.errors)} client errors, first: {lp.errors[:3]}"
        bad = [s for s in lp.samples if s.status != 200]
        assert not bad, f"{kind}: {len(bad)} non-200 responses, e.g. {bad[:3]}"
        assert len(lp.samples) > 50, f"{kind}: only {len(lp.samples)} requests completed"

        got_v2 = first_new(lp.samples, code.published_at, lambda s: s.version == "v2")
        assert got_v2 is not None, f"{kind}: never saw v2"
        code_latency = got_v2.end - code.published_at
        got_cfg = first_new(lp.samples, conf.published_at, lambda s: s.config == "cfg-two")
        assert got_cfg is not None, f"{kind}: never saw cfg-two"
        cfg_latency = got_cfg.end - conf.published_at
        # (how soon the new filter is served is measured by `make bench`: reload_*_publish_to_serving_ms)
        # the refused updates changed nothing: every request started after them got v2 with cfg-two
        after = [(s.version, s.config) for s in lp.samples if s.start > refused_at]
        assert after and set(after) == {("v2", "cfg-two")}, f"{kind}: after the refused updates: {set(after)}"
        report.append(f"{kind}: {len(lp.samples)} requests, code swap seen after {code_latency * 1000:.1f} ms, "
                      f"config swap after {cfg_latency * 1000:.1f} ms")
    stats = envoy.ecds_stats("jwt_authn")
    assert stats["config_reload"] == 3  # initial load + 2 accepted swaps
    print(f"\nreload: code publish {code.validate_seconds * 1000:.0f} ms validate + "
          f"{code.reload_seconds * 1000:.1f} ms to config_reload; config publish "
          f"{conf.reload_seconds * 1000:.1f} ms; " + "; ".join(report) + f"; ecds stats {stats}")


def test_update_refused_by_envoy_itself_keeps_old_filter(envoy: EnvoyHarness) -> None:
    """Without the host's pre-flight (the fast path: wasmtime only validates the bytes), Envoy's own
    rejection is detected from its ECDS counters."""
    envoy.preflight = False
    pid = envoy.pid
    with pytest.raises(PublishError, match=r"update_rejected\+1.*\n.*Failed to configure base Wasm plugin"):
        envoy.publish("jwt_authn", configuration="reject-me")
    with pytest.raises(PublishError, match="missing import: env.proxy_does_not_exist"):
        envoy.publish("jwt_authn", build_wat(WAT_DIR / "missing_import.wat"))
    r = httpx.get(envoy.url("/"), headers={"x-allow": "1"}, timeout=5)
    assert (r.status_code, r.headers["x-filter-version"], r.headers["x-filter-config"]) == (200, "v1", "cfg-one")
    assert envoy.pid == pid
    assert envoy.current("jwt_authn")["configuration"] == "cfg-one"


def test_envoy_validate_runs_once_per_module_and_configuration(envoy: EnvoyHarness, wasm_v2: bytes) -> None:
    """validate_with_envoy adds envoy --mode validate; its verdict is remembered per typed config."""
    envoy.validate_with_envoy = True
    first = envoy.publish("jwt_authn", wasm_v2, configuration="cfg-x")
    other = envoy.publish("jwt_authn", configuration="cfg-y")
    again = envoy.publish("jwt_authn", configuration="cfg-x")  # module and configuration of the first: remembered
    assert [r.checks for r in (first, other, again)] == [
        ("load", "configure", "envoy-validate"), ("load", "configure", "envoy-validate"),
        ("load", "configure", "envoy-validate (remembered)")]
    envoy.preflight = False  # so that Envoy's validate is what refuses it
    for _ in range(2):  # the second refusal is the remembered one, with the same message
        with pytest.raises(PublishError, match="envoy --mode validate refused the filter config:\n.*"
                                               "Failed to configure base Wasm plugin"):
            envoy.publish("jwt_authn", configuration="reject-by-validate")
    r = httpx.get(envoy.url("/"), headers={"x-allow": "1"}, timeout=5)
    assert (r.headers["x-filter-version"], r.headers["x-filter-config"]) == ("v2", "cfg-x")
