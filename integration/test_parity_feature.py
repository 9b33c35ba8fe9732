"""The parity feature itself (proxywasm_host.parity, `proxywasm parity`, the proxywasm_parity
fixture): identical where the host and Envoy agree, and a named difference where they do not."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import Filter, Request, Response, Scenario, run_parity

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples" / "go"), str(ROOT / "examples" / "rust"), str(ROOT / "tests")]
import build_go  # noqa: E402
import build_rust  # noqa: E402
from watgen import build  # noqa: E402

GO_CONFIG = '{"tag": "blue", "deny_prefix": "/admin"}'


@pytest.fixture(scope="module")
def go_http() -> str:
    return build_go.module_for_tests("http_filter")


def go_scenario(wasm: str) -> Scenario:
    return Scenario(
        [Filter(wasm, configuration=GO_CONFIG, vm_configuration="region=eu-1", name="go_http")],
        [Request(headers={"x-go-replace": "old", "x-go-remove": "bye"}), Request(path="/admin/users"),
         Request("POST", "/upload", {"x-go-body": "buffer"}, body="hello world"),
         Request("POST", "/upload", {"x-go-body": "stream"}, body=["small ", "chunks"]),
         Request("POST", "/t", {"x-go-trailers": "1"}, body=["x"], trailers={"x-client-trailer": "1"})],
        upstream=Response(200, {"content-type": "text/plain"}, "from upstream"),
    )


def test_go_sdk_filter_is_identical(go_http: str, proxywasm_parity) -> None:
    report = proxywasm_parity(go_scenario(go_http))
    assert [x.status for x in report.envoy.exchanges] == [200, 403, 200, 200, 200]
    assert report.envoy.exchanges[2].upstream[1] == b"<<HELLO WORLD>>"  # the comparison saw real work
    assert sum(map(len, report.envoy.logs.values())) >= 10 and report.envoy.metrics["go_http.requests_total"] == 5


def test_a_wrong_host_setting_is_reported_by_observation(go_http: str) -> None:
    """Without the connection manager's defaults the host differs from Envoy exactly where they act:
    the upstream misses x-forwarded-proto/x-request-id, and the filter counts fewer headers."""
    report = run_parity(go_scenario(go_http), connection_manager_defaults=False)
    names = [d.observation for d in report.differences]
    assert "request 0: upstream" in names
    envoy_up, host_up = next(d for d in report.differences if d.observation == "request 0: upstream").envoy, \
        next(d for d in report.differences if d.observation == "request 0: upstream").host
    assert ("x-forwarded-proto", "http") in envoy_up[0] and ("x-forwarded-proto", "http") not in host_up[0]
    assert all(not n.startswith("filters loaded") for n in names)


def test_a_refused_module_is_a_refusal_on_both_sides() -> None:
    wasm = build({}, imports={"proxy_nope": "(param i32) (result i32)"})
    report = run_parity(Scenario([Filter(wasm)]))
    assert report.identical
    assert "missing import: env.proxy_nope" in report.envoy.refusal and "env.proxy_nope" in report.host.refusal


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxywasm_host.cli", "parity", *args], capture_output=True, text=True, timeout=120)


def test_cli_on_the_rust_sdk_filter() -> None:
    wasm = build_rust.module_for_tests()
    args = [wasm, "--config", "tag=green;block_prefix=/admin;auth_cluster=authz", "--callout", "authz=200:ok",
            "-H", "x-edge-remove: bye", "--requests", "3"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("identical (Envoy 1.40 vs host)\ncompared: 3 request(s) (Envoy's statuses: 200 200 200), ")
    doc = json.loads(_cli(*args, "--json").stdout)
    assert doc["identical"] is True and doc["differences"] == [] and len(doc["masked"]) >= 5


def test_cli_exits_1_and_prints_both_values_on_a_difference(tmp_path: Path) -> None:
    """A difference the README lists: Envoy's router adds x-envoy-expected-rq-timeout-ms to the
    request headers after the filters ran, so on_log sees it in Envoy only."""
    strings = {"k": "x-envoy-expected-rq-timeout-ms"}
    on_log = ("(if (i32.eqz (call $proxy_get_header_map_value (i32.const 0) {k} (i32.const 0x100) (i32.const 0x104)))"
              " (then (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104))))))")
    path = tmp_path / "timeout_logger.wasm"
    path.write_bytes(build({"proxy_on_log": on_log}, strings))
    proc = _cli(str(path), "--requests", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("3 difference(s) (Envoy 1.40 vs host)")  # one cause, three observations:
    assert "log lines 'wasm log filter0:' from line 0:\n    envoy: [('info', '15000')]\n    host:  []" in proc.stdout
    assert "host:  ['env.proxy_get_header_map_value return: 1']" in proc.stdout  # NotFound in the host only
