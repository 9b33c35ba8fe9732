//! Local rate limiting for Proxy-Wasm (anchor: Envoy's local_ratelimit).
//!
//! Token buckets keyed by (route, descriptor values) live in the host's shared
//! data, so every worker VM of the same vm_id draws from the same bucket. Each
//! decision is a compare-and-swap loop: read (state, cas), refill from the host
//! clock, take a token, write back with that cas, retry on CAS_MISMATCH. Refill
//! is continuous (tokens_per_fill per fill_interval, like Envoy 1.40) and done
//! in exact integer arithmetic, so admitted counts are predictable to the token.
const std = @import("std");
const sdk = @import("proxy_wasm");
const cfg = sdk.config;

comptime {
    sdk.exportPlugin(@This());
}

const alloc = sdk.allocator;
const log_prefix = "ratelimit: ";

// ---------------------------------------------------------------- configuration

const Bucket = struct {
    max_tokens: u64,
    tokens_per_fill: u64,
    fill_interval_ns: u64,
};

const Source = union(enum) {
    client_ip: u32, // number of trusted x-forwarded-for hops (0: use source.address)
    header: []const u8,
    path,
};

const Route = struct {
    name: []const u8,
    prefix: ?[]const u8,
    exact: ?[]const u8,
    bucket: ?Bucket, // null: requests on this route are not limited
    descriptors: []const Source,
};

const Config = struct {
    domain: []const u8,
    routes: []const Route,
    default_route: Route,
    response_headers: bool,
    limit_missing: bool, // on_missing == "shared": missing descriptor values share one bucket
    body: []const u8,
    metric_allowed: u32,
    metric_limited: u32,
};

/// Root context id -> its configuration (a VM may host several plugins).
var roots: std.AutoHashMapUnmanaged(u32, *Config) = .empty;

/// What an allowed request's response should report (only with response_headers).
const Report = struct { limit: u64, remaining: u64, reset_s: u64 };
var reports: std.AutoHashMapUnmanaged(u32, Report) = .empty;

pub fn onConfigure(root_id: u32, text: []const u8) bool {
    const c = sdk.loadConfig(Config, text, log_prefix, parseConfig) orelse return false;
    if (roots.fetchRemove(root_id)) |old| _ = old; // a reconfigure replaces the old config (its arena is leaked on purpose: rare)
    roots.put(alloc, root_id, c) catch return false;
    sdk.logf(.info, log_prefix ++ "configured {d} route(s), domain \"{s}\"", .{ c.routes.len, c.domain });
    return true;
}

fn parseConfig(r: *cfg.Reader, text: []const u8) cfg.ConfigError!*Config {
    const root = try r.object(try r.parse(text), "");
    try r.onlyKnown(root, "", &.{ "domain", "stat_prefix", "bucket", "descriptors", "routes", "response_headers", "on_missing", "body" });
    const c = try r.arena.create(Config);
    c.domain = (try r.string(root, "", "domain")) orelse "default";
    const stat_prefix = (try r.string(root, "", "stat_prefix")) orelse "ratelimit";
    c.response_headers = try r.boolean(root, "", "response_headers", false);
    c.body = (try r.string(root, "", "body")) orelse "local_rate_limited";
    c.limit_missing = false;
    if (try r.string(root, "", "on_missing")) |m| {
        if (std.mem.eql(u8, m, "shared")) {
            c.limit_missing = true;
        } else if (!std.mem.eql(u8, m, "allow")) {
            return r.fail("on_missing", "expected \"allow\" or \"shared\"", .{});
        }
    }
    const default_desc = try parseDescriptors(r, root, "");
    c.default_route = .{
        .name = "default",
        .prefix = "",
        .exact = null,
        .bucket = if (root.get("bucket")) |b| try parseBucket(r, b, "bucket") else null,
        .descriptors = default_desc,
    };
    const routes_v = (try r.array(root, "", "routes")) orelse &.{};
    const routes = try r.arena.alloc(Route, routes_v.len);
    for (routes_v, 0..) |rv, i| {
        const path = r.index("routes", i);
        const o = try r.object(rv, path);
        try r.onlyKnown(o, path, &.{ "name", "prefix", "path", "bucket", "descriptors", "unlimited" });
        const prefix = try r.string(o, path, "prefix");
        const exact = try r.string(o, path, "path");
        if ((prefix == null) == (exact == null)) return r.fail(path, "exactly one of \"prefix\" or \"path\" is required", .{});
        const unlimited = try r.boolean(o, path, "unlimited", false);
        const bucket: ?Bucket = if (o.get("bucket")) |b| try parseBucket(r, b, r.field(path, "bucket")) else null;
        if (unlimited and bucket != null) return r.fail(path, "\"unlimited\" and \"bucket\" are mutually exclusive", .{});
        if (!unlimited and bucket == null) return r.fail(r.field(path, "bucket"), "required field is missing (or set \"unlimited\": true)", .{});
        routes[i] = .{
            .name = (try r.string(o, path, "name")) orelse try std.fmt.allocPrint(r.arena, "route{d}", .{i}),
            .prefix = prefix,
            .exact = exact,
            .bucket = bucket,
            .descriptors = if (o.get("descriptors") != null) try parseDescriptors(r, o, path) else default_desc,
        };
    }
    c.routes = routes;
    c.metric_allowed = sdk.defineMetric(.counter, try std.fmt.allocPrint(r.arena, "{s}.allowed", .{stat_prefix})) catch
        return r.fail("stat_prefix", "host refused to define metric", .{});
    c.metric_limited = sdk.defineMetric(.counter, try std.fmt.allocPrint(r.arena, "{s}.limited", .{stat_prefix})) catch
        return r.fail("stat_prefix", "host refused to define metric", .{});
    return c;
}

fn parseBucket(r: *cfg.Reader, v: cfg.Value, path: []const u8) cfg.ConfigError!Bucket {
    const o = try r.object(v, path);
    try r.onlyKnown(o, path, &.{ "max_tokens", "tokens_per_fill", "fill_interval_ms", "fill_interval" });
    const max_tokens = (try r.integer(o, path, "max_tokens", 1, 1_000_000_000)) orelse
        return r.fail(r.field(path, "max_tokens"), "required field is missing", .{});
    const per_fill = (try r.integer(o, path, "tokens_per_fill", 1, 1_000_000_000)) orelse max_tokens;
    var interval_ns: u64 = 0;
    if (try r.integer(o, path, "fill_interval_ms", 1, 86_400_000)) |ms| interval_ns = @as(u64, @intCast(ms)) * std.time.ns_per_ms;
    if (try r.string(o, path, "fill_interval")) |s| {
        if (interval_ns != 0) return r.fail(path, "only one of fill_interval and fill_interval_ms may be set", .{});
        interval_ns = parseDuration(s) orelse
            return r.fail(r.field(path, "fill_interval"), "expected a duration such as \"1s\", \"500ms\", \"2m\" or \"1h\"", .{});
    }
    if (interval_ns == 0) return r.fail(r.field(path, "fill_interval_ms"), "required field is missing (or set fill_interval)", .{});
    return .{ .max_tokens = @intCast(max_tokens), .tokens_per_fill = @intCast(per_fill), .fill_interval_ns = interval_ns };
}

/// "<integer><unit>" with unit ms, s, m or h (at least 1 ms, at most 24 h).
fn parseDuration(s: []const u8) ?u64 {
    const units = [_]struct { []const u8, u64 }{ .{ "ms", std.time.ns_per_ms }, .{ "s", std.time.ns_per_s }, .{ "m", std.time.ns_per_min }, .{ "h", std.time.ns_per_hour } };
    for (units) |u| {
        if (std.mem.endsWith(u8, s, u[0])) {
            const n = std.fmt.parseInt(u64, s[0 .. s.len - u[0].len], 10) catch return null;
            const ns = std.math.mul(u64, n, u[1]) catch return null;
            if (ns < std.time.ns_per_ms or ns > 24 * std.time.ns_per_hour) return null;
            return ns;
        }
    }
    return null;
}

fn parseDescriptors(r: *cfg.Reader, o: cfg.Object, path: []const u8) cfg.ConfigError![]const Source {
    const list = (try r.array(o, path, "descriptors")) orelse return &.{};
    const out = try r.arena.alloc(Source, list.len);
    for (list, 0..) |dv, i| {
        const dpath = r.index(r.field(path, "descriptors"), i);
        const d = try r.object(dv, dpath);
        try r.onlyKnown(d, dpath, &.{ "source", "name", "xff_trusted_hops" });
        const src = try r.requiredString(d, dpath, "source");
        if (std.mem.eql(u8, src, "client_ip")) {
            out[i] = .{ .client_ip = @intCast((try r.integer(d, dpath, "xff_trusted_hops", 0, 64)) orelse 0) };
        } else if (std.mem.eql(u8, src, "header")) {
            const name = try r.requiredString(d, dpath, "name");
            out[i] = .{ .header = try std.ascii.allocLowerString(r.arena, name) };
        } else if (std.mem.eql(u8, src, "path")) {
            out[i] = .path;
        } else {
            return r.fail(r.field(dpath, "source"), "expected \"client_ip\", \"header\" or \"path\"", .{});
        }
    }
    return out;
}

// ---------------------------------------------------------------- request path

pub fn onRequestHeaders(ctx: u32, _: u32, _: bool) sdk.Action {
    const root = sdk.rootOf(ctx) orelse return .@"continue";
    const c = roots.get(root) orelse return .@"continue";
    var arena = std.heap.ArenaAllocator.init(alloc);
    defer arena.deinit();
    const a = arena.allocator();

    const raw_path = sdk.getHeader(.http_request_headers, ":path") orelse &.{};
    defer sdk.free(raw_path);
    const path = stripQuery(raw_path);
    const route = matchRoute(c, path);
    const bucket = route.bucket orelse return .@"continue";

    const key = bucketKey(a, c, route, path) catch return .@"continue";
    const k = key orelse return .@"continue"; // a descriptor value is missing and on_missing is "allow"

    const d = decide(k, bucket, sdk.nowNanos());
    if (d.allowed) {
        sdk.incrementMetric(c.metric_allowed, 1);
        if (c.response_headers) reports.put(alloc, ctx, .{ .limit = bucket.max_tokens, .remaining = d.remaining, .reset_s = d.reset_s }) catch {};
        return .@"continue";
    }
    sdk.incrementMetric(c.metric_limited, 1);
    var b1: [24]u8 = undefined;
    var b2: [24]u8 = undefined;
    var b3: [24]u8 = undefined;
    var b4: [24]u8 = undefined;
    const headers = [_]sdk.Header{
        .{ "retry-after", fmtInt(&b1, @max(d.reset_s, 1)) },
        .{ "x-ratelimit-limit", fmtInt(&b2, bucket.max_tokens) },
        .{ "x-ratelimit-remaining", fmtInt(&b3, 0) },
        .{ "x-ratelimit-reset", fmtInt(&b4, d.reset_s) },
    };
    sdk.sendLocalResponse(429, "local_rate_limited", c.body, &headers) catch
        sdk.log(.err, log_prefix ++ "send_local_response failed");
    return .pause;
}

pub fn onResponseHeaders(ctx: u32, _: u32, _: bool) sdk.Action {
    const rep = reports.get(ctx) orelse return .@"continue";
    var b1: [24]u8 = undefined;
    var b2: [24]u8 = undefined;
    var b3: [24]u8 = undefined;
    sdk.replaceHeader(.http_response_headers, "x-ratelimit-limit", fmtInt(&b1, rep.limit)) catch {};
    sdk.replaceHeader(.http_response_headers, "x-ratelimit-remaining", fmtInt(&b2, rep.remaining)) catch {};
    sdk.replaceHeader(.http_response_headers, "x-ratelimit-reset", fmtInt(&b3, rep.reset_s)) catch {};
    return .@"continue";
}

pub fn onDelete(ctx: u32) void {
    _ = reports.remove(ctx);
    if (roots.fetchRemove(ctx)) |_| {} // root context going away
}

fn fmtInt(buf: []u8, n: u64) []const u8 {
    return std.fmt.bufPrint(buf, "{d}", .{n}) catch "0";
}

fn stripQuery(p: []const u8) []const u8 {
    const q = std.mem.indexOfAny(u8, p, "?#") orelse return p;
    return p[0..q];
}

fn matchRoute(c: *const Config, path: []const u8) *const Route {
    for (c.routes) |*rt| {
        if (rt.exact) |e| {
            if (std.mem.eql(u8, e, path)) return rt;
        } else if (rt.prefix) |p| {
            if (std.mem.startsWith(u8, path, p)) return rt;
        }
    }
    return &c.default_route;
}

/// "ratelimit:<domain>:<route>:<v1>|<v2>..." or null when a value is missing
/// and missing values are not limited.
fn bucketKey(a: std.mem.Allocator, c: *const Config, route: *const Route, path: []const u8) !?[]const u8 {
    var key: std.ArrayList(u8) = .empty;
    try key.print(a, "ratelimit:{s}:{s}:", .{ c.domain, route.name });
    for (route.descriptors, 0..) |d, i| {
        if (i > 0) try key.append(a, '|');
        const v: ?[]const u8 = switch (d) {
            .client_ip => |hops| clientIp(a, hops),
            .header => |name| headerCopy(a, name),
            .path => path,
        };
        if (v) |val| {
            try key.appendSlice(a, val);
        } else {
            if (!c.limit_missing) return null;
            try key.appendSlice(a, "-");
        }
    }
    return key.items;
}

/// With N trusted hops the client is the N-th x-forwarded-for entry from the
/// right (each trusted proxy appended the address it saw); with fewer entries,
/// or N = 0, the connection's peer (`source.address`, port removed).
fn clientIp(a: std.mem.Allocator, hops: u32) ?[]const u8 {
    if (hops > 0) {
        if (headerCopy(a, "x-forwarded-for")) |xff| {
            var parts: std.ArrayList([]const u8) = .empty;
            var it = std.mem.splitScalar(u8, xff, ',');
            while (it.next()) |p| {
                const t = std.mem.trim(u8, p, " \t");
                if (t.len > 0) parts.append(a, t) catch return null;
            }
            if (parts.items.len >= hops) return parts.items[parts.items.len - hops];
        }
    }
    const addr = sdk.getProperty(&.{ "source", "address" }) orelse return null;
    defer sdk.free(addr);
    return a.dupe(u8, stripPort(addr)) catch null;
}

/// A request header copied into the per-request arena (the host's copy is freed).
fn headerCopy(a: std.mem.Allocator, name: []const u8) ?[]const u8 {
    const v = sdk.getHeader(.http_request_headers, name) orelse return null;
    defer sdk.free(v);
    return a.dupe(u8, v) catch null;
}

fn stripPort(addr: []const u8) []const u8 {
    if (addr.len > 0 and addr[0] == '[') { // [v6]:port
        const end = std.mem.indexOfScalar(u8, addr, ']') orelse return addr;
        return addr[1..end];
    }
    const colon = std.mem.lastIndexOfScalar(u8, addr, ':') orelse return addr;
    if (std.mem.indexOfScalar(u8, addr[0..colon], ':') != null) return addr; // bare IPv6 without port
    return addr[0..colon];
}

// ---------------------------------------------------------------- the bucket

const Decision = struct { allowed: bool, remaining: u64, reset_s: u64 };

/// State in shared data: credit (u128 LE) in units of 1/fill_interval_ns of a
/// token times tokens_per_fill, i.e. one token == fill_interval_ns units, and
/// the time of the last refill (u64 LE). Refill adds elapsed_ns * tokens_per_fill.
const state_len = 24;

/// The cas used to create a key: "create if absent". In the ABI, cas 0 is an
/// unconditional write, so two workers that both read NotFound would both
/// succeed and both admit (the later write erases the earlier take; seen in
/// Envoy with --concurrency 2 about once in 400 bursts on a fresh key). Envoy
/// (proxy-wasm-cpp-host SharedData::set) ignores the cas when the key does not
/// exist, and checks it when the key exists: a non-zero cas that the existing
/// entry does not carry fails with CAS_MISMATCH. Cas values come from one
/// process-wide u32 counter that starts at 1, so an existing entry carries
/// maxInt(u32) only if its last write was the 4294967295th shared-data write of
/// the process. (A "write a per-connection nonce, read it back" check is not
/// enough: A writes, reads back its nonce, then B's unconditional write lands
/// and B reads back its own nonce; both admit.)
const create_cas: u32 = std.math.maxInt(u32);

fn decide(key: []const u8, b: Bucket, now: u64) Decision {
    const one: u128 = b.fill_interval_ns;
    const cap: u128 = @as(u128, b.max_tokens) * one;
    var attempt: u32 = 0;
    while (attempt < 64) : (attempt += 1) {
        var credit: u128 = cap;
        var last: u64 = now;
        var cas: u32 = create_cas;
        const cur = sdk.getSharedData(key) catch null;
        if (cur) |sv| {
            defer sdk.free(sv.value);
            cas = sv.cas;
            if (sv.value.len == state_len) {
                credit = @min(cap, std.mem.readInt(u128, sv.value[0..16], .little));
                last = std.mem.readInt(u64, sv.value[16..24], .little);
            }
        }
        if (now > last) {
            credit = @min(cap, credit + @as(u128, now - last) * b.tokens_per_fill);
            last = now;
        }
        if (credit < one) {
            // Denied: nothing to write (the refill is recomputed next time).
            return .{ .allowed = false, .remaining = 0, .reset_s = resetSeconds(credit, one, b) };
        }
        credit -= one;
        var buf: [state_len]u8 = undefined;
        std.mem.writeInt(u128, buf[0..16], credit, .little);
        std.mem.writeInt(u64, buf[16..24], last, .little);
        // A new key is written with create_cas (create-if-absent, see there), an
        // existing one with the cas we read: either way a concurrent writer makes
        // this fail with CAS_MISMATCH and the decision is redone on its state.
        sdk.setSharedData(key, &buf, cas) catch |e| {
            if (e == error.CasMismatch) continue;
            sdk.logf(.warn, log_prefix ++ "shared data write failed ({s}); denying", .{@errorName(e)});
            return .{ .allowed = false, .remaining = 0, .reset_s = 1 };
        };
        const remaining: u64 = @intCast(credit / one);
        return .{ .allowed = true, .remaining = remaining, .reset_s = resetSeconds(credit, one, b) };
    }
    sdk.log(.warn, log_prefix ++ "too much contention on a bucket; denying");
    return .{ .allowed = false, .remaining = 0, .reset_s = 1 };
}

/// 0 while a whole token is available, else whole seconds until the next one.
fn resetSeconds(credit: u128, one: u128, b: Bucket) u64 {
    if (credit >= one) return 0;
    const ns = std.math.divCeil(u128, one - credit, b.tokens_per_fill) catch 0;
    return @intCast(std.math.divCeil(u128, ns, std.time.ns_per_s) catch 0);
}
