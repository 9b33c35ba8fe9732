"""Exception types. Each message names the module, callback, import or field at fault."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .logs import LogRecord


class ProxyWasmError(Exception):
    """Base class of every error this package raises."""


class ModuleLoadError(ProxyWasmError):
    """The module cannot be loaded where Envoy would refuse it too (bad bytes, no ABI marker, ...)."""


class MissingImportError(ModuleLoadError):
    """The module imports a function Envoy 1.40 does not provide for its ABI version."""

    def __init__(self, module_name: str, missing: Sequence[str], abi: str):
        self.missing = list(missing)
        names = ", ".join(self.missing)
        super().__init__(
            f"{module_name}: Failed to load Wasm module due to a missing import: {names} "
            f"(not provided by Envoy 1.40 for ABI {abi})"
        )


#: a filter log line in an exception message or a test report keeps its first SHOWN_CHARS
#: characters: a filter may log megabyte lines, and a report of them would stall the test run
SHOWN_CHARS = 1000


def shown(record: "LogRecord") -> str:
    """A log line as messages and reports show it ("[info] text"), cut at SHOWN_CHARS."""
    text = str(record)
    cut = len(text) - SHOWN_CHARS
    return text if cut <= 0 else f"{text[:SHOWN_CHARS]}... [{cut} more characters not shown]"


class _WithLogs(ProxyWasmError):
    def __init__(self, message: str, logs: "Sequence[LogRecord]" = ()):
        self.message = message  # without the log lines, which are in .logs
        self.logs = list(logs)
        if self.logs:
            message += "\nfilter log lines:\n" + "\n".join(f"  {shown(r)}" for r in self.logs[-50:])
        super().__init__(message)


class PluginRejected(_WithLogs):
    """proxy_on_vm_start or proxy_on_configure returned false (Envoy rejects the configuration)."""


class GuestTrap(_WithLogs):
    """The guest trapped (or a hostcall failed fatally) inside a callback; Envoy marks the VM failed."""

    def __init__(self, callback: str, detail: str, backtrace: str, logs: "Sequence[LogRecord]" = ()):
        self.callback = callback
        self.detail = detail
        self.backtrace = backtrace
        super().__init__(f"Function: {callback} failed: {detail}\n{backtrace}".rstrip(), logs)


class DeadlineExceeded(GuestTrap):
    """A callback ran past the configured execution deadline (an infinite loop, usually)."""


class VmFailed(ProxyWasmError):
    """The VM failed earlier (a trap) and the plugin's failure policy does not allow more calls."""


class EnvoyWouldCrash(ProxyWasmError):
    """The guest did what Envoy 1.40 does not survive (the process aborts): the test cannot go on as Envoy would."""


class StreamStateError(ProxyWasmError):
    """The test drove a stream in a way Envoy never would (e.g. a response after a local reply)."""
