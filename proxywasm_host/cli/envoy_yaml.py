"""Reading an Envoy configuration: safe YAML loading with limits, every Wasm filter in it
(inline, or in files a path_config_source names), each one's plugin options, and
`envoy --mode validate`."""
from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from .common import CliError, PluginOptions, progress, read_file

WASM_FILTER_TYPES = (
    "envoy.extensions.filters.http.wasm.v3.Wasm",
    "envoy.extensions.filters.network.wasm.v3.Wasm",
)
ENVOY_RUNTIMES = ("", "envoy.wasm.runtime.v8")


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


def typed_field(parent: dict[str, Any], key: str, where: str, kind: type, default: Any = None) -> Any:
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
    config = typed_field(found.typed_config, "config", "", dict)
    if config is None:
        raise CliError("config: missing PluginConfig")
    vm = typed_field(config, "vm_config", "config.", dict)
    if vm is None:
        raise CliError("config.vm_config: missing")
    runtime = vm.get("runtime", "")
    if runtime not in ENVOY_RUNTIMES:
        raise CliError(f"config.vm_config.runtime {runtime}: not in Envoy 1.40 release builds; allowed: envoy.wasm.runtime.v8")
    local = typed_field(typed_field(vm, "code", "config.vm_config.", dict, {}), "local", "config.vm_config.code.", dict)
    if local is None:
        raise CliError("config.vm_config.code.local: missing (remote code is not validated)")
    where = "config.vm_config.code.local."
    source: str | bytes
    if "filename" in local:
        name = typed_field(local, "filename", where, str, "")
        if "\0" in name:
            raise CliError(f"{where}filename {name!r}: not a file name (it contains a NUL byte)")
        path = base / name
        if not path.is_file():
            raise CliError(f"{where}filename {name}: no such file ({path})")
        source = str(path)
    elif "inline_bytes" in local:
        try:
            source = protobuf_base64(typed_field(local, "inline_bytes", where, str, ""))
        except binascii.Error:
            raise CliError(f"{where}inline_bytes: not base64 text") from None
    elif "inline_string" in local:
        source = typed_field(local, "inline_string", where, str, "").encode("utf-8", "surrogateescape")
    else:
        raise CliError("config.vm_config.code.local: needs filename, inline_bytes or inline_string")
    env_vars = typed_field(vm, "environment_variables", "config.vm_config.", dict, {})
    env = typed_field(env_vars, "key_values", "config.vm_config.environment_variables.", dict, {})
    return PluginOptions(
        source,
        unpack_any(config.get("configuration"), "config.configuration"),
        unpack_any(vm.get("configuration"), "config.vm_config.configuration"),
        typed_field(config, "root_id", "config.", str, ""),
        typed_field(vm, "vm_id", "config.vm_config.", str, ""),
        typed_field(config, "name", "config.", str, ""),
        {str(k): str(v) for k, v in env.items()},
    )


def run_envoy_validate(path: Path) -> dict[str, Any]:
    """`envoy --mode validate -c FILE`, run from the file's directory (so relative paths agree)."""
    from ..envoy.validate import find_envoy

    try:
        envoy = find_envoy()
        progress(f"running envoy --mode validate -c {path}")
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
