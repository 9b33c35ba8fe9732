"""`proxywasm parity MODULE`: the same requests through a real Envoy 1.40 and the host."""
from __future__ import annotations

import argparse
from typing import Any

from .common import CliError, Result, UsageError, body_arg, callout_arg, headers_arg, progress, read_wasm, text_arg


def register(sub: Any, common: argparse.ArgumentParser, plugin: argparse.ArgumentParser) -> None:
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


def cmd_parity(args: argparse.Namespace) -> Result:
    from ..envoy.validate import find_envoy
    from ..parity import Connection, Filter, Request, Response, Scenario, run_parity

    if args.requests < 1:
        raise UsageError("--requests must be at least 1")
    callouts = {cluster: Response(status, {"content-type": "text/plain"}, body)
                for cluster, (status, body) in map(callout_arg, args.callout)}
    read_wasm(args.module)
    try:
        find_envoy()
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    body = text_arg(args.body, "--body")
    response_headers = headers_arg(args.response_header, "--response-header") or [("content-type", "text/plain")]
    scenario = Scenario(
        [Filter(args.module, text_arg(args.config, "--config") or "", text_arg(args.vm_config, "--vm-config") or "",
                args.root_id, args.vm_id, args.name)],
        [Request(args.method, args.path, headers_arg(args.header, "-H"), body) for _ in range(args.requests)],
        Response(args.response_status, response_headers, text_arg(args.response_body, "--response-body") or "ok"),
        callouts,
        connections=[Connection([body_arg(c, "--tcp") for c in args.tcp]) for _ in range(args.requests)]
        if args.tcp else None,
    )
    progress("starting Envoy and running the scenario through it and the host")
    report = run_parity(scenario)
    result = {"command": "parity", "module": args.module, "ok": True, "error": None, **report.as_dict(),
              "text": report.text()}
    return result, 0 if report.identical else 1


def print_parity(r: dict[str, Any]) -> None:
    for side in ("envoy", "host"):
        if r[side]["refusal"]:
            print(f"{side} refused the filter: {r[side]['refusal']}")
    print(r["text"])
