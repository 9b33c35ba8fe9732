"""Small WAT network filters that probe one Envoy behaviour each. The same scenario runs in the
host (tests/test_tcp_semantics.py) and in Envoy 1.40 through parity
(integration/test_envoy_probe_scenarios.py): what the host tests pin is what Envoy was seen to do."""
from __future__ import annotations

from probe_filters import _letters, probe_line
from proxywasm_host.parity import Connection, Filter, Scenario
from watgen import build

#: the last byte of the data a callback sees, read from the buffer the callback names
LAST_BYTE = ("(drop (call $proxy_get_buffer_bytes (i32.const {buffer}) (i32.sub (local.get $size) (i32.const 1))"
             " (i32.const 1) (i32.const 0x100) (i32.const 0x104))) (i32.load8_u (i32.load (i32.const 0x100)))")


def _log(name: str) -> str:
    return f"(drop (call $proxy_log (i32.const 2) {{{name}}}))"


def upstream_hold() -> bytes:
    """Holds what the upstream sends while it is 1 to 4 bytes long (StopIteration), lets it
    through from 5 bytes on."""
    return build({
        "proxy_on_upstream_data": "(if (result i32) (i32.and (i32.gt_u (local.get $size) (i32.const 0))"
                                  " (i32.lt_u (local.get $size) (i32.const 5))) (then (i32.const 1)) (else (i32.const 0)))",
    })


def continue_reading() -> bytes:
    """By the last byte of the client's data: "h" holds it, "c" continues reading from inside the
    callback that then stops, "q" closes the connection (then continues: too late), anything else
    goes on."""
    last = LAST_BYTE.format(buffer=2)
    return build({
        "proxy_on_downstream_data": f"""
    (if (i32.eqz (local.get $size)) (then (return (i32.const 0))))
    (if (i32.eq {last} (i32.const 104)) (then (return (i32.const 1))))
    (if (i32.eq {last} (i32.const 99)) (then (drop (call $proxy_continue_stream (i32.const 2))) (return (i32.const 1))))
    (if (i32.eq {last} (i32.const 113))
      (then (drop (call $proxy_close_stream (i32.const 2))) (drop (call $proxy_continue_stream (i32.const 2)))
            (return (i32.const 1))))
    (i32.const 0)""",
        "proxy_on_downstream_connection_close": _log("down"),
        "proxy_on_upstream_connection_close": _log("up"),
    }, {"down": "downstream closed", "up": "upstream closed"})


def new_connection_stop() -> bytes:
    """Stops in on_new_connection and would let everything through afterwards."""
    return build({"proxy_on_new_connection": "(i32.const 1)", "proxy_on_downstream_data": "(i32.const 0)",
                  "proxy_on_downstream_connection_close": _log("down")}, {"down": "downstream closed"})


def http_stream_types() -> bytes:
    """A network filter continuing and closing the HTTP request and response streams (letters:
    "a" + WasmResult), then passing the data on."""
    cont, close = "(call $proxy_continue_stream (i32.const {}))", "(call $proxy_close_stream (i32.const {}))"
    calls = [cont.format(0), cont.format(1), close.format(0), close.format(1)]
    return build({"proxy_on_downstream_data": f"(if (local.get $size) (then {_letters(calls)})) (i32.const 0)"})


def status_probe() -> bytes:
    """Logs the answer of every map and buffer hostcall in every callback a network filter has."""
    strings = {"key": "x-p", "one": "1", "two": "2", "empty": ""}
    ok = " (i32.const 0)"
    return build({
        "proxy_on_new_connection": probe_line("new_connection") + ok,
        "proxy_on_downstream_data": probe_line("downstream_data") + ok,
        "proxy_on_upstream_data": probe_line("upstream_data") + ok,
        "proxy_on_downstream_connection_close": probe_line("downstream_close"),
        "proxy_on_upstream_connection_close": probe_line("upstream_close"),
        "proxy_on_done": probe_line("done") + " (i32.const 1)",
        "proxy_on_log": probe_line("log"),
    }, strings)


def property_probe() -> bytes:
    """Sets a filter-state property when the connection opens and logs that property in each
    callback, with upstream.address (or "missing") where Envoy's answer does not race the upstream
    connection: before tcp_proxy started it (on_new_connection) and once the upstream answered."""
    read = ("(if (i32.eqz (call $proxy_get_property {{{path}}} (i32.const 0x100) (i32.const 0x104)))"
            " (then (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 0x100)) (i32.load (i32.const 0x104)))))"
            " (else (drop (call $proxy_log (i32.const 2) {{miss}}))))")
    reads = read.format(path="state") + " " + read.format(path="upstream")
    return build({
        "proxy_on_new_connection": f"(drop (call $proxy_set_property {{state}} {{value}})) {reads} (i32.const 0)",
        "proxy_on_downstream_data": read.format(path="state") + " (i32.const 0)",
        "proxy_on_upstream_data": f"{reads} (i32.const 0)",
        "proxy_on_downstream_connection_close": reads,
        "proxy_on_upstream_connection_close": reads,
    }, {"state": "probe_state", "value": "kept", "upstream": "upstream\0address", "miss": "missing"})


def tcp_scenarios() -> dict[str, Scenario]:
    return {
        "upstream_hold": Scenario([Filter(upstream_hold(), name="u")], connections=[Connection(["hold", "on"])]),
        "continue_reading": Scenario([Filter(continue_reading(), name="c")], connections=[
            Connection(["ab", "xh", "yc", "z"]), Connection(["ab", "xh", "q", "never sent"])]),
        "new_connection_stop": Scenario([Filter(new_connection_stop(), name="n")], connections=[Connection(["ab", "cd"])]),
        "http_stream_types": Scenario([Filter(http_stream_types(), name="h")], connections=[Connection(["hello"])]),
        "status": Scenario([Filter(status_probe(), name="s")], connections=[Connection(["hello"])]),
        "properties": Scenario([Filter(property_probe(), name="p")], connections=[Connection(["hello"])]),
    }

