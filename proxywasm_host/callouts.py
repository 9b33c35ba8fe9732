"""HTTP and gRPC callouts a filter made, for the test to inspect and answer.

Answers arrive as Envoy delivers them: on the root context that made the call
(`proxy_on_http_call_response(root_id, token, …)`), the response readable only
during that callback. A failed call is delivered with zero headers and
proxy_get_status = (BrokenConnection, "reset")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .abi import MapType, WasmResult
from .context import Buffer, CallResponse
from .errors import StreamStateError
from .extras import require
from .headers import HeaderMap, Headers, HeadersInput, as_bytes, check_int

if TYPE_CHECKING:
    from .context import RootContext
    from .host import Host


@dataclass
class HttpCall:
    host: "Host" = field(repr=False)
    root: "RootContext" = field(repr=False)
    token: int
    cluster: str
    headers: Headers
    body: bytes
    trailers: Headers
    timeout_ms: int
    answered: bool = False
    made_at_ns: int = 0

    def __post_init__(self) -> None:
        self.made_at_ns = self.host.clock.now_ns

    def respond(
        self,
        status: int = 200,
        headers: HeadersInput = None,
        body: bytes | str = b"",
        trailers: HeadersInput = None,
    ) -> None:
        """Deliver the cluster's response (any status is a successful callout, as in Envoy).
        Envoy's router appends x-envoy-upstream-service-time (virtual ms since the call)."""
        hm = HeaderMap.from_input(headers, "respond: headers")
        if hm.get(b"x-envoy-upstream-service-time") is None:
            elapsed_ms = (self.host.clock.now_ns - self.made_at_ns) // 1_000_000
            hm.add(b"x-envoy-upstream-service-time", str(elapsed_ms).encode())
        self._answer(status, hm, body, trailers)

    def fail(self) -> None:
        """The callout stream was reset without a response: zero headers, status BrokenConnection."""
        self.root.status = (int(WasmResult.BROKEN_CONNECTION), b"reset")
        self._deliver(None)

    def timeout(self) -> None:
        """Envoy's async client answers a timeout with a local 504 response."""
        self._local_reply(504, b"upstream request timeout")

    def connection_failure(self) -> None:
        """The cluster refused the connection: Envoy's router answers a local 503."""
        self._local_reply(503, b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure")

    def _local_reply(self, status: int, body: bytes) -> None:
        self._answer(status, {"content-length": str(len(body)), "content-type": "text/plain"}, body, None)

    def _answer(self, status: int, headers: HeadersInput, body: bytes | str, trailers: HeadersInput) -> None:
        hm = HeaderMap([(b":status", str(check_int(status, "respond: status", 100, 999)).encode())])
        for k, v in HeaderMap.from_input(headers, "respond: headers").pairs:
            hm.add(k, v)
        body_b = as_bytes(body, "respond: body")
        # no trailers: Envoy has no trailer map, so reading a value from it is BadArgument
        trailer_map = HeaderMap.from_input(trailers, "respond: trailers") if trailers is not None else None
        self._deliver(CallResponse(hm, Buffer(body_b, mutable=False), trailer_map))  # type: ignore[arg-type]

    def _deliver(self, response: CallResponse | None) -> None:
        if self.answered:
            raise StreamStateError(f"HTTP call {self.token} was already answered")
        self.answered = True
        self.host.pending_http_calls.remove(self)
        root = self.root
        if root.vm.failed is not None or not root.vm.has("proxy_on_http_call_response"):
            return
        root.call_response = response
        try:
            if response is None:
                root.invoke("proxy_on_http_call_response", root.id, self.token, 0, 0, 0)
            else:
                root.invoke(
                    "proxy_on_http_call_response",
                    root.id,
                    self.token,
                    len(response.headers),
                    len(response.body.data),
                    len(response.trailers) if response.trailers is not None else 0,
                )
        finally:
            root.call_response = None


@dataclass
class GrpcCallout:
    """A gRPC call (unary) or stream a filter opened; the test answers it.

    Callbacks go to the root context that opened it, as in Envoy:
    on_grpc_receive_initial_metadata, on_grpc_receive, on_grpc_receive_trailing_metadata,
    on_grpc_close (status via proxy_get_status)."""

    host: "Host" = field(repr=False)
    root: "RootContext" = field(repr=False)
    token: int
    cluster: str
    service: str
    method: str
    metadata: Headers
    is_stream: bool
    message: bytes = b""  # the request message of a unary call
    timeout_ms: int = 0
    sent: list[bytes] = field(default_factory=list)  # stream messages the filter sent
    local_closed: bool = False
    cancelled: bool = False
    closed: bool = False

    def receive_initial_metadata(self, metadata: HeadersInput) -> None:
        self._with_metadata(MapType.GRPC_RECEIVE_INITIAL_METADATA, metadata, "proxy_on_grpc_receive_initial_metadata")

    def receive(self, message: bytes) -> None:
        """Deliver one response message (proxy_on_grpc_receive)."""
        self._check_open()
        root = self.root
        root.grpc_message = Buffer(message, mutable=False)
        try:
            self._invoke("proxy_on_grpc_receive", len(message))
        finally:
            root.grpc_message = None
        if not self.is_stream:
            self._finish()

    def receive_trailing_metadata(self, metadata: HeadersInput) -> None:
        self._with_metadata(MapType.GRPC_RECEIVE_TRAILING_METADATA, metadata, "proxy_on_grpc_receive_trailing_metadata")

    def close(self, status: int = 0, message: str = "") -> None:
        """The remote side ends the call with a gRPC status (proxy_on_grpc_close)."""
        self._check_open()
        self.root.status = (status, message.encode())
        self._finish()
        self._invoke("proxy_on_grpc_close", status)

    def fail(self, status: int, message: str = "") -> None:
        """The service answered with a non-OK status: the filter gets it as Envoy's gRPC client
        reports it, the message followed by the response code details ("not you{via_upstream}";
        an empty message is "via_upstream")."""
        self.close(status, f"{message}{{via_upstream}}" if message else "via_upstream")

    def _with_metadata(self, map_type: int, metadata: HeadersInput, callback: str) -> None:
        self._check_open()
        hm = HeaderMap.from_input(metadata)
        self.root.grpc_metadata = (map_type, hm)
        try:
            self._invoke(callback, len(hm))
        finally:
            self.root.grpc_metadata = None

    def _invoke(self, callback: str, arg: int) -> None:
        root = self.root
        if root.vm.failed is None and root.vm.has(callback):
            root.invoke(callback, root.id, self.token, arg)

    def _check_open(self) -> None:
        if self.closed or self.cancelled:
            raise StreamStateError(f"gRPC {'stream' if self.is_stream else 'call'} {self.token} is already closed")

    def _finish(self) -> None:
        self.closed = True
        if self in self.host.pending_grpc:
            self.host.pending_grpc.remove(self)


def dispatch_to_servers(host: "Host", calls: list[HttpCall], timeout: float = 5.0) -> None:
    """Send callouts for clusters declared with a URL to that real HTTP server."""
    httpx = require("httpx", "http", "host.dispatch_http_calls()")

    for call in calls:
        url = host.clusters.get(call.cluster)
        if not url:
            continue
        headers = {k: v for k, v in call.headers.items() if not k.startswith(":")}
        try:
            resp = httpx.request(
                call.headers.get(":method") or "GET",
                url.rstrip("/") + (call.headers.get(":path") or "/"),
                headers=headers,
                content=call.body,
                timeout=(call.timeout_ms / 1000) if call.timeout_ms else timeout,
            )
        except httpx.TimeoutException:
            call.timeout()
            continue
        except httpx.ConnectError:
            call.connection_failure()
            continue
        except httpx.HTTPError:
            call.fail()
            continue
        call.respond(resp.status_code, list(resp.headers.items()), resp.content)


__all__ = ["GrpcCallout", "HttpCall", "dispatch_to_servers"]
