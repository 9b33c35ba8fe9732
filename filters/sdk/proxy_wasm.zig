//! A small Proxy-Wasm SDK for Zig (ABI 0.2.1, wasm32-freestanding).
//!
//! Design: a filter is a Zig namespace (struct type) that declares the callbacks
//! it needs with Zig-friendly signatures (`onConfigure(root_id, config) bool`,
//! `onRequestHeaders(ctx, num_headers, end_of_stream) Action`, ...). The filter
//! calls `comptime { sdk.exportPlugin(@This()); }` once, and the SDK exports the
//! raw `proxy_on_*` symbols for exactly the callbacks the filter declares (the
//! host only calls exported callbacks, so unused ones cost nothing). The SDK
//! itself owns the three things every filter needs and nobody wants to repeat:
//! the ABI marker, the allocator export, and the stream-context -> root-context
//! table (so a stream callback can find its plugin's configuration).
//!
//! Memory: the host hands data to the guest by calling `proxy_on_memory_allocate`
//! (backed by `std.heap.wasm_allocator`); every helper returning `[]u8` from the
//! host returns such a block, which the caller owns and frees with `free`.
const std = @import("std");

/// Strict JSON configuration reader shared by the filters.
pub const config = @import("config.zig");

pub const allocator = std.heap.wasm_allocator;

// ---------------------------------------------------------------- enums

pub const WasmResult = enum(u32) {
    ok = 0,
    not_found = 1,
    bad_argument = 2,
    serialization_failure = 3,
    parse_failure = 4,
    bad_expression = 5,
    invalid_memory_access = 6,
    empty = 7,
    cas_mismatch = 8,
    result_mismatch = 9,
    internal_failure = 10,
    broken_connection = 11,
    unimplemented = 12,
    _,
};

pub const MapType = enum(u32) {
    http_request_headers = 0,
    http_request_trailers = 1,
    http_response_headers = 2,
    http_response_trailers = 3,
    grpc_call_initial_metadata = 4,
    grpc_call_trailing_metadata = 5,
    http_call_response_headers = 6,
    http_call_response_trailers = 7,
};

pub const BufferType = enum(u32) {
    http_request_body = 0,
    http_response_body = 1,
    downstream_data = 2,
    upstream_data = 3,
    http_call_response_body = 4,
    grpc_call_message = 5,
    vm_configuration = 6,
    plugin_configuration = 7,
    foreign_function_arguments = 8,
};

pub const LogLevel = enum(u32) { trace = 0, debug = 1, info = 2, warn = 3, err = 4, critical = 5 };
pub const StreamType = enum(u32) { http_request = 0, http_response = 1, downstream = 2, upstream = 3 };
pub const MetricType = enum(u32) { counter = 0, gauge = 1, histogram = 2 };

/// Return value of header/body callbacks (`proxy_action_t`).
pub const Action = enum(u32) { @"continue" = 0, pause = 1 };

pub const Error = error{ NotFound, BadArgument, CasMismatch, HostFailure, OutOfMemory };

fn check(r: u32) Error!void {
    return switch (@as(WasmResult, @enumFromInt(r))) {
        .ok => {},
        .not_found => error.NotFound,
        .bad_argument => error.BadArgument,
        .cas_mismatch => error.CasMismatch,
        else => error.HostFailure,
    };
}

// ---------------------------------------------------------------- host imports

pub const raw = struct {
    pub extern "env" fn proxy_log(level: u32, ptr: [*]const u8, len: usize) u32;
    pub extern "env" fn proxy_get_log_level(ret_level: *u32) u32;
    pub extern "env" fn proxy_get_current_time_nanoseconds(ret_time: *u64) u32;
    pub extern "env" fn proxy_set_tick_period_milliseconds(period_ms: u32) u32;
    pub extern "env" fn proxy_get_buffer_bytes(buffer_type: u32, start: u32, max_size: u32, ret_ptr: *?[*]u8, ret_len: *usize) u32;
    pub extern "env" fn proxy_get_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
    pub extern "env" fn proxy_add_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, val_ptr: [*]const u8, val_len: usize) u32;
    pub extern "env" fn proxy_replace_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, val_ptr: [*]const u8, val_len: usize) u32;
    pub extern "env" fn proxy_remove_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize) u32;
    pub extern "env" fn proxy_get_header_map_pairs(map_type: u32, ret_ptr: *?[*]u8, ret_len: *usize) u32;
    pub extern "env" fn proxy_continue_stream(stream_type: u32) u32;
    pub extern "env" fn proxy_send_local_response(status: u32, details_ptr: [*]const u8, details_len: usize, body_ptr: [*]const u8, body_len: usize, headers_ptr: [*]const u8, headers_len: usize, grpc_status: i32) u32;
    pub extern "env" fn proxy_get_property(path_ptr: [*]const u8, path_len: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
    pub extern "env" fn proxy_set_property(path_ptr: [*]const u8, path_len: usize, val_ptr: [*]const u8, val_len: usize) u32;
    pub extern "env" fn proxy_get_shared_data(key_ptr: [*]const u8, key_len: usize, ret_ptr: *?[*]u8, ret_len: *usize, ret_cas: *u32) u32;
    pub extern "env" fn proxy_set_shared_data(key_ptr: [*]const u8, key_len: usize, val_ptr: [*]const u8, val_len: usize, cas: u32) u32;
    pub extern "env" fn proxy_http_call(up_ptr: [*]const u8, up_len: usize, hdr_ptr: [*]const u8, hdr_len: usize, body_ptr: [*]const u8, body_len: usize, trl_ptr: [*]const u8, trl_len: usize, timeout_ms: u32, ret_token: *u32) u32;
    pub extern "env" fn proxy_set_effective_context(context_id: u32) u32;
    pub extern "env" fn proxy_define_metric(metric_type: u32, name_ptr: [*]const u8, name_len: usize, ret_id: *u32) u32;
    pub extern "env" fn proxy_increment_metric(metric_id: u32, delta: i64) u32;
};

// ---------------------------------------------------------------- memory

/// Frees a block the host allocated through `proxy_on_memory_allocate`.
pub fn free(bytes: []const u8) void {
    if (bytes.len != 0) allocator.free(bytes);
}

/// Turns a (ptr, len) pair written by the host into an owned slice.
fn owned(ptr: ?[*]u8, len: usize) []u8 {
    if (ptr) |p| if (len != 0) return p[0..len];
    return &.{};
}

// ---------------------------------------------------------------- logging

pub fn log(level: LogLevel, msg: []const u8) void {
    _ = raw.proxy_log(@intFromEnum(level), msg.ptr, msg.len);
}

/// Formats into a stack buffer (messages longer than 1 KiB are truncated).
pub fn logf(level: LogLevel, comptime fmt: []const u8, args: anytype) void {
    var buf: [1024]u8 = undefined;
    const msg = std.fmt.bufPrint(&buf, fmt, args) catch blk: {
        @memcpy(buf[buf.len - 3 ..], "...");
        break :blk buf[0..];
    };
    log(level, msg);
}

/// Reads a plugin configuration with `parseFn` into an arena that lives as long as
/// the configuration (its strings point into it). On a bad configuration it logs
/// the field-naming message at error level, frees the arena and returns null, so
/// `onConfigure` can return false as Envoy expects.
pub fn loadConfig(
    comptime T: type,
    text: []const u8,
    comptime log_prefix: []const u8,
    comptime parseFn: fn (*config.Reader, []const u8) config.ConfigError!*T,
) ?*T {
    const arena = allocator.create(std.heap.ArenaAllocator) catch return null;
    arena.* = std.heap.ArenaAllocator.init(allocator);
    var r = config.Reader{ .arena = arena.allocator() };
    return parseFn(&r, text) catch |e| {
        if (e == error.InvalidConfig) {
            logf(.err, log_prefix ++ "{s}", .{r.message});
        } else log(.err, log_prefix ++ "out of memory while reading the configuration");
        arena.deinit();
        allocator.destroy(arena);
        return null;
    };
}

// ---------------------------------------------------------------- time, timers

/// Host clock (Envoy: wall clock of the dispatcher) in nanoseconds since the epoch.
pub fn nowNanos() u64 {
    var t: u64 = 0;
    _ = raw.proxy_get_current_time_nanoseconds(&t);
    return t;
}

pub fn setTickPeriod(ms: u32) void {
    _ = raw.proxy_set_tick_period_milliseconds(ms);
}

// ---------------------------------------------------------------- buffers

/// Returns an owned copy of `[start, start+max)` of a buffer, or null when the
/// host has no such buffer right now.
pub fn getBufferBytes(t: BufferType, start: u32, max: u32) ?[]u8 {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    if (raw.proxy_get_buffer_bytes(@intFromEnum(t), start, max, &ptr, &len) != 0) return null;
    return owned(ptr, len);
}

// ---------------------------------------------------------------- headers

/// First value of a header (the host lower-cases keys), or null when absent.
pub fn getHeader(map: MapType, key: []const u8) ?[]u8 {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    if (raw.proxy_get_header_map_value(@intFromEnum(map), key.ptr, key.len, &ptr, &len) != 0) return null;
    return owned(ptr, len);
}

pub fn addHeader(map: MapType, key: []const u8, value: []const u8) Error!void {
    return check(raw.proxy_add_header_map_value(@intFromEnum(map), key.ptr, key.len, value.ptr, value.len));
}

pub fn replaceHeader(map: MapType, key: []const u8, value: []const u8) Error!void {
    return check(raw.proxy_replace_header_map_value(@intFromEnum(map), key.ptr, key.len, value.ptr, value.len));
}

pub fn removeHeader(map: MapType, key: []const u8) Error!void {
    return check(raw.proxy_remove_header_map_value(@intFromEnum(map), key.ptr, key.len));
}

pub const Header = struct { []const u8, []const u8 };

/// Serializes pairs as the ABI expects: u32 N, N x (u32 klen, u32 vlen),
/// then N x (key NUL value NUL). Caller frees with `alloc`.
pub fn serializePairs(alloc: std.mem.Allocator, pairs: []const Header) Error![]u8 {
    var size: usize = 4;
    for (pairs) |p| size += 8 + p[0].len + 1 + p[1].len + 1;
    const out = try alloc.alloc(u8, size);
    std.mem.writeInt(u32, out[0..4], @intCast(pairs.len), .little);
    var off: usize = 4;
    for (pairs) |p| {
        std.mem.writeInt(u32, out[off..][0..4], @intCast(p[0].len), .little);
        std.mem.writeInt(u32, out[off + 4 ..][0..4], @intCast(p[1].len), .little);
        off += 8;
    }
    for (pairs) |p| {
        @memcpy(out[off..][0..p[0].len], p[0]);
        off += p[0].len;
        out[off] = 0;
        off += 1;
        @memcpy(out[off..][0..p[1].len], p[1]);
        off += p[1].len;
        out[off] = 0;
        off += 1;
    }
    return out;
}

/// Iterates a serialized pairs block (as returned by the host).
pub const PairsIterator = struct {
    data: []const u8,
    n: u32,
    i: u32 = 0,
    off: usize,

    pub fn init(data: []const u8) PairsIterator {
        if (data.len < 4) return .{ .data = data, .n = 0, .off = 0 };
        const n = std.mem.readInt(u32, data[0..4], .little);
        const ok = @as(u64, n) * 8 + 4 <= data.len;
        return .{ .data = data, .n = if (ok) n else 0, .off = 4 + @as(usize, if (ok) n else 0) * 8 };
    }

    pub fn next(it: *PairsIterator) ?Header {
        if (it.i >= it.n) return null;
        const base = 4 + @as(usize, it.i) * 8;
        const kl = std.mem.readInt(u32, it.data[base..][0..4], .little);
        const vl = std.mem.readInt(u32, it.data[base + 4 ..][0..4], .little);
        if (it.off + kl + vl + 2 > it.data.len) return null;
        const k = it.data[it.off..][0..kl];
        const v = it.data[it.off + kl + 1 ..][0..vl];
        it.off += kl + vl + 2;
        it.i += 1;
        return .{ k, v };
    }
};

/// Owned serialized pairs of a whole header map, or null when unavailable.
pub fn getHeaderPairs(map: MapType) ?[]u8 {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    if (raw.proxy_get_header_map_pairs(@intFromEnum(map), &ptr, &len) != 0) return null;
    return owned(ptr, len);
}

// ---------------------------------------------------------------- stream control

pub fn continueStream(t: StreamType) Error!void {
    return check(raw.proxy_continue_stream(@intFromEnum(t)));
}

/// Sends a local reply; the host forces the current callback's result to Stop.
pub fn sendLocalResponse(status: u32, details: []const u8, body: []const u8, headers: []const Header) Error!void {
    const hdrs = try serializePairs(allocator, headers);
    defer allocator.free(hdrs);
    return check(raw.proxy_send_local_response(status, details.ptr, details.len, body.ptr, body.len, hdrs.ptr, hdrs.len, -1));
}

/// Makes later hostcalls act on `ctx` (needed when a root callback such as an
/// HTTP call response resumes or answers a stream).
pub fn setEffectiveContext(ctx: u32) Error!void {
    return check(raw.proxy_set_effective_context(ctx));
}

// ---------------------------------------------------------------- properties

/// Joins `path` segments with NUL as the ABI requires; null when longer than `buf`.
fn propertyPath(buf: []u8, path: []const []const u8) ?[]const u8 {
    var len: usize = 0;
    for (path, 0..) |seg, i| {
        if (i > 0) {
            if (len >= buf.len) return null;
            buf[len] = 0;
            len += 1;
        }
        if (len + seg.len > buf.len) return null;
        @memcpy(buf[len..][0..seg.len], seg);
        len += seg.len;
    }
    return buf[0..len];
}

/// Reads a property; `path` segments are joined with NUL as the ABI requires.
pub fn getProperty(path: []const []const u8) ?[]u8 {
    var buf: [512]u8 = undefined;
    const p = propertyPath(&buf, path) orelse return null;
    var ptr: ?[*]u8 = null;
    var rlen: usize = 0;
    if (raw.proxy_get_property(p.ptr, p.len, &ptr, &rlen) != 0) return null;
    return owned(ptr, rlen);
}

/// Sets a stream property. Envoy keeps it as filter state `wasm.<path>` (bytes), which
/// later filters read back with `getProperty(path)` and access logs as %FILTER_STATE(wasm.<path>)%.
pub fn setProperty(path: []const []const u8, value: []const u8) Error!void {
    var buf: [512]u8 = undefined;
    const p = propertyPath(&buf, path) orelse return error.BadArgument;
    return check(raw.proxy_set_property(p.ptr, p.len, value.ptr, value.len));
}

// ---------------------------------------------------------------- shared data

pub const SharedValue = struct { value: []u8, cas: u32 };

/// Null when the key does not exist (cas 0 then writes unconditionally; a cas that can
/// never match an existing entry, such as 0xFFFFFFFF, creates it only if still absent).
pub fn getSharedData(key: []const u8) Error!?SharedValue {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    var cas: u32 = 0;
    const r = raw.proxy_get_shared_data(key.ptr, key.len, &ptr, &len, &cas);
    if (r == @intFromEnum(WasmResult.not_found)) return null;
    try check(r);
    return .{ .value = owned(ptr, len), .cas = cas };
}

/// Stores `value` if the entry's cas still equals `cas` (0 = unconditional);
/// returns error.CasMismatch when another writer got there first.
pub fn setSharedData(key: []const u8, value: []const u8, cas: u32) Error!void {
    return check(raw.proxy_set_shared_data(key.ptr, key.len, value.ptr, value.len, cas));
}

// ---------------------------------------------------------------- HTTP callouts

/// Starts an HTTP call to `cluster`; the answer arrives in the root context's
/// `onHttpCallResponse` with the returned token.
pub fn httpCall(cluster: []const u8, headers: []const Header, body: []const u8, timeout_ms: u32) Error!u32 {
    const hdrs = try serializePairs(allocator, headers);
    defer allocator.free(hdrs);
    const no_trailers = [_]u8{ 0, 0, 0, 0 };
    var token: u32 = 0;
    try check(raw.proxy_http_call(cluster.ptr, cluster.len, hdrs.ptr, hdrs.len, body.ptr, body.len, &no_trailers, no_trailers.len, timeout_ms, &token));
    return token;
}

/// Valid only inside `onHttpCallResponse`.
pub fn getHttpCallResponseHeader(key: []const u8) ?[]u8 {
    return getHeader(.http_call_response_headers, key);
}

/// Valid only inside `onHttpCallResponse`.
pub fn getHttpCallResponseBody(size: u32) ?[]u8 {
    return getBufferBytes(.http_call_response_body, 0, size);
}

// ---------------------------------------------------------------- metrics

pub fn defineMetric(t: MetricType, name: []const u8) Error!u32 {
    var id: u32 = 0;
    try check(raw.proxy_define_metric(@intFromEnum(t), name.ptr, name.len, &id));
    return id;
}

pub fn incrementMetric(id: u32, delta: i64) void {
    _ = raw.proxy_increment_metric(id, delta);
}

// ---------------------------------------------------------------- contexts and exports

/// Stream context id -> root context id, maintained by the exported
/// `proxy_on_context_create` / `proxy_on_delete`.
var stream_roots: std.AutoHashMapUnmanaged(u32, u32) = .empty;

/// Root context of a stream context (null for unknown ids and root contexts).
pub fn rootOf(ctx: u32) ?u32 {
    return stream_roots.get(ctx);
}

fn readBuffer(t: BufferType, size: u32) []u8 {
    if (size == 0) return &.{};
    return getBufferBytes(t, 0, size) orelse &.{};
}

/// Exports the Proxy-Wasm ABI for plugin namespace `P`. Recognised
/// declarations (all optional):
///   onVmStart(root_id: u32, vm_config: []const u8) bool
///   onConfigure(root_id: u32, config: []const u8) bool
///   onContextCreate(ctx: u32, root_id: u32) void           (stream contexts)
///   onRequestHeaders(ctx: u32, num_headers: u32, end_of_stream: bool) Action
///   onResponseHeaders(ctx: u32, num_headers: u32, end_of_stream: bool) Action
///   onHttpCallResponse(root_id: u32, token: u32, num_headers: u32, body_size: u32, num_trailers: u32) void
///   onTick(root_id: u32) void
///   onLog(ctx: u32) void
///   onDone(ctx: u32) bool
///   onDelete(ctx: u32) void                                 (stream and root contexts)
/// Config buffers passed to onVmStart/onConfigure are freed after the call.
pub fn exportPlugin(comptime P: type) void {
    const W = struct {
        fn abiVersion() callconv(.c) void {}

        fn memoryAllocate(size: usize) callconv(.c) ?[*]u8 {
            const buf = allocator.alloc(u8, @max(size, 1)) catch return null;
            return buf.ptr;
        }

        fn contextCreate(ctx: u32, parent: u32) callconv(.c) void {
            if (parent == 0) return;
            stream_roots.put(allocator, ctx, parent) catch {};
            if (@hasDecl(P, "onContextCreate")) P.onContextCreate(ctx, parent);
        }

        fn vmStart(root: u32, size: u32) callconv(.c) u32 {
            if (!@hasDecl(P, "onVmStart")) return 1;
            const cfg = readBuffer(.vm_configuration, size);
            defer free(cfg);
            return @intFromBool(P.onVmStart(root, cfg));
        }

        fn configure(root: u32, size: u32) callconv(.c) u32 {
            if (!@hasDecl(P, "onConfigure")) return 1;
            const cfg = readBuffer(.plugin_configuration, size);
            defer free(cfg);
            return @intFromBool(P.onConfigure(root, cfg));
        }

        fn requestHeaders(ctx: u32, n: u32, eos: u32) callconv(.c) u32 {
            return @intFromEnum(P.onRequestHeaders(ctx, n, eos != 0));
        }

        fn responseHeaders(ctx: u32, n: u32, eos: u32) callconv(.c) u32 {
            return @intFromEnum(P.onResponseHeaders(ctx, n, eos != 0));
        }

        fn httpCallResponse(root: u32, token: u32, nh: u32, body: u32, nt: u32) callconv(.c) void {
            P.onHttpCallResponse(root, token, nh, body, nt);
        }

        fn tick(root: u32) callconv(.c) void {
            P.onTick(root);
        }

        fn logCb(ctx: u32) callconv(.c) void {
            P.onLog(ctx);
        }

        fn done(ctx: u32) callconv(.c) u32 {
            if (@hasDecl(P, "onDone")) return @intFromBool(P.onDone(ctx));
            return 1;
        }

        fn delete(ctx: u32) callconv(.c) void {
            if (@hasDecl(P, "onDelete")) P.onDelete(ctx);
            _ = stream_roots.remove(ctx);
        }
    };
    @export(&W.abiVersion, .{ .name = "proxy_abi_version_0_2_1" });
    @export(&W.memoryAllocate, .{ .name = "proxy_on_memory_allocate" });
    @export(&W.contextCreate, .{ .name = "proxy_on_context_create" });
    @export(&W.vmStart, .{ .name = "proxy_on_vm_start" });
    @export(&W.configure, .{ .name = "proxy_on_configure" });
    @export(&W.done, .{ .name = "proxy_on_done" });
    @export(&W.delete, .{ .name = "proxy_on_delete" });
    if (@hasDecl(P, "onRequestHeaders")) @export(&W.requestHeaders, .{ .name = "proxy_on_request_headers" });
    if (@hasDecl(P, "onResponseHeaders")) @export(&W.responseHeaders, .{ .name = "proxy_on_response_headers" });
    if (@hasDecl(P, "onHttpCallResponse")) @export(&W.httpCallResponse, .{ .name = "proxy_on_http_call_response" });
    if (@hasDecl(P, "onTick")) @export(&W.tick, .{ .name = "proxy_on_tick" });
    if (@hasDecl(P, "onLog")) @export(&W.logCb, .{ .name = "proxy_on_log" });
}
