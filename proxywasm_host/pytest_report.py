"""What the pytest plugin prints: a failed test's host (filter logs, metrics, callouts) and
assertion explanations for Headers, LocalReply and log lists. Plain functions, so they are
testable and usable from another test runner."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .context import LocalReply
from .errors import shown
from .headers import Headers
from .logs import LogRecord

if TYPE_CHECKING:
    from .host import Host


# -- the failure report ---------------------------------------------------------------------


def _plugin_label(plugin: Any) -> str:
    return plugin.name or plugin.root_id or plugin.module.name


#: the most recent filter log lines a failure report shows
SHOWN_LINES = 1000


def host_report(host: "Host") -> str:
    """Filter log lines (once each, by plugin), metrics, pending callouts, undeclared clusters."""
    lines: list[str] = []
    logs = sorted(((_plugin_label(p), r) for p in host.plugins for r in p.logs), key=lambda lr: lr[1].seq)
    if logs:
        lines.append("filter logs:")
        if len(logs) > SHOWN_LINES:
            lines.append(f"  ... {len(logs) - SHOWN_LINES} earlier lines not shown (plugin.logs has them)")
        lines += [f"  {label} ctx={r.context_id} {shown(r)}" for label, r in logs[-SHOWN_LINES:]]
    metrics = host.metrics.snapshot()
    if metrics:
        lines.append("metrics:")
        lines += [f"  {name} = {value}" for name, value in metrics.items()]
    if host.pending_http_calls:
        lines.append("pending HTTP callouts (answer with call.respond(...), .timeout(), .fail()):")
        for c in host.pending_http_calls:
            lines.append(f"  token {c.token} to {c.cluster}: {c.headers.get(':method')} {c.headers.get(':path')}"
                         f" timeout {c.timeout_ms} ms")
    if host.pending_grpc:
        lines.append("pending gRPC calls and streams (answer with .receive(...), .close(...)):")
        lines += [f"  token {g.token} to {g.cluster}: {g.service}/{g.method}" for g in host.pending_grpc]
    for cluster in dict.fromkeys(host.undeclared_clusters):
        lines.append(f"callout to undeclared cluster {cluster!r}: the call returned BadArgument, as Envoy does for "
                     f"a cluster it does not know; declare it with host.add_cluster({cluster!r})")
    return "\n".join(lines)


# -- assertion explanations ----------------------------------------------------------------


def compare(op: str, left: Any, right: Any) -> list[str] | None:
    """pytest_assertrepr_compare's answer, or None to leave the comparison to pytest."""
    if op != "==":
        return None
    if isinstance(left, Headers) or isinstance(right, Headers):
        return _headers_diff(left, right) if isinstance(left, Headers) else _swap(_headers_diff(right, left))
    if isinstance(left, LocalReply) or isinstance(right, LocalReply):
        return _local_reply_diff(left, right)
    if _is_log_list(left) or _is_log_list(right):
        return _log_diff(left, right)
    return None


def _swap(lines: list[str] | None) -> list[str] | None:
    return lines and [lines[0].replace("(left)", "(right)", 1), *lines[1:]]


def _headers_diff(headers: Headers, other: Any) -> list[str] | None:
    if isinstance(other, Headers):
        other = other.items()
    if isinstance(other, Mapping):
        return _headers_vs_dict(headers, {str(k).lower(): v for k, v in other.items()})
    if isinstance(other, list):
        return _headers_vs_pairs(headers, other)
    return None


def _headers_vs_dict(headers: Headers, expected: dict[str, Any]) -> list[str]:
    out = ["Headers (left) differ from the dict, header by header:"]
    got = headers.to_dict()
    for name in dict.fromkeys([*got, *expected]):
        if name not in expected:
            out.append(f"  extra    {name}: {got[name]!r}")
        elif name not in got:
            out.append(f"  missing  {name}: {expected[name]!r}")
        elif got[name] != expected[name]:
            out.append(f"  differs  {name}: {got[name]!r} != {expected[name]!r}")
    if len(out) == 1:
        out.append("  (same names and values: a header repeated, or a value that is not a str)")
    return out


def _headers_vs_pairs(headers: Headers, expected: list[Any]) -> list[str]:
    out = ["Headers (left) differ from the list of pairs (order and repeats count):"]
    got = [f"{k}: {v}" for k, v in headers.items()]
    want = [f"{p[0]}: {p[1]}" if isinstance(p, (tuple, list)) and len(p) == 2 else repr(p) for p in expected]
    out += ["  " + line for line in difflib.ndiff(want, got) if line[:1] in "+- "]
    out.append("  (- expected, + actual)")
    return out


_REPLY_FIELDS = ("status_code", "body", "headers", "details", "grpc_status")


def _local_reply_diff(left: Any, right: Any) -> list[str]:
    if not isinstance(left, LocalReply) or not isinstance(right, LocalReply):
        reply, other = (left, right) if isinstance(left, LocalReply) else (right, left)
        return [f"a LocalReply ({reply.status_code}, details {reply.details!r}) == {type(other).__name__}",
                "  compare a field instead, e.g. stream.local_reply.status_code == 403"]
    out = ["LocalReply differs:"]
    for name in _REPLY_FIELDS:
        a, b = getattr(left, name), getattr(right, name)
        if a != b:
            out.append(f"  {name}: {a!r} != {b!r}")
    return out


def _is_log_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, LogRecord) for r in value)


def _log_line(value: Any) -> str:
    return str(value) if isinstance(value, LogRecord) else value if isinstance(value, str) else repr(value)


def _log_diff(left: Any, right: Any) -> list[str] | None:
    if not isinstance(left, list) or not isinstance(right, list):
        return None
    out = ["log lines differ (- right, + left):"]
    out += ["  " + line for line in difflib.ndiff([_log_line(r) for r in right], [_log_line(r) for r in left])
            if line[:1] in "+- "]
    if any(isinstance(r, str) for r in (*left, *right)):
        out.append("  note: a LogRecord never equals a str; compare [str(r) for r in logs] (\"[info] text\") "
                   "or [r.message for r in logs]")
    return out
