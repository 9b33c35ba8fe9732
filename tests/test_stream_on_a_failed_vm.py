"""A stream under way when another stream fails the VM, as Envoy 1.40 ran the probe of
tests/vm_failure_probes.py (integration/test_envoy_vm_failure.py): at its next callback it is
answered 503 (wasm_fail_stream) without calling the guest, whatever the failure policy (that
decides for the streams that start later: fail_closed answers them 503, fail_open passes them by
the filter), and its upstream request never completes."""
from __future__ import annotations

import pytest

from proxywasm_host import Host
from proxywasm_host.plugin import Plugin
from vm_failure_probes import FIRST, LATER, MEASURED, SECOND, trap_on_b

REQUEST = {":method": "POST", ":path": "/a", ":authority": "a"}


def host_outcome(policy: str) -> tuple[tuple[int, bytes | None], tuple[int, bool] | None]:
    """The status "/a" gets and the body its upstream request had if it completed (None if not);
    for the policies of LATER, the status of a request that starts after the failure and whether
    the filter marked it."""
    plugin = Host().load_plugin(trap_on_b(), failure_policy=policy, raise_on_trap=False)
    return _under_way(plugin), _later(plugin) if policy in LATER else None


def _under_way(plugin: Plugin) -> tuple[int, bytes | None]:
    a = plugin.http_stream()
    a.send_request_headers(REQUEST)
    a.send_request_body(FIRST, end_of_stream=False)
    plugin.http_stream().send_request_headers({**REQUEST, ":path": "/b"}, end_of_stream=True)
    a.send_request_body(SECOND, end_of_stream=True)
    if a.local_reply is not None:
        assert a.local_reply.details == "wasm_fail_stream"
        return a.local_reply.status_code, a.upstream_request.body if a.upstream_request.complete else None
    a.send_response_headers({":status": "200"}, end_of_stream=True)
    return int(a.downstream_response.headers[":status"]), a.upstream_request.body


def _later(plugin: Plugin) -> tuple[int, bool]:
    c = plugin.http_stream()
    c.send_request_headers({**REQUEST, ":method": "GET", ":path": "/c"}, end_of_stream=True)
    if c.local_reply is None:
        c.send_response_headers({":status": "200"}, end_of_stream=True)
    return int(c.downstream_response.headers[":status"]), "x-seen" in c.downstream_response.headers


@pytest.mark.parametrize("policy", list(MEASURED))
def test_a_stream_under_way_fails_whatever_the_policy(policy: str) -> None:
    assert host_outcome(policy) == (MEASURED[policy], LATER.get(policy))
