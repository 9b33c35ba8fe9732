"""`proxywasm inspect MODULE`: the report of proxywasm_host.inspect, printed."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import ModuleLoadError
from ..inspect import inspect_module
from .common import CliError, PluginOptions, Result, read_wasm


def register(sub: Any, common: argparse.ArgumentParser, plugin: argparse.ArgumentParser) -> None:
    p = sub.add_parser("inspect", parents=[common, plugin],
                       help="ABI, toolchain, callbacks, imports Envoy lacks, whether Envoy would load it")
    p.add_argument("module")
    p.add_argument("--no-start", action="store_true",
                   help="only the load-time checks: do not run the module's start-up (VM start, on_configure)")
    p.set_defaults(func=cmd_inspect, show=print_inspect)


def cmd_inspect(args: argparse.Namespace) -> Result:
    data = read_wasm(args.module)
    options = PluginOptions.from_args(args.module, args).host_options()
    try:
        report = inspect_module(data, label=args.module, start=not args.no_start, **options)
    except ModuleLoadError as e:
        raise CliError(f"module {e}") from None
    return {"command": "inspect", **report.as_dict()}, 0


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
    startup = r["startup"]
    if startup["ran"] and startup["logs"]:
        print("start-up log lines:")
        for line in startup["logs"]:
            print(f"  {line}")
    print(f"Envoy 1.40 would load it: {'yes' if r['envoy_would_load'] else 'no'}")
    for reason in r["envoy_refusals"]:
        print("  - " + reason.replace("\n", "\n      "))  # a trap's backtrace stays under its refusal
    print(f"  checked: {', '.join(r['checked'])}")
    if not startup["ran"] and r["envoy_would_load"]:
        print("  start-up not run (--no-start): `proxywasm validate` runs it")
