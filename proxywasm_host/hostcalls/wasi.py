"""WASI preview1 as Envoy's cpp-host implements it (also linked as `wasi_unstable`):
stdout/stderr become log lines, clocks read the host's virtual clock, randomness
is seeded, environment comes from the plugin, and the file system does not exist."""
from __future__ import annotations

import logging
import struct

from ..abi import (
    RANDOM_GET_MAX_BYTES,
    WASI_EBADF,
    WASI_EINVAL,
    WASI_ENOENT,
    WASI_ENOSYS,
    WASI_ENOTDIR,
    WASI_ENOTSUP,
    LogLevel,
)
from ..logs import LINE_LIMIT, clip
from .registry import hostcall

_host_log = logging.getLogger("proxywasm.host")

W = "wasi"
_STDIO = (1, 2)


#: A host limit (Envoy has none): more iovecs in one fd_write is EINVAL, so that one call cannot
#: make the host walk gigabytes of iovec array.
IOV_MAX = 1 << 16


def _gather(vm, iovs: int, iovs_len: int) -> tuple[bytearray, int]:
    """The bytes to log (at most LINE_LIMIT + 1 of them are copied) and the total length."""
    vectors = list(struct.iter_unpack("<II", vm.memory.read(iovs, 8 * iovs_len)))
    end = max((ptr + size for ptr, size in vectors if size), default=0)
    if end:
        vm.memory.read(end - 1, 1)  # every buffer must lie in memory, even the parts not copied
    out = bytearray()
    for ptr, size in vectors:
        if len(out) > LINE_LIMIT:
            break
        out += vm.memory.read(ptr, min(size, LINE_LIMIT + 1 - len(out)))
    return out, sum(size for _, size in vectors)


def _write_stdio(vm, fd: int, iovs: int, iovs_len: int, ret_written: int) -> int:
    if fd not in _STDIO:
        return WASI_EBADF
    if iovs_len > IOV_MAX:
        return WASI_EINVAL
    data, total = _gather(vm, iovs, iovs_len)
    vm.memory.write_u32(ret_written, total & 0xFFFFFFFF)
    if not total:
        return 0  # cpp-host logs nothing for nothing written (a lone "\n" is an empty line)
    text = clip(data, total)
    if text.endswith("\n"):
        text = text[:-1]  # cpp-host strips one trailing newline
    level = LogLevel.INFO if fd == 1 else LogLevel.ERROR
    if level >= vm.host.log_level:
        vm.ctx.log(level, text)
    return 0


def fd_write(vm, fd: int, iovs: int, iovs_len: int, ret_written: int) -> int:
    return _write_stdio(vm, fd, iovs, iovs_len, ret_written)


hostcall("fd_write", "uuuu", module=W, note="fd 1 -> info log, fd 2 -> error log")(fd_write)


def fd_pwrite(vm, fd: int, iovs: int, iovs_len: int, offset: int, ret_written: int) -> int:
    return _write_stdio(vm, fd, iovs, iovs_len, ret_written)


hostcall("fd_pwrite", "uuuIu", module=W)(fd_pwrite)


def fd_read(vm, *_a: int) -> int:
    return WASI_ENOSYS


hostcall("fd_read", "uuuu", module=W)(fd_read)


def fd_pread(vm, *_a: int) -> int:
    return WASI_ENOSYS


hostcall("fd_pread", "uuuIu", module=W)(fd_pread)


def _envoy_trace(message: str) -> None:
    """cpp-host's Context::error: Envoy logs it at trace on its own logger, not as a
    filter log line, so it is not in the plugin's or stream's logs here either."""
    _host_log.debug(message)


def fd_seek(vm, fd: int, offset: int, whence: int, ret: int) -> int:
    _envoy_trace("wasi_unstable fd_seek")
    return 0


hostcall("fd_seek", "uIuu", module=W)(fd_seek)


def fd_close(vm, fd: int) -> int:
    _envoy_trace("wasi_unstable fd_close")
    return 0


hostcall("fd_close", "u", module=W)(fd_close)


def fd_fdstat_get(vm, fd: int, ret_stat: int) -> int:
    if fd not in _STDIO:
        return WASI_EBADF
    vm.memory.write(ret_stat, struct.pack("<QQQ", 0, 64, 0))
    return 0


hostcall("fd_fdstat_get", "uu", module=W)(fd_fdstat_get)


def fd_fdstat_set_flags(vm, fd: int, flags: int) -> int:
    return WASI_ENOSYS


hostcall("fd_fdstat_set_flags", "uu", module=W)(fd_fdstat_set_flags)


def _stdio_ok(fd: int) -> int:
    return 0 if fd in _STDIO else WASI_EBADF


def fd_fdstat_set_rights(vm, fd: int, base: int, inheriting: int) -> int:
    return _stdio_ok(fd)


hostcall("fd_fdstat_set_rights", "uII", module=W)(fd_fdstat_set_rights)


def fd_prestat_get(vm, fd: int, ret: int) -> int:
    return WASI_EBADF


hostcall("fd_prestat_get", "uu", module=W, note="no preopened directories")(fd_prestat_get)


def fd_prestat_dir_name(vm, fd: int, path: int, size: int) -> int:
    return WASI_ENOSYS


hostcall("fd_prestat_dir_name", "uuu", module=W)(fd_prestat_dir_name)


def fd_filestat_get(vm, fd: int, ret: int) -> int:
    return WASI_EBADF


hostcall("fd_filestat_get", "uu", module=W)(fd_filestat_get)


def fd_advise(vm, fd: int, offset: int, size: int, advice: int) -> int:
    return 0


hostcall("fd_advise", "uIIu", module=W)(fd_advise)


def fd_allocate(vm, fd: int, offset: int, size: int) -> int:
    return _stdio_ok(fd)


hostcall("fd_allocate", "uII", module=W)(fd_allocate)


def fd_datasync(vm, fd: int) -> int:
    return _stdio_ok(fd)


hostcall("fd_datasync", "u", module=W)(fd_datasync)


def fd_sync(vm, fd: int) -> int:
    return _stdio_ok(fd)


hostcall("fd_sync", "u", module=W)(fd_sync)


def fd_filestat_set_size(vm, fd: int, size: int) -> int:
    return _stdio_ok(fd)


hostcall("fd_filestat_set_size", "uI", module=W)(fd_filestat_set_size)


def fd_filestat_set_times(vm, fd: int, atim: int, mtim: int, flags: int) -> int:
    return _stdio_ok(fd)


hostcall("fd_filestat_set_times", "uIIu", module=W)(fd_filestat_set_times)


def fd_tell(vm, fd: int, ret: int) -> int:
    if fd not in _STDIO:
        return WASI_EBADF
    vm.memory.write_u64(ret, 0)
    return 0


hostcall("fd_tell", "uu", module=W)(fd_tell)


def fd_readdir(vm, fd: int, buf: int, size: int, cookie: int, ret: int) -> int:
    vm.memory.write_u32(ret, 0)
    return WASI_ENOTDIR


hostcall("fd_readdir", "uuuIu", module=W)(fd_readdir)


def fd_renumber(vm, fd: int, to: int) -> int:
    return WASI_ENOTSUP if fd in _STDIO and to in _STDIO else WASI_EBADF


hostcall("fd_renumber", "uu", module=W)(fd_renumber)


def path_open(vm, *_a: int) -> int:
    return WASI_ENOENT


hostcall("path_open", "uuuuuIIuu", module=W)(path_open)


def _notsup(vm, *_a: int) -> int:
    return WASI_ENOTSUP


for _name, _params in (
    ("path_filestat_get", "uuuuu"),
    ("path_create_directory", "uuu"),
    ("path_remove_directory", "uuu"),
    ("path_unlink_file", "uuu"),
    ("path_rename", "uuuuuu"),
    ("path_filestat_set_times", "uuuuIIu"),
    # Envoy 1.40's types (cpp-host's), one i32 short of WASI's: it refuses a module that imports
    # WASI's 7 and 5 (measured through parity)
    ("path_link", "uuuuuu"),
    ("path_symlink", "uuuu"),
    ("sock_shutdown", "uu"),
):
    hostcall(_name, _params, module=W)(_notsup)


def path_readlink(vm, fd: int, path: int, size: int, buf: int, buf_len: int, ret: int) -> int:
    vm.memory.write_u32(ret, 0)
    return WASI_ENOTSUP


hostcall("path_readlink", "uuuuuu", module=W)(path_readlink)


def sock_accept(vm, fd: int, flags: int, ret_fd: int) -> int:
    vm.memory.write_u64(ret_fd, 0)  # 8 bytes, as Envoy 1.40 writes them (measured)
    return WASI_ENOTSUP


hostcall("sock_accept", "uuu", module=W)(sock_accept)


def sock_recv(vm, fd: int, ri: int, ri_len: int, flags: int, ret_size: int, ret_flags: int) -> int:
    vm.memory.write_u32(ret_size, 0)
    vm.memory.write(ret_flags, b"\0\0")  # WASI's roflags is a u16
    return WASI_ENOTSUP


hostcall("sock_recv", "uuuuuu", module=W)(sock_recv)


def sock_send(vm, fd: int, si: int, si_len: int, flags: int, ret_size: int) -> int:
    vm.memory.write_u32(ret_size, 0)
    return WASI_ENOTSUP


hostcall("sock_send", "uuuuu", module=W)(sock_send)


def _environ(vm) -> list[bytes]:
    return [f"{k}={v}".encode() + b"\0" for k, v in vm.plugin.environment.items()]


def environ_sizes_get(vm, ret_count: int, ret_size: int) -> int:
    env = _environ(vm)
    vm.memory.write_u32(ret_count, len(env))
    vm.memory.write_u32(ret_size, sum(map(len, env)))
    return 0


hostcall("environ_sizes_get", "uu", module=W, note="from the plugin's environment= (Envoy: vm_config.environment_variables)")(environ_sizes_get)


def environ_get(vm, ret_array: int, ret_buf: int) -> int:
    for i, entry in enumerate(_environ(vm)):
        vm.memory.write_u32(ret_array + 4 * i, ret_buf)
        vm.memory.write(ret_buf, entry)
        ret_buf += len(entry)
    return 0


hostcall("environ_get", "uu", module=W)(environ_get)


def args_sizes_get(vm, ret_count: int, ret_size: int) -> int:
    vm.memory.write_u32(ret_count, 0)
    vm.memory.write_u32(ret_size, 0)
    return 0


hostcall("args_sizes_get", "uu", module=W)(args_sizes_get)


def args_get(vm, argv: int, buf: int) -> int:
    return 0


hostcall("args_get", "uu", module=W)(args_get)


def clock_time_get(vm, clock_id: int, precision: int, ret_time: int) -> int:
    clock = vm.host.clock
    if clock_id == 0:
        vm.memory.write_u64(ret_time, clock.now_ns)
    elif clock_id == 1:
        vm.memory.write_u64(ret_time, clock.monotonic_ns)
    else:
        return WASI_ENOTSUP
    return 0


hostcall("clock_time_get", "uIu", module=W, note="the host's virtual clock")(clock_time_get)


def clock_res_get(vm, clock_id: int, ret_res: int) -> int:
    if clock_id not in (0, 1):
        return WASI_ENOTSUP
    vm.memory.write_u64(ret_res, 1)
    return 0


hostcall("clock_res_get", "uu", module=W)(clock_res_get)


def random_get(vm, buf: int, size: int) -> int:
    if size > RANDOM_GET_MAX_BYTES:
        return WASI_EINVAL
    vm.memory.write(buf, vm.host.random.randbytes(size))
    return 0


hostcall("random_get", "uu", module=W, note="seeded by Host(seed=...)")(random_get)


def sched_yield(vm) -> int:
    return 0


hostcall("sched_yield", "", module=W)(sched_yield)


def poll_oneoff(vm, in_ptr: int, out_ptr: int, nsubs: int, ret_events: int) -> int:
    vm.memory.write_u32(ret_events, 0)
    return 0


hostcall("poll_oneoff", "uuuu", module=W)(poll_oneoff)


def proc_exit(vm, code: int) -> None:
    _envoy_trace("wasi_unstable proc_exit")


hostcall("proc_exit", "u", results="", module=W, note="returns, as in Envoy (which only traces it); the guest is not stopped")(proc_exit)
