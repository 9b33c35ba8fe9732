"""Loading: ABI detection, refusals Envoy makes at load time, compile cache (abi.md §0.1–0.3, envoy-observed Loading)."""
import pytest
import wasmtime

from proxywasm_host import Host, MissingImportError, ModuleLoadError, load_module
from proxywasm_host import module as module_mod
from watgen import build, records


@pytest.mark.parametrize("abi", ["0_1_0", "0_2_0", "0_2_1"])
def test_abi_version_detected_from_marker(abi):
    mod = load_module(build({}, abi=abi))
    assert mod.abi == abi.replace("_", ".")


def test_module_without_marker_is_refused():
    wasm = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) i32.const 0))')
    with pytest.raises(ModuleLoadError, match="Missing or unknown Proxy-Wasm ABI version"):
        load_module(wasm)


def test_non_wasm_bytes_and_missing_file(tmp_path):
    with pytest.raises(ModuleLoadError, match="not a WebAssembly module"):
        load_module(b"hello world")
    with pytest.raises(ModuleLoadError, match="no such file"):
        load_module(tmp_path / "nope.wasm")
    corrupt = b"\0asm\x01\0\0\0\x05\xff\xff"
    with pytest.raises(ModuleLoadError, match="Failed to parse corrupted Wasm module"):
        load_module(corrupt)


def test_unknown_import_is_named():
    wasm = build({}, imports={"proxy_foo": "(param i32) (result i32)"})
    with pytest.raises(MissingImportError) as e:
        load_module(wasm)
    assert e.value.missing == ["env.proxy_foo"]
    assert "env.proxy_foo" in str(e.value)


def test_imports_are_gated_by_abi_version():
    # proxy_continue_stream does not exist in ABI 0.1.0; proxy_get_log_level only in 0.2.1
    with pytest.raises(MissingImportError, match="env.proxy_continue_stream"):
        load_module(build({}, abi="0_1_0", imports={"proxy_continue_stream": "(param i32) (result i32)"}))
    with pytest.raises(MissingImportError, match="env.proxy_get_log_level"):
        load_module(build({}, abi="0_2_0", imports={"proxy_get_log_level": "(param i32) (result i32)"}))
    with pytest.raises(MissingImportError, match="env.proxy_get_configuration"):
        load_module(build({}, abi="0_2_1", imports={"proxy_get_configuration": "(param i32 i32) (result i32)"}))


def test_import_with_wrong_signature_is_refused():
    with pytest.raises(ModuleLoadError, match=r"env.proxy_log has type \(i32\) -> \(i32\)"):
        load_module(build({}, imports={"proxy_log": "(param i32) (result i32)"}))


def test_abi_0_1_module_with_three_argument_headers_callback_is_refused():
    wasm = build({"proxy_on_request_headers": "i32.const 0"}, abi="0_1_0")
    load_module(wasm)  # two-argument form is fine
    bad = build({}, abi="0_1_0", extra='(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 0)')
    with pytest.raises(ModuleLoadError, match="Bad function signature for: proxy_on_request_headers"):
        load_module(bad)


def test_missing_allocator_is_refused():
    with pytest.raises(ModuleLoadError, match="missing malloc function"):
        Host().load_plugin(build({}, allocator=()))


def test_wasi_unstable_and_duplicate_imports_link():
    wasm = build(
        {"proxy_on_vm_start": "(call $rec (call $wasi_unstable.fd_write (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 0x100))) (i32.const 1)"},
        imports={
            "wasi_unstable.fd_write": "(param i32 i32 i32 i32) (result i32)",
            "wasi_snapshot_preview1.fd_write": "(param i32 i32 i32 i32) (result i32)",
        },
    )
    plugin = Host().load_plugin(wasm)
    assert records(plugin.workers[0].vm) == [8]  # EBADF for an fd other than 1/2


def test_compiled_module_cache_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    wasm = build({"proxy_on_tick": "nop"}, {"unique": "cache-test-%d" % id(tmp_path)})
    first = load_module(wasm)
    assert not first.from_cache
    assert list(tmp_path.glob(f"{first.sha256}-*.cwasm"))
    module_mod._COMPILED.clear()
    second = load_module(wasm)
    assert second.from_cache and second.sha256 == first.sha256


def test_corrupt_cache_entry_is_recompiled(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    wasm = build({}, {"unique": "corrupt-cache-%d" % id(tmp_path)})
    first = load_module(wasm)
    for f in tmp_path.glob("*.cwasm"):
        f.write_bytes(b"garbage")
    module_mod._COMPILED.clear()
    again = load_module(wasm)
    assert not again.from_cache and again.abi == first.abi


def test_tampered_cache_entry_is_recompiled_not_run(tmp_path, monkeypatch, caplog):
    """One flipped byte inside the machine code would crash the process or run altered code if it
    were deserialized: the hash recorded at write time catches it and the module is recompiled."""
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    wasm = build({"proxy_on_vm_start": "(call $rec (i32.const 7)) (i32.const 1)"}, {"unique": "tamper-%d" % id(tmp_path)})
    load_module(wasm)
    (cwasm,) = tmp_path.glob("*.cwasm")
    data = bytearray(cwasm.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cwasm.write_bytes(bytes(data))
    module_mod._COMPILED.clear()
    again = load_module(wasm)
    assert not again.from_cache
    assert "does not match its recorded hash: recompiling" in caplog.text
    assert records(Host().load_plugin(again).workers[0].vm) == [7]


def test_cache_directory_writable_by_others_is_not_used(tmp_path, monkeypatch, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(shared))
    wasm = build({}, {"unique": "shared-%d" % id(tmp_path)})
    load_module(wasm)
    module_mod._COMPILED.clear()
    assert not load_module(wasm).from_cache and not list(shared.iterdir())
    assert "is writable by group or others (mode 777): not used" in caplog.text


def test_in_process_compile_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    for i in range(module_mod.COMPILED_IN_PROCESS + 5):
        load_module(build({}, {"unique": f"lru-{i}-{id(tmp_path)}"}))
    assert len(module_mod._COMPILED) == module_mod.COMPILED_IN_PROCESS
