"""Proxy-Wasm ABI constants: status codes, enums, ABI versions and their export markers.

Values are the wire values of the spec (v0.1.0 / v0.2.0 / v0.2.1) plus the
implementation-only codes Envoy really returns (BrokenConnection, ...).
"""
from __future__ import annotations

from enum import IntEnum


class AbiVersion(str):
    """An ABI version string such as "0.2.1"; comparable as a tuple."""

    @property
    def tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.split("."))


ABI_0_1_0 = AbiVersion("0.1.0")
ABI_0_2_0 = AbiVersion("0.2.0")
ABI_0_2_1 = AbiVersion("0.2.1")
ALL_ABIS: tuple[AbiVersion, ...] = (ABI_0_1_0, ABI_0_2_0, ABI_0_2_1)
ABI_0_2: tuple[AbiVersion, ...] = (ABI_0_2_0, ABI_0_2_1)

#: export name -> ABI version, in the order Envoy's bytecode scan recognises them
ABI_MARKERS: dict[str, AbiVersion] = {
    "proxy_abi_version_0_1_0": ABI_0_1_0,
    "proxy_abi_version_0_2_0": ABI_0_2_0,
    "proxy_abi_version_0_2_1": ABI_0_2_1,
}


class WasmResult(IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5
    OFF = 6

    @classmethod
    def parse(cls, level: "str | int | LogLevel") -> "LogLevel":
        if isinstance(level, str):
            try:
                return cls[level.upper().replace("WARNING", "WARN")]
            except KeyError:
                allowed = ", ".join(m.name.lower() for m in cls)
                raise ValueError(f"unknown log level {level!r}; allowed: {allowed}") from None
        return cls(level)


class MapType(IntEnum):
    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8


class StreamType(IntEnum):
    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class MetricType(IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class PeerType(IntEnum):
    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class Action(IntEnum):
    """What a guest callback returns (proxy_action_t)."""

    CONTINUE = 0
    PAUSE = 1



class FilterStatus:
    """Envoy filter statuses after cpp-host's conversion of the guest's return value."""

    CONTINUE = "Continue"
    STOP_ITERATION = "StopIteration"
    CONTINUE_AND_END_STREAM = "ContinueAndEndStream"
    STOP_ALL_ITERATION_AND_BUFFER = "StopAllIterationAndBuffer"
    STOP_ALL_ITERATION_AND_WATERMARK = "StopAllIterationAndWatermark"
    STOP_ITERATION_AND_BUFFER = "StopIterationAndBuffer"
    STOP_ITERATION_AND_WATERMARK = "StopIterationAndWatermark"
    STOP_ITERATION_NO_BUFFER = "StopIterationNoBuffer"


HEADERS_STATUS_NAMES = {
    0: FilterStatus.CONTINUE,
    1: FilterStatus.STOP_ITERATION,
    2: FilterStatus.CONTINUE_AND_END_STREAM,
    3: FilterStatus.STOP_ALL_ITERATION_AND_BUFFER,
    4: FilterStatus.STOP_ALL_ITERATION_AND_WATERMARK,
}
DATA_STATUS_NAMES = {
    0: FilterStatus.CONTINUE,
    1: FilterStatus.STOP_ITERATION_AND_BUFFER,
    2: FilterStatus.STOP_ITERATION_AND_WATERMARK,
    3: FilterStatus.STOP_ITERATION_NO_BUFFER,
}

# WASI errno values used by Envoy's WASI shims.
WASI_EBADF = 8
WASI_ENOTDIR = 20
WASI_EFAULT = 21
WASI_EINVAL = 28
WASI_ENOENT = 44
WASI_ENOSYS = 52
WASI_ENOTSUP = 58

#: cpp-host's limits (limits.h): serialized pairs and random_get
PAIRS_MAX_COUNT = 1024
PAIRS_MAX_BYTES = 1 << 20
RANDOM_GET_MAX_BYTES = 64 << 10
