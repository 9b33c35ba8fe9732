"""Test-API input is checked where it enters: a wrong type or value is a TypeError or
ValueError naming the argument and what is allowed, never an error from deep inside
(ctypes, wasmtime, struct, a codec) or a silent misreading."""
import re

import pytest

from proxywasm_host import Host
from watgen import build, out_bytes, records

MODULE = build({"proxy_on_request_headers": "(i32.const 0)"})
REQ = {":method": "GET", ":path": "/", ":authority": "example.com"}


@pytest.fixture(scope="module")
def plugin():
    return Host().load_plugin(MODULE)


def load(**options):
    return Host().load_plugin(MODULE, **options)


def raises(exc, message):
    return pytest.raises(exc, match=re.escape(message))


# -- headers and bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    "method, headers, exc, message",
    [
        ("send_request_headers", {5: "x"}, TypeError, "send_request_headers: header name must be str or bytes, got int (5)"),
        ("send_request_headers", {"a": None}, TypeError, "send_request_headers: header 'a' value must be str or bytes, got NoneType (None)"),
        ("send_request_headers", {"a": 1}, TypeError, "send_request_headers: header 'a' value must be str or bytes, got int (1)"),
        ("send_request_headers", {"a": "\ud800"}, ValueError, "send_request_headers: header 'a' value '\\ud800' is not valid text: lone surrogate '\\ud800' at index 0"),
        ("send_request_headers", {"\ud800x": "v"}, ValueError, "send_request_headers: header name '\\ud800x' is not valid text"),
        ("send_request_headers", [("a", "b", "c")], TypeError, "send_request_headers: each header must be a (name, value) pair, got tuple ("),
        ("send_request_headers", ["ab"], TypeError, "send_request_headers: each header must be a (name, value) pair, got str ('ab')"),
        ("send_request_headers", 5, TypeError, "send_request_headers: headers must be a dict, a list of (name, value) pairs or None, got int (5)"),
        ("send_request_headers", "a: b", TypeError, "send_request_headers: headers must be a dict, a list of (name, value) pairs or None, got str"),
        ("send_response_headers", {":status": 200}, TypeError, "send_response_headers: header ':status' value must be str or bytes, got int (200)"),
        ("send_request_trailers", {"a": None}, TypeError, "send_request_trailers: header 'a' value must be str or bytes, got NoneType"),
    ],
)
def test_bad_headers_name_the_method(plugin, method, headers, exc, message):
    s = plugin.http_stream()
    if method != "send_request_headers":
        s.send_request_headers(REQ)
    with raises(exc, message):
        getattr(s, method)(headers)


def test_headers_keep_raw_bytes_and_surrogateescape():
    """bytes pass as they are, and a str from Headers (surrogateescape) goes back to the same bytes."""
    s = Host().load_plugin(MODULE).http_stream()
    s.send_request_headers({**REQ, b"x-raw": b"\xff\x00", "x-esc": "\udcff"}, end_of_stream=True)
    assert s.upstream_request.headers.get("x-raw") == "\udcff\x00"
    assert s.upstream_request.headers.get("x-esc") == "\udcff"


def test_non_utf8_header_is_readable_as_a_property():
    """request.path from a header with a non-UTF-8 byte reaches the guest as those bytes."""
    cb = "(call $rec (call $proxy_get_property {p} (i32.const 0x100) (i32.const 0x104))) (i32.const 0)"
    s = Host().load_plugin(build({"proxy_on_request_headers": cb}, {"p": "request\0path"})).http_stream()
    s.send_request_headers({**REQ, ":path": b"/\xff"})
    assert records(s.vm) == [0]
    assert out_bytes(s.vm) == b"/\xff"


@pytest.mark.parametrize(
    "method, body, exc, message",
    [
        ("send_request_body", None, TypeError, "send_request_body: body must be str or bytes, got NoneType (None)"),
        ("send_request_body", 5, TypeError, "send_request_body: body must be str or bytes, got int (5)"),
        ("send_request_body", [1, 2], TypeError, "send_request_body: body must be str or bytes, got list ([1, 2])"),
        ("send_request_body", "\ud800", ValueError, "send_request_body: body '\\ud800' is not valid text"),
        ("send_response_body", None, TypeError, "send_response_body: body must be str or bytes, got NoneType"),
    ],
)
def test_bad_bodies_name_the_method(plugin, method, body, exc, message):
    s = plugin.http_stream()
    with raises(exc, message):
        getattr(s, method)(body)


def test_end_of_stream_must_be_bool(plugin):
    with raises(TypeError, "send_request_headers: end_of_stream must be bool, got str ('yes')"):
        plugin.http_stream().send_request_headers(REQ, end_of_stream="yes")
    with raises(TypeError, "send_request_body: end_of_stream must be bool, got NoneType"):
        plugin.http_stream().send_request_body(b"x", end_of_stream=None)


def test_tcp_data_is_checked():
    conn = Host().load_plugin(MODULE).tcp_stream()
    conn.connect()
    with raises(TypeError, "send_downstream_data: data must be str or bytes, got NoneType (None)"):
        conn.send_downstream_data(None)
    with raises(TypeError, "send_upstream_data: data must be str or bytes, got int (3)"):
        conn.send_upstream_data(3)
    with raises(TypeError, "send_upstream_data: end_of_stream must be bool, got int (1)"):
        conn.send_upstream_data(b"x", end_of_stream=1)
    assert conn.send_downstream_data("text") == "Continue"
    assert conn.upstream_received == b"text"


# -- plugin options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, exc, message",
    [
        ({"configuration": 5}, TypeError, "configuration must be str, bytes, dict or list, got int (5)"),
        ({"configuration": "\ud800"}, ValueError, "configuration '\\ud800' is not valid text: lone surrogate"),
        ({"vm_configuration": "\udfff"}, ValueError, "vm_configuration '\\udfff' is not valid text"),
        ({"configuration": {"a": {1, 2}}}, TypeError, "configuration: cannot be written as JSON: Object of type set is not JSON serializable"),
        ({"configuration": {"a": float("nan")}}, ValueError, "configuration: cannot be written as JSON: Out of range float values"),
        ({"properties": [1]}, TypeError, "properties must be a dict, got list ([1])"),
        ({"properties": {5: "x"}}, TypeError, "properties: key must be a dotted path (str) or a tuple of str, got int (5)"),
        ({"properties": {"a": object()}}, TypeError, "properties 'a': cannot encode object"),
        ({"properties": {"a": "\ud800"}}, ValueError, "properties 'a' '\\ud800' is not valid text"),
        ({"properties": {"a": 2**64}}, ValueError, "properties 'a': integer 18446744073709551616 out of range; allowed: -2**63 to 2**64-1"),
        ({"properties": {"a": {"b": -2**63 - 1}}}, ValueError, "properties 'a.b': integer -9223372036854775809 out of range"),
        ({"properties": {"a": {"b": {1, 2}}}}, TypeError, "properties 'a.b': cannot encode set ({1, 2}); allowed: str, bytes, int, bool, float, dict, list"),
        ({"environment": ["A"]}, TypeError, "environment must be a dict of str to str, got list (['A'])"),
        ({"environment": {"A": 1}}, TypeError, "environment 'A' value must be str, got int (1)"),
        ({"environment": {"A": None}}, TypeError, "environment 'A' value must be str, got NoneType"),
        ({"environment": {1: "x"}}, TypeError, "environment: name must be str, got int (1)"),
        ({"environment": {"A": "\udcff"}}, ValueError, "environment 'A' value '\\udcff' is not valid text"),
        ({"environment": {"A=B": "x"}}, ValueError, "environment: name 'A=B' must be non-empty, without '=' or NUL"),
        ({"deadline_ms": None}, TypeError, "deadline_ms must be an int, got NoneType (None)"),
        ({"deadline_ms": "5"}, TypeError, "deadline_ms must be an int, got str ('5')"),
        ({"deadline_ms": 0}, ValueError, "deadline_ms must be from 1 to 9223372036854775807, got 0"),
        ({"deadline_ms": 2**70}, ValueError, "deadline_ms must be from 1 to 9223372036854775807"),
        ({"memory_limit": 2**63}, ValueError, "memory_limit must be from 0 to 9223372036854775807, got 9223372036854775808"),
        ({"memory_limit": -1}, ValueError, "memory_limit must be from 0 to 9223372036854775807, got -1"),
        ({"memory_limit": None}, TypeError, "memory_limit must be an int, got NoneType"),
        ({"memory_limit": 1.5e9}, TypeError, "memory_limit must be an int, got float"),
        ({"workers": "2"}, TypeError, "workers must be an int, got str ('2')"),
        ({"workers": 2.0}, TypeError, "workers must be an int, got float (2.0)"),
        ({"workers": None}, TypeError, "workers must be an int, got NoneType"),
        ({"workers": True}, TypeError, "workers must be an int, got bool (True)"),
        ({"workers": 0}, ValueError, "workers must be from 1 to 1024, got 0"),
        ({"name": 5}, TypeError, "name must be str, got int (5)"),
        ({"root_id": None}, TypeError, "root_id must be str, got NoneType"),
        ({"vm_id": "\ud800"}, ValueError, "vm_id '\\ud800' is not valid text"),
        ({"failure_policy": []}, ValueError, "failure_policy []; allowed: fail_closed, fail_open, fail_reload"),
        ({"raise_on_trap": "no"}, TypeError, "raise_on_trap must be bool, got str ('no')"),
        ({"allow_on_headers_stop_iteration": None}, TypeError, "allow_on_headers_stop_iteration must be bool, got NoneType"),
    ],
)
def test_bad_plugin_options(options, exc, message):
    with raises(exc, message):
        load(**options)


def test_stream_properties_are_checked(plugin):
    with raises(TypeError, "properties 'a': cannot encode object"):
        plugin.http_stream(properties={"a": object()})
    with raises(ValueError, "properties 'n': integer 36893488147419103232 out of range"):
        plugin.tcp_stream(properties={"n": 2**65})


def test_reload_checks_like_load():
    p = load()
    with raises(TypeError, "configuration must be str, bytes, dict or list, got int (5)"):
        p.reload(configuration=5)
    with raises(TypeError, "environment 'A' value must be str, got int (1)"):
        p.reload(environment={"A": 1})


def test_valid_edge_values_are_accepted():
    p = load(configuration=bytearray(b"\xff"), vm_configuration=["x"], properties={("a", "b"): 2**64 - 1, "n": None},
             environment={"A": ""}, deadline_ms=2**63 - 1, memory_limit=2**63 - 1, workers=2)
    assert p.configuration == b"\xff" and p.vm_configuration == b'["x"]'
    assert p.http_stream().send_request_headers(REQ).status == "Continue"


@pytest.mark.parametrize("kwargs,error,message", [
    ({"body": "\ud800"}, ValueError, "respond: body '\\\\ud800' is not valid text"),
    ({"body": None}, TypeError, "respond: body must be str or bytes, got NoneType"),
    ({"status": "200"}, TypeError, "respond: status must be an int"),
    ({"status": 2**70}, ValueError, "respond: status must be from 100 to 999"),
    ({"trailers": {5: "x"}}, TypeError, "respond: trailers: header name must be str or bytes"),
])
def test_callout_answers_are_validated(kwargs, error, message):
    """Found by the fuzz campaign (fuzz/run.py): a lone surrogate in a callout body was a raw UnicodeEncodeError."""
    from proxywasm_host.memory import serialize_pairs

    hdrs = serialize_pairs([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"c")])
    wasm = build({"proxy_on_vm_start": "(drop (call $proxy_http_call {c} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 0x300))) (i32.const 1)"},
                 {"c": "c1", "h": hdrs})
    host = Host()
    host.add_cluster("c1")
    plugin = host.load_plugin(wasm)
    with pytest.raises(error, match=message):
        plugin.pending_http_calls[0].respond(**{"status": 200, **kwargs})
