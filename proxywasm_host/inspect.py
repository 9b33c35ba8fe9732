"""Module analysis as a library: what a Proxy-Wasm module is (ABI, toolchain, callbacks,
imports, custom sections) and whether Envoy 1.40 would load it.

    from proxywasm_host.inspect import inspect_module
    report = inspect_module("filter.wasm", configuration='{"mode": "demo"}')
    assert report.envoy_would_load, report.envoy_refusals

`proxywasm inspect` prints a report; `proxywasm validate` runs the same start-up, so the
two agree on whether Envoy would load a module.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from .abi import ABI_0_2_1, ABI_MARKERS
from .errors import ModuleLoadError, PluginRejected
from .hostcalls import registry
from .module import (
    WASM_MAGIC,
    ProxyWasmModule,
    check_callback_signatures,
    compile_module,
    expected_callback_signature,
    load_module,
)

#: what the host checks without running the module, and what running its start-up adds
LOAD_CHECKS = ("ABI version", "callback signatures", "imports")
STARTUP_CHECK = "start-up (VM start, proxy_on_vm_start, proxy_on_configure)"


# -- the binary format: custom sections, producers, function names ----------------------


def _leb(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _name(data: bytes, i: int) -> tuple[str, int]:
    n, i = _leb(data, i)
    return data[i : i + n].decode("utf-8", "replace"), i + n


def custom_sections(data: bytes) -> dict[str, bytes]:
    """Custom sections by name (of a module wasmtime has validated)."""
    out: dict[str, bytes] = {}
    i = 8
    while i < len(data):
        sid = data[i]
        size, j = _leb(data, i + 1)
        if sid == 0:
            name, k = _name(data, j)
            out.setdefault(name, data[k : j + size])
        i = j + size
    return out


def producers(payload: bytes) -> dict[str, list[str]]:
    """The `producers` section: field -> ["name version", …]."""
    out: dict[str, list[str]] = {}
    nfields, i = _leb(payload, 0)
    for _ in range(nfields):
        fname, i = _name(payload, i)
        nvalues, i = _leb(payload, i)
        for _ in range(nvalues):
            value, i = _name(payload, i)
            version, i = _name(payload, i)
            out.setdefault(fname, []).append(f"{value} {version}".strip())
    return out


def function_names(payload: bytes) -> list[str]:
    """Function names from the `name` section (subsection 1)."""
    i = 0
    while i < len(payload):
        sub = payload[i]
        size, j = _leb(payload, i + 1)
        if sub == 1:
            count, k = _leb(payload, j)
            names = []
            for _ in range(count):
                _, k = _leb(payload, k)
                name, k = _name(payload, k)
                names.append(name)
            return names
        i = j + size
    return []


# -- the toolchain guess -------------------------------------------------------------------


@dataclass
class _Facts:
    """What the guess looks at, read once."""

    data: bytes
    imports: list[str]
    exports: list[str]
    sections: dict[str, bytes]
    produced: str = ""
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self.produced = " ".join(v for vs in producers(self.sections["producers"]).values() for v in vs).lower()
        except (KeyError, IndexError):
            pass
        try:
            self.names = function_names(self.sections["name"]) if "name" in self.sections else []
        except IndexError:
            pass


_EMSCRIPTEN_EXPORTS = ("stackSave", "stackRestore", "stackAlloc", "emscripten_", "_emscripten_")


def _hints(f: _Facts) -> list[tuple[str, bool, str]]:
    """(family, found, evidence) for every clue the guess knows."""
    go_sdk = b"proxy-wasm-go-sdk" in f.data
    return [
        ("TinyGo", "tinygo" in f.produced, "producers section names TinyGo"),
        ("TinyGo", any("tinygo" in n.lower() for n in f.names), "tinygo_* function names"),
        ("TinyGo", go_sdk and b"tinygo" in f.data.lower(), "TinyGo runtime strings"),
        ("Go", "go:buildid" in f.sections, "go:buildid custom section"),
        ("Go", "cmd/compile" in f.produced, "producers section names Go cmd/compile"),
        ("Go", any(n.startswith("_rt0_wasm_") or n == "runtime.rt0_go" for n in f.names), "Go runtime rt0 symbols"),
        ("Go", b"\tGOOS=" in f.data and b"\tGOARCH=wasm" in f.data, "Go build info (GOOS, GOARCH)"),
        ("Go", any(i.startswith("gojs.") for i in f.imports), "gojs imports"),
        ("Rust", "rust" in f.produced, "producers section names Rust/rustc"),
        ("Rust", any(n.startswith("__rust") or re.search(r"17h[0-9a-f]{16}E$", n) for n in f.names), "Rust symbol names"),
        ("Rust", b"/rustc/" in f.data, "rustc source paths in panic messages"),
        ("C++ (Emscripten)", any(i.startswith("env.emscripten_") for i in f.imports), "emscripten_* imports"),
        ("C++ (Emscripten)", any(e.startswith(_EMSCRIPTEN_EXPORTS) for e in f.exports),
         "Emscripten runtime exports (stackSave, emscripten_stack_*)"),
        ("C++", "c_plus_plus" in f.produced, "producers section: language C++"),
        ("AssemblyScript", b"~lib/" in f.data or "~lib/".encode("utf-16-le") in f.data, "~lib/ paths"),
        ("Zig", "zig" in f.produced, "producers section names Zig"),
        ("Zig", any(n.startswith(("std.", "debug.defaultPanic")) for n in f.names), "Zig std.* function names"),
        ("Zig", b".zig\x00" in f.data, ".zig source paths in debug info"),
    ]


def _go_detail(f: _Facts) -> str:
    """'Go (gc, wasip1, go1.26.8)' from the build info gc writes into the module."""
    parts = ["gc"]
    goos = re.search(rb"\tGOOS=(\w+)", f.data)
    if goos:
        parts.append(goos.group(1).decode())
    elif any(i.startswith("gojs.") for i in f.imports):
        parts.append("js")
    version = re.search(r"go1\.\d+(?:\.\d+)?", f.produced)
    if version:
        parts.append(version.group(0))
    return f"Go ({', '.join(parts)})"


def guess_toolchain(data: bytes, imports: list[str], sections: dict[str, bytes],
                    exports: list[str] = ()) -> tuple[str, list[str]]:  # type: ignore[assignment]
    """A guess of the SDK/toolchain with the evidence for it; "unknown" unless one family
    has strictly more evidence than any other. TinyGo wins over Go's own clues (it is a Go too)."""
    facts = _Facts(data, list(imports), list(exports), sections)
    evidence: dict[str, list[str]] = {}
    for family, found, why in _hints(facts):
        if found:
            evidence.setdefault(family, []).append(why)
    if b"proxy-wasm-go-sdk" in data and {"Go", "TinyGo"} & evidence.keys():
        evidence["TinyGo" if "TinyGo" in evidence else "Go"].append("proxy-wasm-go-sdk strings")
    if "TinyGo" in evidence:
        evidence.pop("Go", None)
    if not evidence:
        if b"proxy-wasm-go-sdk" in data:
            return "Go (gc or TinyGo)", ["proxy-wasm-go-sdk strings"]
        stripped = not ({"name", "producers"} & sections.keys())
        return "unknown", ["no producers or name section (stripped)"] if stripped else []
    ranked = sorted(evidence.items(), key=lambda kv: -len(kv[1]))
    if len(ranked) > 1 and len(ranked[0][1]) == len(ranked[1][1]):
        return "unknown", [f"{fam}: {', '.join(why)}" for fam, why in ranked]
    family, why = ranked[0]
    return (_go_detail(facts) if family == "Go" else family), why


# -- the report ----------------------------------------------------------------------------


@dataclass
class ImportInfo:
    name: str  # "module.field"
    signature: str  # "(i32, i32) -> (i32)", or the kind of a non-function import
    envoy: str  # "ok", "missing" or "wrong signature" (in Envoy 1.40, for the module's ABI)


@dataclass
class Startup:
    """The module's start-up in the host, as Envoy runs it when it loads the filter."""

    ran: bool
    ok: bool | None = None
    error: str | None = None
    logs: list[str] = field(default_factory=list)
    note: str = ""
    abi: str | None = None


@dataclass
class ModuleReport:
    module: str
    size: int
    sha256: str
    abi: str | None
    toolchain: str
    toolchain_evidence: list[str]
    callbacks: list[str]
    other_exports: list[str]
    imports: list[ImportInfo]
    custom_sections: list[str]
    load_refusals: list[str]  # what Envoy refuses before running any code
    startup: Startup

    @property
    def imports_envoy_lacks(self) -> list[str]:
        return [i.name for i in self.imports if i.envoy != "ok"]

    @property
    def envoy_refusals(self) -> list[str]:
        failed = [f"start-up: {self.startup.error}"] if self.startup.ok is False else []
        return self.load_refusals + failed

    @property
    def checked(self) -> list[str]:
        return [*LOAD_CHECKS, STARTUP_CHECK] if self.startup.ran else list(LOAD_CHECKS)

    @property
    def envoy_would_load(self) -> bool:
        return not self.envoy_refusals

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(imports_envoy_lacks=self.imports_envoy_lacks, envoy_would_load=self.envoy_would_load,
                   envoy_refusals=self.envoy_refusals, checked=self.checked)
        return out


def _signature(ty: Any) -> str:
    if isinstance(ty, wasmtime.FuncType):
        return f"({', '.join(map(str, ty.params))}) -> ({', '.join(map(str, ty.results))})"
    return type(ty).__name__


def _envoy_status(module: str, name: str, ty: Any, abi: Any) -> str:
    hc = registry.lookup(module, name, abi) if isinstance(ty, wasmtime.FuncType) else None
    if hc is None:
        return "missing"
    wasm_types = {"i": "i32", "I": "i64"}
    want = ([wasm_types[c] for c in hc.params_wasm], [wasm_types[c] for c in hc.results])
    return "ok" if want == ([str(t) for t in ty.params], [str(t) for t in ty.results]) else "wrong signature"


def run_startup(source: "str | bytes | ProxyWasmModule", **plugin_options: Any) -> Startup:
    """Start the module as Envoy does when it loads the filter (VM start, on_vm_start, on_configure)."""
    from .host import Host

    try:
        plugin = Host().load_plugin(source, **plugin_options)
    except PluginRejected as e:
        return Startup(True, False, e.message, [str(r) for r in e.logs])
    except (ModuleLoadError, TypeError, ValueError) as e:  # TypeError/ValueError: an option the host refuses
        return Startup(True, False, str(e))
    return Startup(True, True, None, [str(r) for r in plugin.logs], abi=str(plugin.abi))


def inspect_module(source: str | Path | bytes, *, label: str | None = None, start: bool = True,
                   **plugin_options: Any) -> ModuleReport:
    """Analyse a module; works on modules Envoy would refuse. With `start` (and no load-time
    refusal) the module's start-up runs in the host with `plugin_options` (Host.load_plugin's:
    configuration=, vm_configuration=, root_id=, …); `label` names the module in messages. Raises ModuleLoadError for a file that is
    not a valid WebAssembly module."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    name = label or (str(source) if not isinstance(source, (bytes, bytearray)) else f"<{len(data)} bytes>")
    if data[:4] != WASM_MAGIC:
        raise ModuleLoadError(f"{name}: not a WebAssembly module (it does not start with \\0asm)")
    digest = hashlib.sha256(data).hexdigest()
    compiled, _ = compile_module(data, digest, name)
    exports = {e.name: e.type for e in compiled.exports}
    abis = [ABI_MARKERS[n] for n in exports if n in ABI_MARKERS]
    abi = max(abis, key=lambda a: a.tuple) if abis else None
    check_abi = abi or ABI_0_2_1
    refusals = [] if abi else ["Missing or unknown Proxy-Wasm ABI version (no proxy_abi_version_* export)"]
    if abi:
        try:
            check_callback_signatures(ProxyWasmModule(name, data, digest, abi, compiled))
        except ModuleLoadError as e:
            refusals.append(str(e).split(": ", 1)[1])
    callbacks = sorted(n for n, t in exports.items()
                       if isinstance(t, wasmtime.FuncType) and expected_callback_signature(n, check_abi) is not None)
    imports = [ImportInfo(f"{i.module}.{i.name}", _signature(i.type), _envoy_status(i.module, i.name or "", i.type, check_abi))
               for i in compiled.imports]
    missing = [i.name for i in imports if i.envoy != "ok"]
    if missing:
        refusals.append(f"imports Envoy 1.40 does not provide (ABI {check_abi}): {', '.join(missing)}")
    sections = custom_sections(data)
    toolchain, evidence = guess_toolchain(data, [i.name for i in imports], sections, list(exports))
    if not start:
        startup = Startup(False, note="not run (start=False)")
    elif refusals:
        startup = Startup(False, note="not run: Envoy refuses the module before starting it")
    else:
        startup = run_startup(load_module(data, name=name), **plugin_options)
    return ModuleReport(
        module=name, size=len(data), sha256=digest, abi=str(abi) if abi else None, toolchain=toolchain,
        toolchain_evidence=evidence, callbacks=callbacks,
        other_exports=sorted(n for n in exports if n not in callbacks and n not in ABI_MARKERS),
        imports=imports, custom_sections=sorted(sections), load_refusals=refusals, startup=startup,
    )
