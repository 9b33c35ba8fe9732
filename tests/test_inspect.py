"""proxywasm_host.inspect as a library: the toolchain of SDK-built modules (Go gc, TinyGo, Rust,
AssemblyScript, stripped Emscripten), and a "would Envoy load it" that agrees with `validate`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import wasmtime

from proxywasm_host.cli import main
from proxywasm_host.errors import ModuleLoadError
from proxywasm_host.inspect import LOAD_CHECKS, STARTUP_CHECK, inspect_module
from watgen import build

EXAMPLES = Path(__file__).parents[1] / "examples"
DATA = Path(__file__).parent / "cli_data"


def _example(sdk: str, script: str, *args: str) -> str:
    sys.path.insert(0, str(EXAMPLES / sdk))
    module = __import__(script)
    return module.module_for_tests(*args)


def _hint(text: str) -> bytes:
    return wasmtime.wat2wasm((DATA / "hint.wat").read_text().replace("@HINT@", text))


def test_go_gc_wasip1_build_is_recognised():
    report = inspect_module(_example("go", "build_go", "http_filter"))
    assert report.toolchain.startswith("Go (gc, wasip1, go1."), report.toolchain
    assert "go:buildid custom section" in report.toolchain_evidence
    assert report.abi == "0.2.0" and report.envoy_would_load


def test_rust_and_assemblyscript_builds_are_recognised():
    assert inspect_module(_example("rust", "build_rust")).toolchain == "Rust"
    assert inspect_module(_example("assemblyscript", "build_as")).toolchain == "AssemblyScript"


@pytest.mark.parametrize(
    "hint, toolchain",
    [
        # TinyGo's own producers entry and runtime names; it is a Go too, so Go clues do not make it a tie
        ('(@producers (language "Go" "1.24") (processed-by "TinyGo" "0.37.0"))', "TinyGo"),
        ('(func $tinygo_getCurrentStackPointer) (@custom "go:buildid" "x")', "TinyGo"),
        ('(@producers (language "Go" "go1.24.1") (processed-by "Go cmd/compile" "go1.24.1"))', "Go (gc, go1.24.1)"),
        ('(import "gojs" "runtime.wasmExit" (func (param i32)))', "Go (gc, js)"),
        # a stripped Emscripten build: no producers or name section, only its runtime exports
        ('(func (export "stackSave") (result i32) (i32.const 0)) (func (export "emscripten_stack_init"))',
         "C++ (Emscripten)"),
        ('(data (i32.const 0) "github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm")', "Go (gc or TinyGo)"),
    ],
)
def test_toolchain_guess(hint, toolchain):
    assert inspect_module(_hint(hint), start=False).toolchain == toolchain


FILTER = wasmtime.wat2wasm((DATA / "filter.wat").read_text())


def test_library_report_of_bytes():
    report = inspect_module(FILTER, label="m.wasm")
    assert report.module == "m.wasm" and report.abi == "0.2.1"
    assert report.checked == [*LOAD_CHECKS, STARTUP_CHECK]
    assert report.as_dict()["envoy_would_load"] is True
    with pytest.raises(ModuleLoadError, match="m.wasm: not a WebAssembly module"):
        inspect_module(b"nope", label="m.wasm")


REJECTS_CONFIG = build({"proxy_on_configure": "(i32.eqz (local.get $size))"})  # refuses any configuration
BLOCKED_AT_START = build({"_initialize": "(drop (call $proxy_set_tick_period_milliseconds (i32.const 10)))"})


@pytest.mark.parametrize(
    "wasm, options, refusal",
    [
        (FILTER, [], None),
        (_hint(""), [], "Wasm module is missing malloc function"),  # loads statically, Envoy refuses it
        (REJECTS_CONFIG, [], None),
        (REJECTS_CONFIG, ["--config", "x"], "start-up: plugin (unnamed)"),
        (BLOCKED_AT_START, [], "restricted_callback: proxy_set_tick_period_milliseconds is not allowed during _initialize"),
        (wasmtime.wat2wasm((DATA / "missing_import.wat").read_text()), [], "imports Envoy 1.40 does not provide"),
    ],
)
def test_inspect_agrees_with_validate(capsys, tmp_path, wasm, options, refusal):
    path = tmp_path / "m.wasm"
    path.write_bytes(wasm)
    validate_code = main(["validate", str(path), *options])
    capsys.readouterr()
    main(["inspect", str(path), *options])
    out = capsys.readouterr().out
    assert (validate_code == 0) == ("Envoy 1.40 would load it: yes" in out), out
    if refusal:
        assert refusal in out.split("would load it: no\n  - ", 1)[1]
    assert f"  checked: {', '.join(LOAD_CHECKS)}" in out


def test_inspect_without_start_says_what_it_did_not_check(capsys, tmp_path):
    path = tmp_path / "m.wasm"
    path.write_bytes(BLOCKED_AT_START)
    assert main(["inspect", str(path), "--no-start"]) == 0
    out = capsys.readouterr().out
    assert "Envoy 1.40 would load it: yes\n  checked: ABI version, callback signatures, imports\n" in out
    assert "  start-up not run (--no-start): `proxywasm validate` runs it" in out


def test_blocked_hostcall_names_itself(capsys, tmp_path):
    path = tmp_path / "m.wasm"
    path.write_bytes(BLOCKED_AT_START)
    assert main(["validate", str(path)]) == 1
    assert ("_initialize failed: restricted_callback: proxy_set_tick_period_milliseconds is not allowed during "
            "_initialize") in capsys.readouterr().out
