"""proxy_get_property: Envoy's attributes computed from the stream, the plugin and
the host, with Envoy's value encodings, plus per-plugin and per-stream overrides.

Encodings (Envoy serializeValue): strings and bytes raw; ints int64 LE; bools one
byte; timestamps and durations int64 nanoseconds; maps serialized pairs.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Mapping, Union

from .memory import serialize_pairs

if TYPE_CHECKING:
    from .context import Context

PropertyValue = Union[str, bytes, int, bool, float, Mapping[str, Any], list, None]
PropertyPath = tuple[str, ...]


def parse_path(path: str | tuple[str, ...] | list[str]) -> PropertyPath:
    """'request.headers.x-a' or ('request', 'headers', 'x-a') -> segments."""
    if isinstance(path, str):
        return tuple(path.split("."))
    return tuple(path)


def encode_value(value: PropertyValue) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value) if value < (1 << 63) else struct.pack("<Q", value)
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, Mapping):  # Envoy sends an empty map as a zero count (4 bytes)
        return serialize_pairs((str(k).encode(), encode_value(v)) for k, v in value.items()) or b"\0\0\0\0"
    if isinstance(value, list):
        return serialize_pairs((encode_value(v), b"") for v in value) or b"\0\0\0\0"
    raise TypeError(f"cannot encode property value of type {type(value).__name__}")


def normalize_overrides(props: Mapping[Any, PropertyValue] | None) -> dict[PropertyPath, PropertyValue]:
    return {parse_path(k): v for k, v in (props or {}).items()}


def _lookup_override(overrides: dict[PropertyPath, PropertyValue], path: PropertyPath) -> tuple[bool, PropertyValue]:
    """Exact match, or walk into a map value with the remaining segments."""
    if path in overrides:
        return True, overrides[path]
    for n in range(len(path) - 1, 0, -1):
        base = overrides.get(path[:n])
        if isinstance(base, Mapping):
            value: Any = base
            for seg in path[n:]:
                if not isinstance(value, Mapping) or seg not in value:
                    return True, None
                value = value[seg]
            return True, value
    return False, None


def resolve(ctx: "Context", path: PropertyPath) -> bytes | None:
    """The property's bytes as Envoy would return them, or None for NotFound."""
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
        return _walk(plugin.host.xds_attributes(plugin), path[1:])
    if attrs is None:
        return None
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
