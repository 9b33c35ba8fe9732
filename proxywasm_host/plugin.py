"""A plugin (Envoy's PluginConfig): its module, configuration, failure policy and
one VM per emulated worker, each started and configured as Envoy does."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .context import Context, RootContext, VmState
from .errors import GuestTrap, PluginRejected
from .headers import as_bytes, check_int, check_type
from .hostcalls.registry import START_ALLOWED
from .http import HttpStream
from .tcp import TcpStream
from .logs import LogRecord, envoy_log_prefix
from .module import ProxyWasmModule
from .properties import PropertyValue, normalize_overrides
from .vm import DEFAULT_DEADLINE_MS, DEFAULT_MEMORY_LIMIT, TracedVm, Vm

if TYPE_CHECKING:
    from .callouts import GrpcCallout, HttpCall
    from .host import Host

FAILURE_POLICIES = ("fail_closed", "fail_open", "fail_reload")
MAX_WORKERS = 1024  # one VM each
INT64_MAX = (1 << 63) - 1
ConfigInput = "str | bytes | Mapping[str, Any] | list | None"


def config_bytes(value: Any, what: str) -> bytes:
    """Configuration as Envoy hands it over: StringValue/BytesValue unwrapped, a
    Struct (dict) as JSON."""
    if value is None:
        return b""
    if isinstance(value, (Mapping, list)):
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as e:
            raise type(e)(f"{what}: cannot be written as JSON: {e}") from None
    return as_bytes(value, what, types="str, bytes, dict or list")


def check_environment(env: Any) -> dict[str, str]:
    """vm_config.environment_variables: names and values the guest reads as NAME=VALUE (UTF-8)."""
    check_type(env, (Mapping, type(None)), "environment", "a dict of str to str")
    for key, value in (env or {}).items():
        name = as_bytes(key, "environment: name", "strict", types="str")
        if not name or b"=" in name or b"\0" in name:
            raise ValueError(f"environment: name {key!r} must be non-empty, without '=' or NUL")
        as_bytes(value, f"environment {key!r} value", "strict", types="str")
    return dict(env or {})


#: Worker indexes of the VMs Envoy runs besides the workers' (Host(extra_vms=True)).
BASE_VM, CANARY_VM, MAIN_THREAD_VM = -3, -2, -1


class _VmContext(Context):
    """Context 0: what _initialize/_start/main run as."""

    @property
    def root(self) -> RootContext:
        raise LookupError("the VM context has no root context")

    @property
    def log_prefix(self) -> str:
        return envoy_log_prefix(self.plugin.vm_id)


@dataclass
class Worker:
    """One VM of the plugin with its root context, as on one Envoy worker thread."""

    index: int
    vm: Vm
    root: RootContext


class Plugin:
    """A configured plugin running in one VM per worker."""

    def __init__(
        self,
        host: "Host",
        module: ProxyWasmModule,
        *,
        name: str = "",
        root_id: str = "",
        vm_id: str = "",
        configuration: Any = None,
        vm_configuration: Any = None,
        workers: int = 1,
        failure_policy: str = "fail_closed",
        allow_on_headers_stop_iteration: bool = False,
        properties: Mapping[Any, PropertyValue] | None = None,
        environment: Mapping[str, str] | None = None,
        deadline_ms: int = DEFAULT_DEADLINE_MS,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        raise_on_trap: bool = True,
        start_workers: bool = True,
    ):
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy {failure_policy!r}; allowed: {', '.join(FAILURE_POLICIES)}")
        check_int(workers, "workers", 1, MAX_WORKERS)
        check_int(deadline_ms, "deadline_ms", 1, INT64_MAX)
        check_int(memory_limit, "memory_limit", 0, INT64_MAX)  # wasmtime's limit is an int64 (-1: none)
        for what, text in (("name", name), ("root_id", root_id), ("vm_id", vm_id)):
            as_bytes(text, what, "strict", types="str")
        check_type(allow_on_headers_stop_iteration, (bool,), "allow_on_headers_stop_iteration", "bool")
        check_type(raise_on_trap, (bool,), "raise_on_trap", "bool")
        self.host = host
        self.module = module
        self.name = name
        self.root_id = root_id
        self.vm_id = vm_id
        self.configuration = config_bytes(configuration, "configuration")
        self.vm_configuration = config_bytes(vm_configuration, "vm_configuration")
        self.failure_policy = failure_policy
        self.allow_on_headers_stop_iteration = allow_on_headers_stop_iteration
        self.properties = normalize_overrides(properties)
        self.environment = check_environment(environment)
        self.deadline_ms = deadline_ms
        self.memory_limit = memory_limit
        self.raise_on_trap = raise_on_trap
        self._next_worker = 0
        self._retired_logs: list[LogRecord] = []
        self.worker_count = workers
        self.main_thread = self._start_envoy_vms() if host.extra_vms else None
        self.workers: list[Worker] = []
        if start_workers:  # else Host.load_chain starts them, worker by worker across the chain
            self.workers = [self._start_worker(i) for i in range(workers)]

    # -- VM lifecycle ----------------------------------------------------------

    def _vm_key(self) -> tuple:
        """Envoy reuses one VM per thread for plugins with the same vm_id, VM
        configuration and code: they get separate root contexts in it."""
        return (self.module.sha256, self.vm_id, self.vm_configuration, tuple(sorted(self.environment.items())),
                self.deadline_ms, self.memory_limit)

    def _start_envoy_vms(self, fresh: bool = False) -> Worker:
        """The VMs Envoy runs besides the workers' (Host(extra_vms=True)): a base VM that only
        starts, a canary that also runs on_vm_start/on_configure and is dropped, and the main
        thread's VM, which keeps its root context (its ticks fire). Their logs are the plugin's."""
        if fresh or self.host.shared_vm(self._vm_key(), BASE_VM) is None:
            base = self._new_vm(BASE_VM)
            self.host.register_vm(self._vm_key(), BASE_VM, base)
            self._retired_logs.extend(base.logs)
        try:
            canary = self._start_worker(CANARY_VM, fresh=True)
        except PluginRejected as refused:  # what it logged before refusing is in Envoy's log too
            self._retired_logs.extend(refused.logs)
            raise
        self._retired_logs.extend(canary.vm.logs)
        return self._start_worker(MAIN_THREAD_VM, fresh)

    def _new_vm(self, index: int) -> Vm:
        options = {"deadline_ms": self.deadline_ms, "memory_limit": self.memory_limit}
        trace = self.host.trace if index >= 0 else self.host.trace_main_thread
        vm = Vm(self.module, **options) if trace is None else TracedVm(self.module, trace, **options)
        vm.state = VmState(vm, self.host.dispatcher)
        vm.host = self.host  # type: ignore[attr-defined]
        vm.plugin = self  # type: ignore[attr-defined]
        vm.thread = "main" if index < 0 else f"worker {index}"  # base, canary and main-thread VMs: Envoy's main thread
        vm_ctx = _VmContext(vm, self, 0)
        vm.state.contexts[0] = vm_ctx
        self._run_start_functions(vm, vm_ctx)
        return vm

    def _start_worker(self, index: int, fresh: bool = False) -> Worker:
        vm = None if fresh else self.host.shared_vm(self._vm_key(), index)
        created = vm is None
        if vm is None:
            vm = self._new_vm(index)
            if index != CANARY_VM:
                self.host.register_vm(self._vm_key(), index, vm)
        root = RootContext(vm, self, vm.state.alloc_id())
        vm.state.contexts[root.id] = root
        worker = Worker(index, vm, root)
        try:
            self._start_root(worker)
        except PluginRejected:
            if created:  # Envoy drops the VM of a refused plugin: free it now (its logs stay readable)
                self.host.forget_vm(self._vm_key(), index)
                vm._release()
            raise
        return worker

    def _run_start_functions(self, vm: Vm, vm_ctx: Context) -> None:
        """cpp-host startVm: _initialize then main(0,0) (or __main_void), else
        _start, with only a few hostcalls allowed. __wasm_call_ctors is never called."""
        vm.restricted = START_ALLOWED
        try:
            if vm.has("_initialize"):
                self._start_function(vm_ctx, "_initialize")
                if vm.has("main"):
                    self._start_function(vm_ctx, "main", 0, 0)
                elif vm.has("__main_void"):
                    self._start_function(vm_ctx, "__main_void")
            elif vm.has("_start"):
                self._start_function(vm_ctx, "_start")
        finally:
            vm.restricted = None

    def _start_function(self, vm_ctx: Context, name: str, *args: int) -> None:
        vm_ctx.vm.restricted_during = name  # a blocked hostcall names it
        self._guarded(vm_ctx, name, *args)

    def _start_root(self, worker: Worker) -> None:
        root, vm = worker.root, worker.vm
        if vm.has("proxy_on_context_create"):
            self._guarded(root, "proxy_on_context_create", root.id, 0)
        if vm.has("proxy_on_vm_start"):
            if not self._guarded(root, "proxy_on_vm_start", root.id, len(self.vm_configuration)):
                raise PluginRejected(f"{self._label()}: proxy_on_vm_start returned false (Failed to start base Wasm)", vm.logs)
        if vm.has("proxy_on_configure"):
            root.configuring = True
            try:
                ok = self._guarded(root, "proxy_on_configure", root.id, len(self.configuration))
            finally:
                root.configuring = False
            if not ok:
                raise PluginRejected(
                    f"{self._label()}: proxy_on_configure returned false (Failed to configure base Wasm plugin)", vm.logs
                )

    def _guarded(self, ctx: Context, callback: str, *args: int) -> int | None:
        try:
            return ctx.invoke(callback, *args)
        except GuestTrap as trap:
            raise PluginRejected(f"{self._label()}: {callback} failed: {trap.detail}\n{trap.backtrace}".rstrip(), ctx.vm.logs) from trap

    def _label(self) -> str:
        return f"plugin {self.name or self.root_id or '(unnamed)'} ({self.module.name})"

    def reload_worker(self, worker: Worker) -> Worker:
        """FAIL_RELOAD: replace a failed VM with a fresh one on the same worker."""
        self._retired_logs.extend(r for r in worker.vm.logs if r.source is self)
        fresh = self._start_worker(worker.index, fresh=True)
        self.workers[worker.index] = fresh
        return fresh

    def reload(self, module: "ProxyWasmModule | None" = None, **changes: Any) -> None:
        """An ECDS update, as Envoy applies it: the new plugin is checked on a canary VM first;
        then each worker (and the main thread) gets a new root context for it, in the VM it
        has when the VM key (code, vm_id, VM configuration) is unchanged, else in a fresh VM;
        then the old root contexts get on_done/on_delete. Open streams finish on the old roots.
        If the new plugin fails to load, the error is raised and the old one keeps serving."""
        allowed = {"configuration", "vm_configuration", "root_id", "vm_id", "environment", "properties"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"reload() got unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        saved = dict(self.__dict__)
        if module is not None:
            self.module = module
        for key, value in changes.items():
            if key in ("configuration", "vm_configuration"):
                value = config_bytes(value, key)
            elif key == "properties":
                value = normalize_overrides(value)
            elif key == "environment":
                value = check_environment(value)
            setattr(self, key, value)
        retired = self._retired_logs = list(self._retired_logs)
        try:
            if not self.main_thread:  # Host(extra_vms=True) runs (and logs) the canary in _start_envoy_vms
                self._start_worker(CANARY_VM, fresh=True)
            main_thread = self._start_envoy_vms() if self.main_thread else None
            workers = [self._start_worker(i) for i in range(len(self.workers))]
        except Exception:
            self.__dict__.update(saved)
            self._retired_logs = retired  # what the canary logged before it refused the update
            raise
        old = ([saved["main_thread"]] if saved["main_thread"] else []) + saved["workers"]
        self.main_thread, self.workers = main_thread, workers
        self._shut_down(old)
        live = {id(w.vm) for w in self.all_workers}
        self._retired_logs.extend(r for w in old if id(w.vm) not in live for r in w.vm.logs if r.source is self)

    def shutdown(self) -> None:
        """Plugin teardown: proxy_on_done per root context; if it returns false the
        root stays pending until the guest calls proxy_done, then proxy_on_delete."""
        self._shut_down(self.all_workers)

    def _shut_down(self, workers: list[Worker]) -> None:
        for worker in workers:
            root, vm = worker.root, worker.vm
            if vm.failed is not None:
                continue
            done = root.invoke("proxy_on_done", root.id) if vm.has("proxy_on_done") else 1
            if done:
                if vm.has("proxy_on_delete"):
                    root.invoke("proxy_on_delete", root.id)
            else:
                root.pending_done = True

    # -- test API ----------------------------------------------------------------

    @property
    def abi(self) -> str:
        return self.module.abi

    def http_stream(self, worker: int | None = None, properties: Mapping[Any, PropertyValue] | None = None) -> HttpStream:
        """A new HTTP stream on the given worker (round robin when None)."""
        return HttpStream(self, self.workers[self._pick_worker(worker)], properties)

    def _pick_worker(self, worker: int | None) -> int:
        if worker is None:
            worker = self._next_worker
            self._next_worker = (self._next_worker + 1) % len(self.workers)
        if not 0 <= worker < len(self.workers):
            raise ValueError(f"worker {worker} out of range: this plugin has {len(self.workers)} worker(s)")
        return worker

    def tcp_stream(self, worker: int | None = None, properties: Mapping[Any, PropertyValue] | None = None) -> TcpStream:
        """A new downstream connection through this plugin as a network filter."""
        return TcpStream(self, self.workers[self._pick_worker(worker)], properties)

    @property
    def all_workers(self) -> list[Worker]:
        """The workers, preceded by the main thread's VM when the host runs Envoy's extra VMs."""
        return ([self.main_thread] if self.main_thread else []) + self.workers

    @property
    def logs(self) -> list[LogRecord]:
        out = list(self._retired_logs)
        for w in self.all_workers:
            out.extend(r for r in w.vm.logs if r.source is self)
        return out

    @property
    def root_contexts(self) -> list[RootContext]:
        return [w.root for w in self.workers]

    @property
    def pending_http_calls(self) -> "list[HttpCall]":
        return [c for c in self.host.pending_http_calls if c.root.plugin is self]

    @property
    def pending_grpc(self) -> "list[GrpcCallout]":
        return [c for c in self.host.pending_grpc if c.root.plugin is self]

    @property
    def failed(self) -> bool:
        return any(w.vm.failed is not None for w in self.workers)
