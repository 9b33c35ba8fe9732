"""A filter that traps in the request headers of a request to "/b" and lets every other request
through: a request to "/a" whose body is still coming when a request to "/b" fails the VM shows
what Envoy 1.40 does to a stream already under way on a VM another stream failed
(integration/test_envoy_vm_failure.py measures it; tests/test_stream_on_a_failed_vm.py pins it)."""
from __future__ import annotations

from watgen import build

#: the second byte of the request's :path
PATH_2ND = ("(drop (call $proxy_get_header_map_value (i32.const 0) {path} (i32.const 0x100) (i32.const 0x104)))"
            " (i32.load8_u (i32.add (i32.load (i32.const 0x100)) (i32.const 1)))")
FIRST, SECOND = b"xy", b"zw"  # the body of "/a", before and after "/b" failed the VM
#: policy -> (the status "/a" gets at its next chunk, the body of its upstream request if it completed):
#: whatever the policy (it decides for later streams), Envoy fails the stream
MEASURED = {"fail_closed": (503, None), "fail_open": (503, None), "fail_reload": (503, None)}


def trap_on_b() -> bytes:
    return build({"proxy_on_request_headers": f"(if (i32.eq {PATH_2ND} (i32.const 98)) (then unreachable)) (i32.const 0)",
                  "proxy_on_request_body": "(i32.const 0)"}, {"path": ":path"})
