"""A threaded keep-alive HTTP upstream that echoes each request as JSON.

Envoy forwards to it, so tests can see exactly what a filter did to the request
(headers added/removed, body rewritten). Fixed responses (e.g. a JWKS document
for ``jwks_cluster``) can be registered per path.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FixedResponse:
    """A canned reply served for one exact path (query string ignored)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)  # pairs: a name may repeat
    delay: float = 0.0  # seconds to wait before answering (slow JWKS / callout targets)
    trailers: list[tuple[str, str]] | None = None  # set: the body goes chunked, these trailers after it


@dataclass
class ReceivedRequest:
    """One request as the upstream received it (EchoUpstream(record=True))."""

    method: str
    path: str
    headers: list[tuple[str, str]]  # lower-cased names, wire order
    body: bytes
    trailers: list[tuple[str, str]] = field(default_factory=list)  # a chunked body's trailers, lower-cased names


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards Envoy
    # Headers and body go out in two writes; without this, Nagle + delayed ACK
    # adds ~40 ms per request on Envoy's keep-alive upstream connections.
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _read_body(self) -> tuple[bytes, list[tuple[str, str]]]:
        """The body and, when it came chunked, its trailers."""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    trailers = http.client.parse_headers(self.rfile)
                    return b"".join(parts), [(k.lower(), v) for k, v in trailers.items()]
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return (self.rfile.read(length) if length else b""), []

    def _handle(self) -> None:
        body, trailers = self._read_body()
        path_only = self.path.split("?", 1)[0]
        up = self.server.owner
        with up._lock:
            up.request_count += 1
            fixed = up._fixed.get(path_only, up.default_response)
            if up.received is not None:
                up.received.append(ReceivedRequest(self.command, self.path, [(k.lower(), v) for k, v in self.headers.items()], body,
                                                   trailers))
        if fixed is not None:
            if fixed.delay:
                time.sleep(fixed.delay)
            status, payload = fixed.status, fixed.body
            headers = list(fixed.headers.items()) if isinstance(fixed.headers, dict) else list(fixed.headers)
        else:
            pairs = [(k.lower(), v) for k, v in self.headers.items()]
            merged: dict[str, str] = {}
            for k, v in pairs:
                merged[k] = f"{merged[k]},{v}" if k in merged else v
            doc = {
                "method": self.command,
                "path": self.path,
                "headers": merged,
                "header_list": pairs,
                "body": body.decode("utf-8", "replace"),
            }
            status, payload = 200, json.dumps(doc).encode()
            headers = [("content-type", "application/json")]
        if up.received is None:
            self.send_response(status)
        else:  # recording for a parity run: exactly the response's own headers, no server/date
            self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        chunked = fixed is not None and fixed.trailers is not None
        framing = ("transfer-encoding", "chunked") if chunked else ("content-length", str(len(payload)))
        if framing[0] not in {k.lower() for k, _ in headers}:
            self.send_header(*framing)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(_chunked(payload, fixed.trailers) if chunked and fixed is not None else payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


def _chunked(payload: bytes, trailers: list[tuple[str, str]]) -> bytes:
    """The body as one chunk (none when empty), then the trailers (HTTP/1.1 chunked coding)."""
    head = b"%x\r\n%s\r\n" % (len(payload), payload) if payload else b""
    return head + b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "EchoUpstream"


class EchoUpstream:
    """Echo server on 127.0.0.1 (port 0 = pick a free one); use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: bool = False) -> None:
        self._fixed: dict[str, FixedResponse] = {}
        self.default_response: FixedResponse | None = None  # served for paths without a fixed response
        self.received: list[ReceivedRequest] | None = [] if record else None
        self._lock = threading.Lock()
        self.request_count = 0
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    def set_response(
        self, path: str, body: bytes | str | dict[str, Any], status: int = 200,
        headers: dict[str, str] | list[tuple[str, str]] | None = None, delay: float = 0.0,
        trailers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Serve ``body`` for ``path`` from now on (dicts are sent as JSON); ``headers`` as pairs may
        repeat a name; with ``trailers`` the body goes chunked, followed by them."""
        hdrs = list((headers or {}).items()) if isinstance(headers, dict) or headers is None else list(headers)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            if not any(k.lower() == "content-type" for k, _ in hdrs):
                hdrs.append(("content-type", "application/json"))
        elif isinstance(body, str):
            body = body.encode()
        with self._lock:
            self._fixed[path] = FixedResponse(status, body, hdrs, delay, trailers)

    def start(self) -> "EchoUpstream":
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                name=f"echo-upstream-{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "EchoUpstream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
