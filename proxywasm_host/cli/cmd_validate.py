"""`proxywasm validate MODULE|ENVOY_YAML`: start a module in the host as Envoy would (with
the project's filter schemas), or every Wasm filter of an Envoy configuration."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..filter_schemas import SCHEMAS, check, schema_for_module
from ..inspect import run_startup
from ..module import WASM_MAGIC
from .common import CliError, PluginOptions, Result, UsageError, read_file, read_wasm
from .envoy_yaml import find_wasm_filters, load_yaml, plugin_options, run_envoy_validate

YAML_SUFFIXES = (".yaml", ".yml", ".json")


def register(sub: Any, common: argparse.ArgumentParser, plugin: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", parents=[common, plugin], help="load a module, or every Wasm filter of an Envoy YAML")
    p.add_argument("target", metavar="MODULE|ENVOY_YAML")
    p.add_argument("--schema", choices=sorted(SCHEMAS), help="check the configuration against this filter's schema")
    p.add_argument("--skip-envoy", action="store_true", help="do not run envoy --mode validate on a YAML")
    p.set_defaults(func=cmd_validate, show=print_validate)


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
    """Schema check (for the project's filters), then the start-up `proxywasm inspect` runs too."""
    errors = schema_errors(schema, opts.configuration)
    startup = run_startup(opts.source, **opts.host_options())
    return {"ok": bool(startup.ok) and not errors, "schema": schema, "schema_errors": errors, "abi": startup.abi,
            "error": startup.error, "logs": startup.logs}


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


def validate_module(args: argparse.Namespace) -> Result:
    read_wasm(args.target)
    opts = PluginOptions.from_args(args.target, args)
    schema = args.schema or schema_for_module(args.target)
    result = {"command": "validate", "kind": "module", "module": args.target, **validate_plugin(opts, schema)}
    return result, 0 if result["ok"] else 1


def validate_envoy(args: argparse.Namespace) -> Result:
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


def cmd_validate(args: argparse.Namespace) -> Result:
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


