"""The repository's runnable Envoy config (envoy/envoy.yaml, envoy/ecds/) and the standalone ``publish``.

No Envoy runs here except ``envoy --mode validate``; serving and hot reload are in integration/test_cli_publish.py.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import stat
import sys
from pathlib import Path

import pytest
import yaml

from proxywasm_host.cli import main
from proxywasm_host.envoy import config as cfg
from proxywasm_host.envoy.publish import published, publish
from proxywasm_host.envoy.validate import PublishError

REPO = Path(__file__).resolve().parent.parent
FILTERS = ("jwt_authn", "ratelimit")
sys.path.insert(0, str(REPO / "filters"))
from build import build_filter  # noqa: E402


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    return {name: build_filter(name) for name in FILTERS}


@pytest.fixture
def envoy_copy(tmp_path: Path, built: dict[str, Path]) -> Path:
    """envoy/envoy.yaml and envoy/ecds/ in tmp_path/envoy, the built modules in tmp_path/filters/out."""
    shutil.copy(REPO / "envoy" / "envoy.yaml", tmp_path / "envoy.yaml")
    shutil.copytree(REPO / "envoy" / "ecds", tmp_path / "envoy" / "ecds")
    shutil.move(tmp_path / "envoy.yaml", tmp_path / "envoy" / "envoy.yaml")
    (tmp_path / "filters" / "out").mkdir(parents=True)
    for path in built.values():
        shutil.copy(path, tmp_path / "filters" / "out" / path.name)
    return tmp_path / "envoy"


def test_proxywasm_validate_passes_on_the_repo_config(built, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["validate", "envoy/envoy.yaml"]) == 0
    out = capsys.readouterr().out
    for name in FILTERS:
        assert (f"- {name} [{REPO}/envoy/ecds/{name}.yaml] module {REPO}/envoy/../filters/out/{name}.wasm:\n"
                f"    OK (ABI 0.2.1)\n    schema {name}: ok\n") in out
    assert "envoy --mode validate: OK\n" in out and out.endswith("result: OK\n")


def test_repo_config_is_what_the_harness_templates_render():
    """envoy/envoy.yaml and the harness render from the same templates, so they cannot drift apart."""
    doc = yaml.safe_load((REPO / "envoy" / "envoy.yaml").read_text())
    listener = cfg.ListenerSpec("main", port=10000)
    ecds = [cfg.ecds_filter(name, f"./ecds/{name}.yaml", "./ecds") for name in FILTERS]
    assert doc == cfg.render_bootstrap(admin_port=19000, upstream_port=18080, listeners=[(listener, ecds)],
                                       clusters={"jwks_cluster": 18080}, node_id="proxywasm-dev",
                                       node_cluster="proxywasm-dev")
    for name in FILTERS:
        ecds_doc = yaml.safe_load((REPO / "envoy" / "ecds" / f"{name}.yaml").read_text())
        current = published(REPO / "envoy" / "ecds" / f"{name}.yaml", name)
        assert current is not None and json.loads(current["configuration"])["stat_prefix"] == name
        expected_tc = cfg.wasm_typed_config(plugin_name=name, root_id="", vm_id="", sha256="",
                                            configuration=current["configuration"],
                                            filename=f"../filters/out/{name}.wasm")
        # the module's sha256 is only written by publish: a checked-in hash would go stale with every build
        del expected_tc["config"]["vm_config"]["configuration"]
        assert ecds_doc == cfg.ecds_response(name, "1", expected_tc)


def test_publish_without_admin_stages_module_and_renames_ecds_file(envoy_copy, built):
    ecds = envoy_copy / "ecds" / "ratelimit.yaml"
    before = published(ecds, "ratelimit")
    res = publish(ecds, "ratelimit", built["ratelimit"], '{"bucket": {"max_tokens": 1, "fill_interval": "1h"}}')
    sha = hashlib.sha256(built["ratelimit"].read_bytes()).hexdigest()
    module = envoy_copy / "wasm" / f"ratelimit-{sha}.wasm"
    assert (res.changed, res.sha256, res.wasm_path, res.reload_seconds) == (True, sha, str(module), None)
    assert module.read_bytes() == built["ratelimit"].read_bytes()
    for path in (ecds, module):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in ecds.parent.iterdir()) == ["jwt_authn.yaml", "ratelimit.yaml"]  # no temp left
    now = published(ecds, "ratelimit")
    assert now is not None and before is not None
    assert (now["wasm_path"], now["sha256"], now["configuration"]) == (str(module), sha, res.configuration)
    assert {k: now[k] for k in ("plugin_name", "root_id", "vm_id", "failure_policy")} == {
        k: before[k] for k in ("plugin_name", "root_id", "vm_id", "failure_policy")}
    assert json.loads(ecds.read_text())["version_info"] == res.version


def test_publish_identical_is_a_no_op_and_none_keeps_the_configuration(envoy_copy, built):
    ecds = envoy_copy / "ecds" / "jwt_authn.yaml"
    configuration = published(ecds, "jwt_authn")["configuration"]  # type: ignore[index]
    first = publish(ecds, "jwt_authn", built["jwt_authn"], validate=False)
    assert first.changed and first.configuration == configuration
    text = ecds.read_text()
    again = publish(ecds, "jwt_authn", built["jwt_authn"].read_bytes(), configuration, validate=False)
    assert (again.changed, again.version) == (False, "")
    assert ecds.read_text() == text


@pytest.mark.parametrize("module, config, error", [
    (b"\0asm\x01\0\0\0garbage", None, r"ratelimit module \(15 bytes\): Failed to parse corrupted Wasm module"),
    (None, '{"bucket": {"max_tokens": "x"}}', "envoy --mode validate refused the filter config:\n"
                                               ".*ratelimit: bucket.max_tokens: expected integer"),
], ids=["corrupt-module", "config-refused-by-envoy-validate"])
def test_refused_publish_leaves_the_ecds_file_alone(envoy_copy, built, module, config, error):
    ecds = envoy_copy / "ecds" / "ratelimit.yaml"
    text = ecds.read_text()
    with pytest.raises(PublishError, match=error):
        publish(ecds, "ratelimit", module if module is not None else built["ratelimit"], config,
                validate=False, envoy_validate=True)  # Envoy's validate judges the config
    assert ecds.read_text() == text


def test_publish_with_unreachable_admin_publishes_nothing(envoy_copy, built):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    ecds = envoy_copy / "ecds" / "ratelimit.yaml"
    text = ecds.read_text()
    with pytest.raises(PublishError, match=f"cannot reach Envoy's admin at http://127.0.0.1:{closed_port}: .*"
                                           "nothing was published"):
        publish(ecds, "ratelimit", built["ratelimit"], "{}", admin_url=f"http://127.0.0.1:{closed_port}")
    assert ecds.read_text() == text


def test_cli_publish_input_errors_are_one_line(envoy_copy, built, capsys, tmp_path):
    assert main(["envoy", "publish", "ratelimit", str(built["ratelimit"]),
                 "--ecds", str(envoy_copy / "ecds" / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert err == (f"proxywasm: error: ECDS file {envoy_copy / 'ecds' / 'nope.yaml'}: no such file "
                   "(the one Envoy's config_discovery path_config_source names)\n")
    (tmp_path / "x.wasm").write_text("not wasm")
    assert main(["envoy", "publish", "ratelimit", str(tmp_path / "x.wasm")]) == 1
    assert capsys.readouterr().err == (f"proxywasm: error: module {tmp_path / 'x.wasm'}: not a WebAssembly "
                                       "module (it does not start with \\0asm)\n")


def test_cli_publish_without_admin_only_writes(envoy_copy, built, capsys):
    ecds = envoy_copy / "ecds" / "jwt_authn.yaml"
    assert main(["envoy", "publish", "jwt_authn", str(built["jwt_authn"]), "--ecds", str(ecds), "--admin", "",
                 "--vm-id", "dev"]) == 0
    out = capsys.readouterr().out.splitlines()
    sha = published(ecds, "jwt_authn")["sha256"]  # type: ignore[index]
    assert out[0] == f"jwt_authn: published {envoy_copy / 'wasm' / f'jwt_authn-{sha}.wasm'}"
    assert out[1].startswith(f"  ECDS file {ecds} (version ") and out[2] == "  not confirmed: no admin URL given"
    assert published(ecds, "jwt_authn")["vm_id"] == "dev"  # type: ignore[index]
