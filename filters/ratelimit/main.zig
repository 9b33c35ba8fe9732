//! Local rate limiting for Proxy-Wasm (anchor: Envoy's local_ratelimit).
//!
//! Token buckets keyed by (route, limit, connection, descriptor values) live in the
//! host's shared data (store.zig), so every worker VM of the same vm_id draws from the
//! same bucket, with compare-and-swap decisions and a bounded number of keys. Refill
//! is continuous (tokens_per_fill per fill_interval, like Envoy 1.40) and done in exact
//! integer arithmetic, so admitted counts are predictable to the token.
const std = @import("std");
const sdk = @import("proxy_wasm");
const store = @import("store.zig");
const cfg = sdk.config;

comptime {
    sdk.exportPlugin(@This());
}

const alloc = sdk.allocator;
const log_prefix = "ratelimit: ";
const Bucket = store.Bucket;

// ---------------------------------------------------------------- configuration

const Source = union(enum) {
    client_ip: u32, // number of trusted x-forwarded-for hops (0: use source.address)
    header: []const u8,
    path,
};

/// A descriptor: where a value comes from and the key it has in `limits` entries.
const Descriptor = struct { key: []const u8, source: Source };

/// One entry of a limit; a null value matches any value (one bucket per value).
const Entry = struct { key: []const u8, value: ?[]const u8 };

/// Native local_ratelimit's descriptor: a bucket for requests whose descriptor entries match.
const Limit = struct { entries: []const Entry, bucket: Bucket, wildcard: bool };

const Route = struct {
    name: []const u8,
    prefix: ?[]const u8,
    exact: ?[]const u8,
    bucket: ?Bucket, // without limits: one bucket per descriptor value; with limits: the default bucket
    descriptors: []const Descriptor,
    limits: []const Limit,
};

const Config = struct {
    domain: []const u8,
    routes: []const Route,
    default_route: Route,
    response_headers: bool,
    limit_missing: bool, // on_missing == "shared": missing descriptor values share one bucket
    body: []const u8,
    status: u32,
    retry_after: bool,
    limited_headers: []const sdk.Header,
    per_connection: bool,
    always_consume_default: bool,
    sets: u32,
    metric_allowed: u32,
    metric_limited: u32,
    metric_evicted: u32,
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

const top_fields = [_][]const u8{
    "domain",       "stat_prefix",              "bucket",                        "descriptors", "limits",
    "routes",       "response_headers",         "on_missing",                    "body",        "status",
    "retry_after",  "limited_response_headers", "always_consume_default_bucket", "per_connection",
    "max_buckets",
};

fn parseConfig(r: *cfg.Reader, text: []const u8) cfg.ConfigError!*Config {
    const root = try r.object(try r.parse(text), "");
    try r.onlyKnown(root, "", &top_fields);
    const c = try r.arena.create(Config);
    c.domain = (try r.string(root, "", "domain")) orelse "default";
    const stat_prefix = (try r.string(root, "", "stat_prefix")) orelse "ratelimit";
    c.response_headers = try r.boolean(root, "", "response_headers", false);
    c.body = (try r.string(root, "", "body")) orelse "local_rate_limited";
    c.status = @intCast((try r.integer(root, "", "status", 400, 599)) orelse 429);
    c.retry_after = try r.boolean(root, "", "retry_after", true);
    c.limited_headers = try parseHeaders(r, root, "limited_response_headers");
    c.per_connection = try r.boolean(root, "", "per_connection", false);
    c.always_consume_default = try r.boolean(root, "", "always_consume_default_bucket", true);
    const max_buckets = (try r.integer(root, "", "max_buckets", store.ways, 1 << 24)) orelse 16384;
    c.sets = @intCast(std.math.divCeil(i64, max_buckets, store.ways) catch unreachable);
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
        .limits = try parseLimits(r, root, "", default_desc),
    };
    const routes_v = (try r.array(root, "", "routes")) orelse &.{};
    const routes = try r.arena.alloc(Route, routes_v.len);
    for (routes_v, 0..) |rv, i| routes[i] = try parseRoute(r, rv, i, default_desc);
    c.routes = routes;
    c.metric_allowed = try metric(r, stat_prefix, "allowed");
    c.metric_limited = try metric(r, stat_prefix, "limited");
    c.metric_evicted = try metric(r, stat_prefix, "evicted");
    return c;
}

fn metric(r: *cfg.Reader, prefix: []const u8, name: []const u8) cfg.ConfigError!u32 {
    const full = try std.fmt.allocPrint(r.arena, "{s}.{s}", .{ prefix, name });
    return sdk.defineMetric(.counter, full) catch r.fail("stat_prefix", "host refused to define metric {s}", .{full});
}

fn parseRoute(r: *cfg.Reader, rv: cfg.Value, i: usize, default_desc: []const Descriptor) cfg.ConfigError!Route {
    const path = r.index("routes", i);
    const o = try r.object(rv, path);
    try r.onlyKnown(o, path, &.{ "name", "prefix", "path", "bucket", "descriptors", "limits", "unlimited" });
    const prefix = try r.string(o, path, "prefix");
    const exact = try r.string(o, path, "path");
    if ((prefix == null) == (exact == null)) return r.fail(path, "exactly one of \"prefix\" or \"path\" is required", .{});
    const unlimited = try r.boolean(o, path, "unlimited", false);
    const bucket: ?Bucket = if (o.get("bucket")) |b| try parseBucket(r, b, r.field(path, "bucket")) else null;
    const descriptors = if (o.get("descriptors") != null) try parseDescriptors(r, o, path) else default_desc;
    const limits = try parseLimits(r, o, path, descriptors);
    if (unlimited and (bucket != null or limits.len > 0)) return r.fail(path, "\"unlimited\" excludes \"bucket\" and \"limits\"", .{});
    if (!unlimited and bucket == null and limits.len == 0)
        return r.fail(r.field(path, "bucket"), "required field is missing (or set \"limits\", or \"unlimited\": true)", .{});
    return .{
        .name = (try r.string(o, path, "name")) orelse try std.fmt.allocPrint(r.arena, "route{d}", .{i}),
        .prefix = prefix,
        .exact = exact,
        .bucket = bucket,
        .descriptors = descriptors,
        .limits = limits,
    };
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

fn parseDescriptors(r: *cfg.Reader, o: cfg.Object, path: []const u8) cfg.ConfigError![]const Descriptor {
    const list = (try r.array(o, path, "descriptors")) orelse return &.{};
    const out = try r.arena.alloc(Descriptor, list.len);
    for (list, 0..) |dv, i| {
        const dpath = r.index(r.field(path, "descriptors"), i);
        const d = try r.object(dv, dpath);
        try r.onlyKnown(d, dpath, &.{ "source", "name", "xff_trusted_hops", "key" });
        const src = try r.requiredString(d, dpath, "source");
        const source: Source = if (std.mem.eql(u8, src, "client_ip"))
            .{ .client_ip = @intCast((try r.integer(d, dpath, "xff_trusted_hops", 0, 64)) orelse 0) }
        else if (std.mem.eql(u8, src, "header"))
            .{ .header = try std.ascii.allocLowerString(r.arena, try r.requiredString(d, dpath, "name")) }
        else if (std.mem.eql(u8, src, "path"))
            .path
        else
            return r.fail(r.field(dpath, "source"), "expected \"client_ip\", \"header\" or \"path\"", .{});
        const default_key = switch (source) {
            .client_ip => "remote_address", // the key of native's remote_address action
            .header => |name| name,
            .path => "path",
        };
        const key = (try r.string(d, dpath, "key")) orelse default_key;
        if (key.len == 0) return r.fail(r.field(dpath, "key"), "must not be empty", .{});
        out[i] = .{ .key = key, .source = source };
    }
    return out;
}

/// `limits`: [{"entries": [{"key": k, "value": v}], "bucket": {...}}]; the entries must name the
/// descriptors' keys in order (a limit that could never match is a configuration error).
fn parseLimits(r: *cfg.Reader, o: cfg.Object, path: []const u8, descriptors: []const Descriptor) cfg.ConfigError![]const Limit {
    const list = (try r.array(o, path, "limits")) orelse return &.{};
    const lpath = r.field(path, "limits");
    if (list.len > 0 and descriptors.len == 0) return r.fail(lpath, "needs \"descriptors\" to match against", .{});
    if (list.len > 0 and o.get("on_missing") != null) return r.fail(r.field(path, "on_missing"), "not used with \"limits\" (a request with a missing value uses the default bucket)", .{});
    const out = try r.arena.alloc(Limit, list.len);
    for (list, 0..) |lv, i| {
        const ipath = r.index(lpath, i);
        const lo = try r.object(lv, ipath);
        try r.onlyKnown(lo, ipath, &.{ "entries", "bucket" });
        const epath = r.field(ipath, "entries");
        const entries_v = (try r.array(lo, ipath, "entries")) orelse return r.fail(epath, "required field is missing", .{});
        if (entries_v.len != descriptors.len)
            return r.fail(epath, "expected {d} entries, one per descriptor (keys in order)", .{descriptors.len});
        const entries = try r.arena.alloc(Entry, entries_v.len);
        var wildcard = false;
        for (entries_v, 0..) |ev, j| {
            const jpath = r.index(epath, j);
            const eo = try r.object(ev, jpath);
            try r.onlyKnown(eo, jpath, &.{ "key", "value" });
            const key = try r.requiredString(eo, jpath, "key");
            if (!std.mem.eql(u8, key, descriptors[j].key))
                return r.fail(r.field(jpath, "key"), "expected \"{s}\" (descriptor {d}'s key)", .{ descriptors[j].key, j });
            const value = try r.string(eo, jpath, "value");
            const v = if (value) |s| (if (s.len == 0) null else s) else null; // "" is native's wildcard too
            wildcard = wildcard or v == null;
            entries[j] = .{ .key = key, .value = v };
        }
        const bv = lo.get("bucket") orelse return r.fail(r.field(ipath, "bucket"), "required field is missing", .{});
        out[i] = .{ .entries = entries, .bucket = try parseBucket(r, bv, r.field(ipath, "bucket")), .wildcard = wildcard };
    }
    return out;
}

/// `limited_response_headers`: [{"name": n, "value": v}], added to every limited response.
fn parseHeaders(r: *cfg.Reader, o: cfg.Object, key: []const u8) cfg.ConfigError![]const sdk.Header {
    const list = (try r.array(o, "", key)) orelse return &.{};
    const out = try r.arena.alloc(sdk.Header, list.len);
    for (list, 0..) |hv, i| {
        const hpath = r.index(key, i);
        const h = try r.object(hv, hpath);
        try r.onlyKnown(h, hpath, &.{ "name", "value" });
        const name = try r.requiredString(h, hpath, "name");
        if (name[0] == ':' or std.mem.indexOfAny(u8, name, " \t\r\n:") != null)
            return r.fail(r.field(hpath, "name"), "not a header name: {s}", .{name});
        const value = (try r.string(h, hpath, "value")) orelse return r.fail(r.field(hpath, "value"), "required field is missing", .{});
        if (std.mem.indexOfAny(u8, value, "\r\n\x00") != null) return r.fail(r.field(hpath, "value"), "must not contain CR, LF or NUL", .{});
        const lower = try std.ascii.allocLowerString(r.arena, name);
        for (out[0..i]) |prev| if (std.mem.eql(u8, prev[0], lower))
            return r.fail(r.field(hpath, "name"), "{s} is given twice (a local reply keeps one value per name)", .{lower});
        out[i] = .{ lower, value };
    }
    return out;
}

// ---------------------------------------------------------------- request path

/// One bucket a request draws from, in the order they are taken.
const Check = struct { bucket: Bucket, identity: []const u8 };

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
    var checks_buf: [2]Check = undefined;
    const checks = planChecks(a, c, route, path, &checks_buf) catch return .@"continue";
    if (checks.len == 0) return .@"continue";

    const now = sdk.nowNanos();
    var first: ?store.Decision = null;
    for (checks) |chk| {
        const d = store.take(a, c.domain, c.sets, chk.identity, chk.bucket, now);
        if (d.evicted) sdk.incrementMetric(c.metric_evicted, 1);
        if (!d.allowed) {
            // like native local_ratelimit, tokens already taken from earlier buckets stay taken
            sdk.incrementMetric(c.metric_limited, 1);
            sendLimited(c, chk.bucket, d);
            return .pause;
        }
        if (first == null) first = d;
    }
    sdk.incrementMetric(c.metric_allowed, 1);
    if (c.response_headers) {
        const d = first.?;
        reports.put(alloc, ctx, .{ .limit = checks[0].bucket.max_tokens, .remaining = d.remaining, .reset_s = d.reset_s }) catch {};
    }
    return .@"continue";
}

/// The buckets this request takes a token from: none (not limited), the route's bucket
/// for its descriptor values, or (with limits) the matching limit's bucket and/or the
/// default bucket, as native local_ratelimit with always_consume_default_token_bucket.
fn planChecks(a: std.mem.Allocator, c: *const Config, route: *const Route, path: []const u8, out: *[2]Check) ![]const Check {
    const values = try a.alloc(?[]const u8, route.descriptors.len);
    var missing = false;
    for (route.descriptors, 0..) |d, i| {
        values[i] = switch (d.source) {
            .client_ip => |hops| clientIp(a, hops),
            .header => |name| headerCopy(a, name),
            .path => path,
        };
        missing = missing or values[i] == null;
    }
    var prefix: std.ArrayList(u8) = .empty;
    try prefix.print(a, "{s}\x00{s}\x00", .{ c.domain, route.name });
    if (c.per_connection) try prefix.print(a, "conn={s}\x00", .{connectionId(a)});

    var n: usize = 0;
    if (route.limits.len == 0) {
        const b = route.bucket orelse return out[0..0];
        if (missing and !c.limit_missing) return out[0..0]; // on_missing "allow": not limited
        out[0] = .{ .bucket = b, .identity = try identity(a, prefix.items, "values", values) };
        return out[0..1];
    }
    const matched = if (missing) null else matchLimit(route.limits, values);
    if (matched) |li| {
        const lim = route.limits[li];
        const tag = try std.fmt.allocPrint(a, "limit{d}", .{li});
        out[n] = .{ .bucket = lim.bucket, .identity = try identity(a, prefix.items, tag, if (lim.wildcard) values else &.{}) };
        n += 1;
    }
    if (route.bucket) |b| {
        if (n == 0 or c.always_consume_default) {
            out[n] = .{ .bucket = b, .identity = try identity(a, prefix.items, "default", &.{}) };
            n += 1;
        }
    }
    return out[0..n];
}

/// The first limit whose entries all have values that match; limits with wildcards come
/// after those without (native looks up exact descriptors before wildcard ones).
fn matchLimit(limits: []const Limit, values: []const ?[]const u8) ?usize {
    for ([_]bool{ false, true }) |wild| {
        outer: for (limits, 0..) |lim, i| {
            if (lim.wildcard != wild) continue;
            for (lim.entries, values) |e, v| {
                if (e.value) |want| if (!std.mem.eql(u8, want, v.?)) continue :outer;
            }
            return i;
        }
    }
    return null;
}

/// "<prefix><tag>\0<len>:<value>..." (length-prefixed, so no two value lists collide;
/// a missing value, with on_missing "shared", is "-").
fn identity(a: std.mem.Allocator, prefix: []const u8, tag: []const u8, values: []const ?[]const u8) ![]const u8 {
    var out: std.ArrayList(u8) = .empty;
    try out.print(a, "{s}{s}\x00", .{ prefix, tag });
    for (values) |v| {
        if (v) |s| try out.print(a, "{d}:{s}", .{ s.len, s }) else try out.appendSlice(a, "-");
    }
    return out.items;
}

fn connectionId(a: std.mem.Allocator) []const u8 {
    const raw = sdk.getProperty(&.{ "connection", "id" }) orelse return "-";
    defer sdk.free(raw);
    if (raw.len != 8) return "-";
    return std.fmt.allocPrint(a, "{d}", .{std.mem.readInt(u64, raw[0..8], .little)}) catch "-";
}

fn sendLimited(c: *const Config, b: Bucket, d: store.Decision) void {
    var bufs: [4][24]u8 = undefined;
    var headers: std.ArrayList(sdk.Header) = .empty;
    defer headers.deinit(alloc);
    headers.appendSlice(alloc, c.limited_headers) catch {};
    if (c.retry_after) headers.append(alloc, .{ "retry-after", fmtInt(&bufs[0], @max(d.reset_s, 1)) }) catch {};
    headers.appendSlice(alloc, &.{
        .{ "x-ratelimit-limit", fmtInt(&bufs[1], b.max_tokens) },
        .{ "x-ratelimit-remaining", fmtInt(&bufs[2], 0) },
        .{ "x-ratelimit-reset", fmtInt(&bufs[3], d.reset_s) },
    }) catch {};
    sdk.sendLocalResponse(c.status, "local_rate_limited", c.body, headers.items) catch
        sdk.log(.err, log_prefix ++ "send_local_response failed");
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
