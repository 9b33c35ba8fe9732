"""HTTP streams: Envoy's filter-manager semantics for one Wasm filter in front of
the router — phases, status conversion, buffering on pause, resume, local replies,
availability windows of header maps and bodies, and teardown."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .abi import (
    ABI_0_1_0,
    DATA_STATUS_NAMES,
    HEADERS_STATUS_NAMES,
    BufferType,
    FilterStatus,
    MapType,
)
from .context import Buffer, Context, LocalReply
from .errors import GuestTrap, StreamStateError
from .headers import INLINE_RESPONSE_HEADERS, HeaderMap, Headers, HeadersInput, as_bytes, check_type
from .properties import PropertyValue, normalize_overrides

if TYPE_CHECKING:
    from .plugin import Plugin, Worker

NOT_CALLED = "NotCalled"


@dataclass
class PhaseResult:
    """What one phase did: the guest's raw return value and Envoy's filter status."""

    callback: str
    action: int | None  # raw value the guest returned (None: callback not called)
    status: str  # Envoy's status after conversion, or "NotCalled"

    @property
    def stopped(self) -> bool:
        return self.status not in (FilterStatus.CONTINUE, FilterStatus.CONTINUE_AND_END_STREAM, NOT_CALLED)


class Message:
    """A request or response as the next hop receives it (upstream or client). The body
    grows in place, so forwarding a large body in many chunks stays linear."""

    __slots__ = ("headers", "_body", "trailers", "complete", "reset")

    def __init__(self, headers: Headers | None = None, body: bytes = b"", trailers: Headers | None = None,
                 complete: bool = False, reset: bool = False):
        self.headers, self._body, self.trailers = headers, bytearray(body), trailers
        self.complete, self.reset = complete, reset

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    @body.setter
    def body(self, data: bytes) -> None:
        self._body = bytearray(data)

    def append_body(self, data: bytes | bytearray) -> None:
        self._body += data

    @property
    def body_size(self) -> int:
        return len(self._body)

    def __repr__(self) -> str:
        return (f"Message(headers={self.headers!r}, body={len(self._body)} bytes, trailers={self.trailers!r}, "
                f"complete={self.complete}, reset={self.reset})")


def _headers_status(raw: int, local_reply_sent: bool, allow_stop: bool) -> str:
    # cpp-host convertVmCallResultToFilterHeadersStatus
    if local_reply_sent or raw > 4 or (raw == 1 and not allow_stop):
        return FilterStatus.STOP_ALL_ITERATION_AND_WATERMARK
    return HEADERS_STATUS_NAMES[raw]


def _data_status(raw: int, local_reply_sent: bool) -> str:
    if local_reply_sent or raw > 3:
        return FilterStatus.STOP_ITERATION_NO_BUFFER
    return DATA_STATUS_NAMES[raw]


def _trailers_status(raw: int, local_reply_sent: bool) -> str:
    if local_reply_sent or raw > 1:
        return FilterStatus.STOP_ITERATION
    return FilterStatus.CONTINUE if raw == 0 else FilterStatus.STOP_ITERATION


#: a direction's callbacks (built once: a stream is made per request)
_CALLBACKS = {kind: (f"proxy_on_{kind}_headers", f"proxy_on_{kind}_body", f"proxy_on_{kind}_trailers")
              for kind in ("request", "response")}


class _Direction:
    """One direction of a stream (decoding the request or encoding the response)."""

    def __init__(self, stream: "HttpStream", kind: str, out: Message):
        self.stream = stream
        self.kind = kind
        self.on_headers, self.on_body, self.on_trailers = _CALLBACKS[kind]
        self.out = out
        self.headers: HeaderMap | None = None
        self.headers_readable = False
        self.body: Buffer | None = None  # the body visible to the guest in a body callback
        self.body_eos = False
        self.buffered = bytearray()  # Envoy's buffer for this filter while stopped
        self.joining = False  # the last body answer was StopIterationAndBuffer: the next chunk joins the buffer
        self.trailers: HeaderMap | None = None
        self.trailers_readable = False
        self.pending_trailers: HeaderMap | None = None
        self.trailers_added = False  # the filter added trailers from the last body chunk
        self.resume_pending = False  # continued during its headers callback, before its status is known
        self.iteration = "idle"  # idle | continue | stop_all | stop_buffer | stop_nobuffer | stop_trailers | done
        self.end_seen = False
        self.body_bytes = 0  # body bytes that arrived in this direction (Envoy's bytesReceived)

    # -- phases --------------------------------------------------------------

    def send_headers(self, headers: HeaderMap, eos: bool) -> PhaseResult:
        if self.headers is not None:
            raise StreamStateError(f"{self.kind} headers were already sent on this stream")
        self.headers, self.end_seen, self.headers_readable = headers, eos, True
        args = (len(headers),) if self.stream.abi == ABI_0_1_0 else (len(headers), int(eos))
        raw, lr = self.stream._call_filter(self.on_headers, *args)
        if raw is None:
            status = FilterStatus.STOP_ALL_ITERATION_AND_WATERMARK if lr else NOT_CALLED
        else:
            status = _headers_status(raw, lr, self.stream.plugin.allow_on_headers_stop_iteration)
        if self.iteration == "done":
            pass  # a local reply (or failure) ended this direction during the call
        elif status in (FilterStatus.CONTINUE, FilterStatus.CONTINUE_AND_END_STREAM, NOT_CALLED):
            self._forward_headers()
            if self.out.headers is not None and (eos or status == FilterStatus.CONTINUE_AND_END_STREAM):
                self.out.complete = True
        else:
            self.iteration = "stop_all"
        if self.resume_pending:  # the filter continued from inside the callback that stopped
            self.resume_pending = False
            if self.iteration == "stop_all":
                self.resume()
        return PhaseResult(self.on_headers, raw, status)

    def send_data(self, chunk: bytes, eos: bool) -> PhaseResult:
        """Envoy's decodeData/encodeData for this filter (FilterManager's commonHandleAfterDataCallback
        with the Wasm context's buffering_request_body_, measured on 1.40): Envoy keeps its own
        buffer for the filter; the chunk joins it before the callback only when the filter's last
        answer was StopIterationAndBuffer, else the filter sees the chunk alone."""
        if self._discarded("body"):
            return PhaseResult(self.on_body, None, NOT_CALLED)
        self.body_bytes += len(chunk)
        if self.iteration == "stop_all":
            self.buffered += chunk  # the filter manager buffers until the filter continues
            self.end_seen = eos
            self._check_buffer_limit()
            return PhaseResult(self.on_body, None, NOT_CALLED)
        return self._body_callback(chunk, eos)

    def _body_callback(self, chunk: bytes, eos: bool, held: bool = False) -> PhaseResult:
        """The body callback for a chunk that arrived or, `held`, for the body Envoy held while the
        headers were stopped (counted once, when it arrived): the callback then sees that buffer
        itself, so NoBuffer keeps it (measured on 1.40)."""
        joined, seen = self.joining or held, bytearray(chunk)
        if joined:
            self.buffered += seen
            seen = self.buffered
        self.end_seen = eos
        self.body, self.body_eos = Buffer(b""), eos
        self.body.data = seen  # the guest sees (and edits) the chunk, or the buffer it joined
        raw, lr = self.stream._call_filter(self.on_body, len(seen), int(eos))
        self.body, self.body_eos = None, False
        status = NOT_CALLED if raw is None and not lr else _data_status(raw or 0, lr)
        self.joining = status == FilterStatus.STOP_ITERATION_AND_BUFFER
        self._after_body(status, b"" if joined else seen, eos)
        return PhaseResult(self.on_body, raw, status)

    def _after_body(self, status: str, chunk: bytes | bytearray, eos: bool) -> None:
        """What Envoy does with the chunk after the body callback: Continue forwards the buffer,
        then the chunk; Buffer or Watermark moves the chunk into the buffer; NoBuffer drops the
        chunk but keeps the buffer."""
        if self.iteration == "done":
            return
        if status in (FilterStatus.CONTINUE, NOT_CALLED):
            self.buffered += chunk
            self._forward_body()
            self.iteration = "continue"
            if eos:
                self._finish()
        elif status == FilterStatus.STOP_ITERATION_NO_BUFFER:
            self.iteration = "stop_nobuffer"
        else:
            self.buffered += chunk
            self.iteration = "stop_buffer"
            self._check_buffer_limit()

    def _check_buffer_limit(self) -> None:
        """Envoy's per_connection_buffer_limit_bytes (1 MiB by default) on data it buffers for the filter."""
        limit = self.stream.plugin.host.buffer_limit_bytes
        if limit and len(self.buffered) > limit:
            self.stream.buffer_overflow(self)

    def send_trailers(self, trailers: HeaderMap) -> PhaseResult:
        if self._discarded("trailers"):
            return PhaseResult(self.on_trailers, None, NOT_CALLED)
        self.end_seen = True
        if self.iteration == "stop_all":
            self.pending_trailers = trailers
            return PhaseResult(self.on_trailers, None, NOT_CALLED)
        result = self._call_trailers(trailers)
        if self.iteration == "done":
            pass
        elif not result.stopped:
            self._forward_body()
            self._finish()
        else:
            self.iteration = "stop_trailers"
        return result

    def _call_trailers(self, trailers: HeaderMap) -> PhaseResult:
        self.trailers, self.trailers_readable = trailers, True
        raw, lr = self.stream._call_filter(self.on_trailers, len(trailers))
        self.trailers_readable = False
        status = NOT_CALLED if raw is None and not lr else _trailers_status(raw or 0, lr)
        return PhaseResult(self.on_trailers, raw, status)

    def _trailers_after_a_stopped_replay(self, trailers: HeaderMap) -> None:
        """Trailers held with a body while the headers were stopped, when the filter stopped on
        that body as the resume replayed it: Envoy gives the filter the trailers anyway; if it
        continues, the body it held is dropped (Envoy's filter manager has already marked this
        filter's end of stream) and its trailers callback runs again; if it stops there too, a
        later continue forwards that body and the trailers (both measured on 1.40)."""
        self.end_seen = True  # the trailers end the request (the replayed body did not)
        stopped = self._call_trailers(trailers).stopped
        if self.iteration == "done":
            return
        if stopped:
            self.iteration = "stop_trailers"
            return
        self.buffered = bytearray()
        self.send_trailers(trailers)

    def resume(self) -> None:
        """proxy_continue_stream: Envoy's continueDecoding/continueEncoding."""
        state = self.iteration
        if state == "idle" and self.headers is not None:
            self.resume_pending = True  # Envoy posts it: it applies once the headers callback has returned
            return
        self.headers_readable = False
        if state == "stop_all":
            self._forward_headers()
            if self.out.headers is not None and self.end_seen and not self.buffered and self.pending_trailers is None:
                self.out.complete = True
                return
            if self.buffered or (self.end_seen and self.pending_trailers is None):
                self.iteration = "continue"
                self._body_callback(b"", self.end_seen and self.pending_trailers is None, held=True)
            if self.pending_trailers is not None and self.iteration != "done":
                trailers, self.pending_trailers = self.pending_trailers, None
                if self.iteration == "continue":
                    self.send_trailers(trailers)
                else:
                    self._trailers_after_a_stopped_replay(trailers)
        elif state in ("stop_buffer", "stop_nobuffer"):
            self._forward_body()
            self.iteration = "continue"
            if self.trailers is not None or self.end_seen:
                self._finish()
        elif state == "stop_trailers":
            self._forward_body()
            self._finish()

    # -- what the next hop receives -------------------------------------------

    def _forward_headers(self) -> None:
        assert self.headers is not None
        self.headers_readable = False
        if self is self.stream.request and not self.stream.routable(self.headers):
            self.stream.send_local_reply(LocalReply(404, b"", [], "route_not_found"))
            return
        self.out.headers = self.headers.view()
        self.iteration = "continue"
        if self is self.stream.response:
            self.stream.mark_connection_close(self.headers)

    def _forward_body(self) -> None:
        if self.buffered:
            self.out.append_body(self.buffered)
            self.buffered = bytearray()

    def _finish(self) -> None:
        if self.trailers is not None:
            self.out.trailers = self.trailers.view()
        self.out.complete = True

    def _discarded(self, what: str) -> bool:
        """True when Envoy would drop this data: the filter already answered locally,
        reset the stream or failed (or the codec refused the request). Sending past end_of_stream
        is a test error."""
        if self.iteration == "done":
            return True
        if self.headers is None:
            raise StreamStateError(f"send the {self.kind} headers before the {self.kind} {what}")
        if self.out.complete:
            raise StreamStateError(f"the {self.kind} has already ended; no more {what} can be sent")
        return False

    def end(self) -> None:
        self.iteration = "done"
        self.headers_readable = self.trailers_readable = False


class HttpStream(Context):
    """One HTTP request/response exchange through the plugin, driven by a test.

    Create with `plugin.http_stream()`, then send request headers/body/trailers
    and the upstream response; inspect `upstream_request`, `downstream_response`,
    `local_reply`, `logs`; end with `complete()`.
    """

    def __init__(self, plugin: "Plugin", worker: "Worker", properties: Mapping[Any, PropertyValue] | None):
        super().__init__(worker.vm, plugin, 0)
        self.worker = worker
        self.root_ctx = worker.root
        self.abi = worker.vm.abi
        self.stream = self
        self.properties = normalize_overrides(properties)
        self.filter_state: dict[tuple[str, ...], PropertyValue] = {}
        self.upstream_request = Message()
        self.downstream_response = Message()
        self.local_reply: LocalReply | None = None
        self.reset_details: str | None = None
        self.response_flags = 0  # Envoy's StreamInfo response flags (response.flags)
        self.grpc_request = False
        self.trap: GuestTrap | None = None
        self.completed = False
        self.logged = False
        self.in_log = False
        self.log_request_trailers = HeaderMap()  # what on_log sees of request trailers a filter added
        self.created = False
        self.start_time_ns = plugin.host.clock.now_ns
        self.connection_id = plugin.host.next_connection_id()
        self.request = _Direction(self, "request", self.upstream_request)
        self.response = _Direction(self, "response", self.downstream_response)

    @property
    def root(self):  # type: ignore[override]
        return self.root_ctx

    # -- test API ------------------------------------------------------------

    def send_request_headers(self, headers: HeadersInput, end_of_stream: bool = False) -> PhaseResult:
        hm = HeaderMap.from_input(headers, "send_request_headers")
        check_type(end_of_stream, (bool,), "send_request_headers: end_of_stream", "bool")
        self.request.end_seen = end_of_stream  # a fail-closed answer depends on it (connection: close)
        self.grpc_request = _is_grpc(hm)  # local replies to it are gRPC answers
        absolute_url = self.plugin.host.connection_manager_defaults and _split_absolute_url(hm)
        if self.plugin.host.connection_manager_defaults:
            refusal = _codec_refusal(hm, absolute_url)
            if refusal is not None:
                return self._refused(LocalReply(400, b"Bad Request", [], refusal), None)
            rejection = _path_rejection(hm)
            if rejection is not None:
                return self._refused(rejection, hm)
        self.plugin.host.apply_connection_manager_defaults(hm, absolute_url)
        mode = self._begin()
        if mode == "skip":
            return self._skipped("proxy_on_request_headers", hm, end_of_stream)
        if mode == "failed":
            self.request.headers = hm
            return PhaseResult("proxy_on_request_headers", None, FilterStatus.STOP_ALL_ITERATION_AND_WATERMARK)
        return self.request.send_headers(hm, end_of_stream)

    def send_request_body(self, body: bytes | str, end_of_stream: bool = True) -> PhaseResult:
        data = as_bytes(body, "send_request_body: body")
        check_type(end_of_stream, (bool,), "send_request_body: end_of_stream", "bool")
        return self.request.send_data(data, end_of_stream)

    def send_request_trailers(self, trailers: HeadersInput) -> PhaseResult:
        return self.request.send_trailers(HeaderMap.from_input(trailers, "send_request_trailers"))

    def send_response_headers(self, headers: HeadersInput, end_of_stream: bool = False) -> PhaseResult:
        hm = HeaderMap.from_input(headers, "send_response_headers")
        check_type(end_of_stream, (bool,), "send_response_headers: end_of_stream", "bool")
        if self.local_reply is not None:
            raise StreamStateError(
                f"the filter answered locally ({self.local_reply.status_code}); "
                "there is no upstream response for it to see"
            )
        self._check_response_allowed()
        self.plugin.host.apply_router_defaults(hm, self.plugin.host.clock.now_ns - self.start_time_ns)
        return self.response.send_headers(hm, end_of_stream)

    def send_response_body(self, body: bytes | str, end_of_stream: bool = True) -> PhaseResult:
        data = as_bytes(body, "send_response_body: body")
        check_type(end_of_stream, (bool,), "send_response_body: end_of_stream", "bool")
        self._check_response_allowed()
        return self.response.send_data(data, end_of_stream)

    def send_response_trailers(self, trailers: HeadersInput) -> PhaseResult:
        hm = HeaderMap.from_input(trailers, "send_response_trailers")
        self._check_response_allowed()
        return self.response.send_trailers(hm)

    def complete(self) -> None:
        """End the stream as Envoy does for HTTP: proxy_on_log (access-log phase,
        maps read-only), then proxy_on_done, then proxy_on_delete."""
        if self.completed:
            return
        self.run_log_phase()
        self.completed = True
        if self.worker.vm.failed is not None:
            return
        self._call("proxy_on_done")
        self._call("proxy_on_delete")
        self.state.contexts.pop(self.id, None)

    def run_log_phase(self) -> None:
        """The access-log phase alone (proxy_on_log). In a chain Envoy runs it for every filter,
        creating the context of a filter the request never reached, before any proxy_on_done."""
        if self.logged or self.worker.vm.failed is not None:
            return
        self.logged = True
        self._ensure_created()
        self.request.end()
        self.response.end()
        self.in_log = True
        try:
            self._call("proxy_on_log")
        finally:
            self.in_log = False

    @property
    def logs(self) -> list:  # type: ignore[override]
        return [r for r in self.vm.logs if r.context_id == self.id and self.created]

    # -- driving the guest ---------------------------------------------------

    def _begin(self) -> str:
        """Apply the failure policy of a VM that failed earlier: "run" the filter,
        "skip" it (fail open) or answer "failed" (fail closed, 503)."""
        vm_failed = self.worker.vm.failed
        if vm_failed is not None:
            policy = self.plugin.failure_policy
            if policy == "fail_reload":
                self.worker = self.plugin.reload_worker(self.worker)
                self.vm, self.state, self.root_ctx = self.worker.vm, self.worker.vm.state, self.worker.root
            elif policy == "fail_open":
                return "skip"
            else:
                self._fail_closed()
                return "failed"
        self._ensure_created()
        return "run"

    def _refused(self, reply: LocalReply, request_headers: HeaderMap | None) -> PhaseResult:
        """The request is answered before any filter sees it (measured on 1.40). Refused by the
        HTTP/1.1 codec (`request_headers` None), the connection manager never had its headers:
        400 "Bad Request", and on_log finds the DownstreamProtocolError flag. Rejected by the
        connection manager for its path, on_log finds the codec's headers (without the manager's
        own). Either way the filter's context is created, but of its callbacks only on_log, on_done
        and on_delete run; a 400 closes the connection. What the client sends after is dropped."""
        if self.worker.vm.failed is None:
            self._ensure_created()
        self.request.headers = request_headers
        self.request.end()
        if request_headers is None:
            self.grpc_request = False
            self.response_flags |= _DOWNSTREAM_PROTOCOL_ERROR
        self._direct_reply(reply)
        out = self.downstream_response  # on_log reads it without the content-length: 0 the codec adds
        self.response.headers = HeaderMap(out.headers._raw if out.body else out.headers._raw[:-1])
        return PhaseResult("proxy_on_request_headers", None, NOT_CALLED)

    def _skipped(self, callback: str, hm: HeaderMap, eos: bool) -> PhaseResult:
        self.request.headers = hm
        self.request._forward_headers()
        self.request.end_seen = eos
        self.upstream_request.complete = eos
        return PhaseResult(callback, None, NOT_CALLED)

    def _ensure_created(self) -> None:
        if self.created:
            return
        self.created = True
        self.id = self.state.alloc_id()
        self.state.contexts[self.id] = self
        if self.vm.has("proxy_on_context_create"):
            self._call("proxy_on_context_create", self.root_ctx.id)

    def _call_filter(self, callback: str, *args: int) -> tuple[int | None, bool]:
        """A request or response callback. On a VM that another stream failed, Envoy fails a stream
        that was under way (its context created) without calling the guest: 503 wasm_fail_stream,
        whatever the failure policy, which decides for the streams that start later (measured on 1.40)."""
        if self.created and self.vm.failed is not None and self.trap is None:
            self._fail_closed()
            return None, True
        return self._call(callback, *args)

    def _call(self, callback: str, *args: int) -> tuple[int | None, bool]:
        """Invoke a stream callback if exported. Returns (raw result, whether a
        local reply was sent during the call)."""
        vm = self.vm
        if not vm.has(callback) or self.trap is not None or vm.failed is not None:
            return None, False
        before = self.local_reply
        try:
            raw = self.invoke(callback, self.id, *args)
        except GuestTrap as trap:
            self.trap = trap
            self._fail_closed()  # whatever the policy: it only decides for later streams (Envoy 1.40)
            if self.plugin.raise_on_trap:
                raise
            return None, self.local_reply is not before
        return raw, self.local_reply is not before

    def _fail_closed(self) -> None:
        """Envoy's failStream: 503 with details wasm_fail_stream, gRPC UNAVAILABLE."""
        self.request.end()
        self._direct_reply(LocalReply(503, b"", [], "wasm_fail_stream", 14))

    def _check_response_allowed(self) -> None:
        if self.local_reply is not None and self.response.headers is None:
            raise StreamStateError(
                f"the filter answered locally ({self.local_reply.status_code}); "
                "there is no upstream response for it to see"
            )
        if self.upstream_request.headers is None:
            raise StreamStateError(
                "the upstream has not received the request (the filter has not let the request "
                f"headers through: {self.request.iteration}); it cannot respond yet"
            )

    # -- deferred actions the guest asked for -----------------------------------

    def defer(self, action: Callable[[], None]) -> None:
        self.state.after_call.append(action)

    def continue_direction(self, stream_type: int) -> None:
        (self.request if stream_type == 0 else self.response).resume()

    def close_stream(self) -> None:
        """proxy_close_stream(REQUEST|RESPONSE): Envoy resets the whole stream, whichever it names."""
        self.reset_details = "wasm_close_stream"
        self.upstream_request.reset = self.downstream_response.reset = True
        self.request.end()
        self.response.end()

    def send_local_reply(self, reply: LocalReply) -> None:
        """Envoy's sendLocalReply: through the encoder chain (this filter's response
        callbacks run) if the response has not started, else straight to the client."""
        self.local_reply = reply
        self.request.end()
        if self.response.headers is not None:
            self._direct_reply(reply)
            return
        if self.grpc_request:
            self.response.send_headers(self._local_reply_headers(reply), eos=True)
        else:
            self.response.send_headers(_local_reply_headers(reply), eos=not reply.body)
        if reply.body and not self.grpc_request and self.response.iteration != "done":
            self.response.send_data(reply.body, True)
        out = self.downstream_response
        if (not reply.body or self.grpc_request) and out.headers is not None and "content-length" not in out.headers:
            out.headers = Headers([*out.headers._raw, (b"content-length", b"0")])  # added by the codec

    def routable(self, headers: HeaderMap) -> bool:
        """Whether Envoy's router finds the route for the request headers a filter let through:
        measured on 1.40, a filter that removes x-forwarded-proto (or empties it) makes the route
        re-match fail (a local 404, details route_not_found). With a chain, the host checks after
        each filter, where Envoy checks after the last."""
        return not self.plugin.host.connection_manager_defaults or bool(headers.get(b"x-forwarded-proto"))

    def buffer_overflow(self, direction: _Direction) -> None:
        """Envoy's answer to a buffer over the limit (measured on 1.40 for the request: 413
        "Payload Too Large"); a response whose headers went out is reset."""
        direction.buffered = bytearray()
        if direction is self.request:
            self.send_local_reply(LocalReply(413, b"Payload Too Large", [], "request_payload_too_large"))
        elif self.downstream_response.headers is None:
            self.send_local_reply(LocalReply(500, b"Internal Server Error", [], "response_payload_too_large"))
        else:
            self.response.end()
            self.downstream_response.reset = True
            self.reset_details = "response_payload_too_large"

    def _direct_reply(self, reply: LocalReply) -> None:
        self.local_reply = self.local_reply or reply
        self.response.end()
        out = self.downstream_response
        headers = self._local_reply_headers(reply)
        out.headers = headers.view()
        out.body = b"" if self.grpc_request else reply.body
        out.complete = True
        self.mark_connection_close()
        if not out.body:  # the codec adds it last, after connection: close (measured on 1.40)
            out.headers = Headers([*out.headers._raw, (b"content-length", b"0")])

    def _local_reply_headers(self, reply: LocalReply) -> HeaderMap:
        """Envoy's sendLocalReply: to a gRPC request a trailers-only gRPC answer (:status 200,
        content-type application/grpc, grpc-status from the reply or its HTTP status, the body as a
        percent-encoded grpc-message, no body), else the headers _local_reply_headers builds."""
        if not self.grpc_request:
            return _local_reply_headers(reply)
        hm = _local_reply_headers(LocalReply(200, b"", reply.headers))
        hm.replace(b"content-type", b"application/grpc")
        if hm.get(b"grpc-status") is None:
            code = reply.grpc_status if reply.grpc_status is not None else _HTTP_TO_GRPC.get(reply.status_code, 2)
            hm.add(b"grpc-status", str(code).encode())
        head = self.request.headers is not None and self.request.headers.get(b":method") == b"HEAD"
        if reply.body and not head:
            hm.add(b"grpc-message", _percent_encode(reply.body))
        return hm

    def mark_connection_close(self, filtered: HeaderMap | None = None) -> None:
        """Envoy's connection manager (HTTP/1.1, measured on 1.40), after the filters ran: it
        drops the hop-by-hop headers the response still has, and closes the connection after a
        response that starts before the request ended, and after a local 400, saying so with
        `connection: close` to the client. It changes the header map the filters passed on
        (`filtered`), so on_log reads the result too (measured: response.total_size counts it)."""
        out = self.downstream_response
        if not self.plugin.host.connection_manager_defaults or out.headers is None:
            return
        pairs = [(k, v) for k, v in out.headers._raw if k not in _HOP_BY_HOP_RESPONSE]
        local_400 = self.local_reply is not None and self.local_reply.status_code == 400
        if not self.request.end_seen or local_400:
            pairs.append((b"connection", b"close"))
        out.headers = Headers(pairs)
        if filtered is not None:
            filtered.pairs = list(pairs)

    # -- what hostcalls see ----------------------------------------------------

    def get_map(self, map_type: int, mutable: bool) -> HeaderMap | None:
        if map_type > _RESPONSE_TRAILERS:  # gRPC metadata and callout answers: the root context's (measured on 1.40)
            return self.root_ctx.get_map(map_type, mutable)
        added = self.request if map_type == _REQUEST_TRAILERS else self.response
        if map_type in _TRAILERS and added.trailers_added:
            # Envoy keeps the map it added for the filter in every later phase, but in on_log the
            # request trailers it added read as an empty (writable) map (measured on 1.40)
            return added.trailers if not (self.in_log and added is self.request) else self.log_request_trailers
        if self.in_log:
            if mutable:
                return None
            return {
                _REQUEST_HEADERS: self.request.headers,
                _RESPONSE_HEADERS: self.response.headers,
                _RESPONSE_TRAILERS: self.response.trailers,
            }.get(map_type)
        d = self.request if map_type in _REQUEST_MAPS else self.response
        if map_type in _HEADERS:
            return d.headers if d.headers_readable else None
        if d.trailers_readable:
            return d.trailers
        if mutable and d.body is not None and d.body_eos and d.trailers is None:
            d.trailers, d.trailers_added = HeaderMap(), True  # Envoy's addDecodedTrailers()/addEncodedTrailers()
            return d.trailers
        return None

    def get_buffer(self, buffer_type: int) -> Buffer | None:
        if buffer_type == BufferType.HTTP_REQUEST_BODY:
            return self.request.body
        if buffer_type == BufferType.HTTP_RESPONSE_BODY:
            return self.response.body
        if buffer_type in (BufferType.HTTP_CALL_RESPONSE_BODY, BufferType.PLUGIN_CONFIGURATION, BufferType.CALL_DATA):
            return self.root_ctx.get_buffer(buffer_type)
        return super().get_buffer(buffer_type)

    def attributes(self) -> dict[str, Any]:
        """Envoy's CEL attributes for this stream (computed on demand)."""
        # Envoy reads request.* from the live request headers: after they are let
        # through, request.path is NotFound and request.headers an empty map.
        live = self.request.headers if (self.request.headers_readable or self.in_log) else None
        request: dict[str, Any] = {"time": self.start_time_ns, "protocol": "HTTP/1.1", "headers": {}}
        if live is not None:
            path = _s(live.get(b":path"))
            url_path, _, query = path.partition("?")
            request.update(
                path=path,
                url_path=url_path,
                query=query,
                host=_s(live.get(b":authority")),
                # the connection manager sets it (without it, as Envoy's codec would: http); a request
                # it rejected has none (measured on 1.40)
                scheme=_s(live.get(b":scheme")) or ("" if self.plugin.host.connection_manager_defaults else "http"),
                method=_s(live.get(b":method")),
                headers=live.view().to_dict(),
                referer=_s(live.get(b"referer")),
                useragent=_s(live.get(b"user-agent")),
                id=_s(live.get(b"x-request-id")),
            )
        length = _s(live.get(b"content-length")) if live is not None else ""
        request["size"] = int(length) if length.isdigit() else self.request.body_bytes
        request["total_size"] = self.request.body_bytes + (_byte_size(live) if live is not None else 0)
        if self.in_log:  # Envoy knows the duration once the request is complete
            request["duration"] = self.plugin.host.clock.now_ns - self.start_time_ns
        attrs: dict[str, Any] = {"request": {k: v for k, v in request.items() if v != "" or k in ("path", "query")}}
        resp, trailers = self.response.headers, self.response.trailers  # Envoy counts both in total_size (measured)
        sent = self.downstream_response.body_size
        # answered in every phase (trailers: an empty map until there are some)
        response: dict[str, Any] = {"size": sent, "total_size": sent, "flags": self.response_flags, "trailers": {}}
        if resp is not None:
            code = resp.get(b":status")
            status = int(code) if code and code.isdigit() else 0
            codec = _CODEC_ADDED_BYTES if self.in_log and self.plugin.host.connection_manager_defaults else 0
            response.update(
                code=status,
                headers=resp.view().to_dict(),
                total_size=sent + _byte_size(resp) + codec + (_byte_size(trailers) if trailers is not None else 0),
                grpc_status=_grpc_status(resp, trailers, status),
                code_details=self.local_reply.details if self.local_reply is not None else "via_upstream",
            )
            if trailers is not None:
                response["trailers"] = trailers.view().to_dict()
        attrs["response"] = response
        attrs.update(self.plugin.host.connection_attributes(self.connection_id))
        # the router has picked the upstream host once the request headers went upstream
        picked = self.upstream_request.headers is not None
        attrs["upstream"] = self.plugin.host.upstream_attributes() if picked else {"request_attempt_count": 0}
        return attrs


# MapType members as module constants: get_map runs for every header hostcall, and reading an
# enum member off its class costs more than the comparison.
_REQUEST_HEADERS, _REQUEST_TRAILERS = MapType.HTTP_REQUEST_HEADERS, MapType.HTTP_REQUEST_TRAILERS
_RESPONSE_HEADERS, _RESPONSE_TRAILERS = MapType.HTTP_RESPONSE_HEADERS, MapType.HTTP_RESPONSE_TRAILERS
_TRAILERS = (_REQUEST_TRAILERS, _RESPONSE_TRAILERS)
_HEADERS = (_REQUEST_HEADERS, _RESPONSE_HEADERS)
_REQUEST_MAPS = (_REQUEST_HEADERS, _REQUEST_TRAILERS)


#: the bytes of the date and server headers Envoy's codec adds to a response after the filters,
#: counted in response.total_size once the response went out (an HTTP date is 29 characters)
_CODEC_ADDED_BYTES = len("date") + len("Mon, 30 Nov 2026 17:45:52 GMT") + len("server") + len("envoy")


#: Envoy's StreamInfo response flag DownstreamProtocolError (1 << 18), set when its codec refuses a request
_DOWNSTREAM_PROTOCOL_ERROR = 1 << 18


def _split_absolute_url(headers: HeaderMap) -> bool:
    """Envoy's HTTP/1.1 codec takes a request target that is an absolute http(s) URL apart
    (measured on 1.40): its host becomes :authority (in place of the Host header), its scheme in
    lower case :scheme, the rest :path ("/" if empty; "?q" stays as it is). True if it was one
    (one with another scheme or no host is the codec's to refuse)."""
    scheme, sep, rest = (headers.get(b":path") or b"").partition(b"://")
    at = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    if not sep or scheme.lower() not in (b"http", b"https") or at == 0:
        return False
    headers.replace(b":authority", rest[:at])
    headers.replace(b":path", rest[at:] or b"/")
    headers.replace(b":scheme", scheme.lower())
    return True


def _codec_refusal(headers: HeaderMap, absolute_url: bool) -> str | None:
    """The details of the 400 Envoy's HTTP/1.1 codec answers (measured on 1.40) to a request whose
    length it cannot trust: content-length repeated (same value or not) or not a plain number, or
    content-length with a chunked transfer-encoding; or to a request target that is neither a path
    nor an absolute http(s) URL with a host, unless it is "*" of an OPTIONS request. None: the codec takes it."""
    target = headers.get(b":path")
    if target is not None and not absolute_url and not target.startswith(b"/"):
        scheme, sep, _ = target.partition(b"://")
        if sep:
            return "http1.invalid_url" if scheme.lower() in (b"http", b"https") else "http1.invalid_scheme"
        if target != b"*":
            return "http1.codec_error"
        if headers.get(b":method") != b"OPTIONS":
            return "http1.invalid_url"
    lengths = [v for k, v in headers.pairs if k == b"content-length"]
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        return "http1.codec_error"
    if lengths and b"chunked" in (headers.get(b"transfer-encoding") or b"").lower():
        return "http1.content_length_and_chunked_not_allowed"
    return None


def _path_rejection(headers: HeaderMap) -> LocalReply | None:
    """The connection manager's answer to a path it will not route (measured on 1.40, default
    settings): 404 to one that does not start with "/" (OPTIONS *, or an absolute URL's "?q"),
    400 to one with a fragment. None: the filters see the request."""
    path = headers.get(b":path")
    if path is None:
        return None
    if not path.startswith(b"/"):
        return LocalReply(404, b"", [], "absolute_path_rejected")
    if b"#" in path:
        return LocalReply(400, b"", [], "path_normalization_failed")
    return None


def _byte_size(headers: HeaderMap) -> int:
    """Envoy's HeaderMap::byteSize: the lengths of every name and value, nothing between."""
    return sum(len(k) + len(v) for k, v in headers.pairs)


#: what the connection manager removes from a response on its way to the client (measured on 1.40; the
#: HTTP/1.1 codec then frames the body itself: transfer-encoding comes back last, after date and server)
_HOP_BY_HOP_RESPONSE = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"upgrade", b"transfer-encoding"})
#: Envoy's Grpc::Utility::httpToGrpcStatus, for responses without a grpc-status.
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


def _grpc_status(headers: HeaderMap, trailers: HeaderMap | None, http_status: int) -> int:
    for source in (trailers, headers):
        value = source.get(b"grpc-status") if source is not None else None
        if value is not None and value.isdigit():
            return int(value)
    return _HTTP_TO_GRPC.get(http_status, 2)  # 2: Unknown


def _is_grpc(headers: HeaderMap) -> bool:
    """Envoy's Grpc::Common::hasGrpcContentType: application/grpc, alone or with a "+" suffix
    (measured on 1.40: "application/grpc;charset=utf-8" is not gRPC, nor is any other case)."""
    ct = headers.get(b"content-type") or b""
    return ct == b"application/grpc" or ct.startswith(b"application/grpc+")


def _percent_encode(data: bytes) -> bytes:
    """Envoy's grpc-message encoding: bytes below a space, from "~" up, and %, as %XX (measured on 1.40)."""
    return b"".join(b"%%%02X" % c if c < 0x20 or c >= 0x7E or c == 0x25 else bytes([c]) for c in data)


def _local_reply_headers(reply: LocalReply) -> HeaderMap:
    """The headers of a local reply as Envoy builds them (measured on Envoy 1.40):
    the filter's headers added one by one (a repeated name gives several lines, joined with ","
    for a header Envoy keeps inline), then content-length (updated in place if the filter gave
    one) and content-type text/plain unless the filter gave one; an empty body has neither
    (the codec adds content-length: 0 after the filters)."""
    hm = HeaderMap([(b":status", str(reply.status_code).encode())])
    for k, v in reply.headers:
        name, value = k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")  # the guest's raw bytes
        if name.lower() in INLINE_RESPONSE_HEADERS:
            hm.add_inline(name, value)
        else:
            hm.add(name, value)
    if reply.body:
        length = str(len(reply.body)).encode()
        if hm.get(b"content-length") is None:
            hm.add(b"content-length", length)
        else:
            hm.pairs = [(k, length if k == b"content-length" else v) for k, v in hm.pairs]
        if hm.get(b"content-type") is None:
            hm.add(b"content-type", b"text/plain")
    else:
        hm.remove(b"content-length")
        hm.remove(b"content-type")
    return hm


def _s(b: bytes | None) -> str:
    return b.decode("utf-8", "surrogateescape") if b else ""
