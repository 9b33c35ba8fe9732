"""Optional dependencies, grouped by purpose into the package's extras (see pyproject.toml):
the core (the host, the CLI's inspect/validate/run) needs only wasmtime, PyYAML and jsonschema."""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """A feature's dependency is not installed; the message is one line naming the extra to install."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or fail with one line that names the extra providing it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{feature} needs {module}: pip install 'proxywasm-host[{extra}]'") from None
