"""What every command shares: its errors, reading inputs, option parsers, progress lines."""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host import Host
from ..module import WASM_MAGIC
from ..plugin import Plugin

Result = tuple[dict[str, Any], int]  # (the report, the exit code)


class CliError(Exception):
    """A problem with the input that ends the command with one line on stderr (exit 1)."""


class UsageError(CliError):
    """A malformed command line the parser could not catch (exit 2)."""


# -- progress --------------------------------------------------------------------------

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def progress(message: str) -> None:
    """A line on stderr for a step that takes seconds (none with -q or --json)."""
    if not _quiet:
        print(f"proxywasm: {message}", file=sys.stderr, flush=True)


# -- inputs --------------------------------------------------------------------------


def read_file(path: str | Path, what: str) -> bytes:
    """A file's bytes, or CliError with one clear line."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path}: is a directory") from None
    except OSError as e:
        raise CliError(f"{what} {path}: cannot read: {e.strerror}") from None
    except ValueError:  # an embedded NUL
        raise CliError(f"{what} {str(path)!r}: not a file name (it contains a NUL byte)") from None


def text_arg(value: str | None, what: str) -> str | None:
    """A STR|@FILE option value."""
    if value is None or not value.startswith("@"):
        return value
    return read_file(value[1:], what).decode("utf-8", "surrogateescape")


def body_arg(value: str | None, what: str) -> bytes:
    return (text_arg(value, what) or "").encode("utf-8", "surrogateescape")


def read_wasm(path: str | Path) -> bytes:
    data = read_file(path, "module")
    if data[:4] != WASM_MAGIC:
        raise CliError(f"module {path}: not a WebAssembly module (it does not start with \\0asm)")
    if len(data) > BIG_MODULE and not is_compiled(data):
        progress(f"compiling {path} ({len(data) / 1e6:.1f} MB) the first time; cached afterwards")
    return data


#: modules above this size take seconds to compile the first time (a Go build: about 3.5 MB)
BIG_MODULE = 1 << 20


def is_compiled(data: bytes) -> bool:
    """Whether the compile cache already holds this module."""
    import hashlib

    from ..module import _engine_fingerprint, trusted_cache_dir

    directory = trusted_cache_dir()
    digest = hashlib.sha256(data).hexdigest()
    return directory is not None and (directory / f"{digest}-{_engine_fingerprint()}.cwasm").is_file()


def header_arg(value: str, option: str) -> tuple[str, str]:
    """'name: value' (a leading ':' is part of the name, as in ':authority: x')."""
    m = re.fullmatch(r"\s*(:?[^:\s]+)\s*:\s?(.*)", value)
    if not m:
        raise UsageError(f"{option} {value!r}: expected 'name: value'")
    return m.group(1).lower(), m.group(2)


def headers_arg(values: list[str], option: str) -> list[tuple[str, str]]:
    return [header_arg(v, option) for v in values]


def property_arg(value: str) -> tuple[str, str]:
    path, sep, val = value.partition("=")
    if not sep or not path:
        raise UsageError(f"--property {value!r}: expected PATH=VALUE (e.g. xds.cluster_name=web)")
    return path, val


_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def callout_arg(text: str) -> tuple[str, tuple[int, str]]:
    """'CLUSTER=STATUS[:BODY]' -> (cluster, (status, body))."""
    cluster, sep, answer = text.partition("=")
    status, _, body = answer.partition(":")
    if not sep or not _CLUSTER_NAME.match(cluster) or not status.isdigit() or not 100 <= int(status) <= 599:
        raise UsageError(f"--callout {text!r}: expected CLUSTER=STATUS[:BODY], e.g. auth=200:ok "
                         "(cluster: letters, digits, '_', '-', '.'; status 100-599)")
    return cluster, (int(status), body)


def printable(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


# -- plugin options -----------------------------------------------------------------


@dataclass
class PluginOptions:
    """What a Wasm filter config gives the plugin (Envoy's PluginConfig)."""

    source: str | bytes
    configuration: str | bytes | None = None
    vm_configuration: str | bytes | None = None
    root_id: str = ""
    vm_id: str = ""
    name: str = ""
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, source: str, args: argparse.Namespace) -> "PluginOptions":
        return cls(source, text_arg(args.config, "--config"), text_arg(args.vm_config, "--vm-config"),
                   args.root_id, args.vm_id, args.name)

    def host_options(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "vm_configuration": self.vm_configuration,
                "root_id": self.root_id, "vm_id": self.vm_id, "name": self.name, "environment": self.environment}

    def load(self, host: Host, **extra: Any) -> Plugin:
        return host.load_plugin(self.source, **self.host_options(), **extra)


def common_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Parent parsers: output options (--json, -q) and plugin options (--config, …)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    plugin = argparse.ArgumentParser(add_help=False)
    plugin.add_argument("--config", metavar="STR|@FILE", help="plugin configuration")
    plugin.add_argument("--vm-config", metavar="STR|@FILE", help="VM configuration")
    plugin.add_argument("--root-id", default="", metavar="ID")
    plugin.add_argument("--vm-id", default="", metavar="ID")
    plugin.add_argument("--name", default="", help="plugin name")
    return common, plugin
