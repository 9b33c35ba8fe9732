"""proxywasm-host: run compiled Proxy-Wasm filters from pytest with Envoy 1.40's semantics."""
from .abi import Action, BufferType, FilterStatus, LogLevel, MapType, MetricType, StreamType, WasmResult
from .callouts import HttpCall
from .context import LocalReply
from .errors import (
    DeadlineExceeded,
    EnvoyWouldCrash,
    GuestTrap,
    MissingImportError,
    ModuleLoadError,
    PluginRejected,
    ProxyWasmError,
    StreamStateError,
    VmFailed,
)
from .headers import Headers
from .host import Host
from .http import HttpStream, Message, PhaseResult
from .logs import LogRecord
from .module import ProxyWasmModule, load_module
from .plugin import Plugin

__all__ = [
    "Action", "BufferType", "DeadlineExceeded", "EnvoyWouldCrash", "FilterStatus", "GuestTrap", "Headers", "Host", "HttpCall",
    "HttpStream", "LocalReply", "LogLevel", "LogRecord", "MapType", "Message", "MetricType", "MissingImportError",
    "ModuleLoadError", "PhaseResult", "Plugin", "PluginRejected", "ProxyWasmError", "ProxyWasmModule",
    "StreamStateError", "StreamType", "VmFailed", "WasmResult", "load_module",
]
