"""`proxywasm run MODULE`: one HTTP exchange through the filter, callouts answered as told."""
from __future__ import annotations

import argparse
from typing import Any

from ..abi import LogLevel
from ..errors import ModuleLoadError, PluginRejected
from ..host import Host
from ..http import HttpStream, PhaseResult
from ..plugin import Plugin
from .common import (
    PluginOptions,
    Result,
    UsageError,
    body_arg,
    callout_arg,
    headers_arg,
    printable,
    property_arg,
    read_wasm,
)

LOG_LEVELS = [level.name.lower() for level in LogLevel]


def register(sub: Any, common: argparse.ArgumentParser, plugin: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common, plugin], help="send one HTTP exchange through the filter")
    p.add_argument("module")
    p.add_argument("--property", action="append", default=[], metavar="PATH=VALUE", help="property override (string)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'name: value'", help="request header")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--body", metavar="STR|@FILE", help="request body")
    p.add_argument("--trailer", action="append", default=[], metavar="'name: value'", help="request trailer")
    p.add_argument("--response-status", type=int, default=200, metavar="N")
    p.add_argument("--response-header", action="append", default=[], metavar="'name: value'")
    p.add_argument("--response-body", metavar="STR|@FILE")
    p.add_argument("--response-trailer", action="append", default=[], metavar="'name: value'")
    p.add_argument("--cluster", action="append", default=[], metavar="NAME",
                   help="a cluster callouts may target; its calls stay pending (shown in the report)")
    p.add_argument("--callout", action="append", default=[], metavar="CLUSTER=STATUS[:BODY]",
                   help="a cluster callouts may target, and the answer each call to it gets")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="Envoy's wasm log level (default info)")
    p.set_defaults(func=cmd_run, show=print_run)


class Exchange:
    """The parsed request and response, and the callout answers."""

    def __init__(self, args: argparse.Namespace):
        self.headers = headers_arg(args.header, "-H")
        self.body = body_arg(args.body, "--body")
        self.trailers = headers_arg(args.trailer, "--trailer")
        self.response_headers = headers_arg(args.response_header, "--response-header")
        self.response_body = body_arg(args.response_body, "--response-body")
        self.response_trailers = headers_arg(args.response_trailer, "--response-trailer")
        self.callouts = dict(callout_arg(c) for c in args.callout)
        if not 100 <= args.response_status <= 999:
            raise UsageError(f"--response-status {args.response_status}: expected 100-999")
        self.answered: list[dict[str, Any]] = []
        self.args = args

    def request_pseudo(self) -> list[tuple[str, str]]:
        names = {k for k, _ in self.headers}
        return [(k, v) for k, v in ((":method", self.args.method), (":path", self.args.path),
                                    (":authority", "localhost"), (":scheme", "http")) if k not in names]

    def answer_callouts(self, host: Host) -> None:
        """Answer every pending call to a --callout cluster (answers may make new calls)."""
        for _ in range(100):  # a filter that calls again from each answer stops here
            due = [c for c in host.pending_http_calls if c.cluster in self.callouts]
            if not due:
                return
            call = due[0]
            status, body = self.callouts[call.cluster]
            self.answered.append({"cluster": call.cluster, "method": call.headers.get(":method"),
                                  "path": call.headers.get(":path"), "status": status, "body": body})
            call.respond(status, {"content-type": "text/plain"}, body)

    def run(self, stream: HttpStream, host: Host) -> list[PhaseResult]:
        """Request headers, body, trailers, then the upstream response unless the filter answered or held
        the request; callouts are answered after each phase."""
        phases: list[PhaseResult] = []

        def step(send: Any, *args: Any, **kw: Any) -> None:
            if stream.local_reply is None and stream.trap is None:
                phases.append(send(*args, **kw))
                self.answer_callouts(host)

        step(stream.send_request_headers, self.request_pseudo() + self.headers,
             end_of_stream=not self.body and not self.trailers)
        if self.body:
            step(stream.send_request_body, self.body, end_of_stream=not self.trailers)
        if self.trailers:
            step(stream.send_request_trailers, self.trailers)
        if stream.upstream_request.headers is None:
            return phases
        status = [(":status", str(self.args.response_status))]
        step(stream.send_response_headers, status + self.response_headers,
             end_of_stream=not self.response_body and not self.response_trailers)
        if self.response_body:
            step(stream.send_response_body, self.response_body, end_of_stream=not self.response_trailers)
        if self.response_trailers:
            step(stream.send_response_trailers, self.response_trailers)
        return phases


def message_dict(message: Any) -> dict[str, Any] | None:
    if message.headers is None:
        return None
    trailers = message.trailers.items() if message.trailers is not None else []
    return {"headers": message.headers.items(), "body": printable(message.body), "trailers": trailers,
            "complete": message.complete}


def cmd_run(args: argparse.Namespace) -> Result:
    read_wasm(args.module)
    opts = PluginOptions.from_args(args.module, args)
    exchange = Exchange(args)
    properties = dict(property_arg(p) for p in args.property)
    host = Host(log_level=args.log_level)
    for cluster in [*args.cluster, *exchange.callouts]:
        host.add_cluster(cluster)
    result: dict[str, Any] = {"command": "run", "module": args.module}
    try:
        plugin = opts.load(host, properties=properties, raise_on_trap=False)
    except (PluginRejected, ModuleLoadError) as e:
        result.update(ok=False, error=getattr(e, "message", str(e)), logs=[str(r) for r in getattr(e, "logs", [])])
        return result, 1
    stream = plugin.http_stream()
    exchange.answer_callouts(host)  # calls made at start-up
    phases = exchange.run(stream, host)
    stream.complete()
    result.update(report(stream, plugin, host, phases), answered_calls=exchange.answered)
    return result, 0 if result["ok"] else 1


def report(stream: HttpStream, plugin: Plugin, host: Host, phases: list[PhaseResult]) -> dict[str, Any]:
    reply = stream.local_reply
    return {
        "ok": stream.trap is None,
        "error": stream.trap.message if stream.trap else None,
        "phases": [{"callback": p.callback, "action": p.action, "status": p.status} for p in phases],
        "upstream_request": message_dict(stream.upstream_request),
        "response": message_dict(stream.downstream_response),
        "local_reply": None if reply is None else {"status": reply.status_code, "details": reply.details,
                                                   "body": printable(reply.body), "headers": reply.headers},
        "http_calls": [{"cluster": c.cluster, "headers": c.headers.items(), "body": printable(c.body),
                        "timeout_ms": c.timeout_ms} for c in plugin.pending_http_calls],
        "logs": [str(r) for r in plugin.logs],
        "metrics": host.metrics.snapshot(),
    }


def _print_message(title: str, m: dict[str, Any] | None, missing: str) -> None:
    if m is None:
        print(f"{title}: {missing}")
        return
    print(f"{title}:{'' if m['complete'] else ' (incomplete)'}")
    for k, v in m["headers"]:
        print(f"  {k}: {v}")
    print(f"  body: {m['body']!r}" if m["body"] else "  body: (empty)")
    for k, v in m["trailers"]:
        print(f"  trailer {k}: {v}")


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
    if r["answered_calls"]:
        print("answered HTTP callouts:")
        for c in r["answered_calls"]:
            print(f"  {c['cluster']}: {c['method']} {c['path']} -> {c['status']} {c['body']!r}")
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
