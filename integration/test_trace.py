"""Host(trace=True) lines up with Envoy's wasm:trace: for the same module and request, the
worker's callbacks and hostcalls, with their arguments and results, are the same lines."""
from __future__ import annotations

import http.client
import sys
import time
from pathlib import Path

from proxywasm_host import Host
from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.static import StaticEnvoy, http_listener, plugin_config, trace_by_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from watgen import build  # noqa: E402

FILTER = {
    "proxy_on_request_headers": "(drop (call $proxy_log (i32.const 2) {m}))"
                                " (drop (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104)))"
                                " (drop (call $proxy_add_header_map_value (i32.const 0) {h} {v})) (i32.const 0)",
    "proxy_on_response_headers": "(drop (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104)))"
                                 " (i32.const 0)",
}
STRINGS = {"m": "request", "k": "x-missing", "h": "x-traced", "v": "1"}


def test_request_trace_is_envoys(tmp_path: Path) -> None:
    wasm = build(FILTER, STRINGS)
    (tmp_path / "f.wasm").write_bytes(wasm)
    with EchoUpstream() as up, StaticEnvoy(http_listener([plugin_config("f", str(tmp_path / "f.wasm"))]),
                                           {"upstream": up.port}, component_log_level="wasm:trace") as env:
        conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=5)
        conn.putrequest("GET", "/", skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", "example.com")
        conn.endheaders()
        assert conn.getresponse().read()
        deadline = time.monotonic() + 10  # the trace lines are written as the callbacks run: await the response's
        while "proxy_on_response_headers" not in env.log() and time.monotonic() < deadline:
            time.sleep(0.01)
        threads = trace_by_thread(env.log())
    worker = next(lines for lines in threads.values() if "[host->vm] proxy_on_context_create(2, 1)" in lines)
    envoy = worker[worker.index("[host->vm] proxy_on_context_create(2, 1)"):]

    host = Host(trace=True)
    plugin = host.load_plugin(wasm, name="f")
    start = len(host.trace)
    s = plugin.http_stream()
    s.send_request_headers({":authority": "example.com", ":path": "/", ":method": "GET"}, end_of_stream=True)
    s.send_response_headers({":status": "200", "content-type": "application/json"}, end_of_stream=True)
    s.complete()
    ours = host.trace[start:]
    # up to the response, which comes from different upstreams on the two sides
    cut = "[host->vm] proxy_on_response_headers"
    request_part = envoy[:next(i for i, x in enumerate(envoy) if x.startswith(cut))]
    assert "[vm<-host] env.proxy_get_header_map_value return: 1" in request_part  # NotFound is traced
    assert len(request_part) == 10 and ours[:len(request_part)] == request_part
    assert ours[len(request_part)].startswith(cut)
