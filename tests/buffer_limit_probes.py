"""A filter that buffers the whole request body (StopIterationAndBuffer until the end of stream),
and the body sizes about Envoy's default per_connection_buffer_limit_bytes (1 MiB) it is sent:
what Envoy 1.40 answered each (integration/test_envoy_buffer_limit.py measures it with a body
held in one chunk before the end of stream; tests/test_buffer_limit_boundary.py pins it)."""
from __future__ import annotations

from watgen import build

LIMIT = 1 << 20
#: body size -> the status Envoy answered: a buffer at the limit is taken, one byte over it is 413
MEASURED = {LIMIT - 1: 200, LIMIT: 200, LIMIT + 1: 413}


def buffer_all() -> bytes:
    return build({"proxy_on_request_body": "(i32.eqz (local.get $eos))"})
