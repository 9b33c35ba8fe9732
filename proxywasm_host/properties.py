"""proxy_get_property: Envoy's attributes computed from the stream, the plugin and
the host, with Envoy's value encodings, plus per-plugin and per-stream overrides.

Encodings (Envoy serializeValue): strings and bytes raw; ints int64 LE; bools one
byte; timestamps and durations int64 nanoseconds; maps serialized pairs; metadata
messages (`metadata`, `xds.*_metadata`) their protobuf bytes (see metadata.py).
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Mapping, Union

from .headers import as_bytes
from .memory import serialize_pairs
from .metadata import NULL, Metadata, encode_metadata, metadata

if TYPE_CHECKING:
    from .context import Context

PropertyValue = Union[str, bytes, int, bool, float, Mapping[str, Any], list, None]
PropertyPath = tuple[str, ...]


def parse_path(path: str | tuple[str, ...] | list[str]) -> PropertyPath:
    """'request.headers.x-a' or ('request', 'headers', 'x-a') -> segments."""
    if isinstance(path, str):
        return tuple(path.split("."))
    if isinstance(path, (tuple, list)) and all(isinstance(seg, str) for seg in path):
        return tuple(path)
    raise TypeError(f"properties: key must be a dotted path (str) or a tuple of str, got {type(path).__name__} ({path!r:.60})")


INT_MIN, UINT_MAX = -(1 << 63), (1 << 64) - 1  # CEL int (int64) .. uint (uint64)


class SerializationFailure(ValueError):
    """Envoy cannot hand the value to a filter (a Struct's null, or a map or list holding one)."""


def encode_value(value: PropertyValue, path: str = "") -> bytes:
    """Envoy's serializeValue; a value it cannot hold is a TypeError/ValueError naming the
    override at `path` (dotted, into maps and lists)."""
    what = f"properties '{path}'" if path else "property value"
    if isinstance(value, (str, bytes, bytearray)):
        return as_bytes(value, what)
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        if not INT_MIN <= value <= UINT_MAX:
            raise ValueError(f"{what}: integer {value} out of range; allowed: -2**63 to 2**64-1 (int64 or uint64)")
        return struct.pack("<q", value) if value < (1 << 63) else struct.pack("<Q", value)
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, Metadata):
        return encode_metadata(value)
    if value is NULL:
        raise SerializationFailure(f"{what}: a Struct's null")
    if isinstance(value, Mapping):  # Envoy sends an empty map as a zero count (4 bytes)
        pairs = [(as_bytes(k if isinstance(k, (bytes, bytearray)) else str(k), f"{what}: map key"),
                  encode_value(v, f"{path}.{k}")) for k, v in value.items()]
        return serialize_pairs(pairs) or b"\0\0\0\0"
    if isinstance(value, (list, tuple)):
        return serialize_pairs((encode_value(v, f"{path}.{i}"), b"") for i, v in enumerate(value)) or b"\0\0\0\0"
    raise TypeError(f"{what}: cannot encode {type(value).__name__} ({value!r:.60}); "
                    "allowed: str, bytes, int, bool, float, dict, list or None")


def normalize_overrides(props: Mapping[Any, PropertyValue] | None) -> dict[PropertyPath, PropertyValue]:
    """Property overrides by path, each value checked now (None: the property is NotFound)."""
    if props is None:
        return {}
    if not isinstance(props, Mapping):
        raise TypeError(f"properties must be a dict, got {type(props).__name__} ({props!r:.60})")
    out = {}
    for key, value in props.items():
        path = parse_path(key)
        if value is not None and is_metadata(path):
            value = metadata(value)
        if value is not None:
            try:
                encode_value(value, ".".join(path))
            except SerializationFailure:  # a valid value, which a filter cannot read
                pass
        out[path] = value
    return out


def is_metadata(path: PropertyPath) -> bool:
    """Envoy's metadata messages: dynamic metadata and the xds.*_metadata attributes."""
    return path == ("metadata",) or (len(path) == 2 and path[0] == "xds" and path[1].endswith("_metadata"))


def _lookup_override(overrides: dict[PropertyPath, PropertyValue], path: PropertyPath) -> tuple[bool, PropertyValue]:
    """Exact match, or walk into a map or list value with the remaining segments, as into Envoy's
    own attributes (the longest overridden prefix wins; below it, a missing segment is NotFound)."""
    if path in overrides:
        return True, overrides[path]
    for n in range(len(path) - 1, 0, -1):
        base = overrides.get(path[:n])
        if isinstance(base, (Mapping, list)):
            return True, _walk(base, path[n:])
    return False, None


def resolve(ctx: "Context", path: PropertyPath) -> bytes | None:
    """The property's bytes as Envoy would return them, or None for NotFound; raises
    SerializationFailure where Envoy's proxy_get_property does."""
    for overrides in ctx.property_layers():
        found, value = _lookup_override(overrides, path)
        if found:
            return None if value is None else encode_value(value)
    value = builtin(ctx, path)
    return None if value is None else encode_value(value)


def builtin(ctx: "Context", path: PropertyPath) -> PropertyValue:
    plugin = ctx.plugin
    head = path[0]
    if len(path) == 1 and head in ("plugin_name", "plugin_root_id", "plugin_vm_id"):
        return {"plugin_name": plugin.name, "plugin_root_id": plugin.root_id, "plugin_vm_id": plugin.vm_id}[head]
    attrs = ctx.attributes()
    if len(path) == 1 and head == "connection_id" and attrs is not None:  # Envoy's Wasm token for connection.id
        return attrs["connection"]["id"]
    if head == "xds":
        return _walk(plugin.host.xds_attributes(), path[1:])
    if path[:3] == ("request", "headers", "host"):  # Envoy's request header map: "host" is :authority
        path = ("request", "headers", ":authority", *path[3:])
    if attrs is None:
        return None
    if head == "metadata":  # the stream's dynamic metadata: none unless an override sets it
        return _walk(metadata(None), path[1:])
    return _walk(attrs.get(head), path[1:])


def _walk(value: Any, rest: tuple[str, ...]) -> PropertyValue:
    for seg in rest:
        if isinstance(value, Mapping):
            value = value.get(seg)
        elif isinstance(value, list) and seg.isdigit() and int(seg) < len(value):
            value = value[int(seg)]
        else:
            return None
        if value is None:
            return None
    return value
