"""Envoy's metadata as a filter reads it through proxy_get_property (measured on Envoy 1.40).

A google.protobuf.Struct (the node's metadata, one namespace of filter_metadata) holds strings,
numbers, bools, nulls, lists and Structs; its numbers are doubles, so 3 reads back as the 8 bytes
of 3.0, and a Struct read whole is a map in the pairs format. An envoy.config.core.v3.Metadata
message (dynamic metadata, route, listener metadata) read whole is its protobuf encoding (empty:
no bytes); under it, `filter_metadata` is a map of namespace to Struct. Envoy iterates protobuf
maps in a per-process random order, so a whole map of more than one key has no fixed byte order.
A Struct's null cannot be handed over: reading it, or a Struct or list that holds one, fails with
SerializationFailure (a Metadata message read whole still encodes it).
"""
from __future__ import annotations

import struct
from typing import Any, Mapping


class Metadata(dict):
    """An envoy.config.core.v3.Metadata message: {"filter_metadata": {namespace: Struct}}."""


class _Null:
    """A Struct's null_value."""

    def __repr__(self) -> str:
        return "null"


NULL = _Null()


def struct_value(value: Any) -> Any:
    """A Python value as a Struct holds it: integers become doubles."""
    if value is None:
        return NULL
    if isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): struct_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [struct_value(v) for v in value]
    raise TypeError(f"metadata cannot hold {type(value).__name__} ({value!r:.60}); "
                    "allowed: str, int, float, bool, None, dict, list")


def metadata(value: Mapping[str, Any] | None) -> Metadata:
    """A Metadata message from {"filter_metadata": {namespace: {...}}}."""
    namespaces = (value or {}).get("filter_metadata") or {}
    return Metadata({"filter_metadata": {str(ns): struct_value(v) for ns, v in namespaces.items()}})


def encode_metadata(message: Metadata) -> bytes:
    """The protobuf encoding of a Metadata message (filter_metadata, field 1)."""
    return b"".join(_field(1, _entry(ns, _encode_struct(fields))) for ns, fields in message.get("filter_metadata", {}).items())


def _encode_struct(fields: Mapping[str, Any]) -> bytes:
    return b"".join(_field(1, _entry(k, _value(v))) for k, v in fields.items())


def _value(v: Any) -> bytes:
    """google.protobuf.Value: null 1, number 2, string 3, bool 4, struct 5, list 6."""
    if v is NULL:
        return b"\x08\x00"
    if isinstance(v, bool):
        return b"\x20" + (b"\x01" if v else b"\x00")
    if isinstance(v, float):
        return b"\x11" + struct.pack("<d", v)
    if isinstance(v, str):
        return _field(3, v.encode())
    if isinstance(v, Mapping):
        return _field(5, _encode_struct(v))
    return _field(6, b"".join(_field(1, _value(item)) for item in v))


def _entry(key: str, value: bytes) -> bytes:
    """A map entry: key 1, value 2."""
    return _field(1, key.encode()) + _field(2, value)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
