"""`proxywasm`: inspect a Proxy-Wasm module, validate a module or an Envoy configuration,
run one HTTP exchange through a filter, compare the host with Envoy, and run a dev loop or
hot-swap a filter in a running Envoy. One module per command; the analysis lives in the
library (proxywasm_host.inspect, proxywasm_host.envoy), the commands parse and print.

Exit codes: 0 ok, 1 invalid or rejected (including unreadable or malformed input
files), 2 usage error. Every command prints a human-readable report, or one JSON
object with `--json`.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

from ..extras import MissingExtra
from . import cmd_envoy, cmd_inspect, cmd_parity, cmd_run, cmd_validate
from .common import CliError, UsageError, common_parsers, set_quiet

COMMANDS = (cmd_inspect, cmd_validate, cmd_run, cmd_parity, cmd_envoy)


def package_version() -> str:
    try:
        return version("proxywasm-host")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxywasm", description="Inspect, validate and run Proxy-Wasm filters "
                                     "with Envoy 1.40 semantics.")
    parser.add_argument("--version", action="version", version=f"proxywasm-host {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    common, plugin = common_parsers()
    for command in COMMANDS:
        command.register(sub, common, plugin)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    for stream in (sys.stdout, sys.stderr):  # text the terminal cannot show (or raw bytes) comes out escaped
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.json or getattr(args, "quiet", False))
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
    except (CliError, MissingExtra) as e:  # MissingExtra: a command that needs an extra, named
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


__all__ = ["CliError", "UsageError", "build_parser", "main"]
