"""The filters' JSON Schemas (proxywasm_host/schemas/*.json) must agree with the filters
themselves: every structural mistake the schema reports, the filter rejects too, and every
wrong type or unknown field the filter rejects, the schema reports — checked on mutations of
the README's example configurations. The README's field tables are generated from them."""
import copy
import json
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from proxywasm_host import Host, PluginRejected
from proxywasm_host.filter_schemas import SCHEMAS, check, readme_markers, update_readme

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
    if name == "jwt_authn":  # the README elides key material; use a real oct key (32 bytes: HS256 needs at least that)
        example["providers"][0]["local_jwks"] = {"keys": [{"kty": "oct", "kid": "k1", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}
    host = Host()
    host.add_cluster("jwks_cluster")
    assert check(SCHEMAS[name], example) == [] and _filter_accepts(host, wasm, example)
    disagreements = []
    for label, cfg in mutations(example):
        flagged = bool(check(SCHEMAS[name], cfg))
        accepted = _filter_accepts(host, wasm, cfg)
        if flagged and accepted:
            disagreements.append(f"{label}: the schema reports an error the filter accepts")
        if not flagged and not accepted:
            disagreements.append(f"{label}: the filter rejects what the schema accepts")
    assert disagreements == []


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_json_schema_and_readme_tables_match(name):
    Draft202012Validator.check_schema(SCHEMAS[name])
    readme = (ROOT / "README.md").read_text()
    begin, end = readme_markers(name)
    assert readme.index(begin) < readme.index(end)
    assert update_readme(readme) == readme, "README tables are stale: python -m proxywasm_host.filter_schemas --write README.md"


@pytest.mark.parametrize(
    "config, errors",
    [
        ({"providers": []}, ["providers: needs at least 1 item(s)"]),
        # in the order of the fields in the configuration, a missing field after its object's fields
        ({"rules": [{"prefix": "/", "zz": 1}], "providers": [{"local_jwks": {"keys": []}, "audiences": ["a", 3]}]},
         ["rules[0].zz: unknown field; allowed: prefix, path, requires, allow_missing",
          "providers[0].audiences[1]: expected string, got integer 3", "providers[0].name: required field is missing"]),
        # a JWKS given as a string holding its JSON is parsed and checked like an object
        ({"providers": [{"name": "a", "local_jwks": '{"keys": [{"kty": "XX"}]}'}]},
         ["providers[0].local_jwks.keys[0].kty: 'XX' is not allowed; allowed: 'oct', 'RSA', 'EC', 'OKP'"]),
        ({"providers": [{"name": "a", "local_jwks": "{bad"}]},
         ["providers[0].local_jwks: not valid JSON (Expecting property name enclosed in double quotes at column 2)"]),
        ({"providers": [{"name": "a", "local_jwks": "[1]"}]}, ["providers[0].local_jwks: expected object, got array"]),
        ({"providers": [{"name": "a", "local_jwks": 4}]},
         ["providers[0].local_jwks: expected object or string, got integer 4"]),
    ],
)
def test_jwt_authn_messages_name_the_field_and_what_is_allowed(config, errors):
    assert check(SCHEMAS["jwt_authn"], config) == errors


def test_a_wrong_type_is_one_message_not_one_per_keyword():
    assert check(SCHEMAS["ratelimit"], {"on_missing": 5}) == ["on_missing: expected string, got integer 5"]
