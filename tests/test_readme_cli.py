"""The README's CLI examples run as shown: each `$ proxywasm …` of the CLI section (up to
`envoy up`, which needs a running Envoy: integration/test_cli_envoy_up.py) runs in a directory
made by tests/cli_data/make_examples.py, and prints what the README says, exit code included."""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from proxywasm_host.cli import main

REPO = Path(__file__).parents[1]
sys.path.insert(0, str(REPO / "tests" / "cli_data"))
from make_examples import build  # noqa: E402

README_DIR = "/tmp/clidemo"  # where the README's output was captured


def examples() -> list[tuple[str, str, int]]:
    """(command line, output, exit code) of each example in the README's CLI section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The `proxywasm` CLI"):readme.index("### `proxywasm envoy up")]
    found = []
    for block in re.findall(r"```\n(.*?)```", section, re.S):
        for m in re.finditer(r"^\$ (proxywasm [^\n]*)\n(.*?)^\[exit (\d)\]$", block, re.S | re.M):
            found.append((m.group(1), m.group(2), int(m.group(3))))
    return found


def _normal(text: str, demo: Path) -> str:
    text = text.replace(str(demo), README_DIR)
    return re.sub(r"^(\s*)\[\d{4}-\d\d-\d\d [\d:.]+\]\[\d+\]", r"\1[TIME][PID]", text, flags=re.M)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(REPO / "filters"))
    from build import build_filter

    directory = build(tmp_path_factory.mktemp("clidemo"))
    build_filter("ratelimit")
    (directory / "filters").symlink_to(REPO / "filters")
    return directory


def test_the_section_has_examples():
    assert len(examples()) >= 10


@pytest.mark.parametrize("command, output, code", examples(), ids=[e[0][:60] for e in examples()])
def test_readme_cli_example(capsys, monkeypatch, demo, command, output, code):
    monkeypatch.chdir(demo)
    argv = shlex.split(command)[1:]
    try:
        got = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        got = e.code
    out, err = capsys.readouterr()
    lines = err.splitlines(keepends=True)  # progress comes first, errors last, as on a terminal
    shown = "".join(ln for ln in lines if not ln.startswith("proxywasm: error")) + out + "".join(
        ln for ln in lines if ln.startswith("proxywasm: error"))
    assert (got, _normal(shown, demo)) == (code, _normal(output, demo))
