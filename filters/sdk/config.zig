//! Strict JSON configuration reading with field paths in error messages.
//!
//! Filters parse their configuration with `std.json` into a dynamic `Value`
//! and then walk it through a `Reader`, which records the first problem as
//! `<path>: <what was expected>` (e.g. `providers[0].issuer: expected string`),
//! so `proxy_on_configure` can log exactly which field is wrong.
const std = @import("std");
const json = std.json;

pub const Value = json.Value;
pub const Object = json.ObjectMap;
pub const ConfigError = error{ InvalidConfig, OutOfMemory };

pub const Reader = struct {
    arena: std.mem.Allocator,
    message: []const u8 = "",

    /// Parses `text` as JSON; an empty configuration is treated as `{}`.
    pub fn parse(r: *Reader, text: []const u8) ConfigError!Value {
        const trimmed = std.mem.trim(u8, text, " \t\r\n");
        if (trimmed.len == 0) return .{ .object = .empty };
        return json.parseFromSliceLeaky(Value, r.arena, trimmed, .{}) catch |e|
            r.fail("", "invalid JSON ({s})", .{@errorName(e)});
    }

    /// Records the error message and returns error.InvalidConfig.
    pub fn fail(r: *Reader, path: []const u8, comptime fmt: []const u8, args: anytype) ConfigError {
        const what = std.fmt.allocPrint(r.arena, fmt, args) catch return error.OutOfMemory;
        r.message = if (path.len == 0)
            what
        else
            std.fmt.allocPrint(r.arena, "{s}: {s}", .{ path, what }) catch return error.OutOfMemory;
        return error.InvalidConfig;
    }

    pub fn field(r: *Reader, path: []const u8, key: []const u8) []const u8 {
        if (path.len == 0) return key;
        return std.fmt.allocPrint(r.arena, "{s}.{s}", .{ path, key }) catch key;
    }

    pub fn index(r: *Reader, path: []const u8, i: usize) []const u8 {
        return std.fmt.allocPrint(r.arena, "{s}[{d}]", .{ path, i }) catch path;
    }

    pub fn object(r: *Reader, v: Value, path: []const u8) ConfigError!Object {
        return switch (v) {
            .object => |o| o,
            else => r.fail(if (path.len == 0) "configuration" else path, "expected object", .{}),
        };
    }

    /// Rejects fields not listed in `known` (catches typos such as "isuser").
    pub fn onlyKnown(r: *Reader, o: Object, path: []const u8, known: []const []const u8) ConfigError!void {
        var it = o.iterator();
        outer: while (it.next()) |e| {
            for (known) |k| if (std.mem.eql(u8, k, e.key_ptr.*)) continue :outer;
            return r.fail(r.field(path, e.key_ptr.*), "unknown field", .{});
        }
    }

    pub fn string(r: *Reader, o: Object, path: []const u8, key: []const u8) ConfigError!?[]const u8 {
        const v = o.get(key) orelse return null;
        return switch (v) {
            .string => |s| s,
            else => r.fail(r.field(path, key), "expected string", .{}),
        };
    }

    pub fn requiredString(r: *Reader, o: Object, path: []const u8, key: []const u8) ConfigError![]const u8 {
        const s = (try r.string(o, path, key)) orelse return r.fail(r.field(path, key), "required field is missing", .{});
        if (s.len == 0) return r.fail(r.field(path, key), "must not be empty", .{});
        return s;
    }

    pub fn boolean(r: *Reader, o: Object, path: []const u8, key: []const u8, default: bool) ConfigError!bool {
        const v = o.get(key) orelse return default;
        return switch (v) {
            .bool => |b| b,
            else => r.fail(r.field(path, key), "expected boolean", .{}),
        };
    }

    /// An integer in [min, max]; floats with an integral value are accepted.
    pub fn integer(r: *Reader, o: Object, path: []const u8, key: []const u8, min: i64, max: i64) ConfigError!?i64 {
        const v = o.get(key) orelse return null;
        const n: i64 = switch (v) {
            .integer => |i| i,
            .float => |f| if (@floor(f) == f and f >= -9.0e15 and f <= 9.0e15) @intFromFloat(f) else return r.fail(r.field(path, key), "expected integer", .{}),
            else => return r.fail(r.field(path, key), "expected integer", .{}),
        };
        if (n < min or n > max) return r.fail(r.field(path, key), "must be between {d} and {d}", .{ min, max });
        return n;
    }

    pub fn array(r: *Reader, o: Object, path: []const u8, key: []const u8) ConfigError!?[]const Value {
        const v = o.get(key) orelse return null;
        return switch (v) {
            .array => |a| a.items,
            else => r.fail(r.field(path, key), "expected array", .{}),
        };
    }

    /// A string or an array of strings (e.g. "aud", "requires").
    pub fn stringList(r: *Reader, o: Object, path: []const u8, key: []const u8) ConfigError!?[]const []const u8 {
        const v = o.get(key) orelse return null;
        switch (v) {
            .string => |s| {
                const out = try r.arena.alloc([]const u8, 1);
                out[0] = s;
                return out;
            },
            .array => |a| {
                const out = try r.arena.alloc([]const u8, a.items.len);
                for (a.items, 0..) |item, i| out[i] = switch (item) {
                    .string => |s| s,
                    else => return r.fail(r.index(r.field(path, key), i), "expected string", .{}),
                };
                return out;
            },
            else => return r.fail(r.field(path, key), "expected string or array of strings", .{}),
        }
    }
};
