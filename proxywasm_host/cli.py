"""`proxywasm`: inspect a Proxy-Wasm module, validate a module or an Envoy configuration,
run one HTTP exchange through a filter, and (with proxywasm_host.envoy) run a dev loop or
hot-swap a filter in a running Envoy.

Exit codes: 0 ok, 1 invalid or rejected (including unreadable or malformed input
files), 2 usage error. Every command prints a human-readable report, or one JSON
object with `--json`.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import wasmtime
import yaml

from .abi import ABI_0_2_1, ABI_MARKERS
from .errors import ModuleLoadError, PluginRejected
from .filter_schemas import SCHEMAS, check, schema_for_module
from .host import Host
from .hostcalls import registry
from .http import HttpStream
from .module import (
    WASM_MAGIC,
    ProxyWasmModule,
    check_callback_signatures,
    compile_module,
    expected_callback_signature,
)
from .plugin import Plugin

WASM_FILTER_TYPES = (
    "envoy.extensions.filters.http.wasm.v3.Wasm",
    "envoy.extensions.filters.network.wasm.v3.Wasm",
)
ENVOY_RUNTIMES = ("", "envoy.wasm.runtime.v8")
YAML_SUFFIXES = (".yaml", ".yml", ".json")


class CliError(Exception):
    """A problem with the input that ends the command with one line on stderr (exit 1)."""


class UsageError(CliError):
    """A malformed command line the parser could not catch (exit 2)."""


# -- input helpers ------------------------------------------------------------------


def read_file(path: str | Path, what: str) -> bytes:
    """A file's bytes, or CliError with one clear line."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path}: is a directory") from None
    except OSError as e:
        raise CliError(f"{what} {path}: cannot read: {e.strerror}") from None
    except ValueError:  # an embedded NUL
        raise CliError(f"{what} {str(path)!r}: not a file name (it contains a NUL byte)") from None


def text_arg(value: str | None, what: str) -> str | None:
    """A STR|@FILE option value."""
    if value is None or not value.startswith("@"):
        return value
    return read_file(value[1:], what).decode("utf-8", "surrogateescape")


def read_wasm(path: str | Path) -> bytes:
    data = read_file(path, "module")
    if data[:4] != WASM_MAGIC:
        raise CliError(f"module {path}: not a WebAssembly module (it does not start with \\0asm)")
    return data


def header_arg(value: str, option: str) -> tuple[str, str]:
    """'name: value' (a leading ':' is part of the name, as in ':authority: x')."""
    m = re.fullmatch(r"\s*(:?[^:\s]+)\s*:\s?(.*)", value)
    if not m:
        raise UsageError(f"{option} {value!r}: expected 'name: value'")
    return m.group(1).lower(), m.group(2)


def property_arg(value: str) -> tuple[str, str]:
    path, sep, val = value.partition("=")
    if not sep or not path:
        raise UsageError(f"--property {value!r}: expected PATH=VALUE (e.g. xds.cluster_name=web)")
    return path, val


def printable(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


# -- inspect ------------------------------------------------------------------------


def _leb(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _name(data: bytes, i: int) -> tuple[str, int]:
    n, i = _leb(data, i)
    return data[i : i + n].decode("utf-8", "replace"), i + n


def custom_sections(data: bytes) -> dict[str, bytes]:
    """Custom sections by name (the module was validated by wasmtime first)."""
    out: dict[str, bytes] = {}
    i = 8
    while i < len(data):
        sid = data[i]
        size, j = _leb(data, i + 1)
        if sid == 0:
            name, k = _name(data, j)
            out.setdefault(name, data[k : j + size])
        i = j + size
    return out


def producers(payload: bytes) -> dict[str, list[str]]:
    """The `producers` section: field -> ["name version", …]."""
    out: dict[str, list[str]] = {}
    nfields, i = _leb(payload, 0)
    for _ in range(nfields):
        fname, i = _name(payload, i)
        nvalues, i = _leb(payload, i)
        for _ in range(nvalues):
            value, i = _name(payload, i)
            version, i = _name(payload, i)
            out.setdefault(fname, []).append(f"{value} {version}".strip())
    return out


def function_names(payload: bytes) -> list[str]:
    """Function names from the `name` section (subsection 1)."""
    i = 0
    while i < len(payload):
        sub = payload[i]
        size, j = _leb(payload, i + 1)
        if sub == 1:
            count, k = _leb(payload, j)
            names = []
            for _ in range(count):
                _, k = _leb(payload, k)
                name, k = _name(payload, k)
                names.append(name)
            return names
        i = j + size
    return []


def guess_toolchain(data: bytes, imports: list[str], sections: dict[str, bytes]) -> tuple[str, list[str]]:
    """A guess of the SDK/toolchain with the evidence for it; "unknown" unless one family
    has strictly more evidence than any other."""
    prod = {}
    try:
        prod = producers(sections["producers"]) if "producers" in sections else {}
    except IndexError:
        pass
    try:
        names = function_names(sections["name"]) if "name" in sections else []
    except IndexError:
        names = []
    produced = " ".join(v for vs in prod.values() for v in vs).lower()
    evidence: dict[str, list[str]] = {}

    def hint(family: str, found: bool, why: str) -> None:
        if found:
            evidence.setdefault(family, []).append(why)

    hint("TinyGo", "tinygo" in produced, "producers section names TinyGo")
    hint("TinyGo", any("tinygo" in n.lower() for n in names), "tinygo_* function names")
    hint("Go", "go:buildid" in sections, "go:buildid custom section")
    hint("Go", any(i.startswith("gojs.") for i in imports), "gojs imports")
    hint("Go (TinyGo or gc)", b"proxy-wasm-go-sdk" in data, "proxy-wasm-go-sdk strings")
    hint("Rust", "rust" in produced, "producers section names Rust/rustc")
    hint("Rust", any(n.startswith("__rust") or re.search(r"17h[0-9a-f]{16}E$", n) for n in names), "Rust symbol names")
    hint("Rust", b"/rustc/" in data, "rustc source paths in panic messages")
    hint("C++ (Emscripten)", any(i.startswith("env.emscripten_") for i in imports), "emscripten_* imports")
    hint("C++", "c_plus_plus" in produced, "producers section: language C++")
    hint("AssemblyScript", b"~lib/" in data or "~lib/".encode("utf-16-le") in data, "~lib/ paths")
    hint("Zig", "zig" in produced, "producers section names Zig")
    hint("Zig", any(n.startswith(("std.", "debug.defaultPanic")) for n in names), "Zig std.* function names")
    hint("Zig", b".zig\x00" in data, ".zig source paths in debug info")
    if not evidence:
        stripped = not ({"name", "producers"} & sections.keys())
        return "unknown", ["no producers or name section (stripped)"] if stripped else []
    ranked = sorted(evidence.items(), key=lambda kv: -len(kv[1]))
    if len(ranked) > 1 and len(ranked[0][1]) == len(ranked[1][1]):
        return "unknown", [f"{fam}: {', '.join(why)}" for fam, why in ranked]
    return ranked[0][0], ranked[0][1]


def inspect_module(path: str) -> dict[str, Any]:
    """What `proxywasm inspect` reports, without requiring that Envoy would load the module."""
    data = read_wasm(path)
    digest = hashlib.sha256(data).hexdigest()
    try:
        compiled, _ = compile_module(data, digest, path)
    except ModuleLoadError as e:
        raise CliError(f"module {e}") from None
    exports = {e.name: e.type for e in compiled.exports}
    abis = [ABI_MARKERS[n] for n in exports if n in ABI_MARKERS]
    abi = max(abis, key=lambda a: a.tuple) if abis else None
    check_abi = abi or ABI_0_2_1
    refusals = [] if abi else ["Missing or unknown Proxy-Wasm ABI version (no proxy_abi_version_* export)"]
    if abi:
        try:
            check_callback_signatures(ProxyWasmModule(path, data, digest, abi, compiled))
        except ModuleLoadError as e:
            refusals.append(str(e).split(": ", 1)[1])
    callbacks = sorted(n for n, t in exports.items()
                       if isinstance(t, wasmtime.FuncType) and expected_callback_signature(n, check_abi) is not None)
    imports = []
    for imp in compiled.imports:
        qual = f"{imp.module}.{imp.name}"
        ty = imp.type
        sig = f"({', '.join(map(str, ty.params))}) -> ({', '.join(map(str, ty.results))})" if isinstance(
            ty, wasmtime.FuncType) else type(ty).__name__
        hc = registry.lookup(imp.module, imp.name or "", check_abi) if isinstance(ty, wasmtime.FuncType) else None
        if hc is None:
            status = "missing"
        else:
            wasm_types = {"i": "i32", "I": "i64"}
            want = ([wasm_types[c] for c in hc.params_wasm], [wasm_types[c] for c in hc.results])
            status = "ok" if want == ([str(t) for t in ty.params], [str(t) for t in ty.results]) else "wrong signature"
        imports.append({"name": qual, "signature": sig, "envoy": status})
    missing = [i["name"] for i in imports if i["envoy"] != "ok"]
    if missing:
        refusals.append(f"imports Envoy 1.40 does not provide (ABI {check_abi}): {', '.join(missing)}")
    sections = custom_sections(data)
    toolchain, evidence = guess_toolchain(data, [i["name"] for i in imports], sections)
    return {
        "module": path,
        "size": len(data),
        "sha256": digest,
        "abi": abi,
        "toolchain": toolchain,
        "toolchain_evidence": evidence,
        "callbacks": callbacks,
        "other_exports": sorted(n for n in exports if n not in callbacks and n not in ABI_MARKERS),
        "imports": imports,
        "imports_envoy_lacks": missing,
        "custom_sections": sorted(sections),
        "envoy_would_load": not refusals,
        "envoy_refusals": refusals,
    }


def print_inspect(r: dict[str, Any]) -> None:
    print(f"module:     {r['module']}")
    print(f"size:       {r['size']} bytes (sha256 {r['sha256'][:16]}…)")
    print(f"ABI:        {r['abi'] or 'none'}")
    why = f" ({'; '.join(r['toolchain_evidence'])})" if r["toolchain_evidence"] else ""
    print(f"toolchain:  {r['toolchain']}{why}")
    print(f"callbacks ({len(r['callbacks'])}): {', '.join(r['callbacks']) or 'none'}")
    print(f"other exports: {', '.join(r['other_exports']) or 'none'}")
    print(f"imports ({len(r['imports'])}):")
    for imp in r["imports"]:
        mark = "" if imp["envoy"] == "ok" else f"   <- {imp['envoy'].upper()} in Envoy 1.40"
        print(f"  {imp['name']} {imp['signature']}{mark}")
    print(f"custom sections: {', '.join(r['custom_sections']) or 'none'}")
    if r["envoy_would_load"]:
        print("Envoy 1.40 would load it: yes")
    else:
        print("Envoy 1.40 would load it: no")
        for reason in r["envoy_refusals"]:
            print(f"  - {reason}")


# -- validate ---------------------------------------------------------------------


@dataclass
class PluginOptions:
    """What a Wasm filter config gives the plugin (Envoy's PluginConfig)."""

    source: str | bytes
    configuration: str | bytes | None = None
    vm_configuration: str | bytes | None = None
    root_id: str = ""
    vm_id: str = ""
    name: str = ""
    environment: dict[str, str] = field(default_factory=dict)

    def load(self, host: Host, **extra: Any) -> Plugin:
        return host.load_plugin(
            self.source, configuration=self.configuration, vm_configuration=self.vm_configuration,
            root_id=self.root_id, vm_id=self.vm_id, name=self.name, environment=self.environment, **extra,
        )


def schema_errors(schema: str | None, configuration: str | bytes | None) -> list[str]:
    """The configuration checked against one of the project's filter schemas."""
    if schema is None:
        return []
    text = configuration.decode("utf-8", "replace") if isinstance(configuration, bytes) else configuration or ""
    if not text.strip():
        value: Any = {}  # the filters read an empty configuration as {}
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            return [f"configuration: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"]
    return [f"{schema}: {e}" for e in check(SCHEMAS[schema], value)]


def validate_plugin(opts: PluginOptions, schema: str | None) -> dict[str, Any]:
    """Schema check (for the project's filters), then load, start and configure in the host."""
    result: dict[str, Any] = {"ok": False, "schema": schema, "schema_errors": schema_errors(schema, opts.configuration),
                              "abi": None, "error": None, "logs": []}
    try:
        plugin = opts.load(Host())
    except PluginRejected as e:
        result.update(error=e.message, logs=[str(r) for r in e.logs])
    except (ModuleLoadError, TypeError, ValueError) as e:  # TypeError/ValueError: an option the host refuses
        result["error"] = str(e)
    else:
        result.update(ok=not result["schema_errors"], abi=plugin.abi, logs=[str(r) for r in plugin.logs])
    return result


def print_plugin_result(r: dict[str, Any], indent: str = "") -> None:
    verdict = "OK" if r["ok"] else ("REJECTED" if r["error"] else "INVALID")
    abi = f" (ABI {r['abi']})" if r["abi"] else ""
    print(f"{indent}{verdict}{abi}")
    if r["schema"]:
        print(f"{indent}schema {r['schema']}: {'ok' if not r['schema_errors'] else 'errors:'}")
        for e in r["schema_errors"]:
            print(f"{indent}  - {e}")
    if r["error"]:
        for line in r["error"].splitlines():
            print(f"{indent}error: {line}" if line == r["error"].splitlines()[0] else f"{indent}  {line}")
    if r["logs"]:
        print(f"{indent}filter log lines:")
        for line in r["logs"]:
            print(f"{indent}  {line}")


def validate_module(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    read_wasm(args.target)
    opts = PluginOptions(args.target, text_arg(args.config, "--config"), text_arg(args.vm_config, "--vm-config"),
                         args.root_id, args.vm_id, args.name)
    schema = args.schema or schema_for_module(args.target)
    result = {"command": "validate", "kind": "module", "module": args.target, **validate_plugin(opts, schema)}
    return result, 0 if result["ok"] else 1


# -- validate ENVOY_YAML -----------------------------------------------------------


@dataclass
class FoundFilter:
    name: str
    file: Path
    typed_config: dict[str, Any]


#: YAML limits: past them the CLI stops with one line instead of running for minutes or
#: recursing (libyaml itself stops at 1000 levels of nesting).
MAX_YAML_NODES = 100_000  # as written, and again once aliases are expanded
MAX_YAML_DEPTH = 100
_YAML_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when available


class _YamlLoader(_YAML_BASE):  # type: ignore[misc, valid-type]
    """Safe loading with a node budget; timestamps stay text, as Envoy reads them."""

    nodes = 0

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:  # called for each untagged node
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            raise _YamlRefused(f"more than {MAX_YAML_NODES} YAML nodes; this validator reads configs up to that size")
        tag = super().resolve(kind, value, implicit)
        return "tag:yaml.org,2002:str" if tag == "tag:yaml.org,2002:timestamp" else tag


class _YamlRefused(Exception):
    pass


def _check_yaml_graph(root: yaml.Node) -> None:
    """Refuse, before building it, a document whose aliases make it infinite (an anchor
    inside itself) or huge once expanded (an alias bomb), or that is nested too deep."""
    sizes: dict[int, int] = {}  # expanded size of each node seen (aliases share the node)
    active: set[int] = set()  # the nodes on the current path
    stack: list[tuple[yaml.Node, tuple[str, ...], bool]] = [(root, (), False)]
    while stack:
        node, path, done = stack.pop()
        if isinstance(node, yaml.MappingNode):
            children = [(str(k.value) if isinstance(k, yaml.ScalarNode) else "?", n) for k, v in node.value for n in (k, v)]
        elif isinstance(node, yaml.SequenceNode):
            children = [(str(i), n) for i, n in enumerate(node.value)]
        else:
            continue
        key = id(node)
        if done:
            active.discard(key)
            sizes[key] = 1 + sum(sizes.get(id(n), 1) for _, n in children)
            problem = f"more than {MAX_YAML_NODES} nodes once YAML aliases are expanded (an alias bomb?)"
            if sizes[key] <= MAX_YAML_NODES:
                continue
        elif key in active:
            problem = "an alias refers to its own anchor (the data would be infinite)"
        elif key in sizes:
            continue
        elif len(path) > MAX_YAML_DEPTH:
            problem = f"nested deeper than {MAX_YAML_DEPTH} levels"
        else:
            active.add(key)
            stack.append((node, path, True))
            stack.extend((child, path + (name,), False) for name, child in reversed(children)
                         if not isinstance(child, yaml.ScalarNode))
            continue
        mark, shown = node.start_mark, ".".join(path[:20]) + ("…" if len(path) > 20 else "")
        raise _YamlRefused(f"line {mark.line + 1} column {mark.column + 1} ({shown}): {problem}")


def load_yaml(path: Path, what: str) -> Any:
    data = read_file(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start)
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise CliError(f"{what} {path}: line {line + 1} column {column + 1}: not UTF-8 text "
                       f"(byte 0x{data[e.start]:02x})") from None
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}:" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CliError(f"{what} {path}:{where} YAML syntax error: {problem}") from None
    except _YamlRefused as e:
        raise CliError(f"{what} {path}: {e}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a tagged value that cannot be built
        raise CliError(f"{what} {path}: YAML value error: {e}") from None
    finally:
        loader.dispose()


def find_wasm_filters(node: Any, file: Path, base: Path, errors: list[dict[str, Any]],
                      seen: set[Path], name: str = "") -> Iterator[FoundFilter]:
    """Every Wasm filter config (inline, or in files named by path_config_source, e.g. ECDS)."""
    if isinstance(node, list):
        for item in node:
            yield from find_wasm_filters(item, file, base, errors, seen, name)
        return
    if not isinstance(node, dict):
        return
    name = node["name"] if isinstance(node.get("name"), str) else name
    if str(node.get("@type", "")).rsplit("/", 1)[-1] in WASM_FILTER_TYPES:
        yield FoundFilter(name, file, node)
        return
    source = node.get("path_config_source")
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        ref = base / source["path"]
        if "\0" not in source["path"]:  # read_file reports a NUL byte
            ref = ref.resolve()
        if ref not in seen:
            seen.add(ref)
            try:
                yield from find_wasm_filters(load_yaml(ref, "config file"), ref, base, errors, seen, name)
            except CliError as e:
                errors.append({"filter": name, "file": str(file), "ok": False, "error": f"{e} (referenced from {file})"})
    for key, value in node.items():
        if key != "path_config_source":
            yield from find_wasm_filters(value, file, base, errors, seen, name)


_YAML_TYPES = {dict: "map", list: "list", str: "string", int: "integer", float: "number", bool: "boolean",
               bytes: "binary (!!binary)", set: "set (!!set)", type(None): "null"}


def _yaml_type(value: Any) -> str:
    if isinstance(value, datetime.date):
        return f"{type(value).__name__} (!!timestamp)"
    return _YAML_TYPES.get(type(value), type(value).__name__)


def field(parent: dict[str, Any], key: str, where: str, kind: type, default: Any = None) -> Any:
    """parent[key] when it is a `kind` (a map or a string), `default` when absent; CliError naming it otherwise."""
    value = parent.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        expected = "a map" if kind is dict else "a string"
        raise CliError(f"{where}{key}: expected {expected}, got {_yaml_type(value)} {value!r:.60}")
    return value


def protobuf_base64(text: str) -> bytes:
    """bytes as protobuf's JSON parser reads them: standard or URL-safe base64, padding optional."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def struct_json(value: Any, where: str) -> str:
    """A Struct as JSON; YAML-only values (binary, sets, explicit timestamps, .nan) have no Struct form."""
    def check(node: Any, path: str) -> None:
        if isinstance(node, (dict, list)):
            for k, v in node.items() if isinstance(node, dict) else enumerate(node):
                check(k, path)
                check(v, f"{path}.{k}")
        elif isinstance(node, float) and not math.isfinite(node):
            raise CliError(f"{path}: a Struct cannot hold .nan or .inf")
        elif not isinstance(node, (str, int, float, type(None))):
            raise CliError(f"{path}: a Struct holds maps, lists, strings, numbers, booleans and null, not {_yaml_type(node)}")

    check(value, where)
    return json.dumps(value, separators=(",", ":"))


def unpack_any(value: Any, where: str) -> str | bytes | None:
    """A configuration Any as Envoy hands it to the plugin."""
    if value is None:
        return None
    if not isinstance(value, dict) or "@type" not in value:
        raise CliError(f"{where}: expected a google.protobuf.Any with an @type")
    kind = str(value["@type"]).rsplit("/", 1)[-1]
    inner = value.get("value")
    if kind == "google.protobuf.StringValue":
        if not isinstance(inner, (str, type(None))):
            raise CliError(f"{where}.value: a StringValue needs a string, got {type(inner).__name__}")
        return inner or ""
    if kind == "google.protobuf.BytesValue":
        try:
            return protobuf_base64(inner or "")
        except (binascii.Error, AttributeError, TypeError):
            raise CliError(f"{where}.value: a BytesValue needs base64 text") from None
    if kind == "google.protobuf.Struct":
        return struct_json(inner if inner is not None else {}, f"{where}.value")
    raise CliError(f"{where}: @type {kind} is not supported (use StringValue, BytesValue or Struct)")


def plugin_options(found: FoundFilter, base: Path) -> PluginOptions:
    """PluginOptions from a Wasm filter's typed_config; CliError names the field at fault."""
    config = field(found.typed_config, "config", "", dict)
    if config is None:
        raise CliError("config: missing PluginConfig")
    vm = field(config, "vm_config", "config.", dict)
    if vm is None:
        raise CliError("config.vm_config: missing")
    runtime = vm.get("runtime", "")
    if runtime not in ENVOY_RUNTIMES:
        raise CliError(f"config.vm_config.runtime {runtime}: not in Envoy 1.40 release builds; allowed: envoy.wasm.runtime.v8")
    local = field(field(vm, "code", "config.vm_config.", dict, {}), "local", "config.vm_config.code.", dict)
    if local is None:
        raise CliError("config.vm_config.code.local: missing (remote code is not validated)")
    where = "config.vm_config.code.local."
    source: str | bytes
    if "filename" in local:
        name = field(local, "filename", where, str, "")
        if "\0" in name:
            raise CliError(f"{where}filename {name!r}: not a file name (it contains a NUL byte)")
        path = base / name
        if not path.is_file():
            raise CliError(f"{where}filename {name}: no such file ({path})")
        source = str(path)
    elif "inline_bytes" in local:
        try:
            source = protobuf_base64(field(local, "inline_bytes", where, str, ""))
        except binascii.Error:
            raise CliError(f"{where}inline_bytes: not base64 text") from None
    elif "inline_string" in local:
        source = field(local, "inline_string", where, str, "").encode("utf-8", "surrogateescape")
    else:
        raise CliError("config.vm_config.code.local: needs filename, inline_bytes or inline_string")
    env_vars = field(vm, "environment_variables", "config.vm_config.", dict, {})
    env = field(env_vars, "key_values", "config.vm_config.environment_variables.", dict, {})
    return PluginOptions(
        source,
        unpack_any(config.get("configuration"), "config.configuration"),
        unpack_any(vm.get("configuration"), "config.vm_config.configuration"),
        field(config, "root_id", "config.", str, ""),
        field(vm, "vm_id", "config.vm_config.", str, ""),
        field(config, "name", "config.", str, ""),
        {str(k): str(v) for k, v in env.items()},
    )


def run_envoy_validate(path: Path) -> dict[str, Any]:
    """`envoy --mode validate -c FILE`, run from the file's directory (so relative paths agree)."""
    from .envoy.validate import find_envoy

    try:
        envoy = find_envoy()
        proc = subprocess.run(
            [envoy, "--mode", "validate", "-c", str(path.resolve()), "--disable-hot-restart", "--log-level", "warn"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=path.parent,
        )
    except (FileNotFoundError, PermissionError) as e:
        return {"ran": False, "ok": None, "note": f"Envoy not installed, skipped envoy --mode validate ({e})"}
    except subprocess.TimeoutExpired:
        return {"ran": True, "ok": False, "output": ["envoy --mode validate timed out after 120s"]}
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if proc.returncode != 0:
        lines = [ln for ln in lines if re.search(r"\]\[(error|critical)\]|rror|Unable|OK$", ln)] or lines
    return {"ran": True, "ok": proc.returncode == 0, "output": lines[-12:]}


def validate_envoy(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    path = Path(args.target)
    doc = load_yaml(path, "Envoy config")
    base = path.resolve().parent
    errors: list[dict[str, Any]] = []
    filters = []
    for found in find_wasm_filters(doc, path, base, errors, {path.resolve()}):
        entry: dict[str, Any] = {"filter": found.name, "file": str(found.file)}
        try:
            opts = plugin_options(found, base)
        except CliError as e:
            entry.update(ok=False, error=str(e))
        else:
            entry["module"] = opts.source if isinstance(opts.source, str) else f"<{len(opts.source)} inline bytes>"
            schema = args.schema or (schema_for_module(opts.source) if isinstance(opts.source, str) else None)
            entry.update(validate_plugin(opts, schema))
        filters.append(entry)
    filters.extend(errors)
    envoy = {"ran": False, "ok": None, "note": "skipped (--skip-envoy)"} if args.skip_envoy else run_envoy_validate(path)
    ok = all(f["ok"] for f in filters) and envoy["ok"] is not False
    result = {"command": "validate", "kind": "envoy", "file": str(path), "ok": ok, "filters": filters, "envoy": envoy}
    return result, 0 if ok else 1


def print_validate(r: dict[str, Any]) -> None:
    if r["kind"] == "module":
        print(f"{r['module']}: ", end="")
        print_plugin_result(r)
        return
    print(f"{r['file']}: {len(r['filters'])} Wasm filter(s)")
    for f in r["filters"]:
        module = f" module {f['module']}" if f.get("module") else ""
        print(f"- {f['filter'] or '(unnamed)'} [{f['file']}]{module}:")
        if "schema_errors" in f:
            print_plugin_result(f, "    ")
        else:
            print(f"    INVALID\n    error: {f['error']}")
    env = r["envoy"]
    if not env["ran"]:
        print(f"envoy --mode validate: {env['note']}")
    else:
        print(f"envoy --mode validate: {'OK' if env['ok'] else 'FAILED'}")
        for line in env["output"]:
            print(f"    {line}")
    print("result: OK" if r["ok"] else "result: INVALID")


def cmd_validate(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    path = Path(args.target)
    head = read_file(path, "file")[:4] if path.is_file() else b""
    is_yaml = head != WASM_MAGIC and (path.suffix in YAML_SUFFIXES or (path.is_file() and path.suffix != ".wasm"))
    if not is_yaml:
        return validate_module(args)
    given = [opt for opt, v in (("--config", args.config), ("--vm-config", args.vm_config), ("--root-id", args.root_id),
                                ("--vm-id", args.vm_id), ("--name", args.name)) if v]
    if given:
        raise UsageError(f"{', '.join(given)}: only for a module; an Envoy config carries its own")
    return validate_envoy(args)


# -- run ----------------------------------------------------------------------------


def message_dict(headers: Any, body: bytes, complete: bool) -> dict[str, Any] | None:
    if headers is None:
        return None
    return {"headers": headers.items(), "body": printable(body), "complete": complete}


def cmd_run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    read_wasm(args.module)
    opts = PluginOptions(args.module, text_arg(args.config, "--config"), text_arg(args.vm_config, "--vm-config"),
                         args.root_id, args.vm_id, args.name)
    request_headers = [header_arg(h, "-H") for h in args.header]
    response_headers = [header_arg(h, "--response-header") for h in args.response_header]
    properties = dict(property_arg(p) for p in args.property)
    body = (text_arg(args.body, "--body") or "").encode("utf-8", "surrogateescape")
    response_body = (text_arg(args.response_body, "--response-body") or "").encode("utf-8", "surrogateescape")
    host = Host()
    for cluster in args.cluster:
        host.add_cluster(cluster)
    result: dict[str, Any] = {"command": "run", "module": args.module}
    try:
        plugin = opts.load(host, properties=properties, raise_on_trap=False)
    except (PluginRejected, ModuleLoadError) as e:
        result.update(ok=False, error=getattr(e, "message", str(e)), logs=[str(r) for r in getattr(e, "logs", [])])
        return result, 1
    stream = plugin.http_stream()
    phases = exchange(stream, request_headers, body, args, response_headers, response_body)
    stream.complete()
    reply = stream.local_reply
    result.update(
        ok=stream.trap is None,
        error=stream.trap.message if stream.trap else None,
        phases=[{"callback": p.callback, "action": p.action, "status": p.status} for p in phases],
        upstream_request=message_dict(stream.upstream_request.headers, stream.upstream_request.body,
                                      stream.upstream_request.complete),
        response=message_dict(stream.downstream_response.headers, stream.downstream_response.body,
                              stream.downstream_response.complete),
        local_reply=None if reply is None else {"status": reply.status_code, "details": reply.details,
                                                "body": printable(reply.body), "headers": reply.headers},
        http_calls=[{"cluster": c.cluster, "headers": c.headers.items(), "body": printable(c.body),
                     "timeout_ms": c.timeout_ms} for c in plugin.pending_http_calls],
        logs=[str(r) for r in plugin.logs],
        metrics=host.metrics.snapshot(),
    )
    return result, 0 if result["ok"] else 1


def exchange(stream: HttpStream, headers: list[tuple[str, str]], body: bytes, args: argparse.Namespace,
             response_headers: list[tuple[str, str]], response_body: bytes) -> list[Any]:
    """Request headers and body, then the upstream response unless the filter answered or held the request."""
    names = {k for k, _ in headers}
    pseudo = [(k, v) for k, v in ((":method", args.method), (":path", args.path), (":authority", "localhost"),
                                  (":scheme", "http")) if k not in names]
    phases = [stream.send_request_headers(pseudo + headers, end_of_stream=not body)]
    if body and stream.local_reply is None and stream.trap is None:
        phases.append(stream.send_request_body(body, end_of_stream=True))
    if stream.local_reply is None and stream.trap is None and stream.upstream_request.headers is not None:
        status = [(":status", str(args.response_status))]
        phases.append(stream.send_response_headers(status + response_headers, end_of_stream=not response_body))
        if response_body and stream.trap is None and stream.local_reply is None:
            phases.append(stream.send_response_body(response_body, end_of_stream=True))
    return phases


def _print_message(title: str, m: dict[str, Any] | None, missing: str) -> None:
    if m is None:
        print(f"{title}: {missing}")
        return
    print(f"{title}:{'' if m['complete'] else ' (incomplete)'}")
    for k, v in m["headers"]:
        print(f"  {k}: {v}")
    print(f"  body: {m['body']!r}" if m["body"] else "  body: (empty)")


def print_run(r: dict[str, Any]) -> None:
    if "phases" not in r:
        print(f"{r['module']}: REJECTED\nerror: {r['error']}")
        print(f"filter log lines:{'' if r['logs'] else ' none'}")
        for line in r["logs"]:
            print(f"  {line}")
        return
    print("phases:")
    for p in r["phases"]:
        raw = "" if p["action"] is None else f" (returned {p['action']})"
        print(f"  {p['callback']}: {p['status']}{raw}")
    if r["error"]:
        print(f"trap: {r['error']}")
    _print_message("upstream request", r["upstream_request"], "not sent (the filter did not let the request through)")
    _print_message("response to client", r["response"], "none")
    lr = r["local_reply"]
    print("local reply: none" if lr is None else f"local reply: {lr['status']} details={lr['details']!r} body={lr['body']!r}")
    print(f"pending HTTP callouts: {'none' if not r['http_calls'] else ''}")
    for c in r["http_calls"]:
        target = dict(c["headers"])
        print(f"  {c['cluster']}: {target.get(':method', '')} {target.get(':path', '')} timeout {c['timeout_ms']} ms")
    print(f"logs:{' none' if not r['logs'] else ''}")
    for line in r["logs"]:
        print(f"  {line}")
    print(f"metrics:{' none' if not r['metrics'] else ''}")
    for name, value in r["metrics"].items():
        print(f"  {name} = {value}")


# -- parity -----------------------------------------------------------------------------

_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def callout_arg(text: str) -> tuple[str, Any]:
    """'CLUSTER=STATUS[:BODY]' -> (cluster, Response)."""
    from .parity import Response

    cluster, sep, answer = text.partition("=")
    status, _, body = answer.partition(":")
    if not sep or not _CLUSTER_NAME.match(cluster) or not status.isdigit() or not 100 <= int(status) <= 599:
        raise UsageError(f"--callout {text!r}: expected CLUSTER=STATUS[:BODY], e.g. auth=200:ok "
                         "(cluster: letters, digits, '_', '-', '.'; status 100-599)")
    return cluster, Response(int(status), {"content-type": "text/plain"}, body)


def cmd_parity(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from .envoy.validate import find_envoy
    from .parity import Connection, Filter, Request, Response, Scenario, run_parity

    if args.requests < 1:
        raise UsageError("--requests must be at least 1")
    callouts = dict(callout_arg(c) for c in args.callout)
    read_wasm(args.module)
    try:
        find_envoy()
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    body = text_arg(args.body, "--body")
    response_headers = [header_arg(h, "--response-header") for h in args.response_header] or [("content-type", "text/plain")]
    scenario = Scenario(
        [Filter(args.module, text_arg(args.config, "--config") or "", text_arg(args.vm_config, "--vm-config") or "",
                args.root_id, args.vm_id, args.name)],
        [Request(args.method, args.path, [header_arg(h, "-H") for h in args.header], body) for _ in range(args.requests)],
        Response(args.response_status, response_headers, text_arg(args.response_body, "--response-body") or "ok"),
        callouts,
        connections=[Connection([(text_arg(c, "--tcp") or "").encode("utf-8", "surrogateescape") for c in args.tcp])
                     for _ in range(args.requests)] if args.tcp else None,
    )
    report = run_parity(scenario)
    result = {"command": "parity", "module": args.module, "ok": True, "error": None, **report.as_dict(),
              "text": report.text()}
    return result, 0 if report.identical else 1


def print_parity(r: dict[str, Any]) -> None:
    for side in ("envoy", "host"):
        if r[side]["refusal"]:
            print(f"{side} refused the filter: {r[side]['refusal']}")
    print(r["text"])


# -- envoy dev loop -------------------------------------------------------------------


def cmd_envoy_up(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from .envoy.devloop import DevLoopOptions, default_build_command, run_dev_loop

    root = Path(args.root).resolve()
    build = default_build_command(root) if args.watch and (root / "filters" / "build.py").is_file() else None
    opts = DevLoopOptions(build_command=build, root=root, watch=args.watch, listen_port=args.port)
    try:
        return {}, run_dev_loop(options=opts, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:  # Ctrl-C outside the loop's own handler (during the first build)
        return {}, 130


def cmd_envoy_publish(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from .envoy.publish import publish
    from .envoy.validate import PublishError

    read_wasm(args.module)
    ecds = Path(args.ecds or Path("envoy") / "ecds" / f"{args.name}.yaml")
    if not ecds.is_file():
        raise CliError(f"ECDS file {ecds}: no such file (the one Envoy's config_discovery path_config_source names)")
    try:
        res = publish(ecds, args.name, Path(args.module), text_arg(args.config, "--config"), root_id=args.root_id,
                      vm_id=args.vm_id, admin_url=args.admin or None, validate=not args.skip_envoy)
    except PublishError as e:
        first, *details = str(e).splitlines()
        # "[time][thread][level][logger] [source:line] message" -> "[level][logger] message"
        log = [re.sub(r"^\[[^]]*\]\[\d+\](\[\w+\]\[\w+\]) \[[^]]*\] ", r"\1 ", d.strip()) for d in details]
        return {"command": "envoy publish", "ok": False, "filter": args.name, "error": first.rstrip(":"),
                "envoy_log": log}, 1
    result = {"command": "envoy publish", "ok": True, "filter": res.filter_name, "ecds_file": str(ecds),
              "changed": res.changed, "version": res.version, "module": res.wasm_path, "sha256": res.sha256,
              "configuration": res.configuration, "validate_seconds": round(res.validate_seconds, 4),
              "reload_seconds": None if res.reload_seconds is None else round(res.reload_seconds, 4)}
    return result, 0


def print_publish(r: dict[str, Any]) -> None:
    if not r["ok"]:
        print(f"proxywasm: error: {r['error']}", file=sys.stderr)
        for line in r["envoy_log"]:
            print(f"    {line}", file=sys.stderr)
        return
    if not r["changed"]:
        print(f"{r['filter']}: unchanged, {r['ecds_file']} already serves this module and configuration")
        return
    print(f"{r['filter']}: published {r['module']}")
    print(f"  ECDS file {r['ecds_file']} (version {r['version']}), validated in {r['validate_seconds'] * 1000:.0f} ms")
    if r["reload_seconds"] is None:
        print("  not confirmed: no admin URL given")
    else:
        print(f"  Envoy reloaded it {r['reload_seconds'] * 1000:.1f} ms after the rename")


# -- entry point --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    plugin = argparse.ArgumentParser(add_help=False)
    plugin.add_argument("--config", metavar="STR|@FILE", help="plugin configuration")
    plugin.add_argument("--vm-config", metavar="STR|@FILE", help="VM configuration")
    plugin.add_argument("--root-id", default="", metavar="ID")
    plugin.add_argument("--vm-id", default="", metavar="ID")
    plugin.add_argument("--name", default="", help="plugin name")

    parser = argparse.ArgumentParser(prog="proxywasm", description="Inspect, validate and run Proxy-Wasm filters "
                                     "with Envoy 1.40 semantics.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", parents=[common], help="ABI, toolchain, callbacks, imports Envoy lacks")
    p.add_argument("module")
    p.set_defaults(func=lambda a: (inspect_module(a.module), 0), show=print_inspect)

    p = sub.add_parser("validate", parents=[common, plugin], help="load a module, or every Wasm filter of an Envoy YAML")
    p.add_argument("target", metavar="MODULE|ENVOY_YAML")
    p.add_argument("--schema", choices=sorted(SCHEMAS), help="check the configuration against this filter's schema")
    p.add_argument("--skip-envoy", action="store_true", help="do not run envoy --mode validate on a YAML")
    p.set_defaults(func=cmd_validate, show=print_validate)

    p = sub.add_parser("run", parents=[common, plugin], help="send one HTTP exchange through the filter")
    p.add_argument("module")
    p.add_argument("--property", action="append", default=[], metavar="PATH=VALUE", help="property override (string)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'name: value'", help="request header")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--body", metavar="STR|@FILE", help="request body")
    p.add_argument("--response-status", type=int, default=200, metavar="N")
    p.add_argument("--response-header", action="append", default=[], metavar="'name: value'")
    p.add_argument("--response-body", metavar="STR|@FILE")
    p.add_argument("--cluster", action="append", default=[], metavar="NAME", help="a cluster callouts may target")
    p.set_defaults(func=cmd_run, show=print_run)

    p = sub.add_parser("parity", parents=[common, plugin], help="the same requests through a real Envoy 1.40 and "
                       "the host; print every difference (exit 1 if any)")
    p.add_argument("module")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'name: value'", help="request header")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--body", metavar="STR|@FILE", help="request body")
    p.add_argument("--response-status", type=int, default=200, metavar="N", help="the upstream's status")
    p.add_argument("--response-header", action="append", default=[], metavar="'name: value'")
    p.add_argument("--response-body", metavar="STR|@FILE", help="the upstream's body (default 'ok')")
    p.add_argument("--callout", action="append", default=[], metavar="CLUSTER=STATUS[:BODY]",
                   help="a cluster the filter may call, and its answer")
    p.add_argument("--requests", type=int, default=2, metavar="N", help="send the request N times (default 2)")
    p.add_argument("--tcp", action="append", default=[], metavar="STR|@FILE", help="run the module as a network "
                   "filter instead: N connections (--requests), each writing every --tcp chunk in order")
    p.set_defaults(func=cmd_parity, show=print_parity)

    envoy = sub.add_parser("envoy", help="run a real Envoy with the project's filters")
    envoy_sub = envoy.add_subparsers(dest="envoy_command", required=True)
    p = envoy_sub.add_parser("up", help="start Envoy with filters/out/*.wasm via ECDS (Ctrl-C stops)")
    p.add_argument("--watch", action="store_true", help="rebuild (filters/build.py) and hot-reload on change")
    p.add_argument("--root", default=".", help="repository root (default: current directory)")
    p.add_argument("--port", type=int, default=10000, help="listener port")
    p.set_defaults(func=cmd_envoy_up, show=None, json=False)
    p = envoy_sub.add_parser("publish", parents=[common], help="hot-swap a filter's module and configuration "
                             "in a running Envoy (validate, then rename a new ECDS file)")
    p.add_argument("name", metavar="NAME", help="HTTP filter name (= ECDS resource name)")
    p.add_argument("module", metavar="MODULE")
    p.add_argument("--config", metavar="STR|@FILE", help="plugin configuration (default: keep the published one)")
    p.add_argument("--root-id", metavar="ID", help="default: keep the published one")
    p.add_argument("--vm-id", metavar="ID", help="default: keep the published one")
    p.add_argument("--ecds", metavar="FILE", help="the ECDS file Envoy watches (default: envoy/ecds/NAME.yaml)")
    p.add_argument("--admin", metavar="URL", default="http://127.0.0.1:19000",
                   help="Envoy admin, to confirm the reload (default: %(default)s; '' = do not wait)")
    p.add_argument("--skip-envoy", action="store_true", help="no envoy --mode validate pre-flight")
    p.set_defaults(func=cmd_envoy_publish, show=print_publish)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    for stream in (sys.stdout, sys.stderr):  # text the terminal cannot show (or raw bytes) comes out escaped
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    show: Callable[[dict[str, Any]], None] | None = args.show
    code = 1
    try:
        result, code = args.func(args)
        if args.json:
            print(json.dumps(result, indent=2))
        elif show is not None:
            show(result)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `proxywasm inspect x.wasm | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"proxywasm: error: {e}", file=sys.stderr)
        return 2
    except CliError as e:
        if args.json:
            print(json.dumps({"command": args.command, "ok": False, "error": str(e)}))
        print(f"proxywasm: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("PROXYWASM_DEBUG"):
            raise
        print(f"proxywasm: error: internal error: {type(e).__name__}: {e} (set PROXYWASM_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
