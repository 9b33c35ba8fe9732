"""Real-Envoy e2e harness: run Envoy 1.40 with ECDS-mounted proxy-wasm filters and hot-reload them.

Public API::

    from proxywasm_host.envoy import EnvoyHarness, EchoUpstream, WasmFilter, StaticFilter
    from proxywasm_host.envoy import publish  # hot-swap a filter of any Envoy that mounts it from an ECDS file
"""

from . import _requirements  # noqa: F401  # first, so that a missing extra fails in one line naming it
from .config import ListenerSpec, StaticFilter, WasmFilter
from .harness import DOCKER_IMAGE, EnvoyError, EnvoyHarness
from .publish import PublishResult, publish
from .upstream import EchoUpstream
from .validate import PublishError, check_wasm_module, envoy_validate, find_envoy

__all__ = [
    "DOCKER_IMAGE", "EchoUpstream", "EnvoyError", "EnvoyHarness", "ListenerSpec", "PublishError",
    "PublishResult", "StaticFilter", "WasmFilter", "check_wasm_module", "envoy_validate", "find_envoy", "publish",
]
