"""Filter log lines, captured per VM and filterable per plugin and per stream."""
from __future__ import annotations

import functools
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .abi import LogLevel

_logger = logging.getLogger("proxywasm")
_SEQUENCE = itertools.count()
_logger.addHandler(logging.NullHandler())  # a library: the application decides where filter lines go


@dataclass(slots=True)
class LogRecord:
    """One line a filter logged. Not frozen: a filter may log per request, and a frozen
    dataclass costs four times as much to build."""

    level: str  # "trace" … "critical"
    message: str
    context_id: int
    plugin: str
    source: Any = field(default=None, repr=False, compare=False)  # the Plugin object (VMs may be shared)
    prefix: str = field(default="", repr=False, compare=False)  # Envoy's: "wasm log<prefix>: <message>"
    seq: int = field(default_factory=_SEQUENCE.__next__, repr=False, compare=False)  # process-wide order
    thread: str = field(default="worker 0", repr=False, compare=False)  # Envoy's thread: "main" or "worker N"

    def __str__(self) -> str:
        return f"[{self.level}] {self.message}"


_PY_LEVELS = {
    LogLevel.TRACE: 5,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.CRITICAL: logging.CRITICAL,
}


#: A guest controls how much it logs: a line keeps its first LINE_LIMIT bytes (the rest is cut,
#: with a note), and a VM keeps its last RECORDS_LIMIT lines, no more than RECORDS_CHARS
#: characters of them (the oldest lines are dropped first; the newest is always kept).
LINE_LIMIT = 1 << 20
RECORDS_LIMIT = 100_000
RECORDS_CHARS = 64 << 20


class Records(deque):
    """A VM's log lines; `chars` counts the characters of their messages."""

    chars = 0


def new_records() -> Records:
    return Records(maxlen=RECORDS_LIMIT)


def clip(data: bytes | bytearray, total: int | None = None) -> str:
    """A log line from the guest's bytes, cut at LINE_LIMIT; `total` is its full length if longer."""
    total = len(data) if total is None else total
    text = bytes(data[:LINE_LIMIT]).decode("utf-8", "replace")
    return text if total <= LINE_LIMIT else f"{text}... [{total - LINE_LIMIT} more bytes cut by proxywasm-host]"


_NAMES = {level: level.name.lower() for level in LogLevel}


def emit(records: Records, level: LogLevel, message: str, context_id: int, plugin: Any, prefix: str,
         thread: str) -> None:
    """Record a line as Envoy's `wasm` logger would print it, and forward it to
    Python logging so pytest shows it with a failing test."""
    if len(records) == records.maxlen:
        records.chars -= len(records[0].message)  # the append drops it
    records.append(LogRecord(_NAMES[level], message, context_id, plugin.name, plugin, prefix, next(_SEQUENCE), thread))
    records.chars += len(message)
    while records.chars > RECORDS_CHARS and len(records) > 1:
        records.chars -= len(records.popleft().message)
    py_level = _PY_LEVELS.get(level, logging.INFO)
    if _logger.isEnabledFor(py_level) and _handled(py_level):
        _logger.log(py_level, "wasm log%s: %s", prefix, message)


def _handled(level: int) -> bool:
    """Whether a handler takes records of this level (logging's callHandlers walk): a filter that
    logs per request must not build Python log records nobody prints. Our NullHandler counts as a
    handler (logging's last resort stays out) but takes nothing."""
    logger: logging.Logger | None = _logger
    found = False
    while logger is not None:
        for handler in logger.handlers:
            found = True
            if level >= handler.level and not isinstance(handler, logging.NullHandler):
                return True
        logger = logger.parent if logger.propagate else None
    return not found and logging.lastResort is not None and level >= logging.lastResort.level


@functools.cache  # a context works its prefix out on its first line: once per request
def envoy_log_prefix(*parts: str) -> str:
    """Envoy's log prefix: each non-empty part after a space (measured on 1.40: stream contexts
    print the plugin name, root_id and vm_id; root contexts root_id and vm_id)."""
    return "".join(" " + p for p in parts if p)
