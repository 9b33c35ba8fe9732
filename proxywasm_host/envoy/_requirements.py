"""What every module of ``proxywasm_host.envoy`` needs beyond the core: imported first by the
package, so that without the ``envoy`` extra any import of it fails in one line naming the extra."""
from ..extras import require

require("httpx", "envoy", "proxywasm_host.envoy (the Envoy harness, publish, parity)")
