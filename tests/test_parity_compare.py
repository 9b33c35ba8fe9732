"""parity.compare on observations alone (no Envoy): what counts as the same trace."""
from proxywasm_host.parity import Side, compare


def _trace(*calls: str) -> Side:
    return Side(callbacks=list(calls), by_context={1: (list(calls), [])})


def test_allocation_sizes_may_differ_by_a_timing_values_digits_only():
    """A map the guest copies out may hold x-envoy-upstream-service-time (Envoy: real ms, host: 0)."""
    base = ["proxy_on_http_call_response(1, 5, 4, 2, 0)", "proxy_on_memory_allocate({})"]
    same = compare(_trace(base[0], base[1].format(123)), _trace(base[0], base[1].format(121)))
    apart = compare(_trace(base[0], base[1].format(124)), _trace(base[0], base[1].format(121)))
    other = compare(_trace("malloc(12)"), _trace("proxy_on_memory_allocate(12)"))
    assert same == [] and [d.observation for d in apart + other] == ["callbacks of context 1 from #1",
                                                                        "callbacks of context 1 from #0"]


def test_bytes_that_are_no_utf8_compare_as_envoys_output_prints_them():
    """Envoy's side is read from its log and admin output (undecodable bytes become U+FFFD); the host
    keeps a guest's bytes as surrogates. A metric name, a log line with 0xff: the same; other text: not."""
    envoy = Side(logs={"g": [("info", "a\ufffd")]}, metrics={"probe.\ufffd": 1})
    assert compare(envoy, Side(logs={"g": [("info", "a\udcff")]}, metrics={"probe.\udcff": 1})) == []
    apart = compare(envoy, Side(logs={"g": [("info", "a?")]}, metrics={"probe.?": 1}))
    assert [d.observation for d in apart] == ["log lines g from line 0", "metrics"]
