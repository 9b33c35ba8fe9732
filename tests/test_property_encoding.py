"""Property values as proxy_get_property hands them over (Envoy's serializeValue, measured on
1.40 where noted), and how overrides are looked up: the survivors of a mutmut run over properties.py."""
import struct

import pytest

from proxywasm_host import Host
from proxywasm_host.memory import serialize_pairs
from proxywasm_host.properties import SerializationFailure, encode_value, is_metadata, normalize_overrides
from watgen import build, records

REQ = {":method": "GET", ":path": "/a", ":authority": "example.com"}


@pytest.mark.parametrize("value, encoded", [
    (True, b"\x01"), (False, b"\x00"),
    (-1, struct.pack("<q", -1)), ((1 << 63) - 1, struct.pack("<q", (1 << 63) - 1)),
    (1 << 63, struct.pack("<Q", 1 << 63)), (-(1 << 63), struct.pack("<q", -(1 << 63))),
    (["a", "b"], serialize_pairs([(b"a", b""), (b"b", b"")])), ([], b"\0\0\0\0"), ({}, b"\0\0\0\0"),
    ({b"k": "v", 7: "x"}, serialize_pairs([(b"k", b"v"), (b"7", b"x")])),
])
def test_scalar_list_and_map_encodings(value, encoded):
    assert encode_value(value) == encoded


def test_values_envoy_cannot_hold_are_refused_with_their_path():
    with pytest.raises(ValueError, match=r"^properties 'a.b': integer 18446744073709551616 out of range"):
        normalize_overrides({"a.b": 1 << 64})
    with pytest.raises(TypeError, match=r"property value: cannot encode set .* allowed: .* or None$"):
        encode_value({1})
    with pytest.raises(TypeError, match=r"^properties 'm.0': cannot encode"):
        normalize_overrides({"m": [object()]})
    with pytest.raises(SerializationFailure, match=r"^properties 'metadata': a Struct's null"):
        encode_value(normalize_overrides({"metadata": {"filter_metadata": {"n": {"x": None}}}})[("metadata",)]
                     ["filter_metadata"]["n"]["x"], "metadata")


@pytest.mark.parametrize("path, metadata", [
    (("metadata",), True), (("xds", "route_metadata"), True), (("xds", "listener_metadata"), True),
    (("xds", "route_name"), False), (("xds", "route_metadata", "filter_metadata"), False),
    (("route_metadata",), False), (("source", "x_metadata"), False), (("metadata", "filter_metadata"), False),
])
def test_which_overrides_are_metadata_messages(path, metadata):
    assert is_metadata(path) is metadata


def _read(paths: dict[str, str], **plugin_options) -> tuple[list[int], list[bytes]]:
    """Each path read in on_request_headers: the status, and the bytes (b"" when not Ok)."""
    cb = "".join(f"(call $rec (call $proxy_get_property {{{k}}} (i32.const 0x100) (i32.const 0x104)))"
                 " (call $rec (i32.load (i32.const 0x100))) (call $rec (i32.load (i32.const 0x104)))"
                 " (i32.store (i32.const 0x104) (i32.const 0))" for k in paths)
    plugin = Host().load_plugin(build({"proxy_on_request_headers": cb + " (i32.const 0)"},
                                      {k: v.replace(".", "\0") for k, v in paths.items()}), **plugin_options)
    s = plugin.http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    rec = records(s.vm)
    statuses = rec[0::3]
    values = [bytes(s.vm.memory.read(ptr, size)) if st == 0 else b"" for st, ptr, size in zip(statuses, rec[1::3], rec[2::3])]
    return statuses, values


def test_plugin_identity_properties():
    statuses, values = _read({"n": "plugin_name", "r": "plugin_root_id", "v": "plugin_vm_id", "x": "plugin_name.x"},
                             name="pname", root_id="proot", vm_id="pvm")
    assert statuses == [0, 0, 0, 1] and values[:3] == [b"pname", b"proot", b"pvm"]


def test_overrides_walk_into_maps_and_lists():
    """An override is found by its exact path, or by walking into a map value; a list is indexed
    by a number below its length; anything else is NotFound."""
    props = {"my.map": {"a": {"b": "deep"}, "list": ["x", "y"]}, "my.list": ["p", "q"], "my.flag": True}
    statuses, values = _read({"e": "my.map.a.b", "m": "my.map.a.missing", "n": "my.map.a.b.c", "l1": "my.list.1",
                              "l2": "my.list.2", "ln": "my.list.x", "f": "my.flag", "ml": "my.map.list.0"},
                             properties=props)
    assert statuses == [0, 1, 1, 0, 1, 1, 0, 0]
    assert values[0] == b"deep" and values[3] == b"q" and values[6] == b"\x01" and values[7] == b"x"


def test_request_headers_host_alias_reaches_deeper_segments_not():
    statuses, values = _read({"h": "request.headers.host", "a": "request.headers.:authority",
                              "x": "request.headers.host.x", "r": "request.host"})
    assert statuses == [0, 0, 1, 0] and values[0] == values[1] == values[3] == b"example.com"


def test_xds_metadata_override_reads_whole_as_protobuf():
    md = {"filter_metadata": {"r": {"k": "x"}}}
    statuses, values = _read({"w": "xds.route_metadata", "k": "xds.route_metadata.filter_metadata.r.k"},
                             properties={"xds.route_metadata": md})
    assert statuses == [0, 0] and values == [b"\n\x0f\n\x01r\x12\n\n\x08\n\x01k\x12\x03\x1a\x01x", b"x"]  # Envoy's bytes


def test_a_map_key_that_is_not_text_names_itself():
    with pytest.raises(ValueError, match=r"^properties 'm': map key '\\ud800' is not valid text"):
        normalize_overrides({"m": {"\ud800": "v"}})
