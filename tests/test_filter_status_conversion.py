"""The filter status the host reports for each callback Envoy called, where the guest's answer
alone does not give it: a raw value above the callback's range, and a body or trailers callback
that answered locally or trapped (then Envoy 1.40 reports NoBuffer for the body, StopIteration for
the trailers, whatever the callback returned). Measured in Envoy with the same probes by
integration/test_envoy_filter_statuses.py."""
from __future__ import annotations

import pytest

from filter_status_probes import BODY, TRAILERS, status_probes
from proxywasm_host import Host

POST = {":method": "POST", ":path": "/", ":authority": "a"}

#: what Envoy's filter manager got from each callback it called, in order (measured on 1.40)
MEASURED = {
    "headers_5": ["StopAllIterationAndWatermark"],
    "body_4_trailers_2": ["Continue", "StopIterationNoBuffer", "StopIteration"],
    "reply_in_body": ["Continue", "StopIterationNoBuffer"],
    "reply_in_trailers": ["Continue", "Continue", "StopIteration"],
    "trap_in_body": ["Continue", "StopIterationNoBuffer"],
    "trap_in_trailers": ["Continue", "Continue", "StopIteration"],
}


def host_statuses(module: bytes) -> list[str]:
    """The statuses of the callbacks the host called for the probes' request."""
    s = Host().load_plugin(module, raise_on_trap=False).http_stream()
    results = [s.send_request_headers(POST)]
    if not results[0].stopped:
        results.append(s.send_request_body(BODY, end_of_stream=False))
        results.append(s.send_request_trailers(TRAILERS))
    return [r.status for r in results if r.status != "NotCalled"]


@pytest.mark.parametrize("name", list(MEASURED))
def test_the_status_envoy_got_from_each_callback(name: str) -> None:
    assert host_statuses(status_probes()[name]) == MEASURED[name]
