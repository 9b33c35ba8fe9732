"""Header maps: mutation, Envoy's status codes, availability windows (abi.md §0.9–0.14, §2.2, §2.4)."""
from proxywasm_host import Host
from watgen import build, out_bytes, records

REQ = {":method": "GET", ":path": "/p?q=1", ":authority": "example.com", "X-Dup": "one"}
GET = "(call $rec (call $proxy_get_header_map_value (i32.const {map}) {key} (i32.const 0x100) (i32.const 0x104)))"


def _stream(callbacks, strings=None, **kw):
    host = Host(connection_manager_defaults=False)
    plugin = host.load_plugin(build(callbacks, strings, **kw))
    return plugin.http_stream()


def test_mutations_reach_upstream_lowercased():
    s = _stream(
        {
            "proxy_on_request_headers": "(drop (call $proxy_add_header_map_value (i32.const 0) {k1} {v1}))"
            " (drop (call $proxy_add_header_map_value (i32.const 0) {k2} {v2}))"
            " (drop (call $proxy_replace_header_map_value (i32.const 0) {dup} {v1}))"
            " (drop (call $proxy_remove_header_map_value (i32.const 0) {k2}))"
            " (i32.const 0)"
        },
        {"k1": "X-New", "v1": "a", "k2": "x-gone", "v2": "b", "dup": "x-dup"},
    )
    r = s.send_request_headers({**REQ, "x-dup": "two"}, end_of_stream=True)
    assert r.status == "Continue" and not r.stopped
    # replace removes every value then appends; keys lower-cased
    assert s.upstream_request.headers.items() == [
        (":method", "GET"), (":path", "/p?q=1"), (":authority", "example.com"), ("x-new", "a"), ("x-dup", "a")
    ]
    assert s.upstream_request.complete


def test_get_value_first_of_repeated_and_missing_key_statuses():
    cb = GET.replace("{map}", "0").replace("{key}", "{dup}") + GET.replace("{map}", "0").replace("{key}", "{nope}")
    s = _stream({"proxy_on_request_headers": cb + " (i32.const 0)"}, {"dup": "X-DUP", "nope": "nope"})
    s.send_request_headers([*REQ.items(), ("x-dup", "two")])
    assert records(s.vm) == [0, 1]  # Ok (first value), NotFound in ABI 0.2
    legacy = _stream({"proxy_on_request_headers": GET.replace("{map}", "0").replace("{key}", "{nope}") + " (i32.const 0)"}, {"nope": "nope"}, abi="0_1_0")
    legacy.send_request_headers(REQ)
    assert records(legacy.vm) == [0]  # ABI 0.1.0: Ok with an empty value
    assert legacy.vm.memory.read_u32(0x104) == 0


def test_pairs_size_and_set_pairs():
    pairs_blob = b"\x01\0\0\0\x03\0\0\0\x01\0\0\0Foo\0z\0"
    s = _stream(
        {
            "proxy_on_request_headers": "(call $rec (call $proxy_get_header_map_size (i32.const 0) (i32.const 0x108))) (call $rec (i32.load (i32.const 0x108)))"
            " (call $rec (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104)))"
            " (drop (call $proxy_set_header_map_pairs (i32.const 2) {pairs}))"
            " (call $rec (call $proxy_set_header_map_pairs (i32.const 0) {pairs})) (i32.const 0)"
        },
        {"pairs": pairs_blob},
    )
    hdrs = {":path": "/", "ab": "cde"}
    s.send_request_headers(hdrs, end_of_stream=True)
    size = sum(len(k) + len(v) for k, v in hdrs.items())
    assert records(s.vm) == [0, size, 0, 0]  # byteSize, not the serialized size
    serialized = out_bytes(s.vm)
    assert serialized[:4] == b"\x02\0\0\0" and serialized.endswith(b":path\0/\0ab\0cde\0")
    assert s.upstream_request.headers.items() == [("foo", "z")]


def test_request_headers_unavailable_after_continue():
    body_cb = GET.replace("{map}", "0").replace("{key}", "{path}") + (
        " (call $rec (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 0x100) (i32.const 0x104)))"
        " (call $rec (i32.load (i32.const 0x104)))"
        " (call $rec (call $proxy_add_header_map_value (i32.const 0) {path} {path})) (i32.const 0)"
    )
    s = _stream({"proxy_on_request_body": body_cb, "proxy_on_response_headers": body_cb}, {"path": ":path"})
    s.send_request_headers(REQ)
    s.send_request_body(b"x", end_of_stream=True)
    # value: BadArgument; pairs: Ok and empty; add: BadArgument (Envoy nulls the map after Continue)
    assert records(s.vm) == [2, 0, 0, 2]
    s.send_response_headers({":status": "200"})
    assert records(s.vm)[4:] == [2, 0, 0, 2]


def test_on_log_reads_maps_read_only():
    cb = (
        GET.replace("{map}", "0").replace("{key}", "{path}")
        + GET.replace("{map}", "1").replace("{key}", "{path}")
        + " (call $rec (call $proxy_add_header_map_value (i32.const 2) {path} {path}))"
    )
    s = _stream({"proxy_on_log": cb}, {"path": ":path"})
    s.send_request_headers(REQ, end_of_stream=True)
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    s.complete()
    # request headers readable; absent request trailers read as NotFound; writes refused
    assert records(s.vm) == [0, 1, 2]


def test_stop_iteration_on_headers_becomes_stop_all():
    s = _stream({"proxy_on_request_headers": "(i32.const 1)"})
    r = s.send_request_headers(REQ)
    assert r.action == 1 and r.status == "StopAllIterationAndWatermark"
    assert s.upstream_request.headers is None
    host = Host()
    p = host.load_plugin(build({"proxy_on_request_headers": "(i32.const 1)"}), allow_on_headers_stop_iteration=True)
    assert p.http_stream().send_request_headers(REQ).status == "StopIteration"


def test_trailers_added_from_last_body_chunk():
    s = _stream(
        {"proxy_on_request_body": "(call $rec (call $proxy_add_header_map_value (i32.const 1) {k} {v})) (i32.const 0)"},
        {"k": "x-trailer", "v": "t"},
    )
    s.send_request_headers(REQ)
    s.send_request_body(b"abc", end_of_stream=False)
    s.send_request_body(b"def", end_of_stream=True)
    assert records(s.vm) == [2, 0]  # refused before end of stream, allowed with it
    assert s.upstream_request.trailers.items() == [("x-trailer", "t")]
    assert s.upstream_request.body == b"abcdef"


def test_connection_manager_adds_forwarded_proto_and_request_id():
    host = Host(seed=7)
    s = host.load_plugin(build({})).http_stream()
    s.send_request_headers(REQ)
    h = s.upstream_request.headers
    assert h["x-forwarded-proto"] == "http"
    assert len(h["x-request-id"]) == 36


def test_connection_manager_joins_inline_headers_and_drops_hop_by_hop_and_internal_ones():
    """Measured on Envoy 1.40 (integration/test_parity_feature.py compares it live)."""
    s = Host().load_plugin(build({})).http_stream()
    s.send_request_headers([*REQ.items(), ("authorization", "a"), ("x-token", "a"), ("authorization", "b"),
                            ("x-token", "b"), ("te", "gzip"), ("keep-alive", "5"), ("x-envoy-retry-on", "5xx"),
                            ("x-envoy-original-path", "/x")])
    h = s.upstream_request.headers
    assert h.get_all("authorization") == ["a,b"] and h.get_all("x-token") == ["a", "b"]
    assert [h.get(n) for n in ("te", "keep-alive", "x-envoy-retry-on")] == [None, None, None]
    assert h["x-envoy-original-path"] == "/x"
    trailers_only = Host().load_plugin(build({})).http_stream()
    trailers_only.send_request_headers({**REQ, "te": "trailers"})
    assert trailers_only.upstream_request.headers["te"] == "trailers"


def test_upstream_response_headers_as_envoy_hands_them_to_filters_and_client():
    """Measured on Envoy 1.40: keep-alive dropped and inline headers joined before the filters, the
    router's service time in place of the upstream's; connection, proxy-connection and upgrade
    dropped on the way to the client."""
    s = Host().load_plugin(build({})).http_stream()
    s.send_request_headers(REQ)
    s.send_response_headers([(":status", "200"), ("cache-control", "a"), ("set-cookie", "a"), ("cache-control", "b"),
                             ("set-cookie", "b"), ("x-envoy-upstream-service-time", "77"), ("keep-alive", "1"),
                             ("proxy-connection", "x"), ("upgrade", "h2c"), ("connection", "foo")])
    h = s.downstream_response.headers
    assert h.get_all("cache-control") == ["a,b"] and h.get_all("set-cookie") == ["a", "b"]
    assert h.get_all("x-envoy-upstream-service-time") == ["0"]
    assert [h.get(n) for n in ("keep-alive", "proxy-connection", "upgrade")] == [None] * 3
    assert "foo" not in h.get_all("connection")


def test_add_appends_to_a_header_envoy_keeps_inline():
    """Measured on Envoy 1.40 (integration/test_parity_feature.py): accept is inline, x-token is not."""
    add = "(drop (call $proxy_add_header_map_value (i32.const 0) {%s} {v}))"
    s = Host().load_plugin(build({"proxy_on_request_headers": add % "acc" + add % "tok" + " (i32.const 0)"},
                                 {"acc": "accept", "tok": "x-token", "v": "Z"})).http_stream()
    s.send_request_headers({**REQ, "accept": "a", "x-token": "a"})
    h = s.upstream_request.headers
    assert h.get_all("accept") == ["a,Z"] and h.get_all("x-token") == ["a", "Z"]


def test_a_filter_that_removes_x_forwarded_proto_leaves_the_request_without_a_route():
    """Measured on Envoy 1.40 (integration/test_parity_feature.py): the router re-matches the route
    after a filter changed the request headers, and finds none without x-forwarded-proto: a local
    404 (route_not_found) that this filter's response callbacks see; the upstream gets nothing.
    proxy_set_header_map_pairs with a list that lacks it does the same."""
    cb = "(drop (call $proxy_remove_header_map_value (i32.const 0) {xfp})) (i32.const 0)"
    wasm = build({"proxy_on_request_headers": cb}, {"xfp": "x-forwarded-proto"})
    s = Host().load_plugin(wasm).http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    assert s.upstream_request.headers is None
    assert s.local_reply.status_code == 404 and s.local_reply.details == "route_not_found"
    assert s.downstream_response.headers[":status"] == "404" and s.downstream_response.body == b""
    off = Host(connection_manager_defaults=False).load_plugin(wasm).http_stream()
    off.send_request_headers(REQ, end_of_stream=True)
    assert off.upstream_request.headers is not None  # no connection manager emulation, no route table


def test_local_reply_keeps_every_header_line_the_filter_gave():
    """Measured on Envoy 1.40: proxy_send_local_response adds the filter's headers one by one, so a
    repeated name gives several lines, joined for a header Envoy keeps inline (cache-control)."""
    from proxywasm_host.memory import serialize_pairs

    pairs = serialize_pairs([(b"x-t", b"1"), (b"x-t", b"2"), (b"cache-control", b"a"), (b"cache-control", b"b")])
    cb = "(drop (call $proxy_send_local_response (i32.const 403) {d} {b} {h} (i32.const -1))) (i32.const 1)"
    s = Host().load_plugin(build({"proxy_on_request_headers": cb}, {"d": "denied", "b": "no", "h": pairs})).http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    h = s.downstream_response.headers
    assert h.get_all("x-t") == ["1", "2"] and h.get_all("cache-control") == ["a,b"]


def test_host_is_authority_in_request_headers():
    """Measured on Envoy 1.40: get, add, replace and remove of "host" on the request headers act on
    :authority (add joins it, a pseudo-header stays before the regular headers), and the
    request.headers.host attribute reads it; response headers have no such alias."""
    get = "(call $rec (call $proxy_get_header_map_value (i32.const 0) {h} (i32.const 0x100) (i32.const 0x104)))"
    add = "(drop (call $proxy_add_header_map_value (i32.const 0) {h} {v}))"
    prop = "(call $rec (call $proxy_get_property {p} (i32.const 0x108) (i32.const 0x10c)))"
    wasm = build({"proxy_on_request_headers": get + add + prop + " (i32.const 0)"},
                 {"h": "host", "v": "other", "p": "request\0headers\0host"})
    s = Host().load_plugin(wasm).http_stream()
    s.send_request_headers({**REQ, "x-b": "1"})
    assert records(s.vm) == [0, 0] and out_bytes(s.vm) == b"example.com"
    h = s.upstream_request.headers
    assert h.get_all(":authority") == ["example.com,other"] and h.get("host") is None
    assert [k for k, _ in h.items()][:4] == [":authority", ":path", ":method", ":scheme"]


def test_set_pairs_adds_pair_by_pair_as_envoy_does():
    """proxy_set_header_map_pairs: every header removed, then each pair added (measured on 1.40): a
    repeated inline header is joined, "host" is :authority, others stay separate lines."""
    from proxywasm_host.memory import serialize_pairs

    pairs = serialize_pairs([(b":path", b"/"), (b":method", b"GET"), (b"host", b"h"), (b"accept", b"a"),
                             (b"accept", b"b"), (b"x-t", b"1"), (b"x-t", b"2"), (b"x-forwarded-proto", b"http")])
    cb = "(drop (call $proxy_set_header_map_pairs (i32.const 0) {p})) (i32.const 0)"
    s = Host().load_plugin(build({"proxy_on_request_headers": cb}, {"p": pairs})).http_stream()
    s.send_request_headers(REQ, end_of_stream=True)
    h = s.upstream_request.headers
    assert h.items()[:3] == [(":path", "/"), (":method", "GET"), (":authority", "h")]
    assert h.get_all("accept") == ["a,b"] and h.get_all("x-t") == ["1", "2"]
