"""Request targets Envoy 1.40's HTTP/1.1 codec and connection manager take apart or refuse before
any filter runs: a fragment, a target that is not a path, "*", absolute URLs. The probe logs, in
on_log, what a filter can still read of each request. Run in the host by
tests/test_request_target.py and in Envoy through parity by integration/test_envoy_probe_scenarios.py."""
from __future__ import annotations

from proxywasm_host.parity import Filter, Request, Scenario
from watgen import build

#: read in on_log, each logged as its value or "missing" (request.total_size is left out: Envoy's
#: router adds x-envoy-expected-rq-timeout-ms to a routed request after the filters, which the host does not;
#: response.code too: its bytes are no UTF-8, which the log lines need; the client's status says it)
LOG_PROPERTIES = ["response.code_details", "response.flags", "request.path", "request.scheme", "request.host",
                  "response.total_size"]
#: method, target as sent, with host: example.com
TARGETS = [("GET", "/a#frag"), ("GET", "a"), ("GET", "*"), ("OPTIONS", "*"), ("GET", "http://other.com/a?b#c"),
           ("GET", "https://other.com/a"), ("GET", "HTTP://other.com"), ("GET", "http://other.com?q=1"),
           ("GET", "/a/../b//c%2Fd"), ("GET", "http://other.com/a/b?u=http://y"), ("GET", "http://other.com?q=/a?b"),
           ("GET", "ftp://other.com/a"), ("GET", "http:///a"), ("GET", "https:///a"), ("GET", "http://?u=ftp://y")]


def target_probe() -> bytes:
    """Logs LOG_PROPERTIES in on_log; its header callbacks continue."""
    read = ("(if (i32.eqz (call $proxy_get_property {{p{i}}} (i32.const 0x100) (i32.const 0x104)))"
            " (then (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))))"
            " (else (drop (call $proxy_log (i32.const 2) {{miss}}))))")
    strings = {"miss": "missing", **{f"p{i}": path.replace(".", "\0") for i, path in enumerate(LOG_PROPERTIES)}}
    on_log = " ".join(read.format(i=i) for i in range(len(LOG_PROPERTIES)))
    return build({"proxy_on_request_headers": "(i32.const 0)", "proxy_on_response_headers": "(i32.const 0)",
                  "proxy_on_log": on_log, "proxy_on_done": "(i32.const 1)"}, strings)


def request_target_scenarios() -> dict[str, Scenario]:
    probe = Filter(target_probe(), name="t")
    return {
        "targets": Scenario([probe], [Request(method, target) for method, target in TARGETS]),
        "grpc_fragment": Scenario([probe], [Request("POST", "/svc/M#x", {"content-type": "application/grpc"},
                                                    body=b"")]),
        "fragment_with_a_body": Scenario([probe], [Request("POST", "/b#", body=b"xyz")]),
    }
