"""The serialized envoy.config.core.v3.GrpcService that the C++ SDK passes to
proxy_grpc_call/proxy_grpc_stream instead of a cluster name. Envoy parses it as a
proto and, only when that fails, takes the bytes as a cluster name; we read the
fields that decide where the call goes and what metadata it carries."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import EnvoyWouldCrash

_ENVOY_GRPC, _GOOGLE_GRPC, _INITIAL_METADATA = 1, 2, 5  # GrpcService fields
_CLUSTER_NAME = 1  # EnvoyGrpc field
_KEY, _VALUE = 1, 2  # HeaderValue fields


@dataclass
class GrpcService:
    cluster: str
    initial_metadata: list[tuple[bytes, bytes]] = field(default_factory=list)


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of one message; ValueError where protobuf's parser fails."""
    out, pos = [], 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError("truncated varint")
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            out.append((number, wire, varint()))
            continue
        size = {1: 8, 5: 4}.get(wire)
        if wire == 2:
            size = varint()
        if size is None or pos + size > len(data):
            raise ValueError(f"bad wire type {wire} or truncated field {number}")
        out.append((number, wire, data[pos:pos + size]))
        pos += size
    return out


def _strings(data: bytes, wanted: tuple[int, ...]) -> dict[int, bytes]:
    return {n: v for n, w, v in _fields(data) if w == 2 and n in wanted and isinstance(v, bytes)}


def parse_grpc_service(data: bytes) -> GrpcService | None:
    """The GrpcService in `data` if it is one that names an Envoy cluster, else None. Bytes that
    parse as a GrpcService naming no target at all (even none: b"") abort Envoy 1.40."""
    try:
        fields = _fields(data)
        if not any(n in (_ENVOY_GRPC, _GOOGLE_GRPC) for n, _, _ in fields):
            raise EnvoyWouldCrash(
                f"the gRPC upstream {data!r:.60} parses as a GrpcService that names no target: Envoy 1.40 aborts "
                "on it (measured: 'panic: unset oneof'); give a cluster name that is not protobuf wire data, or a "
                "serialized GrpcService with envoy_grpc.cluster_name")
        envoy_grpc = [v for n, w, v in fields if n == _ENVOY_GRPC and w == 2]
        if not envoy_grpc or not isinstance(envoy_grpc[-1], bytes):
            return None
        cluster = _strings(envoy_grpc[-1], (_CLUSTER_NAME,)).get(_CLUSTER_NAME, b"")
        metadata = []
        for n, w, v in fields:
            if n == _INITIAL_METADATA and w == 2 and isinstance(v, bytes):
                kv = _strings(v, (_KEY, _VALUE))
                metadata.append((kv.get(_KEY, b""), kv.get(_VALUE, b"")))
    except ValueError:
        return None
    return GrpcService(cluster.decode("utf-8", "surrogateescape"), metadata) if cluster else None
