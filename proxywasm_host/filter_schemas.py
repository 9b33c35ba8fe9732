"""JSON configuration schemas of this project's filters (filters/jwt_authn, filters/ratelimit),
as small declarative tables, and a checker that names the field and what is allowed.

The filters check their configuration themselves in proxy_on_configure (and
`proxywasm validate` runs that too); this table adds the list of allowed fields
and values to the message. Cross-field rules ("exactly one of prefix or path")
are left to the filters. To update: edit the tables below to match the
`onlyKnown`/`r.string`/`r.integer` calls in filters/<name>/main.zig.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Node:
    """One schema node. kind: object, array, string, integer, boolean,
    strings (a string or an array of strings), jwks (an object or a JSON string)."""

    kind: str
    fields: dict[str, "Node"] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    items: "Node | None" = None
    enum: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str = ""
    hint: str = ""
    open: bool = False  # an object that may carry fields beyond `fields` (JWKs do)


def obj(required: tuple[str, ...] = (), **fields: Node) -> Node:
    return Node("object", fields=fields, required=required)


def arr(items: Node) -> Node:
    return Node("array", items=items)


def string(*enum: str, pattern: str = "", hint: str = "") -> Node:
    return Node("string", enum=enum, pattern=pattern, hint=hint)


def integer(minimum: int, maximum: int) -> Node:
    return Node("integer", minimum=minimum, maximum=maximum)


BOOL = Node("boolean")
STR = string()
STRINGS = Node("strings")
# A JWK: the fields the filter reads (filters/jwt_authn/jwks.zig parseKey); others are allowed.
_JWK = Node(
    "object",
    fields={"kty": string("oct", "RSA", "EC", "OKP"), **{k: STR for k in ("kid", "alg", "use", "k", "n", "e", "crv", "x", "y")}},
    required=("kty",),
    open=True,
)
JWKS = Node("jwks", items=Node("object", fields={"keys": arr(_JWK)}, required=("keys",), open=True))

_BUCKET = obj(
    ("max_tokens",),
    max_tokens=integer(1, 1_000_000_000),
    tokens_per_fill=integer(1, 1_000_000_000),
    fill_interval_ms=integer(1, 86_400_000),
    fill_interval=string(pattern=r"[0-9]+(ms|s|m|h)", hint='a duration such as "1s", "500ms", "2m" or "1h"'),
)
_DESCRIPTOR = obj(("source",), source=string("client_ip", "header", "path"), name=STR, xff_trusted_hops=integer(0, 64))

RATELIMIT = obj(
    domain=STR,
    stat_prefix=STR,
    bucket=_BUCKET,
    descriptors=arr(_DESCRIPTOR),
    routes=arr(obj(name=STR, prefix=STR, path=STR, bucket=_BUCKET, descriptors=arr(_DESCRIPTOR), unlimited=BOOL)),
    response_headers=BOOL,
    on_missing=string("allow", "shared"),
    body=STR,
)

_DAYS_30 = 30 * 86400
JWT_AUTHN = obj(
    ("providers",),
    providers=arr(
        obj(
            ("name",),
            name=STR,
            issuer=STR,
            audiences=STRINGS,
            local_jwks=JWKS,
            remote_jwks=obj(
                ("cluster", "path", "authority"),
                cluster=STR,
                path=STR,
                authority=STR,
                timeout_ms=integer(1, 600_000),
                cache_duration_s=integer(1, _DAYS_30),
                refresh_interval_s=integer(1, _DAYS_30),
            ),
            from_headers=arr(obj(("name",), name=STR, value_prefix=STR)),
            from_params=STRINGS,
            forward=BOOL,
            forward_payload_header=STR,
            claim_to_headers=arr(obj(("claim_name", "header_name"), claim_name=STR, header_name=STR)),
            clock_skew_seconds=integer(0, 86400),
            require_expiration=BOOL,
        )
    ),
    rules=arr(obj(prefix=STR, path=STR, requires=STRINGS, allow_missing=BOOL)),
    realm=STR,
    max_token_bytes=integer(64, 1 << 20),
    token_cache_size=integer(0, 10_000),
    stat_prefix=STR,
)

SCHEMAS: dict[str, Node] = {"jwt_authn": JWT_AUTHN, "ratelimit": RATELIMIT}


def schema_for_module(path: str | Path) -> str | None:
    """The schema of a module by its file name (jwt_authn*.wasm, ratelimit*.wasm), if any."""
    name = Path(path).name
    return next((s for s in SCHEMAS if name.startswith(s) and name.endswith(".wasm")), None)


def check(schema: Node, value: Any, path: str = "") -> list[str]:
    """Every problem of `value` against `schema`, as "<field path>: <what is wrong>; allowed: …"."""
    where = path or "configuration"
    kind = schema.kind
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected object, got {_describe(value)}"]
        errors = []
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if key not in schema.fields:
                if not schema.open:
                    errors.append(f"{sub}: unknown field; allowed: {', '.join(schema.fields)}")
            else:
                errors.extend(check(schema.fields[key], item, sub))
        for key in schema.required:
            if key not in value:
                errors.append(f"{path + '.' if path else ''}{key}: required field is missing")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected array, got {_describe(value)}"]
        assert schema.items is not None
        return [e for i, item in enumerate(value) for e in check(schema.items, item, f"{where}[{i}]")]
    if kind == "strings":
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return []
        return [f"{where}: expected string or array of strings, got {_describe(value)}"]
    if kind == "jwks":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                return [f"{where}: not valid JSON ({e.msg} at column {e.colno})"]
        if not isinstance(value, dict):
            return [f"{where}: expected a JWKS object or a string holding its JSON, got {_describe(value)}"]
        assert schema.items is not None
        return check(schema.items, value, path)
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected boolean, got {_describe(value)}"]
    if kind == "integer":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            return [f"{where}: expected integer, got {_describe(value)}"]
        assert schema.minimum is not None and schema.maximum is not None
        if not schema.minimum <= value <= schema.maximum:
            return [f"{where}: {int(value)} is out of range; allowed: {schema.minimum}..{schema.maximum}"]
        return []
    if not isinstance(value, str):
        return [f"{where}: expected string, got {_describe(value)}"]
    if schema.enum and value not in schema.enum:
        return [f"{where}: {value!r} is not allowed; allowed: {', '.join(repr(e) for e in schema.enum)}"]
    if schema.pattern and not re.fullmatch(schema.pattern, value):
        return [f"{where}: {value!r} is not allowed; allowed: {schema.hint}"]
    return []


def _describe(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    kind = "null" if value is None else names.get(type(value), type(value).__name__)
    text = repr(value) if isinstance(value, (str, int, float, bool)) else ""
    return f"{kind} {text}".strip() if len(text) <= 40 else kind
