"""JSON Schemas of this project's filters (proxywasm_host/schemas/<filter>.json, Draft 2020-12),
a checker whose messages name the field path and what is allowed, and the README's
configuration tables generated from the schemas.

The filters check their configuration themselves in proxy_on_configure (and
`proxywasm validate` runs that too); the schemas add the allowed fields and values to
the message. Cross-field rules ("exactly one of prefix or path") are left to the filters.
To add a field: add it to the filter's `onlyKnown` list in filters/<name>/main.zig and to
the schema's `properties` (with a `description`, and `default` when there is one), then
run `python -m proxywasm_host.filter_schemas --write README.md` to regenerate the README's tables.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

NAMES = ("jwt_authn", "ratelimit")


def load_schema(name: str) -> dict[str, Any]:
    """The schema shipped in the package for one of the project's filters."""
    return json.loads((resources.files("proxywasm_host") / "schemas" / f"{name}.json").read_text("utf-8"))


SCHEMAS: dict[str, dict[str, Any]] = {name: load_schema(name) for name in NAMES}


def schema_for_module(path: str | Path) -> str | None:
    """The schema of a module by its file name (jwt_authn*.wasm, ratelimit*.wasm), if any."""
    name = Path(path).name
    return next((s for s in SCHEMAS if name.startswith(s) and name.endswith(".wasm")), None)


def _content_schema(validator: Any, content_schema: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """`contentSchema` applied, not only annotated: a string holding JSON (a JWKS) is parsed and checked."""
    if not isinstance(instance, str) or schema.get("contentMediaType") != "application/json":
        return
    try:
        value = json.loads(instance)
    except json.JSONDecodeError as e:
        yield ValidationError(f"not valid JSON ({e.msg} at column {e.colno})")
        return
    yield from validator.descend(value, content_schema)


_Validator = validators.extend(Draft202012Validator, {"contentSchema": _content_schema})


def check(schema: dict[str, Any], value: Any) -> list[str]:
    """Every problem of `value` against `schema`, as "<field path>: <what is wrong>; allowed: …",
    in the order of the fields in `value`; one message per field."""
    found = [(list(e.absolute_path), e) for e in _Validator(schema).iter_errors(value)]
    typed = {tuple(path) for path, e in found if e.validator == "type"}
    messages: dict[tuple[Any, ...], list[str]] = {}
    for path, error in found:
        if error.validator != "type" and tuple(path) in typed:
            continue  # "expected string" says it all; an enum or pattern complaint on top is noise
        for sub, message in _messages(path, error):
            key = _position(value, sub)
            if message not in messages.setdefault(key, []):
                messages[key].append(message)
    return [m for key in sorted(messages) for m in messages[key]]


def _messages(path: list[Any], error: ValidationError) -> Iterator[tuple[list[Any], str]]:
    """(field path, message) pairs for one jsonschema error."""
    where, schema, value = _where(path), error.schema, error.instance
    match error.validator:
        case "additionalProperties":
            allowed = ", ".join(schema.get("properties", {}))
            for key in (k for k in value if k not in schema.get("properties", {})):
                yield path + [key], f"{_where(path + [key])}: unknown field; allowed: {allowed}"
        case "required":
            for key in (k for k in error.validator_value if k not in value):
                yield path + [key], f"{_where(path + [key])}: required field is missing"
        case "type":
            expected = " or ".join(_as_list(error.validator_value))
            yield path, f"{where}: expected {expected}, got {_describe(value)}"
        case "minimum" | "maximum":
            yield path, f"{where}: {value} is out of range; allowed: {schema.get('minimum')}..{schema.get('maximum')}"
        case "enum":
            yield path, f"{where}: {value!r} is not allowed; allowed: {', '.join(map(repr, error.validator_value))}"
        case "pattern":
            yield path, f"{where}: {value!r} is not allowed; allowed: {_pattern_hint(schema)}"
        case "minItems":
            yield path, f"{where}: needs at least {error.validator_value} item(s)"
        case "maxItems":
            yield path, f"{where}: takes at most {error.validator_value} item(s)"
        case _:
            yield path, f"{where}: {error.message}"


def _where(path: list[Any]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return text or "configuration"


def _position(value: Any, path: list[Any]) -> tuple[int, ...]:
    """Where `path` sits in `value` (insertion order of objects); a missing key sorts after its siblings."""
    position = []
    for part in path:
        if isinstance(value, dict):
            keys = list(value)
            position.append(keys.index(part) if part in keys else len(keys))
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int):
            position.append(part)
            value = value[part] if part < len(value) else None
        else:
            position.append(0)
    return tuple(position)


def _pattern_hint(schema: dict[str, Any]) -> str:
    """'a duration such as "1s", "500ms" or "2m"' from the schema's `title` and `examples`."""
    if not schema.get("examples"):
        return f"a string matching {schema['pattern']}"
    return f"a {schema.get('title', 'string')} such as {_one_of(json.dumps(e) for e in schema['examples'])}"


def _one_of(items: Iterable[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    *rest, last = items
    return f"{', '.join(rest)} or {last}" if rest else last


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _describe(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    kind = "null" if value is None else names.get(type(value), type(value).__name__)
    text = repr(value) if isinstance(value, (str, int, float, bool)) else ""
    return f"{kind} {text}".strip() if len(text) <= 40 else kind


# -- README tables ---------------------------------------------------------------------


def readme_tables(name: str) -> str:
    """The README's field tables of one filter: the top level, then each titled `$defs` object."""
    schema = SCHEMAS[name]
    objects = [schema] + [d for d in schema.get("$defs", {}).values() if "title" in d]
    return "\n\n".join(_table(schema, obj) for obj in objects)


def readme_markers(name: str) -> tuple[str, str]:
    """The HTML comments around one filter's generated tables in the README."""
    return (f"<!-- {name} tables: generated from proxywasm_host/schemas/{name}.json -->\n",
            f"\n<!-- end of {name} tables -->")


def update_readme(text: str) -> str:
    """`text` with every filter's tables, between its markers, regenerated from the schemas."""
    for name in NAMES:
        begin, end = readme_markers(name)
        start = text.index(begin) + len(begin)
        text = text[:start] + readme_tables(name) + text[text.index(end, start):]
    return text


def _table(root: dict[str, Any], obj: dict[str, Any]) -> str:
    rows = [f"**{obj['title']} fields**", ""]
    if obj is not root and "description" in obj:
        rows += [obj["description"], ""]
    rows += ["| Field | Type | Default | Meaning |", "|---|---|---|---|"]
    for field, prop in obj["properties"].items():
        default = "required" if field in obj.get("required", ()) else (
            f"`{json.dumps(prop['default'])}`" if "default" in prop else "—")
        rows.append(f"| `{field}` | {_type_text(root, prop)} | {default} | {prop.get('description', '')} |")
    return "\n".join(rows)


def _type_text(root: dict[str, Any], prop: dict[str, Any]) -> str:
    """A field's type in words: `"allow"` or `"shared"`, integer 1..100, list of Rule fields, …"""
    if "$ref" in prop and "type" not in prop:
        return _type_text(root, _resolve(root, prop["$ref"]))
    if "contentMediaType" in prop:
        return "object, or a string holding its JSON"
    if "enum" in prop:
        return _one_of(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "title" in prop and "properties" in prop:
        return f"{prop['title']} object"
    types = _as_list(prop.get("type", "object"))
    if types == ["integer"] and "minimum" in prop:
        return f"integer {prop['minimum']}..{prop.get('maximum', '')}"
    if types == ["string"] and "examples" in prop:
        return f"{prop.get('title', 'string')}: " + ", ".join(f"`{json.dumps(e)}`" for e in prop["examples"])
    if types == ["array"]:
        return f"list of {_type_text(root, prop['items'])}s"
    if types == ["string", "array"]:
        return f"string or list of {_type_text(root, prop['items'])}s"
    return " or ".join(types)


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


if __name__ == "__main__":  # python -m proxywasm_host.filter_schemas [NAME…] | --write README.md
    if sys.argv[1:2] == ["--write"]:
        readme = Path(sys.argv[2])
        readme.write_text(update_readme(readme.read_text()))
    else:
        for filter_name in sys.argv[1:] or NAMES:
            print(readme_tables(filter_name), end="\n\n")
