"""Run a call that could hang (a runaway guest) in a fresh process under a watchdog, so that a
broken execution deadline fails the test instead of hanging the suite."""
from __future__ import annotations

import multiprocessing
from typing import Any, Callable

import pytest

#: how long the child may take: its start-up (imports, compiling the module) plus the call
WATCHDOG_SECONDS = 45.0


def _child(target: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
    try:
        target(*args)
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on whatever was raised
        out.put((type(exc).__name__, str(exc)))
        return
    out.put((None, "returned"))


def run_watched(target: Callable[..., Any], *args: Any, timeout: float = WATCHDOG_SECONDS) -> tuple[str | None, str]:
    """(exception type name, message) that `target(*args)` raised in a spawned process (None,
    "returned" if it returned); fails the test if it is still running after `timeout` seconds.
    `target` must be a module-level function (it is imported by name in the child); spawn, not
    fork, so that the child has its own epoch ticker thread."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_child, args=(target, args, out), daemon=True)
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"watchdog: {target.__name__} still ran after {timeout:.0f} s: the execution deadline never fired")
    assert child.exitcode == 0, f"{target.__name__}: the child process died (exit code {child.exitcode})"
    return out.get(timeout=5)
