"""Shared data and shared queues in a Go filter (shared_filter/main.go).

`workers=2` runs one VM per emulated Envoy worker thread; `host.shared_data` and
`host.queues` are process-wide, as in Envoy. Different `vm_id`s mean different VMs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host import Host

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_go  # noqa: E402


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_go.module_for_tests("shared_filter")


def request(plugin, path="/", worker=None):
    s = plugin.http_stream(worker=worker)
    s.send_request_headers({":method": "GET", ":path": path, ":authority": "a", ":scheme": "http"}, end_of_stream=True)
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    s.complete()
    return s.upstream_request.headers


def test_cas_counter_is_shared_by_two_workers(wasm):
    host = Host()
    plugin = host.load_plugin(wasm, configuration={"role": "counter"}, workers=2)
    assert plugin.workers[0].vm is not plugin.workers[1].vm       # two VMs, one shared store
    seen = [(w, request(plugin, worker=w)["x-go-hits"]) for w in (0, 1, 1, 0)]
    assert seen == [(0, "1"), (1, "2"), (1, "3"), (0, "4")]
    value, cas = host.shared_data.get("hits")
    assert value == b"4" and cas > 0


def test_counter_continues_from_what_is_already_stored(wasm):
    host = Host()
    host.shared_data.set("hits", b"41")                        # e.g. written by another plugin earlier
    plugin = host.load_plugin(wasm, configuration={"role": "counter"})
    headers = request(plugin)
    assert headers["x-go-hits"] == "42" and headers["x-go-cas-retries"] == "0"


def test_stale_cas_is_refused(wasm):
    plugin = Host().load_plugin(wasm, configuration={"role": "counter"})
    assert request(plugin, "/stale-cas")["x-go-stale-cas"] == "first=ok second=error status returned by host: cas mismatch"
    assert plugin.host.shared_data.get("demo")[0] == b"first"


def test_queue_between_two_plugins_in_different_vms(wasm):
    host = Host()
    collector = host.load_plugin(wasm, name="collector", vm_id="collector", configuration={"role": "collector"})
    producer = host.load_plugin(wasm, name="edge", vm_id="edge", workers=2,
                                configuration={"role": "producer", "queue_vm_id": "collector"})
    assert producer.workers[0].vm is not collector.workers[0].vm
    assert [request(producer, p)["x-go-enqueued"] for p in ("/a", "/b", "/c")] == ["yes", "yes", "yes"]
    collected = [r.message for r in collector.logs if r.message.startswith("collected")]
    assert collected == ["collected event: request /a", "collected event: request /b", "collected event: request /c"]
    assert host.metrics["go_shared.events_collected"] == 3


def test_queue_of_another_vm_id_is_not_found(wasm):
    host = Host()
    host.load_plugin(wasm, vm_id="collector", configuration={"role": "collector"})
    producer = host.load_plugin(wasm, vm_id="edge", configuration={"role": "producer", "queue_vm_id": "elsewhere"})
    assert request(producer)["x-go-enqueued"] == "no: resolve elsewhere/events: error status returned by host: not found"
