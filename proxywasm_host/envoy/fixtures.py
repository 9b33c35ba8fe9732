"""Fixture logic as plain functions, so any pytest plugin (or script) can reuse it.

``integration/conftest.py`` wraps these in fixtures; the package's pytest plugin
can do the same.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from .config import FilterSpec
from .harness import EnvoyHarness
from .upstream import EchoUpstream


@contextmanager
def echo_upstream() -> Iterator[EchoUpstream]:
    """A started echo upstream, stopped afterwards."""
    with EchoUpstream() as up:
        yield up


@contextmanager
def envoy_harness(
    filters: Sequence[FilterSpec] = (), *, upstream: EchoUpstream | None = None, **kwargs: Any,
) -> Iterator[EnvoyHarness]:
    """A started ``EnvoyHarness``; Envoy's wasm log is printed if the body raises.

    ``PROXYWASM_ENVOY_DOCKER=1`` runs Envoy in a container instead (see ``docker_envoy.choose_image``).
    """
    kwargs.setdefault("use_docker", os.environ.get("PROXYWASM_ENVOY_DOCKER") == "1")
    env = EnvoyHarness(filters, upstream=upstream, **kwargs)
    env.start()
    try:
        yield env
    except BaseException:
        print(f"--- Envoy wasm log ({env.log_path}) ---")
        print("\n".join(env.wasm_log()[-60:]) or "(no wasm lines)")
        print("--- Envoy log tail ---")
        print(env.log_tail(30))
        raise
    finally:
        env.stop()


def harness_report_sections(funcargs: dict[str, Any]) -> list[tuple[str, str]]:
    """Report sections (title, text) with the wasm log of every harness a failed test used.

    Call from a ``pytest_runtest_makereport`` hook while fixtures are still alive.
    """
    out: list[tuple[str, str]] = []
    for name, value in funcargs.items():
        if isinstance(value, EnvoyHarness) and value.log_path.exists():
            wasm = "\n".join(value.wasm_log()[-80:]) or "(no wasm lines)"
            out.append((f"envoy wasm log ({name}, {value.log_path})", wasm))
            out.append((f"envoy log tail ({name})", value.log_tail(25)))
    return out
