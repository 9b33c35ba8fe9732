"""A stream under way when another stream fails the VM, as Envoy 1.40 ran the probe of
tests/vm_failure_probes.py (integration/test_envoy_vm_failure.py): at its next callback it is
answered 503 (wasm_fail_stream) without calling the guest, whatever the failure policy (that
decides for the streams that start later), and its upstream request never completes."""
from __future__ import annotations

import pytest

from proxywasm_host import Host
from vm_failure_probes import FIRST, MEASURED, SECOND, trap_on_b

REQUEST = {":method": "POST", ":path": "/a", ":authority": "a"}


def host_outcome(policy: str) -> tuple[int, bytes | None]:
    """The status "/a" gets and the body its upstream request had if it completed (None if not)."""
    plugin = Host().load_plugin(trap_on_b(), failure_policy=policy, raise_on_trap=False)
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


@pytest.mark.parametrize("policy", list(MEASURED))
def test_a_stream_under_way_fails_whatever_the_policy(policy: str) -> None:
    assert host_outcome(policy) == MEASURED[policy]
