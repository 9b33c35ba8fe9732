"""`proxywasm envoy up` (a real Envoy serving your filters, hot-reloaded) and
`proxywasm envoy publish` (hot-swap one filter of a running Envoy)."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from ..module import cache_dir
from . import envoy_image
from .common import CliError, Result, UsageError, progress, read_wasm, text_arg

DEFAULT_ADMIN = "http://127.0.0.1:19000"


def register(sub: Any, common: argparse.ArgumentParser, plugin: argparse.ArgumentParser) -> None:
    envoy = sub.add_parser("envoy", help="run a real Envoy with your filters, hot-swap a filter in a running Envoy")
    envoy_sub = envoy.add_subparsers(dest="envoy_command", required=True)
    p = envoy_sub.add_parser("up", help="start Envoy with filters mounted via ECDS (Ctrl-C stops); by default the "
                             "project's filters/out/*.wasm")
    p.add_argument("--filter", action="append", default=[], metavar="NAME=MODULE[:CONFIG]", dest="filters",
                   help="serve this module as HTTP filter NAME, in chain order (CONFIG: STR|@FILE); repeatable")
    p.add_argument("--watch", action="store_true", help="hot-reload on change: the --filter modules and config "
                   "files, or (without --filter) rebuild filters/ with filters/build.py")
    p.add_argument("--root", default=".", help="repository root (default: current directory)")
    p.add_argument("--port", type=int, default=10000, help="listener port (0: a free one)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_envoy_up, show=None, json=False)

    p = envoy_sub.add_parser("publish", parents=[common], help="hot-swap a filter's module and configuration "
                             "in a running Envoy (check, then rename a new ECDS file)")
    p.add_argument("name", metavar="NAME", help="HTTP filter name (= ECDS resource name)")
    p.add_argument("module", metavar="MODULE")
    p.add_argument("--config", metavar="STR|@FILE", help="plugin configuration (default: keep the published one)")
    p.add_argument("--root-id", metavar="ID", help="default: keep the published one")
    p.add_argument("--vm-id", metavar="ID", help="default: keep the published one")
    p.add_argument("--ecds", metavar="FILE", help="the ECDS file Envoy watches (default: the one of the running "
                   "`proxywasm envoy up`, else envoy/ecds/NAME.yaml)")
    p.add_argument("--admin", metavar="URL", help="Envoy admin, to confirm the reload (default: the running "
                   f"`proxywasm envoy up`'s, else {DEFAULT_ADMIN}; '' = do not wait)")
    p.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                   help="how long to wait for Envoy to apply the update (default 15)")
    p.add_argument("--skip-envoy", action="store_true", help="no configure check before Envoy sees it (only the "
                   "bytes are validated): Envoy's own refusal judges, the previous filter keeps serving")
    p.add_argument("--envoy-validate", action="store_true", help="also run envoy --mode validate (niced; seconds "
                   "on a busy machine) after the host's configure check")
    p.set_defaults(func=cmd_envoy_publish, show=print_publish)
    envoy_image.register(envoy_sub, common)


# -- the running `envoy up` -------------------------------------------------------------


def state_file() -> Path:
    """Where `envoy up` records the instance it runs, for `envoy publish` to find."""
    return cache_dir() / "envoy-up.json"


def running_instance() -> dict[str, Any] | None:
    """The `envoy up` instance still running, or None."""
    try:
        state = json.loads(state_file().read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def _record(env: Any, names: list[str]) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"pid": os.getpid(), "admin_url": env.admin_url, "log": str(env.log_path), "clusters": list(env.clusters),
             "ecds": {n: str(env.ecds_path(n)) for n in names}, "wasm_dir": str(env.wasm_dir)}
    path.write_text(json.dumps(state, indent=2))


# -- envoy up -----------------------------------------------------------------------------


def filter_arg(text: str) -> tuple[str, Path, str]:
    """'NAME=MODULE[:CONFIG]' (CONFIG: STR|@FILE) -> (name, module, configuration)."""
    name, sep, rest = text.partition("=")
    module, _, config = rest.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or not module:
        raise UsageError(f"--filter {text!r}: expected NAME=MODULE[:CONFIG], e.g. my_filter=out/filter.wasm:'{{}}'")
    read_wasm(module)
    return name, Path(module).resolve(), text_arg(config, f"--filter {name} config") or ""


def cmd_envoy_up(args: argparse.Namespace) -> Result:
    from ..envoy.devloop import DevFilter, DevLoopOptions, default_build_command, run_dev_loop

    root = Path(args.root).resolve()
    given = [filter_arg(f) for f in args.filters]
    if len({name for name, _, _ in given}) != len(given):
        raise UsageError("--filter: each NAME once")
    filters = [DevFilter(name, module, configuration=config) for name, module, config in given] or None
    build = None
    if args.watch and filters is None and (root / "filters" / "build.py").is_file():
        build = default_build_command(root)
    opts = DevLoopOptions(build_command=build, root=root, watch=args.watch, listen_port=args.port,
                          sources=() if filters else DevLoopOptions.sources)
    names = [f[0] for f in given] or ["jwt_authn", "ratelimit"]

    def ready(env: Any) -> None:
        _record(env, names)
        name, module = (given[0][0], shlex.quote(str(given[0][1]))) if given else ("ratelimit", "filters/out/ratelimit.wasm")
        print(f"admin: {env.admin_url}", flush=True)
        print(f"publish a new build: proxywasm envoy publish {name} {module}", flush=True)

    progress("building filters/ with filters/build.py, then starting Envoy" if build else "starting Envoy")
    try:
        return {}, run_dev_loop(filters, opts, log=lambda line: print(line, flush=True), on_ready=ready)
    except KeyboardInterrupt:  # Ctrl-C outside the loop's own handler (during the first build)
        return {}, 130
    finally:
        if (running_instance() or {}).get("pid") == os.getpid():
            state_file().unlink(missing_ok=True)


# -- envoy publish --------------------------------------------------------------------------


def publish_target(args: argparse.Namespace) -> dict[str, Any]:
    """The ECDS file, admin URL, log and wasm directory to publish to: those given, else the running
    `envoy up`'s (for a filter it serves), else the repository's envoy/ layout."""
    up = running_instance()
    if up is not None and args.name in up["ecds"] and args.ecds is None:
        return {"ecds": Path(up["ecds"][args.name]), "admin": up["admin_url"] if args.admin is None else args.admin,
                "log": up["log"], "wasm_dir": up["wasm_dir"], "clusters": up["clusters"]}
    ecds = Path(args.ecds or Path("envoy") / "ecds" / f"{args.name}.yaml")
    return {"ecds": ecds, "admin": DEFAULT_ADMIN if args.admin is None else args.admin, "log": None,
            "wasm_dir": None, "clusters": []}


def cmd_envoy_publish(args: argparse.Namespace) -> Result:
    from ..envoy.publish import PublishTimeout, publish
    from ..envoy.validate import PublishError

    read_wasm(args.module)
    target = publish_target(args)
    ecds = target["ecds"]
    if not ecds.is_file():
        raise CliError(f"ECDS file {ecds}: no such file (the one Envoy's config_discovery path_config_source names)")
    base = {"command": "envoy publish", "filter": args.name, "ecds_file": str(ecds), "admin": target["admin"] or None}
    try:
        res = publish(ecds, args.name, Path(args.module), text_arg(args.config, "--config"), root_id=args.root_id,
                      vm_id=args.vm_id, admin_url=target["admin"] or None, validate=not args.skip_envoy,
                      envoy_validate=args.envoy_validate,
                      envoy_log=target["log"], wasm_dir=target["wasm_dir"], clusters=target["clusters"],
                      timeout=args.timeout, progress=progress)
    except PublishError as e:
        first, *details = str(e).splitlines()
        # "[time][thread][level][logger] [source:line] message" -> "[level][logger] message"
        log = [re.sub(r"^\[[^]]*\]\[\d+\](\[\w+\]\[\w+\]) \[[^]]*\] ", r"\1 ", d.strip()) for d in details]
        outcome = "timeout" if isinstance(e, PublishTimeout) else "refused"
        return {**base, "ok": False, "outcome": outcome, "error": first.rstrip(":"), "envoy_log": log}, 1
    result = {**base, "ok": True, "outcome": "published" if res.changed else "unchanged", "changed": res.changed,
              "version": res.version, "module": res.wasm_path, "sha256": res.sha256,
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
