"""The raw crossing floor of wasmtime-py, and CPU-time measurement against it.

The floor is one call from Python into a wasm export that returns its argument, through
wasmtime-py's own unchecked call binding (the cheapest crossing wasmtime-py offers; the host's
Vm.call is this plus its bookkeeping). Every per-call or per-request figure is measured in
rounds that alternate with rounds of the floor, as CPU time of this thread (time.thread_time),
best round of each: the machine is shared and noisy, CPU time leaves out the time the thread
waits for a core, and the ratio to the floor carries over between machines."""
from __future__ import annotations

import ctypes
import statistics
import time
from pathlib import Path
from typing import Callable

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _ffi as ffi

NOP_WAT = '(module (func (export "nop") (param i32) (result i32) (local.get 0)))'


def raw_crossing() -> Callable[[], None]:
    """One crossing into wasm and back with nothing else around it."""
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, wasmtime.Module(engine, NOP_WAT), [])
    func = instance.exports(store)["nop"]
    frame = (ffi.wasmtime_val_raw_t * 1)()
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    ref, trap_ref, context, call = ctypes.byref(func._func), ctypes.byref(trap), store._context(), _b._wasmtime_func_call_unchecked

    def crossing(_keep=(engine, store, instance, func)) -> None:  # the store must outlive the closure
        frame[0].i32 = 1
        call(context, ref, frame, 1, trap_ref)

    return crossing


def cpu_us(work: dict[str, tuple[Callable[[], None], int]], rounds: int = 15) -> dict[str, float]:
    """Microseconds of thread CPU time per call of each function, best of `rounds` rounds run
    one after the other (name -> (function, calls per round)); "floor" is added."""
    floor = raw_crossing()
    work = {"floor": (floor, 5000), **work}
    best = {name: float("inf") for name in work}
    for _ in range(rounds):
        for name, (fn, n) in work.items():
            t = time.thread_time()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.thread_time() - t) / n * 1e6)
    return best


def cpu_ms(fn: Callable[[], None], rounds: int) -> float:
    """Milliseconds of process CPU time of one call, best of `rounds`."""
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best * 1e3


def cold_compile_ms(wasm: bytes, cache: Path, rounds: int = 3) -> float:
    """Median wall-clock milliseconds of a compile that misses both caches (it uses every core)."""
    from proxywasm_host import load_module
    from proxywasm_host import module as module_mod

    samples = []
    for _ in range(rounds):
        for f in cache.glob("*.cwasm"):
            f.unlink()
        module_mod._COMPILED.clear()
        t = time.perf_counter()
        load_module(wasm)
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)
