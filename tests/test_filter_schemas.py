"""The CLI's schema tables (proxywasm_host/filter_schemas.py) must agree with the filters
themselves: every structural mistake the table reports, the filter rejects too, and every
wrong type or unknown field the filter rejects, the table reports — checked on mutations of
the README's example configurations."""
import copy
import json
import sys
from pathlib import Path

import pytest

from proxywasm_host import Host, PluginRejected
from proxywasm_host.filter_schemas import SCHEMAS, check

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "filters"))
from build import build_filter  # noqa: E402


def readme_example(name: str) -> dict:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(f"### `{name}` configuration"):]
    start = section.index("```json\n") + len("```json\n")
    return json.loads(section[start : section.index("```", start)])


def _paths(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _wrong(value):
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, str)):
        return [value] if isinstance(value, int) else 17
    if isinstance(value, list):
        return {"a": 1}
    return 5


def mutations(example: dict):
    """(label, config) pairs: one wrong type per field, one unknown field per object."""
    for path, value in _paths(example):
        if not path:
            continue
        cfg = copy.deepcopy(example)
        target = cfg
        for seg in path[:-1]:
            target = target[seg]
        target[path[-1]] = _wrong(value)
        yield f"type:{'.'.join(map(str, path))}", cfg
        if isinstance(value, dict):
            cfg = copy.deepcopy(example)
            target = cfg
            for seg in path:
                target = target[seg]
            target["unknown_field_x"] = 1
            yield f"unknown:{'.'.join(map(str, path))}", cfg


def _filter_accepts(host: Host, wasm: str, cfg: dict) -> bool:
    try:
        host.load_plugin(wasm, configuration=json.dumps(cfg))
        return True
    except PluginRejected:
        return False


@pytest.mark.parametrize("name", ["jwt_authn", "ratelimit"])
def test_schema_and_filter_agree(name):
    wasm = str(build_filter(name))
    example = readme_example(name)
    if name == "jwt_authn":  # the README elides key material; use a real oct key
        example["providers"][0]["local_jwks"] = {"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]}
    host = Host()
    host.add_cluster("jwks_cluster")
    assert check(SCHEMAS[name], example) == [] and _filter_accepts(host, wasm, example)
    disagreements = []
    for label, cfg in mutations(example):
        flagged = bool(check(SCHEMAS[name], cfg))
        accepted = _filter_accepts(host, wasm, cfg)
        if flagged and accepted:
            disagreements.append(f"{label}: the table reports an error the filter accepts")
        if not flagged and not accepted:
            disagreements.append(f"{label}: the filter rejects what the table accepts")
    assert disagreements == []
