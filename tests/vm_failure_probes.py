"""A filter that traps in the request headers of a request to "/b" and lets every other request
through: a request to "/a" whose body is still coming when a request to "/b" fails the VM shows
what Envoy 1.40 does to a stream already under way on a VM another stream failed
and a request that starts after it shows what the failure policy decides (integration/test_envoy_vm_failure.py
measures both; tests/test_stream_on_a_failed_vm.py pins them)."""
from __future__ import annotations

from watgen import build

#: the second byte of the request's :path
PATH_2ND = ("(drop (call $proxy_get_header_map_value (i32.const 0) {path} (i32.const 0x100) (i32.const 0x104)))"
            " (i32.load8_u (i32.add (i32.load (i32.const 0x100)) (i32.const 1)))")
FIRST, SECOND = b"xy", b"zw"  # the body of "/a", before and after "/b" failed the VM
#: policy -> (the status "/a" gets at its next chunk, the body of its upstream request if it completed):
#: whatever the policy (it decides for later streams), Envoy fails the stream
MEASURED = {"fail_closed": (503, None), "fail_open": (503, None), "fail_reload": (503, None)}
#: policy -> (the status of a request that starts right after the failure, whether the filter marked
#: it): fail_open passes it by the filter. (fail_reload answers 503 too for about a second, Envoy's
#: reload backoff, then runs requests in a new VM: the host reloads at once, a difference left open)
LATER = {"fail_closed": (503, False), "fail_open": (200, False)}


def trap_on_b() -> bytes:
    """It marks every response it sees with x-seen: 1."""
    return build({"proxy_on_request_headers": f"(if (i32.eq {PATH_2ND} (i32.const 98)) (then unreachable)) (i32.const 0)",
                  "proxy_on_request_body": "(i32.const 0)",
                  "proxy_on_response_headers": "(drop (call $proxy_add_header_map_value (i32.const 2) {seen} {one}))"
                                               " (i32.const 0)"}, {"path": ":path", "seen": "x-seen", "one": "1"})
