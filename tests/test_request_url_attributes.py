"""request.path, url_path, query, scheme, referer and useragent as proxy_get_property answers them
from the request headers. The values are Envoy 1.40's answers to the same probe, measured through
proxywasm_host.parity.run_parity (GET /p?a=1?b=2 over plaintext HTTP/1.1, no referer or
user-agent): the query starts after the first "?", the scheme of a plaintext request is http,
which Envoy's codec always sets, and a header the request lacks is not found."""
from __future__ import annotations

from proxywasm_host.parity import Filter, Request, Scenario, run_host
from watgen import build

PATHS = ["request.path", "request.url_path", "request.query", "request.scheme", "request.referer", "request.useragent"]
ENVOY = ["/p?a=1?b=2", "/p", "a=1?b=2", "http", "missing", "missing"]


def _probe() -> bytes:
    """Logs each property of PATHS from the request headers, or "missing"."""
    read = ("(if (i32.eqz (call $proxy_get_property {{p{i}}} (i32.const 0x100) (i32.const 0x104)))"
            " (then (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))))"
            " (else (drop (call $proxy_log (i32.const 2) {{miss}}))))")
    strings = {"miss": "missing", **{f"p{i}": path.replace(".", "\0") for i, path in enumerate(PATHS)}}
    return build({"proxy_on_request_headers": " ".join(read.format(i=i) for i in range(len(PATHS))) + " (i32.const 0)"},
                 strings)


def _seen(**host_options: bool) -> list[str]:
    side = run_host(Scenario([Filter(_probe(), name="url")], [Request("GET", "/p?a=1?b=2")]), **host_options)
    return [message for _, message in side.logs["'wasm log url:'"]]


def test_the_url_parts_and_absent_headers_read_as_in_envoy() -> None:
    assert _seen() == ENVOY


def test_a_request_without_scheme_reads_http_as_envoys_codec_sets_it() -> None:
    """Without the connection manager's defaults the test's request has no :scheme; the answer is
    still the one Envoy gives every plaintext request."""
    assert _seen(connection_manager_defaults=False) == ENVOY


def test_a_path_without_a_query_has_an_empty_one() -> None:
    """Envoy 1.40 answers request.query "" (found, not NotFound) for a path without "?" (measured through parity)."""
    side = run_host(Scenario([Filter(_probe(), name="url")], [Request("GET", "/p")]))
    assert [message for _, message in side.logs["'wasm log url:'"]] == ["/p", "/p", "", "http", "missing", "missing"]


def test_the_scheme_follows_a_valid_forwarded_proto() -> None:
    """Envoy 1.40 sets a plaintext request's :scheme from a valid x-forwarded-proto (http or https,
    any case, answered in lower case) and from nothing else (measured through parity: HTTPS gives
    https; foo, "https, http" and an empty value give http; the header itself goes upstream as sent)."""
    sent = ["https", "HTTPS", "foo", "https, http", ""]
    requests = [Request("GET", "/", headers={"x-forwarded-proto": value}) for value in sent]
    side = run_host(Scenario([Filter(_probe(), name="url")], requests))
    schemes = [message for _, message in side.logs["'wasm log url:'"]][PATHS.index("request.scheme")::len(PATHS)]
    assert schemes == ["https", "https", "http", "http", "http"]
    forwarded = [dict(exchange.upstream[0])["x-forwarded-proto"] for exchange in side.exchanges if exchange.upstream]
    assert forwarded == sent[:-1]  # an empty x-forwarded-proto matches no route (404 in Envoy too)
