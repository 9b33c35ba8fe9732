"""Latencies the tests no longer assert (a wall-clock bound in a test fails on a loaded machine):
how long the execution deadline takes to stop an infinite loop, and how long after an ECDS
publish Envoy serves the new filter code and the new configuration (first response seen by a
client that keeps sending)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from proxywasm_host import DeadlineExceeded, Host  # noqa: E402
from proxywasm_host.envoy import WasmFilter  # noqa: E402
from proxywasm_host.envoy.fixtures import echo_upstream, envoy_harness  # noqa: E402
from proxywasm_host.envoy.wat import build_wat  # noqa: E402
from watgen import build  # noqa: E402

REQ = {":method": "GET", ":path": "/", ":authority": "a"}
DEADLINE_MS = 200


def deadline_stop_ms() -> float:
    plugin = Host().load_plugin(build({"proxy_on_request_headers": "(loop $l (br $l)) (i32.const 0)"}), deadline_ms=DEADLINE_MS)
    start = time.perf_counter()
    try:
        plugin.http_stream().send_request_headers(REQ)
    except DeadlineExceeded:
        return (time.perf_counter() - start) * 1000
    raise RuntimeError("the infinite loop returned")


def first_served_ms(client: httpx.Client, url: str, published_at: float, header: str, value: str) -> float:
    """Send until a response carries header=value; the time from the publish to that response."""
    for _ in range(10_000):
        if client.get(url, headers={"x-allow": "1"}).headers.get(header) == value:
            return (time.monotonic() - published_at) * 1000
    raise RuntimeError(f"{header}: {value} never served")


def version_filter(tag: str) -> bytes:
    """integration/wat/version_filter.wat: answers with x-filter-version and x-filter-config."""
    return build_wat(ROOT / "integration" / "wat" / "version_filter.wat", {"@V": tag})


def reload_ms() -> dict[str, float]:
    with echo_upstream() as up, envoy_harness([WasmFilter("jwt_authn", version_filter("v1"), configuration="cfg-one")],
                                             upstream=up) as env, httpx.Client(timeout=5) as client:
        code = env.publish("jwt_authn", version_filter("v2"))
        code_ms = first_served_ms(client, env.url("/"), code.published_at, "x-filter-version", "v2")
        conf = env.publish("jwt_authn", configuration="cfg-two")
        conf_ms = first_served_ms(client, env.url("/"), conf.published_at, "x-filter-config", "cfg-two")
    return {"reload_code_first_served_ms": code_ms, "reload_config_first_served_ms": conf_ms}


def run() -> dict[str, float]:
    return {f"deadline_{DEADLINE_MS}ms_stops_loop_after_ms": deadline_stop_ms(), **reload_ms()}


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:50s} {value:10.1f}")
