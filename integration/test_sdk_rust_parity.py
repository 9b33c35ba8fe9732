"""Parity for the Rust SDK example (examples/rust, proxy-wasm crate 0.2.5, ABI 0.2.1): the same
requests through a real Envoy 1.40 and through the host (proxywasm_host.parity), compared
observation by observation: statuses, client and upstream headers and bodies, the callout to
cluster "authz", log lines and the counter. Envoy is the ground truth; the expected statuses and
a few values are checked on Envoy's side of the report so that the comparison is not vacuous.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from proxywasm_host.parity import Filter, Request, Response, Scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "rust"))
import build_rust  # noqa: E402

CONFIG = "tag=green;block_prefix=/admin;auth_cluster=authz;deny_word=forbidden"
HOST = {"host": "api.example"}


@pytest.fixture(scope="module")
def wasm() -> str:
    return build_rust.module_for_tests()


def test_rust_filter_parity(wasm: str, proxywasm_parity) -> None:
    report = proxywasm_parity(Scenario(
        [Filter(wasm, configuration=CONFIG, name="edge_guard")],
        [Request(path="/orders", headers={**HOST, "x-edge-replace": "old", "x-edge-remove": "bye"}),
         Request(path="/admin/users", headers=HOST),
         Request("POST", "/upload", HOST, body="harmless text"),
         Request("POST", "/upload", HOST, body="this is forbidden text"),
         Request(path="/orders", headers={**HOST, "x-edge-token": "t-1"})],  # callout: 200 + x-user
        callouts={"authz": Response(200, {"x-user": "alice"}, "ok")}))
    e = report.envoy.exchanges
    assert [x.status for x in e] == [200, 403, 200, 403, 200]
    assert ("x-edge-user", "alice") in e[4].upstream[0] and e[4].callouts[0][0] == "authz"  # not vacuous
    names = dict(e[0].upstream[0])["x-edge-header-names"]
    assert names.endswith("x-forwarded-proto,x-request-id"), names  # added before the filters
    assert report.envoy.metrics["edge_guard.requests"] == 5
