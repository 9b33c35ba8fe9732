"""One instantiated module: store, linked hostcalls, the raw fast call path,
execution deadline, memory cap, and traps turned into exceptions.

Calls in both directions use wasmtime's *unchecked* C API with preallocated
raw-value frames: no wasmtime `Val` objects are built per call.
"""
from __future__ import annotations

import ctypes
import struct
from ctypes import POINTER, byref
from typing import TYPE_CHECKING, Any, Callable

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _ffi as ffi

from .errors import DeadlineExceeded, GuestTrap, ModuleLoadError, VmFailed
from .hostcalls.registry import ALLOC_ALLOWED, Hostcall, lookup
from .logs import new_records
from .memory import BadPointer, GuestMemory
from .module import ENGINE, EPOCH_HZ, ProxyWasmModule

if TYPE_CHECKING:
    from collections import deque

    from .context import Context
    from .logs import LogRecord

_call_unchecked = _b._wasmtime_func_call_unchecked
_set_deadline = _b._wasmtime_context_set_epoch_deadline
_caller_context = _b._wasmtime_caller_context
_Raw = ffi.wasmtime_val_raw_t
_CALLBACK = ffi.wasmtime_func_unchecked_callback_t
#: _CALLBACK with the raw-value frame as an address (an int), not a ctypes pointer object per call
_RAW_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, POINTER(ffi.wasmtime_caller_t), ctypes.c_void_p,
                                 ctypes.c_size_t)
_RESULT = struct.Struct("<i")  # a hostcall's i32 result, written over its first raw value
_string_at = getattr(ctypes, "_string_at", ctypes.string_at)
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _p: None)
_M32 = 0xFFFFFFFF
_INTERRUPT = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_INTERRUPT.value

DEFAULT_DEADLINE_MS = 1000
DEFAULT_MEMORY_LIMIT = 1 << 30
#: 10M elements per table is V8's limit (--wasm-max-table-size): growing past it fails as in
#: Envoy (table.grow returns -1 at once) instead of taking seconds and gigabytes. The others are
#: the host's own (Envoy 1.40 loads 101 tables or memories): one instance, at most 100 tables
#: (wasmtime's parser refuses more anyway) and one memory, so that memory_limit bounds the VM.
TABLE_ELEMENTS_LIMIT = 10_000_000
TABLES_LIMIT, MEMORIES_LIMIT = 100, 1
_NOTHING_ALLOWED: frozenset[str] = frozenset()  # while instantiating: the VM does not exist yet


class HostTrap(Exception):
    """Raised by a hostcall handler to trap the guest on purpose, as Envoy's V8 does."""


#: one raw value (16 bytes) per signature letter: u32, i32, i64
_RAW_FORMAT = {"u": "I12x", "i": "i12x", "I": "q8x"}
_TRAMPOLINE_FACTORIES: dict[tuple[str, str], Callable[..., Any]] = {}


def _trampoline_factory(params: str, results: str) -> Callable[..., Any]:
    """Generate (once per signature) a factory of raw trampolines that read every argument from
    the raw-value frame (16 bytes per value) with one struct unpack and call the handler."""
    key = (params, results)
    fac = _TRAMPOLINE_FACTORIES.get(key)
    if fac is not None:
        return fac
    frame = struct.Struct("<" + "".join(_RAW_FORMAT[c] for c in params)) if params else None
    args = ", ".join(f"a{i}" for i in range(len(params)))
    read = f"{args}, = unpack(string_at(raw, {frame.size}))" if frame else "pass"
    call = f"handler(vm, {args})" if args else "handler(vm)"
    store = "memmove(raw, pack_result(r), 4)" if results else "pass"
    src = f"""
def factory(vm, hc, handler, bad_pointer_result):
    key = hc.key
    def trampoline(env, caller, raw, nraw):
        restricted = vm.restricted
        if restricted is not None and key not in restricted:
            return vm.trap_from_host(HostTrap(f"restricted_callback: {{hc.name}} is not allowed during {{vm.restricted_during}}"), key)
        prev = vm.caller
        vm.caller = caller
        try:
            {read}
            r = {call}
        except BadPointer:
            r = bad_pointer_result
        except BaseException as e:
            return vm.trap_from_host(e, key)
        finally:
            vm.caller = prev
        {store}
        return 0
    return trampoline
"""
    ns: dict[str, Any] = {"HostTrap": HostTrap, "BadPointer": BadPointer, "string_at": _string_at,
                          "unpack": frame.unpack if frame else None, "memmove": ctypes.memmove,
                          "pack_result": _RESULT.pack}
    exec(src, ns)
    fac = ns["factory"]
    _TRAMPOLINE_FACTORIES[key] = fac
    return fac


class _Export:
    __slots__ = ("func", "ref", "frame", "size", "words", "nparams", "nresults")

    def __init__(self, func: Any, nparams: int, nresults: int):
        self.func = func
        self.ref = byref(func)
        self.size = max(nparams, nresults, 1)
        self.frame = (_Raw * self.size)()
        # the frame as u32 words: raw value i is words[4 * i] (16 bytes each), set without a ctypes object per argument
        self.words = memoryview(self.frame).cast("B").cast("I")
        self.nparams = nparams
        self.nresults = nresults


class Vm:
    """A Proxy-Wasm VM: one wasm instance, as Envoy runs one per worker thread.

    Hostcall handlers receive this object: `vm.memory`, `vm.ctx` (the effective
    context), `vm.state` (Proxy-Wasm lifecycle state set by the owner).
    """

    #: the Envoy thread it runs on, "main" or "worker N" (set by the plugin that starts it)
    thread = "worker 0"

    def __init__(
        self,
        module: ProxyWasmModule,
        *,
        deadline_ms: int = DEFAULT_DEADLINE_MS,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ):
        self.module = module
        self.abi = module.abi
        self.deadline_ms = deadline_ms
        self.memory_limit = memory_limit
        self.restricted: frozenset[str] | None = None
        self.restricted_during = ""  # what runs while hostcalls are restricted, for the trap message
        self.caller: Any = None
        self.ctx: "Context | None" = None  # effective context of the current call
        self.calling_ctx: "Context | None" = None  # the context whose callback is running
        self.state: Any = None
        self.logs: "deque[LogRecord]" = new_records()
        self.failed: GuestTrap | None = None
        self.depth = 0
        self._host_error: BaseException | None = None
        self._allocator_failure: GuestTrap | None = None  # a trap in the allocator, reported when the callback ends
        self._trap = POINTER(ffi.wasm_trap_t)()
        self._trap_ref = byref(self._trap)
        ENGINE.ensure_ticker()
        self.store = wasmtime.Store(ENGINE.engine)
        self.store.set_limits(memory_size=memory_limit, table_elements=TABLE_ELEMENTS_LIMIT, instances=1,
                              tables=TABLES_LIMIT, memories=MEMORIES_LIMIT)
        self._store_ctx = self.store._context()
        self._callbacks: list[Any] = []
        linker = wasmtime.Linker(ENGINE.engine)
        self._link(linker)
        self._ticks = max(1, deadline_ms * EPOCH_HZ // 1000) + 1  # +1: the current tick may be about to end
        _set_deadline(self._store_ctx, self._ticks)
        self.restricted = _NOTHING_ALLOWED  # a wasm start function runs before the VM exists
        self.restricted_during = "instantiation (the wasm start function)"
        try:
            self.instance = linker.instantiate(self.store, module.compiled)
        except wasmtime.Trap as e:
            raise ModuleLoadError(f"{module.name}: instantiation trapped: {e}") from None
        except wasmtime.WasmtimeError as e:
            if isinstance(self._host_error, HostTrap) and self._host_error.args[0].startswith("restricted_callback"):
                raise ModuleLoadError(
                    f"{module.name}: its wasm start function calls a hostcall while the module is instantiated "
                    "(Envoy 1.40 crashes with SIGSEGV on such a module)") from None
            raise ModuleLoadError(f"{module.name}: cannot instantiate: {e}") from None
        finally:
            self._host_error = None
        self.restricted = None
        self._exports: dict[str, _Export] = {}
        memory = None
        for name, ext in self.instance.exports(self.store).items():
            if isinstance(ext, wasmtime.Func):
                ty = ext.type(self.store)
                self._exports[name] = _Export(ext._func, len(ty.params), len(ty.results))
            elif isinstance(ext, wasmtime.Memory) and name == "memory":
                memory = ext
        if memory is None:
            raise ModuleLoadError(f"{module.name}: the module exports no memory named 'memory'")
        mem_struct = memory._memory
        base = ctypes.cast(ffi.wasmtime_memory_data(self._store_ctx, byref(mem_struct)), ctypes.c_void_p).value or 0
        self.memory = GuestMemory(
            self, base, lambda: ffi.wasmtime_memory_data_size(self._store_ctx, byref(mem_struct))
        )
        # Envoy (cpp-host) looks up malloc first, then proxy_on_memory_allocate.
        self._allocator_name = "malloc" if "malloc" in self._exports else "proxy_on_memory_allocate"
        if self._allocator_name not in self._exports:
            raise ModuleLoadError(f"{module.name}: Wasm module is missing malloc function.")

    # -- linking -------------------------------------------------------------

    def _link(self, linker: wasmtime.Linker) -> None:
        seen: set[tuple[str, str]] = set()
        for imp in self.module.imports:
            if (imp.module, imp.name) in seen:
                continue  # Go modules import the same function twice
            seen.add((imp.module, imp.name))
            hc = lookup(imp.module, imp.name, self.abi)
            assert hc is not None, "imports are checked when the module is loaded"
            self._define(linker, imp.module, hc)

    def _define(self, linker: wasmtime.Linker, import_module: str, hc: Hostcall) -> None:
        from .abi import WASI_EFAULT, WasmResult

        bad = WASI_EFAULT if hc.is_wasi else int(WasmResult.INVALID_MEMORY_ACCESS)
        handler = self._handler(import_module, hc, bad)
        fn = _trampoline_factory(hc.params, hc.results)(self, hc, handler, bad)
        raw_cb = _RAW_CALLBACK(fn)
        cb = ctypes.cast(raw_cb, _CALLBACK)
        self._callbacks.append(raw_cb)
        conv = {"u": wasmtime.ValType.i32(), "i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
        ty = wasmtime.FuncType([conv[c] for c in hc.params], [wasmtime.ValType.i32()] if hc.results else [])
        mod_b, name_b = import_module.encode(), hc.name.encode()
        err = ffi.wasmtime_linker_define_func_unchecked(
            linker.ptr(), mod_b, len(mod_b), name_b, len(name_b), ty.ptr(), cb, None, _NO_FINALIZER
        )
        if err:
            raise wasmtime.WasmtimeError._from_ptr(err)

    def _handler(self, import_module: str, hc: Hostcall, bad_pointer_result: int) -> Callable[..., int | None]:
        return hc.handler

    # -- calling the guest ---------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self._exports

    def call(self, name: str, *args: int) -> int | None:
        """Call an exported function with i32 arguments; returns its i32 result
        (unsigned) or None. Traps raise GuestTrap and mark the VM failed."""
        if self.failed is not None:
            raise VmFailed(f"{self.module.name}: the VM failed earlier ({self.failed.detail}); {name} not called")
        ex = self._exports[name]
        words = ex.words
        i = 0
        for a in args:
            words[i] = a & _M32
            i += 4
        if self.depth == 0:
            ctx = self._store_ctx
            _set_deadline(ctx, self._ticks)
        else:
            ctx = _caller_context(self.caller) if self.caller is not None else self._store_ctx
        self.depth += 1
        try:
            err = _call_unchecked(ctx, ex.ref, ex.frame, ex.size, self._trap_ref)
        finally:
            self.depth -= 1
        if err or self._trap:
            self._raise_trap(name, err)
        if self._allocator_failure is not None and self.depth == 0:
            self._fail_from_allocator()
        return words[0] if ex.nresults else None

    def allocate(self, size: int) -> int:
        """Call the guest allocator; during it only a few hostcalls are allowed."""
        if self._allocator_failure is not None:
            return 0
        prev, prev_during = self.restricted, self.restricted_during
        name = self._allocator_name
        self.restricted, self.restricted_during = ALLOC_ALLOWED, name
        try:
            return self.call(name, size) or 0
        except _NestedTrap as trap:
            if trap.interrupted:
                raise  # the deadline is the outermost callback's: it reports DeadlineExceeded
            # Envoy 1.40 (measured): the allocator's trap fails the VM, the allocation comes back
            # null (the hostcall answers InvalidMemoryAccess) and the callback goes on; its stream fails after it
            self._allocator_failure = GuestTrap(name, trap.detail, trap.backtrace, self.logs)
            return 0
        finally:
            self.restricted, self.restricted_during = prev, prev_during

    def trap_from_host(self, exc: BaseException, key: str) -> int:
        """Turn an exception raised inside a hostcall into a wasm trap. It must not raise itself:
        ctypes would swallow that and the guest would go on with an unset result."""
        if self._host_error is None:
            self._host_error = exc
        try:
            msg = f"{key}: {exc}" if not isinstance(exc, HostTrap) else str(exc)
        except BaseException:  # an exception whose str() fails
            msg = f"{key}: {type(exc).__name__}"
        data = msg.encode("utf-8", "replace")
        trap = ffi.wasmtime_trap_new(data, len(data))
        return ctypes.cast(trap, ctypes.c_void_p).value or 0

    def _fail_from_allocator(self) -> None:
        """The callback returned (or trapped) after its allocator trapped: the VM fails with the allocator's trap."""
        exc, self._allocator_failure = self._allocator_failure, None
        assert exc is not None
        self._host_error = None
        self.failed = exc
        self._release()
        raise exc

    def _raise_trap(self, name: str, err: Any) -> None:
        if self._allocator_failure is not None and self.depth == 0:
            self._fail_from_allocator()
        host_error, self._host_error = self._host_error, None
        if err:
            message = str(wasmtime.WasmtimeError._from_ptr(err))
            code = None
        else:
            trap = wasmtime.Trap._from_ptr(self._trap)
            self._trap = POINTER(ffi.wasm_trap_t)()
            self._trap_ref = byref(self._trap)
            message = trap.message
            code = trap.trap_code
        detail, backtrace = _split_trap_message(message)
        if host_error is not None and not isinstance(host_error, HostTrap):
            # A bug in a hostcall handler: surface the Python exception itself.
            self.failed = GuestTrap(name, f"hostcall raised {host_error!r}", backtrace, self.logs)
            self._release()
            raise host_error
        interrupted = code is not None and code.value == _INTERRUPT
        if host_error is not None:
            detail = str(host_error)
            interrupted = interrupted or (isinstance(host_error, _NestedTrap) and host_error.interrupted)
        if self.depth > 0:
            # Propagate through the outer guest frame; it reports the trap.
            raise _NestedTrap(name, detail, backtrace, interrupted)
        if interrupted:
            exc: GuestTrap = DeadlineExceeded(
                name, f"exceeded the execution deadline of {self.deadline_ms} ms (wasm trap: interrupt)", backtrace, self.logs
            )
        else:
            if self.memory._size_fn() >= self.memory_limit - 65536:
                detail += f" (linear memory reached the cap of {self.memory_limit} bytes)"
            exc = GuestTrap(name, detail, backtrace, self.logs)
        self.failed = exc
        self._release()
        raise exc

    def _release(self) -> None:
        """A failed VM never runs again (Envoy drops it): free its instance and linear memory
        now, so that traps in a long session do not pile up gigabytes. Its logs stay readable;
        its memory reads as empty (BadPointer)."""
        self.memory.detach()
        self._exports.clear()
        self.instance = self.store = self._store_ctx = None  # type: ignore[assignment]


class _NestedTrap(HostTrap):
    """A trap inside a guest call made from a hostcall (the allocator); `interrupted` when the
    deadline stopped it, so the outer call reports DeadlineExceeded."""

    def __init__(self, name: str, detail: str, backtrace: str, interrupted: bool):
        super().__init__(f"{name}: {detail}")
        self.detail, self.backtrace, self.interrupted = detail, backtrace, interrupted


def _split_trap_message(message: str) -> tuple[str, str]:
    """wasmtime's message is 'error while executing at wasm backtrace: ... Caused by: X'."""
    lines = [l for l in message.splitlines()]
    detail = ""
    if "Caused by:" in message:
        tail = message.split("Caused by:", 1)[1].strip().splitlines()
        detail = tail[0].strip() if tail else ""
    elif lines:
        detail = lines[-1].strip()
    bt_lines = [l for l in lines if l.strip()[:1].isdigit() or l.strip().startswith("at ")]
    backtrace = "wasm backtrace:\n" + "\n".join(bt_lines) if bt_lines else ""
    return detail or message.strip(), backtrace


class TracedVm(Vm):
    """A Vm that records every callback and hostcall with its arguments and result, in the
    shape Envoy's `--component-log-level wasm:trace` prints them, so the two line up."""

    def __init__(self, module: ProxyWasmModule, trace: list[str], **options: Any):
        self.trace = trace
        super().__init__(module, **options)

    def _handler(self, import_module: str, hc: Hostcall, bad_pointer_result: int) -> Callable[..., int | None]:
        name, handler, trace, void = f"{import_module}.{hc.name}", hc.handler, self.trace, not hc.results

        def traced(vm: Vm, *args: int) -> int | None:
            trace.append(f"[vm->host] {name}({', '.join(map(str, args))})")
            try:
                result = handler(vm, *args)
            except BadPointer:
                trace.append(f"[vm<-host] {name} return: {bad_pointer_result}")
                raise
            trace.append(f"[vm<-host] {name} return: {'void' if void else result}")
            return result

        return traced

    def call(self, name: str, *args: int) -> int | None:
        self.trace.append(f"[host->vm] {name}({', '.join(map(str, args))})")
        result = super().call(name, *args)
        self.trace.append(f"[host<-vm] {name} return: {'void' if result is None else result}")
        return result
