"""Contexts: the per-VM id space, root (plugin) contexts and the call path from the
host into a context's callback, with Envoy's effective-context and deferred-action rules."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .abi import BufferType, LogLevel, MapType
from .headers import HeaderMap
from .logs import LogRecord, emit, envoy_log_prefix

if TYPE_CHECKING:
    from .http import HttpStream
    from .plugin import Plugin
    from .vm import Vm


class Buffer:
    """A byte buffer the guest may read (and, if mutable, change)."""

    __slots__ = ("data", "mutable")

    def __init__(self, data: bytes | bytearray = b"", mutable: bool = True):
        self.data = bytearray(data)
        self.mutable = mutable


class Dispatcher:
    """Envoy's event loop for what a callback posts (queue notifications, resumes, local
    replies, closes): it runs after the outermost guest call returns, one event at a time and
    never nested, so a filter whose events post more events cannot recurse. At most
    MAX_PER_TURN run per turn; the rest wait for the next call into the host."""

    MAX_PER_TURN = 1000

    def __init__(self) -> None:
        self.events: deque[Callable[[], None]] = deque()
        self.running = False

    def run(self) -> None:
        if self.running:
            return  # the turn in progress picks up what was just posted
        self.running = True
        try:
            for _ in range(self.MAX_PER_TURN):
                if not self.events:
                    return
                self.events.popleft()()
        finally:
            self.running = False


class VmState:
    """Proxy-Wasm state of one VM: context ids (0 is the VM context; roots and
    streams share one counter from 1); `after_call` posts to the host's dispatcher."""

    def __init__(self, vm: "Vm", dispatcher: Dispatcher):
        self.vm = vm
        self.next_id = 1
        self.contexts: dict[int, Context] = {}
        self.after_call = dispatcher.events
        self.metric_ids: dict[int, Any] = {}
        self.metric_next = [0, 0, 0]  # last id per metric type (counter, gauge, histogram)
        self.callout_next = [0, 1, 2]  # last token per kind (http call, grpc call, grpc stream)
        self.dns_token = 1  # Envoy's Wasm::dns_token_: each envoy_resolve_dns takes the next (2, 3, …)

    def next_token(self, kind: int) -> int:
        """Callout tokens as cpp-host numbers them: http 4,8,…; grpc call 5,9,…; grpc stream 6,10,…"""
        self.callout_next[kind] += 4
        return self.callout_next[kind]

    def alloc_id(self) -> int:
        while self.next_id in self.contexts:
            self.next_id += 1
        cid = self.next_id
        self.next_id += 1
        return cid


class Context:
    """Anything a callback can run for: answers the hostcalls that depend on it."""

    stream: "HttpStream | None" = None
    #: proxy_set_property values (Envoy filter state); None where there is no stream
    filter_state: "dict[tuple[str, ...], Any] | None" = None
    properties: "dict[tuple[str, ...], Any]" = {}

    def __init__(self, vm: "Vm", plugin: "Plugin", context_id: int):
        self.vm = vm
        self.plugin = plugin
        self.id = context_id
        self.state: VmState = vm.state

    @property
    def root(self) -> "RootContext":
        raise NotImplementedError

    # -- what hostcalls see --------------------------------------------------

    def get_map(self, map_type: int, mutable: bool) -> HeaderMap | None:
        return None

    def get_buffer(self, buffer_type: int) -> Buffer | None:
        if buffer_type == BufferType.VM_CONFIGURATION:
            return Buffer(self.plugin.vm_configuration, mutable=False)
        return None

    def property_layers(self) -> "tuple[dict[tuple[str, ...], Any], ...]":
        """Overrides in lookup order: filter state, the stream's, the plugin's."""
        own = (self.filter_state, self.properties) if self.filter_state is not None else ()
        return own + (self.plugin.properties,)

    def attributes(self) -> "dict[str, Any] | None":
        """Envoy's attributes for a stream or connection; None for root contexts."""
        return None

    _log_prefix: str | None = None

    def log(self, level: LogLevel, message: str) -> None:
        prefix = self._log_prefix
        if prefix is None:  # the plugin's names do not change: worked out once per context
            prefix = self._log_prefix = self.log_prefix
        emit(self.vm.logs, level, message, self.id, self.plugin, prefix, self.vm.thread)

    @property
    def log_prefix(self) -> str:
        """What Envoy prints between "wasm log" and the message for this context."""
        plugin = self.plugin
        return envoy_log_prefix(plugin.name, plugin.root_id, plugin.vm_id)

    @property
    def logs(self) -> list[LogRecord]:
        return [r for r in self.vm.logs if r.context_id == self.id]

    # -- calling into the guest ----------------------------------------------

    def invoke(self, callback: str, *args: int) -> int | None:
        """Call `callback` for this context: the effective context is this one
        for the duration of the call (cpp-host SaveRestoreContext), and actions
        the guest deferred (local replies, continue/close) run after it returns."""
        vm = self.vm
        prev, prev_calling = vm.ctx, vm.calling_ctx
        vm.ctx = vm.calling_ctx = self
        try:
            result = vm.call(callback, *args)
        finally:
            vm.ctx, vm.calling_ctx = prev, prev_calling
        if vm.depth == 0 and self.state.after_call:  # the dispatcher's events
            self.plugin.host.dispatcher.run()
        return result


@dataclass
class CallResponse:
    """An HTTP callout response while proxy_on_http_call_response runs."""

    headers: HeaderMap
    body: Buffer
    trailers: HeaderMap


class RootContext(Context):
    """A plugin's root context in one VM (one per worker, as in Envoy)."""

    def __init__(self, vm: "Vm", plugin: "Plugin", context_id: int):
        super().__init__(vm, plugin, context_id)
        self.configuring = False
        self.tick_period_ms = 0
        self.next_tick_ns = 0
        self.call_response: CallResponse | None = None
        self.grpc_metadata: tuple[int, HeaderMap] | None = None  # (map type, metadata) during a gRPC callback
        self.grpc_message: Buffer | None = None
        self.status: tuple[int, bytes] = (0, b"")
        self.pending_done = False

    @property
    def root(self) -> "RootContext":
        return self

    @property
    def log_prefix(self) -> str:
        return envoy_log_prefix(self.plugin.root_id, self.plugin.vm_id)

    def get_map(self, map_type: int, mutable: bool) -> HeaderMap | None:
        if self.grpc_metadata is not None and self.grpc_metadata[0] == map_type:
            return self.grpc_metadata[1]
        resp = self.call_response
        if resp is not None and not mutable:
            if map_type == MapType.HTTP_CALL_RESPONSE_HEADERS:
                return resp.headers
            if map_type == MapType.HTTP_CALL_RESPONSE_TRAILERS:
                return resp.trailers
        return None

    def get_buffer(self, buffer_type: int) -> Buffer | None:
        if buffer_type == BufferType.PLUGIN_CONFIGURATION:
            return Buffer(self.plugin.configuration, mutable=False) if self.configuring else None
        if buffer_type == BufferType.HTTP_CALL_RESPONSE_BODY and self.call_response is not None:
            return self.call_response.body
        if buffer_type == BufferType.GRPC_RECEIVE_BUFFER and self.grpc_message is not None:
            return self.grpc_message
        return super().get_buffer(buffer_type)


@dataclass
class LocalReply:
    """What proxy_send_local_response asked Envoy to send."""

    status_code: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    details: str = ""
    grpc_status: int | None = None
