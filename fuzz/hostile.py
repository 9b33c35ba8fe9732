"""Hostile test-API inputs for valid modules: a plan is a list of (op, kwargs) built from a
`random.Random`, so (seed, iteration) reproduces it, and it can be printed as a reproducer.

Values are mostly of the documented types but hostile in content (NUL, CR/LF, non-UTF-8,
megabyte values, thousands of headers, out-of-range integers, deep JSON); with a small
probability they are of a wrong type (None, int, lone surrogates), which the host must
refuse with a TypeError/ValueError naming the argument (issue #11, item 6).
"""
from __future__ import annotations

import random
from typing import Any

REAL_NAMES = [":path", ":method", ":authority", ":scheme", ":status", "content-length", "content-type",
              "authorization", "x-api-key", "x-deny", "x-go-user", "x-as-crash", "x-fuzz", "te", "host",
              "transfer-encoding", "x-envoy-original-path", "grpc-status", "connection"]
PROPERTY_PATHS = ["request.path", "request.headers", "source.address", "destination.port", "xds.route_name",
                  "plugin_name", "upstream.address", "connection.id", "response.code", "node", "a.b.c",
                  "request\0path", "", ".", "..", "request.", ".request"]
WRONG_TYPES: list[Any] = [None, 0, -1, 1.5, [], {}, object(), True]


class Values:
    """Generators of hostile values; `types` enables wrong-typed values."""

    def __init__(self, rng: random.Random, types: bool):
        self.rng = rng
        self.types = types

    def _wrong(self) -> bool:
        return self.types and self.rng.random() < 0.02

    def raw(self, huge: bool = True) -> bytes:
        r = self.rng
        kind = r.randrange(7 if huge else 6)
        if kind == 0:
            return b""
        if kind == 1:
            return bytes(r.randrange(256) for _ in range(r.randint(1, 40)))
        if kind == 2:
            return r.choice([b"\0", b"a\0b", b"\r\n", b"x\r\nInjected: 1", b"\xff\xfe", b"\x80", b" ", b"\t"])
        if kind == 3:
            return "é✓\u202e".encode() * r.randint(1, 5)
        if kind in (4, 5):
            return bytes(r.choice(b"abcXYZ-_:/.0123456789") for _ in range(r.randint(1, 30)))
        return bytes([r.randrange(256)]) * r.choice([65_536, 1 << 20, 4 << 20])

    def text(self, pool: list[str], huge: bool = True) -> Any:
        """A header name/value, a path: str or bytes, real or hostile."""
        r = self.rng
        if self._wrong():
            return r.choice(WRONG_TYPES + ["\ud800", "a\udcffb"])
        if r.random() < 0.35:
            return r.choice(pool)
        data = self.raw(huge)
        if r.random() < 0.5:
            return data.decode("latin-1")
        return data

    def headers(self) -> Any:
        r = self.rng
        if self._wrong():
            return r.choice([1, "x", [("a",)], [("a", "b", "c")], {None: "v"}, {"k": None}, [b"ab"]])
        n = r.choice([0, 1, 3, 8, 20, 2000])
        pairs = [(self.text(REAL_NAMES, huge=n < 100), self.text(["1", "GET", "/", "Bearer x.y.z"], huge=n < 100))
                 for _ in range(n)]
        if r.random() < 0.5:
            return pairs
        try:
            return dict(pairs)
        except TypeError:  # an unhashable name: keep the pairs
            return pairs

    def body(self) -> Any:
        r = self.rng
        if self._wrong():
            return r.choice([None, 1, ["a"], "\ud800"])
        data = self.raw()
        return data.decode("latin-1") if r.random() < 0.2 else data

    def prop_key(self) -> Any:
        r = self.rng
        if self._wrong():
            return r.choice([None, 1, ("a", None), "\ud800", b"request.path"])
        if r.random() < 0.6:
            return r.choice(PROPERTY_PATHS)
        if r.random() < 0.3:
            return tuple(self.text(PROPERTY_PATHS, huge=False) for _ in range(r.randint(0, 4)))
        return ".".join(str(self.text(PROPERTY_PATHS, huge=False)) for _ in range(r.randint(1, 4)))

    def prop_value(self) -> Any:
        r = self.rng
        return r.choice([
            "10.0.0.1:5000", "x" * 70_000, b"\0\xff", 0, -1, 2**63 - 1, 2**63, 2**64, -2**63 - 1, 2**200,
            True, float("nan"), float("inf"), {"a": {"b": [1, 2]}}, {1: 2}, [], None, {"": ""}, "\ud800",
        ])

    def properties(self) -> Any:
        r = self.rng
        if self._wrong():
            return r.choice([1, "request.path", [("a", "b")], {"a": object()}])
        props = {}
        for _ in range(r.randint(0, 5)):
            key, value = self.prop_key(), self.prop_value()
            try:
                props[key] = value
            except TypeError:  # an unhashable wrong-typed key: a dict cannot even hold it
                pass
        return props

    def config(self, valid: str) -> Any:
        r = self.rng
        if self._wrong():
            return r.choice([1, [1, 2], {"a": {1, 2}}, "\ud800", object()])
        return r.choice([
            valid, "", valid[: r.randrange(len(valid) + 1)], valid + "\0", valid.encode() + b"\xff",
            "[" * 100_000, '{"a":' * 50_000, "{" + '"k":1,' * 100_000 + '"z":1}', self.raw(),
            {"tag": "x", "deny_prefix": "/a"}, {"nested": {"deep": [1, 2, {"x": None}]}},
        ])


def load_kwargs(v: Values, seed) -> dict[str, Any]:
    """Options for load_plugin: the seed's own, with some fields made hostile."""
    r = v.rng
    kw: dict[str, Any] = {"configuration": seed.configuration, "vm_configuration": seed.vm_configuration,
                          "root_id": seed.root_id, "raise_on_trap": False, "deadline_ms": 250}
    for _ in range(r.choice([0, 0, 1, 2])):
        field = r.choice(["configuration", "vm_configuration", "workers", "failure_policy", "vm_id", "name",
                          "properties", "environment", "deadline_ms", "memory_limit"])
        kw[field] = {
            "configuration": lambda: v.config(seed.configuration),
            "vm_configuration": lambda: v.config(seed.vm_configuration),
            "workers": lambda: r.choice([1, 2, 3, 0, -1, 2**40] + ([None, "2"] if v.types else [])),
            "failure_policy": lambda: r.choice(["fail_open", "fail_reload", "fail_closed", "nope", ""]),
            "vm_id": lambda: v.text(["", "vm1", "collector"], huge=False),
            "name": lambda: v.text(["p", ""], huge=False),
            "properties": v.properties,
            "environment": lambda: {str(v.text(["K"], huge=False)): str(v.text(["v"], huge=False))},
            "deadline_ms": lambda: r.choice([1, 50, 250, 0, -5] + ([None, 2**64, "1"] if v.types else [])),
            "memory_limit": lambda: r.choice([65_536, 1 << 20, 0, 2**31] + ([2**63, None] if v.types else [])),
        }[field]()
    return kw


def http_ops(v: Values) -> list[tuple[str, dict]]:
    """One HTTP stream, in Envoy's order most of the time, shuffled sometimes."""
    r = v.rng
    ops = [("http_stream", {"properties": v.properties() if r.random() < 0.3 else None}),
           ("req_headers", {"headers": v.headers(), "end_of_stream": r.random() < 0.2})]
    for _ in range(r.randint(0, 3)):
        ops.append(("req_body", {"body": v.body(), "end_of_stream": False}))
    ops.append(r.choice([("req_body", {"body": b"", "end_of_stream": True}), ("req_trailers", {"trailers": v.headers()})]))
    ops.append(("respond_calls", {"status": r.choice([200, 403, 0, 999]), "headers": v.headers(), "body": v.body()}))
    ops.append(("resp_headers", {"headers": v.headers(), "end_of_stream": r.random() < 0.2}))
    ops.append(("resp_body", {"body": v.body(), "end_of_stream": r.random() < 0.7}))
    if r.random() < 0.3:
        ops.append(("resp_trailers", {"trailers": v.headers()}))
    ops.append(("complete", {}))
    if r.random() < 0.2:
        head, tail = ops[:1], ops[1:]
        r.shuffle(tail)
        ops = head + tail
    return ops


def tcp_ops(v: Values) -> list[tuple[str, dict]]:
    r = v.rng
    ops = [("tcp_stream", {"properties": v.properties() if r.random() < 0.3 else None}), ("connect", {})]
    for _ in range(r.randint(1, 4)):
        ops.append((r.choice(["down", "up"]), {"data": v.body(), "end_of_stream": r.random() < 0.2}))
    ops.append(("close", {"peer": r.choice(["downstream", "upstream", "sideways"]), "close_type": r.choice([0, 1, 2, 7])}))
    return ops


def plan(rng: random.Random, seed, types: bool = True) -> list[tuple[str, dict]]:
    """A hostile scenario on `seed`: load, then streams, ticks, a reload, a shutdown."""
    v = Values(rng, types)
    ops: list[tuple[str, dict]] = [("load", load_kwargs(v, seed))]
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(seed.kinds + ("http", "tcp") if rng.random() < 0.1 else seed.kinds)
        ops += http_ops(v) if kind == "http" else tcp_ops(v)
        if rng.random() < 0.3:
            ops.append(("advance", {"seconds": rng.choice([0, 1, 5, 3600])}))
    if rng.random() < 0.15:
        ops.append(("reload", {"configuration": v.config(seed.configuration)}))
    if rng.random() < 0.3:
        ops.append(("shutdown", {}))
    return ops
