"""TCP (network filter) streams with Envoy's semantics: new connection, data in
both directions with end_of_stream, buffering while stopped, continue / close,
close events, and teardown (TCP order: on_done, on_log, on_delete)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from .abi import BufferType, PeerType
from .context import Buffer, Context
from .errors import GuestTrap, StreamStateError
from .headers import as_bytes, check_type
from .properties import PropertyValue, normalize_overrides

if TYPE_CHECKING:
    from .plugin import Plugin, Worker


class TcpStream(Context):
    """One downstream connection through a network filter, driven by a test."""

    def __init__(self, plugin: "Plugin", worker: "Worker", properties: Mapping[Any, PropertyValue] | None):
        super().__init__(worker.vm, plugin, 0)
        self.worker = worker
        self.root_ctx = worker.root
        self.stream = None  # not an HTTP stream: no request/response attributes
        self.properties = normalize_overrides(properties)
        self.filter_state: dict[tuple[str, ...], PropertyValue] = {}
        self.upstream_received = bytearray()  # what the upstream got from the client
        self.downstream_received = bytearray()  # what the client got from the upstream
        self.closed: str | None = None  # why the connection ended
        self.trap: GuestTrap | None = None
        self._upstream_talked = False
        self._read_buffer = bytearray()  # the client's bytes the filter holds (StopIteration)
        self._write_buffer = bytearray()  # the upstream's bytes the filter holds
        self._reading = True  # False after on_new_connection stopped, until the filter continues
        self._read_eos = False  # the client ended while nothing was read
        self._current: tuple[int, Buffer] | None = None
        self.created = False
        self.completed = False
        self.passthrough = False  # fail_open after the VM failed: Envoy skips the filter
        self.connection_id = plugin.host.next_connection_id()

    @property
    def root(self):  # type: ignore[override]
        return self.root_ctx

    # -- test API ------------------------------------------------------------------

    def connect(self) -> str:
        """proxy_on_new_connection: returns "Continue" or "StopIteration". After StopIteration
        Envoy 1.40 reads nothing from the client (no data callback, its end of stream held) until
        the filter continues (measured)."""
        if self.created:
            raise StreamStateError("the connection is already open")
        if self.vm.failed is not None:
            if self.plugin.failure_policy == "fail_open":  # the bytes go through untouched, no callbacks
                self.passthrough = True
                return "Continue"
            self.closed = "closed after a failure: the VM failed earlier"  # Envoy 1.40 closes it, no reset
            return "StopIteration"
        self.created = True
        self.id = self.state.alloc_id()
        self.state.contexts[self.id] = self
        self._call("proxy_on_context_create", self.root_ctx.id)
        raw = self._call("proxy_on_new_connection")
        if raw or self.closed is not None:
            self._reading = False
            return "StopIteration"
        return "Continue"

    def send_downstream_data(self, data: bytes, end_of_stream: bool = False) -> str:
        """Bytes from the client (proxy_on_downstream_data). While the filter has
        stopped, Envoy keeps them in the read buffer and the next call sees all."""
        data = as_bytes(data, "send_downstream_data: data")
        check_type(end_of_stream, (bool,), "send_downstream_data: end_of_stream", "bool")
        self._check_open()
        if self.passthrough:
            self.upstream_received += data
            return "Continue"
        self._read_buffer += data
        if not self._reading:
            self._read_eos = self._read_eos or end_of_stream
            return "StopIteration"
        return self._read(end_of_stream)

    def send_upstream_data(self, data: bytes, end_of_stream: bool = False) -> str:
        """Bytes from the upstream (proxy_on_upstream_data). While the filter stops them, Envoy
        keeps them in the upstream connection's read buffer: the next call sees them again with
        what came since (measured on 1.40; proxy_continue_stream(UPSTREAM) is Unimplemented)."""
        data = as_bytes(data, "send_upstream_data: data")
        check_type(end_of_stream, (bool,), "send_upstream_data: end_of_stream", "bool")
        self._check_open()
        self._upstream_talked = True
        if self.passthrough:
            self.downstream_received += data
            return "Continue"
        self._write_buffer += data
        raw = self._on_data(BufferType.UPSTREAM_DATA, "proxy_on_upstream_data", self._write_buffer, end_of_stream)
        if raw == 0 and self.closed is None:
            self.downstream_received += self._write_buffer
            self._write_buffer = bytearray()
        if end_of_stream and self.closed is None:
            # Envoy synthesizes an upstream close event when the upstream ends its stream
            self._call("proxy_on_upstream_connection_close", PeerType.UNKNOWN)
        return "Continue" if raw == 0 else "StopIteration"

    def close(self, peer: str = "downstream", close_type: PeerType = PeerType.REMOTE) -> None:
        """A side closes: the close callback, then teardown (on_done, on_log, on_delete)."""
        if peer not in ("downstream", "upstream"):
            raise ValueError(f"peer must be 'downstream' or 'upstream', not {peer!r}")
        if self.created and self.vm.failed is None:
            self._call(f"proxy_on_{peer}_connection_close", int(close_type))
        self.closed = self.closed or f"{peer} closed"
        self.complete()

    def complete(self) -> None:
        if self.completed or not self.created:
            return
        self.completed = True
        if self.vm.failed is None:
            for callback in ("proxy_on_done", "proxy_on_log", "proxy_on_delete"):
                self._call(callback)
        self.state.contexts.pop(self.id, None)

    @property
    def logs(self) -> list:  # type: ignore[override]
        return [r for r in self.vm.logs if r.context_id == self.id and self.created]

    # -- guest side ----------------------------------------------------------------

    def attributes(self) -> dict[str, Any]:
        attrs = self.plugin.host.connection_attributes(self.connection_id)
        if self.upstream_received or self._upstream_talked:  # tcp_proxy has its upstream connection
            attrs["upstream"] = self.plugin.host.upstream_attributes()
        return attrs

    def resume_reading(self) -> None:
        """proxy_continue_stream(DOWNSTREAM): Envoy's continueReading. Stopped in on_new_connection,
        the filter then sees what the client sent meanwhile in one data callback (measured on
        1.40); stopped in a data callback, what it held goes upstream."""
        if self.closed is not None:
            return
        if not self._reading:
            self._reading = True
            if self._read_buffer or self._read_eos:
                self._read(self._read_eos)
            return
        self.upstream_received += self._read_buffer  # may run inside the data callback
        self._read_buffer = bytearray()

    def close_connection(self, peer: str = "downstream") -> None:
        """proxy_close_stream(DOWNSTREAM|UPSTREAM), run after the callback returns: Envoy closes
        that side itself (FlushWrite), so the filter sees a local close, then the teardown."""
        if self.completed:
            return
        self.closed = self.closed or "closed by the filter"
        self.close(peer, PeerType.LOCAL)

    def get_buffer(self, buffer_type: int) -> Buffer | None:
        if self._current is not None and self._current[0] == buffer_type:
            return self._current[1]
        return self.root_ctx.get_buffer(buffer_type)

    def _read(self, end_of_stream: bool) -> str:
        """proxy_on_downstream_data over everything held; what the filter lets through goes upstream."""
        raw = self._on_data(BufferType.DOWNSTREAM_DATA, "proxy_on_downstream_data", self._read_buffer, end_of_stream)
        if raw == 0 and self.closed is None:
            self.upstream_received += self._read_buffer
            self._read_buffer = bytearray()
            return "Continue"
        return "StopIteration"

    def _on_data(self, buffer_type: int, callback: str, data: bytearray, eos: bool) -> int:
        buf = Buffer(b"")
        buf.data = data  # the filter may edit what is forwarded
        self._current = (buffer_type, buf)
        try:
            raw = self._call(callback, len(data), int(eos))
        finally:
            self._current = None
        return 0 if raw is None and self.trap is None else (1 if raw is None else raw)

    def _call(self, callback: str, *args: int) -> int | None:
        if not self.vm.has(callback) or self.trap is not None:
            return None
        try:
            return self.invoke(callback, self.id, *args)
        except GuestTrap as trap:
            self.trap = trap
            # whatever the failure policy, Envoy fails the connection in progress (failStream: it
            # closes it, NoFlush); fail_open only lets later connections skip the filter
            self.closed = f"closed after a failure: {trap.detail}"
            if self.plugin.raise_on_trap:
                raise
            return None

    def _check_open(self) -> None:
        if not self.created and not self.passthrough:
            self.connect()
        if self.closed is not None:
            raise StreamStateError(f"the connection is closed ({self.closed})")
