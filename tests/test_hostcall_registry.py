"""The hostcall registry refuses a second handler for one import: two handlers for one name would
leave which one a guest gets to the order the area modules happen to be imported in."""
from __future__ import annotations

import pytest

from proxywasm_host.abi import ABI_0_2_1
from proxywasm_host.hostcalls.registry import hostcall, lookup


def test_a_hostcall_registered_twice_is_an_error_naming_it() -> None:
    registered = lookup("wasi_unstable", "fd_write", ABI_0_2_1)
    assert registered is not None
    with pytest.raises(RuntimeError, match=r"^hostcall wasi\.fd_write registered twice$"):
        hostcall("fd_write", "uuuu", module="wasi")(lambda vm, *args: 0)
    assert lookup("wasi_snapshot_preview1", "fd_write", ABI_0_2_1) is registered
