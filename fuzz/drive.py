"""Run one campaign iteration in this process and classify what happened.

Expected outcomes are the host's own exception types, or a TypeError/ValueError raised by
the host that names the argument at fault, or a normal result. Anything else escaping the
test API is a finding. Crashes, hangs and memory growth are detected by run.py, which runs
this code in a watched subprocess.
"""
from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hostile
import mutate

from proxywasm_host import (
    DeadlineExceeded,
    GuestTrap,
    Host,
    MissingImportError,
    ModuleLoadError,
    PluginRejected,
    StreamStateError,
    VmFailed,
    load_module,
)

EXPECTED = (MissingImportError, ModuleLoadError, PluginRejected, DeadlineExceeded, GuestTrap, VmFailed,
            StreamStateError)
#: words an argument error must contain to count as "naming the argument"
ARG_WORDS = ("header", "trailer", "body", "data", "configuration", "properties", "property", "path", "name",
             "value", "key", "environment", "deadline_ms", "memory_limit", "workers", "failure_policy", "peer",
             "vm_id", "root_id", "end_of_stream", "status", "close_type", "seconds", "worker", "module")
GOOD_REQUEST = {":method": "POST", ":path": "/api/orders", ":authority": "example.com", "x-api-key": "k1",
                "content-type": "application/json", "x-go-user": "alice"}
GOOD_RESPONSE = {":status": "200", "content-type": "text/plain", "content-length": "5"}


class Finding(Exception):
    """An unexpected exception escaped the test API (wraps it, with the step it came from)."""

    def __init__(self, step: str, exc: BaseException):
        self.step = step
        self.exc = exc
        super().__init__(f"{step}: {type(exc).__name__}: {exc}")


@dataclass
class Outcome:
    classes: list[str] = field(default_factory=list)  # expected outcomes met, in order
    vm_failed: str | None = None  # the failure type of a VM that failed with raise_on_trap=False

    def label(self) -> str:
        """The iteration's class: its first expected exception, or ok / ok-vm-failed."""
        if self.classes:
            return self.classes[0]
        return "ok-vm-failed" if self.vm_failed else "ok"


def classify(exc: BaseException) -> str | None:
    """The outcome class of an expected exception; None makes it a finding."""
    if isinstance(exc, EXPECTED):
        return type(exc).__name__
    if type(exc) in (TypeError, ValueError) and _raised_by_host(exc) and _names_argument(str(exc)):
        return f"arg-{type(exc).__name__}"
    return None


def _raised_by_host(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "proxywasm_host" in frames[-1].filename


def _names_argument(message: str) -> bool:
    return any(w in message.lower() for w in ARG_WORDS)


def guarded(outcome: Outcome, step: str, fn: Callable[[], Any]) -> bool:
    """Run a step; record an expected exception (False), raise Finding on any other."""
    try:
        fn()
        return True
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        cls = classify(e)
        if cls is None:
            raise Finding(step, e) from e
        outcome.classes.append(cls)
        return False


# -- mutants -------------------------------------------------------------------------------

def mutant_bytes(rng: random.Random, original: bytes, pool: list[bytes]) -> tuple[bytes, list[str]]:
    return mutate.mutate(rng, original, pool)


def run_mutant(seed, wasm: bytes) -> Outcome:
    """load_module, load_plugin (raise_on_trap=False), two HTTP exchanges, a TCP exchange,
    callouts answered, a tick, a shutdown."""
    out = Outcome()
    box: dict[str, Any] = {}
    if not guarded(out, "load_module", lambda: box.update(mod=load_module(wasm, name=seed.name + "~mutant"))):
        return out
    host = Host()
    for c in seed.clusters:
        host.add_cluster(c)
    load = lambda: box.update(plugin=host.load_plugin(
        box["mod"], configuration=seed.configuration, vm_configuration=seed.vm_configuration,
        root_id=seed.root_id, raise_on_trap=False, deadline_ms=250))
    if not guarded(out, "load_plugin", load):
        return out
    plugin = box["plugin"]
    for n in range(2):
        guarded(out, f"http exchange {n}", lambda: http_exchange(plugin))
    guarded(out, "tcp exchange", lambda: tcp_exchange(plugin))
    guarded(out, "tick", lambda: host.clock.advance(seconds=2))
    guarded(out, "shutdown", plugin.shutdown)
    out.vm_failed = vm_failure(plugin)
    return out


def answer_calls(plugin, status: int = 200, headers: Any = None, body: Any = b"ok") -> None:
    for call in list(plugin.pending_http_calls):
        if not call.answered:
            call.respond(status, headers, body)


def http_exchange(plugin) -> None:
    s = plugin.http_stream()
    s.send_request_headers(GOOD_REQUEST, end_of_stream=False)
    s.send_request_body(b'{"order": 1}', end_of_stream=False)
    s.send_request_body(b"", end_of_stream=True)
    answer_calls(plugin)
    if s.local_reply is None:
        s.send_response_headers(GOOD_RESPONSE, end_of_stream=False)
        s.send_response_body(b"hello", end_of_stream=True)
    s.complete()


def tcp_exchange(plugin) -> None:
    c = plugin.tcp_stream()
    c.connect()
    c.send_downstream_data(b"hello\n")
    c.send_upstream_data(b"HI\n")
    c.close("downstream")


# -- hostile inputs ------------------------------------------------------------------------

def run_hostile(seed, ops: list[tuple[str, dict]]) -> Outcome:
    """Execute a hostile plan; an expected exception ends only its own step."""
    out = Outcome()
    host = Host()
    for c in seed.clusters:
        host.add_cluster(c)
    state: dict[str, Any] = {"host": host, "seed": seed}
    for n, (op, kw) in enumerate(ops):
        if op != "load" and "plugin" not in state:
            break  # the plugin was refused: nothing to drive
        if op in CREATES:
            state[CREATES[op]] = None  # if creation is refused, skip the ops on that stream
        elif op in NEEDS and state.get(NEEDS[op]) is None:
            continue
        guarded(out, f"op {n} {op}", lambda op=op, kw=kw: OPS[op](state, **kw))
    out.vm_failed = vm_failure(state.get("plugin"))
    return out


def vm_failure(plugin) -> str | None:
    """How the plugin's VM failed, if it did (GuestTrap, DeadlineExceeded); None if not."""
    for w in getattr(plugin, "workers", None) or []:
        if w.vm.failed is not None:
            return type(w.vm.failed).__name__
    return None


def _load(st, **kw):
    st["plugin"] = st["host"].load_plugin(st["seed"].path, **kw)


def _stream(st, **kw):
    st["stream"] = st["plugin"].http_stream(**kw)


def _tcp(st, **kw):
    st["conn"] = st["plugin"].tcp_stream(**kw)


CREATES = {"http_stream": "stream", "tcp_stream": "conn"}
NEEDS = {op: "stream" for op in ("req_headers", "req_body", "req_trailers", "resp_headers", "resp_body",
                                 "resp_trailers", "complete")}
NEEDS.update({op: "conn" for op in ("connect", "down", "up", "close")})
OPS: dict[str, Callable[..., Any]] = {
    "load": _load,
    "http_stream": _stream,
    "req_headers": lambda st, **kw: st["stream"].send_request_headers(**kw),
    "req_body": lambda st, **kw: st["stream"].send_request_body(**kw),
    "req_trailers": lambda st, **kw: st["stream"].send_request_trailers(**kw),
    "resp_headers": lambda st, **kw: st["stream"].send_response_headers(**kw),
    "resp_body": lambda st, **kw: st["stream"].send_response_body(**kw),
    "resp_trailers": lambda st, **kw: st["stream"].send_response_trailers(**kw),
    "complete": lambda st: st["stream"].complete(),
    "respond_calls": lambda st, **kw: answer_calls(st["plugin"], **kw),
    "tcp_stream": _tcp,
    "connect": lambda st: st["conn"].connect(),
    "down": lambda st, **kw: st["conn"].send_downstream_data(**kw),
    "up": lambda st, **kw: st["conn"].send_upstream_data(**kw),
    "close": lambda st, **kw: st["conn"].close(**kw),
    "advance": lambda st, **kw: st["host"].clock.advance(**kw),
    "reload": lambda st, **kw: st["plugin"].reload(**kw),
    "shutdown": lambda st: st["plugin"].shutdown(),
}


# -- one iteration -------------------------------------------------------------------------

@dataclass
class Iteration:
    """What (seed, i) means: which source, which mode, and the input (bytes or a plan)."""
    index: int
    source: str
    mode: str  # "mutant" or "hostile"
    wasm: bytes | None = None
    mutators: list[str] = field(default_factory=list)
    ops: list[tuple[str, dict]] | None = None


def make_iteration(campaign_seed: int, i: int, seeds: list, originals: dict[str, bytes], pool: list[bytes],
                   modes: tuple[str, ...], types: bool) -> Iteration:
    rng = random.Random(f"{campaign_seed}/{i}")
    seed = rng.choices(seeds, weights=[s.weight for s in seeds])[0]
    mode = rng.choice(modes) if len(modes) == 1 else ("mutant" if rng.random() < 0.6 else "hostile")
    if mode == "mutant":
        wasm, applied = mutant_bytes(rng, originals[seed.name], pool)
        return Iteration(i, seed.name, mode, wasm=wasm, mutators=applied)
    return Iteration(i, seed.name, mode, ops=hostile.plan(rng, seed, types))


def run_iteration(it: Iteration, seeds_by_name: dict) -> Outcome:
    seed = seeds_by_name[it.source]
    if it.mode == "mutant":
        return run_mutant(seed, it.wasm)
    return run_hostile(seed, it.ops)
