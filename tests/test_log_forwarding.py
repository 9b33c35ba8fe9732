"""Filter log lines forwarded to Python logging (the "proxywasm" logger), and only built as
Python log records when a handler takes them: a filter that logs per request must not pay for
logging machinery that prints nothing. Each case runs in a fresh interpreter, away from
pytest's own capture handlers (which take every record)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Sets up logging as the case says, sends one request through a filter that logs one line, and
# prints the host's captured lines, the records the proxywasm logger was asked to handle and what
# a stream handler printed.
SCRIPT = """
import io, json, logging, sys
sys.path[:0] = [{root!r}, {tests!r}]
from watgen import build
from proxywasm_host import Host

case = sys.argv[1]
logger, out, handled = logging.getLogger("proxywasm"), io.StringIO(), []
logger.addFilter(lambda record: handled.append(record.getMessage()) or True)
if case != "level-off":
    logging.getLogger().setLevel(logging.INFO)
if case in ("info-handler", "error-handler"):
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.INFO if case == "info-handler" else logging.ERROR)
    logging.getLogger().addHandler(handler)
wasm = build({{"proxy_on_request_headers": "(drop (call $proxy_log (i32.const 2) {{msg}})) (i32.const 0)"}},
             {{"msg": "hello from the filter"}})
plugin = Host().load_plugin(wasm)
plugin.http_stream().send_request_headers({{":method": "GET", ":path": "/", ":authority": "a"}})
print(json.dumps([[r.message for r in plugin.logs], handled, out.getvalue()]))
"""


def _run(case: str) -> list:
    script = SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))
    proc = subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_handler_that_takes_the_level_gets_the_line():
    line = "wasm log: hello from the filter"
    assert _run("info-handler") == [["hello from the filter"], [line], line + "\n"]


@pytest.mark.parametrize("case", ["level-off", "no-handler", "error-handler"])
def test_no_python_record_when_no_handler_takes_it(case):
    """Logger level below the line's, only the library's NullHandler, or a handler that wants only
    errors: the host still captures the line, but no Python record is made."""
    assert _run(case) == [["hello from the filter"], [], ""]
