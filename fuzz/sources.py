"""The seed modules the campaign mutates: our own filters, WAT modules made with
tests/watgen.py, and the SDK examples. Each comes with the configuration and clusters
it needs to get past on_configure, so that mutants reach the request path.

A source whose toolchain is missing is skipped with the reason (reported by run.py).
"""
from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("filters", "tests", "examples/go", "examples/assemblyscript", "examples/rust"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))


@dataclass
class Seed:
    name: str
    path: str  # a file the worker reads (built outside the repository, or filters/out)
    configuration: str = ""
    vm_configuration: str = ""
    root_id: str = ""
    clusters: list[str] = field(default_factory=list)
    kinds: tuple[str, ...] = ("http",)  # exchanges that make sense: "http", "tcp"
    weight: int = 5  # relative share of iterations (Go modules take ~2 s to compile)


HMAC_KEY = b"fuzz-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123"
JWT_CONFIG = json.dumps({"providers": [{
    "name": "main", "issuer": "https://issuer.example", "audiences": ["api"],
    "local_jwks": {"keys": [{"kty": "oct", "kid": "hmac", "alg": "HS256",
                             "k": base64.urlsafe_b64encode(HMAC_KEY).rstrip(b"=").decode()}]},
}]})
RATELIMIT_CONFIG = json.dumps({"bucket": {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval_ms": 1000},
                               "descriptors": [{"source": "header", "name": "x-api-key"}]})


def _own_filters(out: list[Seed], skipped: dict[str, str]) -> None:
    try:
        from build import build_filter
        out.append(Seed("zig:jwt_authn", str(build_filter("jwt_authn")), JWT_CONFIG, weight=6))
        out.append(Seed("zig:ratelimit", str(build_filter("ratelimit")), RATELIMIT_CONFIG, weight=6))
    except Exception as e:  # noqa: BLE001 - any build failure means: skip and say why
        skipped["zig filters"] = f"{type(e).__name__}: {e}"


def _go(out: list[Seed], skipped: dict[str, str]) -> None:
    import build_go
    specs = {
        "http_filter": {"configuration": '{"tag": "blue", "deny_prefix": "/admin"}', "vm_configuration": "region=eu-1"},
        "callout_filter": {"configuration": '{"tick_ms": 1000}', "clusters": ["flags", "auth"]},
        "shared_filter": {"configuration": '{"role": "counter"}'},
        "tcp_filter": {"kinds": ("tcp",)},
    }
    for name, kw in specs.items():
        try:
            out.append(Seed(f"go:{name}", str(build_go.build(name)), weight=1, **kw))
        except Exception as e:  # noqa: BLE001
            skipped[f"go:{name}"] = f"{type(e).__name__}: {e}"


def _assemblyscript(out: list[Seed], skipped: dict[str, str]) -> None:
    try:
        import build_as
        out.append(Seed("as:as_filter", str(build_as.build()), "tag=blue;deny=x-deny;deny_body=forbidden",
                        root_id="as_filter"))
    except Exception as e:  # noqa: BLE001
        skipped["assemblyscript"] = f"{type(e).__name__}: {e}"


def _rust(out: list[Seed], skipped: dict[str, str]) -> None:
    try:
        import build_rust
        out.append(Seed("rust:edge_guard", str(build_rust.build()),
                        "tag=green;block_prefix=/admin;auth_cluster=authz;deny_word=forbidden", clusters=["authz"]))
    except Exception as e:  # noqa: BLE001
        skipped["rust"] = f"{type(e).__name__}: {e}"


def _wat(out: list[Seed], cache: Path) -> None:
    from wat_seeds import MODULES
    cache.mkdir(parents=True, exist_ok=True)
    for name, (wasm, kinds) in MODULES().items():
        path = cache / f"wat_{name}.wasm"
        path.write_bytes(wasm)
        out.append(Seed(f"wat:{name}", str(path), "cfg", clusters=["c1"], kinds=kinds, weight=4))


def collect(work_dir: Path, only: set[str] | None = None) -> tuple[list[Seed], dict[str, str]]:
    """All seeds that build here, and {source: why it was skipped}. `only` keeps the
    families named ('wat', 'zig', 'go', 'as', 'rust')."""
    seeds: list[Seed] = []
    skipped: dict[str, str] = {}
    steps = {"wat": lambda: _wat(seeds, work_dir), "zig": lambda: _own_filters(seeds, skipped),
             "go": lambda: _go(seeds, skipped), "as": lambda: _assemblyscript(seeds, skipped),
             "rust": lambda: _rust(seeds, skipped)}
    for family, step in steps.items():
        if only is None or family in only:
            step()
    return seeds, skipped
