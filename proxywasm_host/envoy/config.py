"""Envoy configuration for the harness, rendered from the YAML templates shipped in the package
(``proxywasm_host/envoy/templates/``; the repository's ``envoy/`` holds only what a user runs).

Templates hold the structure; Python only fills JSON-quoted scalars and the
variable-length lists (listeners, filters, clusters). The result is written as
JSON, which Envoy accepts as YAML.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Union

import yaml

WASM_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER_FILTER: dict[str, Any] = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def render(template: str, **values: Any) -> Any:
    """Load ``templates/<template>`` with every ``${key}`` replaced by ``json.dumps(value)``."""
    text = (resources.files("proxywasm_host.envoy") / "templates" / template).read_text("utf-8")
    quoted = {k: json.dumps(v) for k, v in values.items()}
    return yaml.load(string.Template(text).substitute(quoted), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@dataclass
class WasmFilter:
    """A proxy-wasm HTTP filter mounted through ECDS (hot-reloadable).

    ``wasm`` is the initial module (path or bytes); ``None`` starts the filter
    with an empty ECDS resource list, so the listener answers 500 until the
    first ``publish``.
    """

    name: str
    wasm: Union[str, os.PathLike[str], bytes, None] = None
    configuration: str = ""
    root_id: str = ""
    vm_id: str = ""
    plugin_name: str = ""
    failure_policy: str = "FAIL_CLOSED"


@dataclass
class StaticFilter:
    """A filter with a fixed ``typed_config`` (native Envoy filters, e.g. for benchmarks)."""

    name: str
    typed_config: dict[str, Any]


FilterSpec = Union[WasmFilter, StaticFilter]


@dataclass
class ListenerSpec:
    """A listener (127.0.0.1, ``port`` 0 = Envoy picks) with its own HTTP filter chain."""

    name: str
    filters: list[FilterSpec] = field(default_factory=list)
    port: int = 0
    cluster: str = "upstream"


def wasm_typed_config(
    *,
    plugin_name: str,
    root_id: str,
    vm_id: str,
    configuration: str,
    filename: str,
    sha256: str,
    failure_policy: str = "FAIL_CLOSED",
) -> dict[str, Any]:
    """The ``envoy.extensions.filters.http.wasm.v3.Wasm`` config for one module + plugin config."""
    return render(
        "wasm-filter.yaml",
        plugin_name=plugin_name,
        root_id=root_id,
        vm_id=vm_id,
        configuration=configuration,
        failure_policy=failure_policy,
        vm_configuration=f"sha256:{sha256}",
        filename=filename,
    )


def ecds_response(name: str, version: str, typed_config: dict[str, Any] | None) -> dict[str, Any]:
    """A DiscoveryResponse holding one TypedExtensionConfig (or none when ``typed_config`` is None)."""
    doc = render("ecds-response.yaml", version=version, name=name)
    if typed_config is None:
        doc["resources"] = []
    else:
        doc["resources"][0]["typed_config"] = typed_config
    return doc


def ecds_filter(name: str, ecds_path: str, ecds_dir: str) -> dict[str, Any]:
    """The HCM ``http_filters`` entry that mounts ``name`` from an ECDS file."""
    return render("ecds-filter.yaml", name=name, ecds_path=ecds_path, ecds_dir=ecds_dir)


def render_bootstrap(
    *,
    admin_port: int,
    upstream_port: int,
    listeners: list[tuple[ListenerSpec, list[dict[str, Any]]]],
    clusters: dict[str, int],
    node_id: str = "proxywasm-e2e",
    node_cluster: str = "proxywasm-e2e",
    address: str = "127.0.0.1",
    upstream_address: str = "127.0.0.1",
) -> dict[str, Any]:
    """The whole bootstrap: listeners with their rendered filter entries, plus extra clusters."""
    doc = render(
        "bootstrap.yaml",
        node_id=node_id,
        node_cluster=node_cluster,
        address=address,
        admin_port=admin_port,
        upstream_address=upstream_address,
        upstream_port=upstream_port,
    )
    for spec, http_filters in listeners:
        lis = render(
            "listener.yaml",
            name=spec.name,
            address=address,
            port=spec.port,
            route_name=f"{spec.name}_route",
            cluster=spec.cluster,
        )
        hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [*http_filters, ROUTER_FILTER]
        doc["static_resources"]["listeners"].append(lis)
    for cname, cport in clusters.items():
        doc["static_resources"]["clusters"].append(
            render("cluster.yaml", name=cname, address=upstream_address, port=cport)
        )
    return doc
