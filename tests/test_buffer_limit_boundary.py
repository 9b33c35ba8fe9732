"""A request body the filter buffers up to exactly Envoy's per_connection_buffer_limit_bytes goes
upstream; one byte more is a local 413 (as Envoy 1.40 answered the probe of
tests/buffer_limit_probes.py, measured by integration/test_envoy_buffer_limit.py)."""
from __future__ import annotations

import pytest

from buffer_limit_probes import MEASURED, buffer_all
from proxywasm_host import Host

POST = {":method": "POST", ":path": "/", ":authority": "a"}


def host_status(size: int) -> int:
    """The status the client gets for a body of `size` bytes held in one chunk, then its end."""
    s = Host().load_plugin(buffer_all()).http_stream()
    s.send_request_headers(POST)
    s.send_request_body(b"x" * size, end_of_stream=False)
    s.send_request_body(b"", end_of_stream=True)
    if s.local_reply is not None:
        return s.local_reply.status_code
    s.send_response_headers({":status": "200"}, end_of_stream=True)
    assert s.upstream_request.body_size == size
    return int(s.downstream_response.headers[":status"])


@pytest.mark.parametrize("size", list(MEASURED))
def test_a_buffer_at_the_limit_is_taken_one_byte_over_is_413(size: int) -> None:
    assert host_status(size) == MEASURED[size]
