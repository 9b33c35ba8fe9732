"""The Host stands for one Envoy process: a virtual clock, shared data and queues,
metrics, clusters for callouts, foreign functions, and the plugins it runs."""
from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .abi import LogLevel, MetricType
from .context import Dispatcher
from .headers import INLINE_REQUEST_HEADERS, INLINE_RESPONSE_HEADERS, HeaderMap
from .metadata import metadata, struct_value
from .module import ModuleSource, ProxyWasmModule, load_module
from .plugin import Plugin

if TYPE_CHECKING:
    from .callouts import GrpcCallout, HttpCall
    from .context import RootContext


class VirtualClock:
    """Time as the filters see it. Frozen unless the test advances it; advancing
    fires each root context's on_tick at its due times, in order.

    The monotonic clock starts where the machine's steady clock stands, as Envoy's
    does: never at 0, which the Go runtime treats as a broken clock and aborts."""

    def __init__(self, host: "Host", start_ns: int):
        self._host = host
        self.now_ns = start_ns
        self.monotonic_ns = max(time.monotonic_ns(), 1)

    @property
    def now(self) -> float:
        return self.now_ns / 1e9

    def advance(self, seconds: float = 0, *, ms: float = 0, ns: int = 0) -> None:
        target = self.now_ns + int(seconds * 1e9) + int(ms * 1e6) + ns
        while True:
            due = self._host._next_tick(target)
            if due is None:
                break
            when, root = due
            self._move_to(when)
            self._host._fire_tick(root)
        self._move_to(target)

    def next_tick_ns(self) -> int | None:
        """When the next on_tick is due (clock time in ns), if any root context has a tick period."""
        due = self._host._next_tick(2**63)
        return due[0] if due is not None else None

    def _move_to(self, when: int) -> None:
        if when > self.now_ns:
            self.monotonic_ns += when - self.now_ns
            self.now_ns = when


class SharedData:
    """Envoy's process-wide shared data: keyed by vm_id, one global CAS counter
    starting at 1; cas 0 is unconditional; a stale cas is CasMismatch."""

    def __init__(self) -> None:
        self._data: dict[str, dict[bytes, tuple[bytes, int]]] = {}
        self._cas = 0

    def get(self, key: bytes | str, vm_id: str = "") -> tuple[bytes, int] | None:
        return self._data.get(vm_id, {}).get(_bytes(key))

    def set(self, key: bytes | str, value: bytes, cas: int = 0, vm_id: str = "") -> bool:
        store = self._data.setdefault(vm_id, {})
        key = _bytes(key)
        current = store.get(key)
        if current is not None and cas != 0 and cas != current[1]:
            return False
        self._cas += 1
        store[key] = (bytes(value), self._cas)
        return True


class SharedQueues:
    """Shared queues keyed by (vm_id, name); tokens are non-zero and unique."""

    def __init__(self) -> None:
        self._by_name: dict[tuple[str, str], int] = {}
        self.queues: dict[int, list[bytes]] = {}
        self.owners: dict[int, "RootContext"] = {}
        self._next = 1

    def register(self, vm_id: str, name: str, owner: "RootContext") -> int:
        token = self._by_name.get((vm_id, name))
        if token is None:
            token = self._by_name[(vm_id, name)] = self._next
            self._next += 1
            self.queues[token] = []
        self.owners[token] = owner  # the last registration wins (cpp-host re-binds)
        return token

    def resolve(self, vm_id: str, name: str) -> int | None:
        return self._by_name.get((vm_id, name))


class Metric:
    __slots__ = ("name", "type", "value", "values")

    def __init__(self, name: str, mtype: MetricType):
        self.name, self.type, self.value = name, mtype, 0
        self.values: list[int] = []  # histogram samples


class Metrics:
    """Envoy's stats store for wasmcustom.* metrics: one stat per name, shared by every VM."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}

    def define(self, name: str, mtype: MetricType) -> Metric:
        metric = self.by_name.get(name)
        if metric is None or metric.type != mtype:
            metric = self.by_name[name] = Metric(name, mtype)
        return metric

    def __getitem__(self, name: str) -> int:
        metric = self.by_name.get(name)
        if metric is None:
            have = ", ".join(sorted(self.by_name)) or "none"
            raise KeyError(f"no metric {name!r} (metrics the filters defined: {have})")
        return metric.value

    def get(self, name: str, default: Any = None) -> Any:
        """The metric's value (a histogram's samples), or `default` if no filter defined it."""
        metric = self.by_name.get(name)
        if metric is None:
            return default
        return list(metric.values) if metric.type == MetricType.HISTOGRAM else metric.value

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def histogram(self, name: str) -> list[int]:
        return list(self.by_name[name].values)

    def snapshot(self) -> dict[str, Any]:
        return {n: (m.values if m.type == MetricType.HISTOGRAM else m.value) for n, m in sorted(self.by_name.items())}


class Host:
    """One emulated Envoy process.

    `log_level` is Envoy's `wasm` logger level (default info, as Envoy's);
    `start_time` is the wall clock the filters see (default: now, then frozen);
    `seed` makes WASI random_get and generated request ids reproducible;
    `node_id`, `cluster_name`, `node_metadata` are Envoy's node (xds.node.*; the metadata is a
    Struct: its numbers read back as doubles);
    `buffer_limit_bytes` is Envoy's per_connection_buffer_limit_bytes (a buffered request over it
    gets 413); `trace` (default: $PROXYWASM_TRACE) records every callback and hostcall in `host.trace`;
    `extra_vms` also runs the VMs Envoy starts besides one per worker (a base VM, a canary
    that runs on_vm_start/on_configure and is dropped, and the main thread's VM, whose
    ticks fire), so counts of what those callbacks log, count or store match Envoy's.
    """

    def __init__(
        self,
        *,
        log_level: str | int = "info",
        start_time: float | None = None,
        seed: int = 0,
        node_id: str = "proxywasm-host",
        cluster_name: str = "proxywasm-host",
        node_metadata: Mapping[str, Any] | None = None,
        connection_manager_defaults: bool = True,
        extra_vms: bool = False,
        trace: bool | None = None,
        buffer_limit_bytes: int = 1 << 20,
    ):
        self.log_level = LogLevel.parse(log_level)
        self.clock = VirtualClock(self, int((time.time() if start_time is None else start_time) * 1e9))
        self.random = random.Random(seed)
        self.dispatcher = Dispatcher()
        self.shared_data = SharedData()
        self.queues = SharedQueues()
        self.metrics = Metrics()
        self.clusters: dict[str, Any] = {}
        #: clusters a callout named that add_cluster() did not declare (the call got BadArgument)
        self.undeclared_clusters: list[str] = []
        self.pending_http_calls: "list[HttpCall]" = []
        self.pending_grpc: "list[GrpcCallout]" = []
        self.foreign_functions: dict[str, Callable[[bytes], bytes]] = {}
        self.plugins: list[Plugin] = []
        self._vms: dict[tuple, dict[int, Any]] = {}
        self.node = {"id": node_id, "cluster": cluster_name, "metadata": struct_value(node_metadata or {})}
        self.xds: dict[str, Any] = {
            "route_name": "", "virtual_host_name": "", "cluster_name": "upstream", "filter_chain_name": "",
            "listener_direction": 0, **{f"{x}_metadata": metadata(None) for x in ("listener", "route", "virtual_host", "cluster")}}
        self.connection = {"source_ip": "127.0.0.1", "source_port": 54321, "destination_ip": "127.0.0.1", "destination_port": 10000}
        self.upstream_address = ("127.0.0.1", 8080)  # the host of cluster "upstream"
        self.connection_manager_defaults = connection_manager_defaults
        self.extra_vms = extra_vms
        self.buffer_limit_bytes = buffer_limit_bytes  # Envoy's per_connection_buffer_limit_bytes; 0: none
        if trace is None:
            trace = os.environ.get("PROXYWASM_TRACE", "") not in ("", "0")
        #: every callback and hostcall of the workers' VMs with arguments and result, as Envoy's
        #: wasm:trace prints them; trace_main_thread has those of the extra VMs (extra_vms=True)
        self.trace: list[str] | None = [] if trace else None
        self.trace_main_thread: list[str] | None = [] if trace else None
        self._connection_ids = 0

    # -- plugins ------------------------------------------------------------------

    def load_module(self, source: ModuleSource | ProxyWasmModule) -> ProxyWasmModule:
        return source if isinstance(source, ProxyWasmModule) else load_module(source)

    def load_plugin(self, module: ModuleSource | ProxyWasmModule, **options: Any) -> Plugin:
        """Load a module and start a plugin on it (see Plugin for the options).
        Raises ModuleLoadError or PluginRejected where Envoy would refuse it."""
        plugin = Plugin(self, self.load_module(module), **options)
        self.plugins.append(plugin)
        return plugin

    def load_chain(self, filters: "list[tuple[ModuleSource | ProxyWasmModule, dict[str, Any]]]") -> list[Plugin]:
        """Start plugins in filter-chain order as Envoy starts a listener's filters: each one's
        main-thread VMs first (with extra_vms), then on each worker every plugin in chain order,
        so start-up log lines and counters come in Envoy's order."""
        plugins = [Plugin(self, self.load_module(m), **{**options, "start_workers": False}) for m, options in filters]
        self.plugins.extend(plugins)
        for index in range(max((p.worker_count for p in plugins), default=0)):
            for plugin in plugins:
                if index < plugin.worker_count:
                    plugin.workers.append(plugin._start_worker(index))
        return plugins

    def shared_vm(self, key: tuple, index: int) -> Any:
        """A live VM on worker `index` that a new plugin with the same VM key may join."""
        vm = self._vms.get(key, {}).get(index)
        return vm if vm is not None and vm.failed is None else None

    def register_vm(self, key: tuple, index: int, vm: Any) -> None:
        self._vms.setdefault(key, {})[index] = vm

    def forget_vm(self, key: tuple, index: int) -> None:
        self._vms.get(key, {}).pop(index, None)

    # -- clusters and callouts ---------------------------------------------------

    def add_cluster(self, name: str, url: str | None = None) -> None:
        """Declare a cluster proxy_http_call may target; with `url`, calls to it are
        sent to that real HTTP server when `host.dispatch_http_calls()` runs."""
        self.clusters[name] = url

    def dispatch_http_calls(self, timeout: float = 5.0) -> None:
        """Send pending callouts whose cluster was declared with a URL to that
        real server (through httpx) and deliver the answers."""
        from .callouts import dispatch_to_servers

        dispatch_to_servers(self, [c for c in self.pending_http_calls if self.clusters.get(c.cluster)], timeout)

    # -- time ----------------------------------------------------------------------

    def _tick_roots(self) -> list["RootContext"]:
        return [w.root for p in self.plugins for w in p.all_workers if w.vm.failed is None]

    def _next_tick(self, target: int) -> tuple[int, "RootContext"] | None:
        best = None
        for root in self._tick_roots():
            if root.tick_period_ms > 0 and root.next_tick_ns <= target:
                if best is None or root.next_tick_ns < best[0]:
                    best = (root.next_tick_ns, root)
        return best

    def _fire_tick(self, root: "RootContext") -> None:
        root.next_tick_ns = self.clock.now_ns + root.tick_period_ms * 1_000_000
        if root.vm.has("proxy_on_tick"):
            root.invoke("proxy_on_tick", root.id)

    # -- environment the filters observe --------------------------------------------

    def xds_attributes(self) -> dict[str, Any]:
        """xds.*: the node and the xDS attributes the Host was given."""
        return {"node": dict(self.node), **self.xds}

    def connection_attributes(self, connection_id: int) -> dict[str, Any]:
        conn = self.connection
        return {
            "source": {"address": f"{conn['source_ip']}:{conn['source_port']}", "port": conn["source_port"]},
            "destination": {"address": f"{conn['destination_ip']}:{conn['destination_port']}", "port": conn["destination_port"]},
            "connection": {"id": connection_id, "mtls": False, "requested_server_name": ""},
        }

    def apply_router_defaults(self, headers: HeaderMap, elapsed_ns: int) -> None:
        """What Envoy does to an upstream response before the filters see it (measured): its
        HTTP/1.1 codec drops keep-alive and joins a repeated header it keeps inline; the router
        sets x-envoy-upstream-service-time (ms; here the virtual time since the request started),
        in place of one the upstream sent. The other hop-by-hop headers go after the filters
        (HttpStream.mark_connection_close)."""
        if not self.connection_manager_defaults:
            return
        headers.join_repeated(INLINE_RESPONSE_HEADERS, drop=(b"keep-alive",))
        pairs, name = headers.pairs, b"x-envoy-upstream-service-time"
        service_time = (name, str(elapsed_ns // 1_000_000).encode())
        at = next((i for i, (k, _) in enumerate(pairs) if k == name), None)
        if at is None:
            pairs.append(service_time)
        else:
            headers.pairs = [*pairs[:at], service_time, *(kv for kv in pairs[at + 1:] if kv[0] != name)]

    def upstream_attributes(self) -> dict[str, Any]:
        """upstream.* once a stream or connection has an upstream host (Envoy: from the router or tcp_proxy)."""
        ip, port = self.upstream_address
        return {"address": f"{ip}:{port}", "port": port, "local_address": f"{self.connection['destination_ip']}:49152",
                "transport_failure_reason": "", "request_attempt_count": 1}

    def next_connection_id(self) -> int:
        self._connection_ids += 1
        return self._connection_ids

    def apply_connection_manager_defaults(self, headers: HeaderMap, absolute_url: bool) -> None:
        """What Envoy's HTTP connection manager does before any filter runs (HTTP/1.1,
        default settings): it removes x-forwarded-client-cert (plaintext listener, default
        SANITIZE), transfer-encoding (framing), the hop-by-hop headers and Envoy's internal
        x-envoy-* request headers, joins a repeated header that
        Envoy keeps inline into one value, and adds x-forwarded-proto and a generated
        x-request-id. The HTTP/1.1 codec hands filters :authority, :path, :method, :scheme first,
        or :authority, :scheme, :path, :method from an `absolute_url` (measured)."""
        if not self.connection_manager_defaults:
            return
        first = headers.join_repeated(INLINE_REQUEST_HEADERS, drop=REMOVED_REQUEST_HEADERS)  # every name below is inline
        pairs = headers.pairs
        order = _ABSOLUTE_URL_ORDER if absolute_url else _CODEC_ORDER
        codec_first = [pairs[first[name]] for name in order if name in first]
        if b":scheme" not in first:
            codec_first.append((b":scheme", _scheme(headers.get(b"x-forwarded-proto"))))
        headers.pairs = codec_first + [kv for kv in pairs if kv[0] not in _CODEC_ORDER]
        if b"te" in first:  # only its "trailers" token is passed on
            te = headers.get(b"te") or b""
            if b"trailers" in (token.strip() for token in te.lower().split(b",")):
                headers.replace(b"te", b"trailers")
            else:
                headers.remove(b"te")
        if b"x-forwarded-proto" not in first:
            headers.pairs.append((b"x-forwarded-proto", b"http"))
        if b"x-request-id" not in first:
            headers.pairs.append((b"x-request-id", _uuid4(self.random.getrandbits(128))))


def _scheme(forwarded_proto: bytes | None) -> bytes:
    """The :scheme Envoy sets on a plaintext HTTP/1.1 request: a valid x-forwarded-proto's, in
    lower case, else http (measured on 1.40: "HTTPS" gives https, "foo" or "https, http" give http)."""
    proto = (forwarded_proto or b"").lower()
    return proto if proto in (b"http", b"https") else b"http"


def _uuid4(bits: int) -> bytes:
    """str(uuid.UUID(int=bits, version=4)) without building a UUID: one per request."""
    n = (bits & ~(0xC000 << 48) | 0x8000 << 48) & ~(0xF000 << 64) | 4 << 76
    h = "%032x" % n
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


#: connection-level headers Envoy's HTTP/1.1 codec drops (te survives only as "trailers")
HOP_BY_HOP = (b"keep-alive", b"proxy-connection")
#: Envoy's own request headers that it removes from a client's request before the filters run
#: (its default settings treat the client as external; measured, as above)
INTERNAL_REQUEST_HEADERS = tuple(f"x-envoy-{name}".encode() for name in (
    "expected-rq-timeout-ms", "force-trace", "hedge-on-per-try-timeout", "internal", "ip-tags", "max-retries",
    "original-url", "retriable-header-names", "retriable-status-codes", "retry-grpc-on", "retry-on",
    "upstream-alt-stat-name", "upstream-rq-per-try-timeout-ms", "upstream-rq-timeout-alt-response",
    "upstream-rq-timeout-ms", "upstream-stream-duration-ms"))
#: everything the connection manager removes from a client's request before the filters run
REMOVED_REQUEST_HEADERS = frozenset({b"x-forwarded-client-cert", b"transfer-encoding", *HOP_BY_HOP, *INTERNAL_REQUEST_HEADERS})
#: the order Envoy's HTTP/1.1 codec hands these to the filters, before every other header
_CODEC_ORDER = (b":authority", b":path", b":method", b":scheme")
#: their order when the request target is an absolute URL, which gives the codec :authority and :scheme
_ABSOLUTE_URL_ORDER = (b":authority", b":scheme", b":path", b":method")


def _bytes(s: bytes | str) -> bytes:
    return s.encode() if isinstance(s, str) else s
