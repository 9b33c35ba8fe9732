"""Parity for the Go SDK examples (examples/go, official proxy-wasm-go-sdk): the same traffic
through a real Envoy 1.40 and through the host. Envoy is the ground truth.

The harness in proxywasm_host.envoy mounts HTTP filters through ECDS only; these cases also
need VM configuration, route metadata, several plugins in one chain with their own vm_id,
extra clusters and a network (TCP) filter, so this file writes a static bootstrap itself.

Compared: statuses, x-go-* headers both ways (local replies: every header but date/server),
bodies, the filters' info-and-above log lines from stream contexts, callouts, shared data and
queue effects, and the wasmcustom stats.
"""
from __future__ import annotations

import json
import re
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxywasm_host import Host
from proxywasm_host.abi import PeerType
from proxywasm_host.envoy import EchoUpstream
from proxywasm_host.envoy.validate import find_envoy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "go"))
import build_go  # noqa: E402

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WASM_HTTP = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
WASM_NET = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
STRING = "type.googleapis.com/google.protobuf.StringValue"
_LEVELS = ("info", "warning", "error", "critical")
_LEVEL_NAMES = {"warning": "warn"}


# --- a static Envoy -------------------------------------------------------------------------------

def plugin_config(name: str, wasm: str, configuration: str = "", vm_configuration: str = "", vm_id: str = "",
                  failure_policy: str = "FAIL_CLOSED") -> dict[str, Any]:
    return {"name": name, "root_id": "", "failure_policy": failure_policy,
            "configuration": {"@type": STRING, "value": configuration},
            "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                          "configuration": {"@type": STRING, "value": vm_configuration},
                          "code": {"local": {"filename": wasm}}}}


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def http_listener(plugins: list[dict[str, Any]], route_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
    if route_metadata:
        route["metadata"] = route_metadata
    filters = [{"name": f"wasm_{i}", "typed_config": {"@type": WASM_HTTP, "config": p}} for i, p in enumerate(plugins)]
    return {"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                "@type": HCM, "stat_prefix": "main", "http_filters": [*filters, ROUTER],
                "route_config": {"name": "main_route", "virtual_hosts": [
                    {"name": "all", "domains": ["*"], "routes": [route]}]}}}]}]}


def tcp_listener(plugin: dict[str, Any]) -> dict[str, Any]:
    return {"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [
                {"name": "wasm_tcp", "typed_config": {"@type": WASM_NET, "config": plugin}},
                {"name": "tcp", "typed_config": {"@type": TCP_PROXY, "stat_prefix": "tcp", "cluster": "upstream"}}]}]}


class StaticEnvoy:
    """One Envoy process from a static bootstrap (listener "main"), stopped on exit."""

    def __init__(self, listener: dict[str, Any], clusters: dict[str, int], concurrency: int = 1):
        self.dir = Path(tempfile.mkdtemp(prefix="proxywasm-go-parity-"))
        self.log_path = self.dir / "envoy.log"
        boot = {"node": {"id": "go-parity", "cluster": "go-parity"},
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
                "static_resources": {"listeners": [listener],
                                     "clusters": [_cluster(n, p) for n, p in clusters.items()]}}
        (self.dir / "bootstrap.json").write_text(json.dumps(boot, indent=1))
        self.args = [find_envoy(), "-c", str(self.dir / "bootstrap.json"), "--disable-hot-restart",
                     "--concurrency", str(concurrency), "--log-level", "info", "--component-log-level", "wasm:debug",
                     "--admin-address-path", str(self.dir / "admin.txt"), "--drain-time-s", "1"]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "StaticEnvoy":
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"Envoy did not start:\n{self.log_path.read_text()[-3000:]}")
            admin = self.dir / "admin.txt"
            if admin.exists() and admin.read_text().strip():
                self.admin = "http://" + admin.read_text().strip()
                try:
                    if httpx.get(self.admin + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        listeners = httpx.get(self.admin + "/listeners?format=json", timeout=5).json()["listener_statuses"]
        self.port = {x["name"]: x["local_address"]["socket_address"]["port_value"] for x in listeners}["main"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self, prefix: str = "wasmcustom.") -> dict[str, str]:
        text = httpx.get(self.admin + "/stats", timeout=5).text
        return {k: v for k, _, v in (line.partition(": ") for line in text.splitlines()) if k.startswith(prefix)}

    def filter_logs(self, plugin: str) -> list[tuple[str, str]]:
        """(level, message) of `wasm log <plugin>: …` lines: the stream contexts' lines."""
        pattern = re.compile(r"\]\[(\w+)\]\[wasm\] \[[^\]]*\] wasm log " + re.escape(plugin) + r": (.*)$")
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = pattern.search(line)
            if m and m.group(1) in _LEVELS:
                out.append((_LEVEL_NAMES.get(m.group(1), m.group(1)), m.group(2)))
        return out

    def all_wasm_messages(self) -> list[str]:
        return [line.split("wasm log", 1)[1].split(": ", 1)[1] for line in self.log_path.read_text(errors="replace").splitlines()
                if "wasm log" in line and ": " in line.split("wasm log", 1)[1]]


@pytest.fixture(scope="module")
def go_wasm() -> dict[str, str]:
    return {name: build_go.module_for_tests(name) for name in build_go.PROGRAMS}


@pytest.fixture(scope="module", autouse=True)
def _envoy_available() -> None:
    try:
        find_envoy()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def up():
    with EchoUpstream() as upstream:
        yield upstream


def host_logs(records: list[Any]) -> list[tuple[str, str]]:
    return [(r.level, r.message) for r in records if r.level in ("info", "warn", "error", "critical")]


# --- HTTP filter ----------------------------------------------------------------------------------

HTTP_CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'
VM_CONFIG = "region=eu-1"
ROUTE_METADATA = {"filter_metadata": {"go_filter": {"tier": "gold", "limits": {"rps": "10", "burst": "20"}}}}
CLIENT = {"accept": "*/*", "accept-encoding": "gzip, deflate", "user-agent": "go-parity"}
# method, path, headers, body
HTTP_REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("GET", "/items?page=2", {"x-go-replace": "old", "x-go-remove": "bye", "x-go-lookup": "alice"}, None),
    ("GET", "/admin/users", {}, None),
    ("POST", "/upload", {"x-go-body": "buffer"}, b"hello world"),
    ("POST", "/upload", {"x-go-body": "stream"}, b"small chunk"),
    ("GET", "/wrapped", {"x-go-wrap-response": "1"}, None),
]
WRAPPED_UPSTREAM_BODY = 'say "hi"!'


def _norm(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """x-go-* headers, with the client's ephemeral port masked."""
    return [(k, re.sub(r"^127\.0\.0\.1:\d+$", "127.0.0.1:PORT", v) if k == "x-go-source" else v)
            for k, v in headers if k.startswith("x-go-")]


def _response_view(status: int, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = [(k.lower(), v) for k, v in headers if k.lower() not in (":status", "date", "server")]
    return pairs if status != 200 else [(k, v) for k, v in pairs if k.startswith("x-go-") or k == "content-type"]


def envoy_http(env: StaticEnvoy, reqs=HTTP_REQUESTS) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(timeout=10) as client:
        for method, path, headers, body in reqs:
            r = client.request(method, env.url(path), headers={"host": "api.example", **CLIENT, **headers}, content=body)
            obs: dict[str, Any] = {"status": r.status_code, "response": _response_view(r.status_code, r.headers.multi_items())}
            if r.status_code != 200 or path == "/wrapped":
                obs["body"] = r.text
            else:
                doc = r.json()
                obs["upstream"] = _norm(doc["header_list"])
                obs["upstream_body"] = doc["body"]
            out.append(obs)
    return out


def host_http(plugin: Any, reqs=HTTP_REQUESTS) -> list[dict[str, Any]]:
    out = []
    for method, path, headers, body in reqs:
        s = plugin.http_stream(properties={"xds.route_metadata": ROUTE_METADATA})
        req = {":authority": "api.example", ":path": path, ":method": method, ":scheme": "http", **CLIENT, **headers}
        if body is not None:
            req["content-length"] = str(len(body))
        s.send_request_headers(req, end_of_stream=body is None)
        if body is not None and s.local_reply is None:
            # Envoy's HTTP/1 codec hands a content-length body over as data, then an empty end of stream.
            s.send_request_body(body, end_of_stream=False)
            s.send_request_body(b"", end_of_stream=True)
        if s.local_reply is None:
            payload = WRAPPED_UPSTREAM_BODY.encode() if path == "/wrapped" else b"{}"
            ctype = "text/plain" if path == "/wrapped" else "application/json"
            s.send_response_headers({":status": "200", "content-type": ctype, "content-length": str(len(payload))})
            s.send_response_body(payload, end_of_stream=True)
        s.complete()
        status = int(s.downstream_response.headers[":status"])
        obs: dict[str, Any] = {"status": status, "response": _response_view(status, s.downstream_response.headers.items())}
        if status != 200 or path == "/wrapped":
            obs["body"] = s.downstream_response.body.decode()
        else:
            obs["upstream"] = _norm(s.upstream_request.headers.items())
            obs["upstream_body"] = s.upstream_request.body.decode()
        out.append(obs)
    return out


def test_http_filter_parity(go_wasm, up) -> None:
    up.set_response("/wrapped", WRAPPED_UPSTREAM_BODY, headers={"content-type": "text/plain"})
    plugin_cfg = plugin_config("go_http", go_wasm["http_filter"], HTTP_CONFIG, VM_CONFIG)
    with StaticEnvoy(http_listener([plugin_cfg], ROUTE_METADATA), {"upstream": up.port}) as env:
        envoy = envoy_http(env)
        envoy_logs = env.filter_logs("go_http")
        envoy_stats = env.stats()
    host = Host()
    plugin = host.load_plugin(go_wasm["http_filter"], name="go_http", configuration=HTTP_CONFIG, vm_configuration=VM_CONFIG)
    ours = host_http(plugin)
    assert [o["status"] for o in envoy] == [200, 403, 200, 200, 200]
    assert ("x-go-route-limits", "burst=20,rps=10") in envoy[0]["upstream"]      # not vacuous
    assert envoy[2]["upstream_body"] == "<<HELLO WORLD>>"
    for i, (e, h) in enumerate(zip(envoy, ours)):
        assert e == h, f"request #{i} {HTTP_REQUESTS[i][:2]}:\n  envoy: {e}\n  host:  {h}"
    assert envoy_logs == host_logs([r for r in plugin.logs if r.context_id != plugin.root_contexts[0].id])
    for name in ("go_http.requests_total", "go_http.requests_method=GET", "go_http.requests_method=POST",
                 "go_http.active_requests"):
        assert int(envoy_stats["wasmcustom." + name]) == host.metrics[name], name


@pytest.mark.parametrize("policy,expected", [("fail_closed", [200, 503, 503]), ("fail_open", [200, 503, 200])])
def test_panic_parity(go_wasm, up, policy, expected) -> None:
    reqs = [("GET", "/a", {}, None), ("GET", "/b", {"x-go-panic": "1"}, None), ("GET", "/c", {}, None)]
    plugin_cfg = plugin_config("go_http", go_wasm["http_filter"], HTTP_CONFIG, VM_CONFIG, failure_policy=policy.upper())
    with StaticEnvoy(http_listener([plugin_cfg], ROUTE_METADATA), {"upstream": up.port}) as env:
        envoy = envoy_http(env, reqs)
        envoy_errors = [m for lvl, m in env.filter_logs("go_http") if lvl == "error"]
    plugin = Host().load_plugin(go_wasm["http_filter"], name="go_http", configuration=HTTP_CONFIG,
                                vm_configuration=VM_CONFIG, failure_policy=policy, raise_on_trap=False)
    ours = host_http(plugin, reqs)
    assert [o["status"] for o in envoy] == expected
    assert [o["status"] for o in ours] == expected
    assert envoy == ours
    host_errors = [r.message for r in plugin.logs if r.level == "error"]
    strip = re.compile(r"0x[0-9a-f]+")   # addresses in the goroutine trace may differ
    assert [strip.sub("0x", m) for m in envoy_errors] == [strip.sub("0x", m) for m in host_errors]
    assert envoy_errors[:2] == ["panic: ", "x-go-panic asked for a panic"]


# --- callouts -------------------------------------------------------------------------------------

def test_callouts_parity(go_wasm, up) -> None:
    up.set_response("/flags", "dark-mode=on", headers={"content-type": "text/plain"})
    up.set_response("/users/alice", "role=admin", headers={"content-type": "text/plain"})
    up.set_response("/users/mallory", "no such user", status=404)
    cases = [({}, None), ({"x-go-user": "alice"}, None), ({"x-go-user": "mallory"}, None), ({"x-go-hold": "1"}, None)]
    plugin_cfg = plugin_config("go_callouts", go_wasm["callout_filter"], '{"tick_ms": 1000}')
    with StaticEnvoy(http_listener([plugin_cfg]), {"upstream": up.port, "flags": up.port, "auth": up.port}) as env:
        deadline = time.monotonic() + 5
        while "flags are now" not in " ".join(env.all_wasm_messages()) and time.monotonic() < deadline:
            time.sleep(0.05)
        envoy = []
        with httpx.Client(timeout=10) as client:
            for headers, _ in cases:
                r = client.get(env.url("/orders"), headers={"host": "shop", **headers})
                fwd = _norm(r.json()["header_list"]) if r.status_code == 200 else None
                envoy.append((r.status_code, fwd, None if r.status_code == 200 else r.text))
        envoy_logs = [e for e in env.filter_logs("go_callouts") if not e[1].startswith("holding stream")]

    host = Host()
    host.add_cluster("flags")
    host.add_cluster("auth")
    plugin = host.load_plugin(go_wasm["callout_filter"], name="go_callouts", configuration='{"tick_ms": 1000}')
    answers = {"/flags": (200, "dark-mode=on"), "/users/alice": (200, "role=admin"), "/users/mallory": (404, "no such user")}

    def answer_all() -> None:
        for call in list(plugin.pending_http_calls):
            status, body = answers[call.headers[":path"].split("?")[0]]
            call.respond(status, {"content-type": "text/plain"}, body)

    answer_all()
    ours = []
    for headers, _ in cases:
        s = plugin.http_stream()
        s.send_request_headers({":method": "GET", ":path": "/orders", ":authority": "shop", ":scheme": "http", **headers},
                               end_of_stream=True)
        answer_all()
        if s.upstream_request.headers is None and s.local_reply is None:
            host.clock.advance(seconds=1)    # the held request waits for a tick
            answer_all()
        if s.local_reply is None:
            s.send_response_headers({":status": "200"}, end_of_stream=True)
        s.complete()
        status = int(s.downstream_response.headers[":status"])
        ours.append((status, _norm(s.upstream_request.headers.items()) if status == 200 else None,
                     None if status == 200 else s.downstream_response.body.decode()))
    assert [e[0] for e in envoy] == [200, 200, 403, 200]
    assert ("x-go-auth", "role=admin") in envoy[1][1] and ("x-go-released-at-tick", "1") in envoy[3][1]
    assert envoy == ours
    ours_logs = [e for e in host_logs([r for r in plugin.logs if r.context_id != plugin.root_contexts[0].id])
                 if not e[1].startswith("holding stream")]
    assert envoy_logs == ours_logs


# --- shared data and queues -----------------------------------------------------------------------

def test_shared_data_and_queue_parity(go_wasm, up) -> None:
    wasm = go_wasm["shared_filter"]
    chain = [plugin_config("counter", wasm, '{"role": "counter"}', vm_id="counter"),
             plugin_config("collector", wasm, '{"role": "collector"}', vm_id="collector"),
             plugin_config("edge", wasm, '{"role": "producer", "queue_vm_id": "collector"}', vm_id="edge")]
    paths = ["/a", "/b", "/stale-cas", "/c"]
    with StaticEnvoy(http_listener(chain), {"upstream": up.port}, concurrency=2) as env:
        envoy = []
        with httpx.Client(timeout=10) as client:
            for p in paths:
                envoy.append(_norm(client.get(env.url(p), headers={"host": "a"}).json()["header_list"]))
        deadline = time.monotonic() + 5
        while int(env.stats().get("wasmcustom.go_shared.events_collected", 0)) < len(paths) and time.monotonic() < deadline:
            time.sleep(0.05)
        collected = int(env.stats()["wasmcustom.go_shared.events_collected"])
        envoy_events = sorted(m for m in env.all_wasm_messages() if m.startswith("collected event"))

    host = Host()
    plugins = [host.load_plugin(wasm, name=c["name"], vm_id=c["vm_config"]["vm_id"], workers=2,
                                configuration=c["configuration"]["value"]) for c in chain]
    ours = []
    for p in paths:
        streams = [pl.http_stream() for pl in plugins]   # one request passes the whole chain
        headers: Any = {":method": "GET", ":path": p, ":authority": "a", ":scheme": "http"}
        for s in streams:
            s.send_request_headers(headers, end_of_stream=True)
            headers = list(s.upstream_request.headers.items())   # what the next filter gets
        ours.append(_norm(headers))
        for s in streams:
            s.send_response_headers({":status": "200"}, end_of_stream=True)
            s.complete()
    assert [dict(e)["x-go-hits"] for e in envoy] == ["1", "2", "3", "4"]
    assert dict(envoy[2])["x-go-stale-cas"] == "first=ok second=error status returned by host: cas mismatch"
    assert envoy == ours
    assert collected == host.metrics["go_shared.events_collected"] == len(paths)
    assert envoy_events == sorted(r.message for r in plugins[1].logs if r.message.startswith("collected event"))


# --- TCP filter -----------------------------------------------------------------------------------

class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


def test_tcp_filter_parity(go_wasm) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with StaticEnvoy(tcp_listener(plugin_config("go_tcp", go_wasm["tcp_filter"])), {"upstream": server.server_address[1]}) as env:
            received = []
            for lines in ([b"hello\n", b"bye\n"], [b"ping\n", b"QUIT\r\n"]):
                with socket.create_connection(("127.0.0.1", env.port), timeout=3) as sock:
                    got = b""
                    for line in lines:
                        sock.sendall(line)
                        chunk = sock.recv(4096)
                        got += chunk
                    received.append(got)
                time.sleep(0.3)
            envoy_logs = env.filter_logs("go_tcp")
            envoy_stats = env.stats()
    finally:
        server.shutdown()
        server.server_close()

    host = Host()
    plugin = host.load_plugin(go_wasm["tcp_filter"], name="go_tcp")
    ours = []
    for lines in ([b"hello\n", b"bye\n"], [b"ping\n", b"QUIT\r\n"]):
        conn = plugin.tcp_stream()
        conn.connect()
        for line in lines:
            before = len(conn.upstream_received)
            conn.send_downstream_data(line)
            echoed = bytes(conn.upstream_received[before:])
            if echoed and conn.closed is None:
                conn.send_upstream_data(echoed)             # the echo server answers
        ours.append(bytes(conn.downstream_received))
        if conn.closed is None:                             # the client closes: tcp_proxy's sequence
            conn.send_downstream_data(b"", end_of_stream=True)
            conn.send_upstream_data(b"", end_of_stream=True)
            conn.close("downstream", PeerType.LOCAL)
    assert received == [b"go> HELLO\ngo> BYE\n", b"go> PING\n"] == ours
    strip_port = re.compile(r"127\.0\.0\.1:\d+")
    assert [(lvl, strip_port.sub("ADDR", m)) for lvl, m in envoy_logs] == \
        [(lvl, strip_port.sub("ADDR", m)) for lvl, m in host_logs(plugin.logs)]
    assert int(envoy_stats["wasmcustom.go_tcp.connections"]) == host.metrics["go_tcp.connections"] == 2
    assert int(envoy_stats["wasmcustom.go_tcp.downstream_bytes"]) == host.metrics["go_tcp.downstream_bytes"] == 21
