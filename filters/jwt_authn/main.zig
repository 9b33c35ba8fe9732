//! JWT authentication for Proxy-Wasm (anchor: Envoy's jwt_authn filter).
//!
//! Per request: pick the first rule matching the path, extract the token from
//! the locations of the required provider(s), check it (format, alg, issuer,
//! exp/nbf with clock skew, audiences, then the signature against the
//! provider's JWKS), and either forward the request (with payload/claim
//! headers) or answer 401/403 locally. Remote JWKS are fetched with an HTTP
//! callout; a request that needs a key set that is not there yet is paused and
//! resumed from the root context when the callout completes.
const std = @import("std");
const sdk = @import("proxy_wasm");
const jwks = @import("jwks.zig");
const cfg = sdk.config;

comptime {
    sdk.exportPlugin(@This());
}

const alloc = sdk.allocator;
const log_prefix = "jwt_authn: ";
const ns_per_s: i128 = std.time.ns_per_s;
/// Larger than any token a real issuer mints; Envoy's own limit is the request header size (60 KiB by default).
const default_max_token_bytes = 8192;
/// Envoy's native filter truncates the path in its realm URI to this many bytes.
const realm_path_max = 256;

// ---------------------------------------------------------------- configuration

const HeaderLocation = struct { name: []const u8, prefix: []const u8 };

/// How a header location's `value_prefix` is matched.
/// anchored: the value starts with the prefix (ASCII case-insensitive) and the rest, trimmed, is the token.
/// envoy: Envoy's native extractor: the prefix (case-sensitive) anywhere in the value, the token is
/// what follows it without leading spaces/tabs; an empty prefix takes the whole value.
const PrefixMatch = enum { anchored, envoy };
const ClaimHeader = struct { claim: []const u8, header: []const u8 };

const Remote = struct {
    cluster: []const u8,
    path: []const u8,
    authority: []const u8,
    timeout_ms: u32,
    cache_duration_ns: u64,
    refresh_interval_ns: u64,
    // runtime state
    keys: ?*jwks.KeySet = null,
    keys_arena: ?*std.heap.ArenaAllocator = null,
    expires_at: u64 = 0,
    in_flight: ?u32 = null, // callout token
    last_fetch_start: u64 = 0,
    waiters: std.ArrayList(u32) = .empty, // paused stream contexts
};

const Provider = struct {
    index: u16,
    name: []const u8,
    issuer: ?[]const u8,
    audiences: ?[]const []const u8,
    local: ?jwks.KeySet,
    remote: ?*Remote,
    generation: u32 = 1, // bumped when the key set changes: invalidates cached verifications
    from_headers: []const HeaderLocation,
    from_params: []const []const u8,
    prefix_match: PrefixMatch,
    forward: bool,
    payload_in_property: ?[]const u8,
    header_in_property: ?[]const u8,
    forward_payload_header: ?[]const u8,
    claim_to_headers: []const ClaimHeader,
    clock_skew_s: i64,
    require_expiration: bool,
};

const Rule = struct {
    prefix: ?[]const u8,
    exact: ?[]const u8,
    requires: []const *Provider, // empty: no verification (bypass)
    allow_missing: bool,
};

const CacheEntry = struct { digest: [32]u8, provider: u16, generation: u32, exp_ns: i128 };

const Config = struct {
    providers: []Provider,
    rules: []const Rule,
    realm: ?[]const u8,
    realm_from_uri: bool,
    max_token_bytes: usize, // 0: no limit
    cache: []CacheEntry,
    cache_len: usize = 0,
    cache_next: usize = 0,
    m_allowed: u32,
    m_denied: u32,
    m_cache_hit: u32,
    m_fetch_ok: u32,
    m_fetch_failed: u32,
};

/// Root context id -> configuration; paused stream -> its root.
var roots: std.AutoHashMapUnmanaged(u32, *Config) = .empty;
var paused: std.AutoHashMapUnmanaged(u32, u32) = .empty;

pub fn onConfigure(root_id: u32, text: []const u8) bool {
    const c = sdk.loadConfig(Config, text, log_prefix, parseConfig) orelse return false;
    roots.put(alloc, root_id, c) catch return false;
    // Remote key sets are refreshed from the timer; the first fetch happens on
    // the first tick or the first request that needs it, whichever is earlier.
    var period_ms: u64 = 0;
    for (c.providers) |p| if (p.remote) |rm| {
        const ms = rm.refresh_interval_ns / std.time.ns_per_ms;
        if (period_ms == 0 or ms < period_ms) period_ms = ms;
    };
    if (period_ms > 0) sdk.setTickPeriod(@intCast(@min(period_ms, std.math.maxInt(u32))));
    sdk.logf(.info, log_prefix ++ "configured {d} provider(s), {d} rule(s)", .{ c.providers.len, c.rules.len });
    return true;
}

fn parseConfig(r: *cfg.Reader, text: []const u8) cfg.ConfigError!*Config {
    const root = try r.object(try r.parse(text), "");
    try r.onlyKnown(root, "", &.{ "providers", "rules", "realm", "realm_from_uri", "max_token_bytes", "token_cache_size", "stat_prefix" });
    const a = r.arena;
    const c = try a.create(Config);
    c.* = undefined;
    c.cache_len = 0;
    c.cache_next = 0;
    c.realm = try r.string(root, "", "realm");
    c.realm_from_uri = try r.boolean(root, "", "realm_from_uri", false);
    if (c.realm != null and c.realm_from_uri) return r.fail("realm_from_uri", "cannot be combined with \"realm\"", .{});
    c.max_token_bytes = @intCast((try r.integer(root, "", "max_token_bytes", 0, 1 << 20)) orelse default_max_token_bytes);
    c.cache = try a.alloc(CacheEntry, @intCast((try r.integer(root, "", "token_cache_size", 0, 10_000)) orelse 64));

    const pv = (try r.array(root, "", "providers")) orelse return r.fail("providers", "required field is missing", .{});
    if (pv.len == 0) return r.fail("providers", "at least one provider is required", .{});
    if (pv.len > 1000) return r.fail("providers", "too many providers", .{});
    c.providers = try a.alloc(Provider, pv.len);
    for (pv, 0..) |v, i| {
        c.providers[i] = try parseProvider(r, v, r.index("providers", i), @intCast(i));
        for (c.providers[0..i]) |prev| if (std.mem.eql(u8, prev.name, c.providers[i].name))
            return r.fail(r.field(r.index("providers", i), "name"), "duplicate provider name \"{s}\"", .{prev.name});
    }

    if (try r.array(root, "", "rules")) |rv| {
        const rules = try a.alloc(Rule, rv.len);
        for (rv, 0..) |v, i| rules[i] = try parseRule(r, c, v, r.index("rules", i));
        c.rules = rules;
    } else {
        // No rules: every path requires a token from any of the providers.
        const all = try a.alloc(*Provider, c.providers.len);
        for (c.providers, 0..) |*p, i| all[i] = p;
        const rules = try a.alloc(Rule, 1);
        rules[0] = .{ .prefix = "/", .exact = null, .requires = all, .allow_missing = false };
        c.rules = rules;
    }

    const sp = (try r.string(root, "", "stat_prefix")) orelse "jwt_authn";
    c.m_allowed = try metric(r, sp, "allowed");
    c.m_denied = try metric(r, sp, "denied");
    c.m_cache_hit = try metric(r, sp, "cache_hit");
    c.m_fetch_ok = try metric(r, sp, "jwks_fetch_success");
    c.m_fetch_failed = try metric(r, sp, "jwks_fetch_failed");
    return c;
}

fn metric(r: *cfg.Reader, prefix: []const u8, name: []const u8) cfg.ConfigError!u32 {
    const full = try std.fmt.allocPrint(r.arena, "{s}.{s}", .{ prefix, name });
    return sdk.defineMetric(.counter, full) catch r.fail("stat_prefix", "host refused to define metric {s}", .{full});
}

fn parseProvider(r: *cfg.Reader, v: cfg.Value, path: []const u8, index: u16) cfg.ConfigError!Provider {
    const a = r.arena;
    const o = try r.object(v, path);
    try r.onlyKnown(o, path, &.{ "name", "issuer", "audiences", "local_jwks", "remote_jwks", "from_headers", "from_params", "value_prefix_match", "forward", "forward_payload_header", "payload_in_property", "header_in_property", "claim_to_headers", "clock_skew_seconds", "require_expiration" });
    var p: Provider = .{
        .index = index,
        .name = try r.requiredString(o, path, "name"),
        .issuer = try r.string(o, path, "issuer"),
        .audiences = try r.stringList(o, path, "audiences"),
        .local = null,
        .remote = null,
        .from_headers = &.{},
        .from_params = (try r.stringList(o, path, "from_params")) orelse &.{},
        .prefix_match = .anchored,
        .forward = try r.boolean(o, path, "forward", false),
        .payload_in_property = try propertyName(r, o, path, "payload_in_property"),
        .header_in_property = try propertyName(r, o, path, "header_in_property"),
        .forward_payload_header = null,
        .claim_to_headers = &.{},
        .clock_skew_s = (try r.integer(o, path, "clock_skew_seconds", 0, 86400)) orelse 60,
        .require_expiration = try r.boolean(o, path, "require_expiration", false),
    };
    if (try r.string(o, path, "forward_payload_header")) |h| p.forward_payload_header = try lowerHeader(r, h, r.field(path, "forward_payload_header"));
    if (try r.string(o, path, "value_prefix_match")) |m|
        p.prefix_match = std.meta.stringToEnum(PrefixMatch, m) orelse return r.fail(r.field(path, "value_prefix_match"), "expected \"anchored\" or \"envoy\"", .{});

    const has_local = o.get("local_jwks") != null;
    const has_remote = o.get("remote_jwks") != null;
    if (has_local == has_remote) return r.fail(path, "exactly one of local_jwks or remote_jwks is required", .{});
    if (o.get("local_jwks")) |lv| {
        const lpath = r.field(path, "local_jwks");
        // Either the JWKS object itself or a string holding its JSON.
        const jv: cfg.Value = switch (lv) {
            .string => |s| std.json.parseFromSliceLeaky(cfg.Value, a, s, .{}) catch return r.fail(lpath, "invalid JSON in JWKS string", .{}),
            else => lv,
        };
        var err: jwks.JwksError = .{};
        var skipped: std.ArrayList(jwks.Skipped) = .empty;
        const ks = jwks.parseKeySet(a, jv, &skipped, &err);
        for (skipped.items) |sk| logSkipped(lpath, sk);
        p.local = ks catch |e| {
            if (e == error.OutOfMemory) return error.OutOfMemory;
            return r.fail(if (err.path.len > 0) r.field(lpath, err.path) else lpath, "{s}", .{err.message});
        };
    }
    if (o.get("remote_jwks")) |rv| {
        const rpath = r.field(path, "remote_jwks");
        const ro = try r.object(rv, rpath);
        try r.onlyKnown(ro, rpath, &.{ "cluster", "path", "authority", "timeout_ms", "cache_duration_s", "refresh_interval_s" });
        const rm = try a.create(Remote);
        const cache_s: u64 = @intCast((try r.integer(ro, rpath, "cache_duration_s", 1, 30 * 86400)) orelse 600);
        const refresh_s: u64 = @intCast((try r.integer(ro, rpath, "refresh_interval_s", 1, 30 * 86400)) orelse @as(i64, @intCast(@max(1, cache_s / 2))));
        if (refresh_s > cache_s) return r.fail(r.field(rpath, "refresh_interval_s"), "must not exceed cache_duration_s", .{});
        rm.* = .{
            .cluster = try r.requiredString(ro, rpath, "cluster"),
            .path = try r.requiredString(ro, rpath, "path"),
            .authority = try r.requiredString(ro, rpath, "authority"),
            .timeout_ms = @intCast((try r.integer(ro, rpath, "timeout_ms", 1, 600_000)) orelse 5000),
            .cache_duration_ns = cache_s * std.time.ns_per_s,
            .refresh_interval_ns = refresh_s * std.time.ns_per_s,
        };
        if (rm.path[0] != '/') return r.fail(r.field(rpath, "path"), "must start with '/'", .{});
        p.remote = rm;
    }

    if (try r.array(o, path, "from_headers")) |hv| {
        const list = try a.alloc(HeaderLocation, hv.len);
        for (hv, 0..) |h, i| {
            const hp = r.index(r.field(path, "from_headers"), i);
            const ho = try r.object(h, hp);
            try r.onlyKnown(ho, hp, &.{ "name", "value_prefix" });
            list[i] = .{
                .name = try lowerHeader(r, try r.requiredString(ho, hp, "name"), r.field(hp, "name")),
                .prefix = (try r.string(ho, hp, "value_prefix")) orelse "",
            };
        }
        p.from_headers = list;
    } else if (p.from_params.len == 0) {
        const list = try a.alloc(HeaderLocation, 1);
        list[0] = .{ .name = "authorization", .prefix = "Bearer " };
        p.from_headers = list;
    }

    if (try r.array(o, path, "claim_to_headers")) |cv| {
        const list = try a.alloc(ClaimHeader, cv.len);
        for (cv, 0..) |h, i| {
            const hp = r.index(r.field(path, "claim_to_headers"), i);
            const ho = try r.object(h, hp);
            try r.onlyKnown(ho, hp, &.{ "claim_name", "header_name" });
            list[i] = .{
                .claim = try r.requiredString(ho, hp, "claim_name"),
                .header = try lowerHeader(r, try r.requiredString(ho, hp, "header_name"), r.field(hp, "header_name")),
            };
        }
        p.claim_to_headers = list;
    }
    return p;
}

/// One warning per JWKS key left out, naming it (`where` is the config path or the provider).
fn logSkipped(where: []const u8, sk: jwks.Skipped) void {
    var kid_buf: [160]u8 = undefined;
    const kid = if (sk.kid) |k| std.fmt.bufPrint(&kid_buf, " (kid \"{s}\")", .{k[0..@min(k.len, 128)]}) catch "" else "";
    sdk.logf(.warn, log_prefix ++ "{s}.keys[{d}]{s}{s}{s}: {s}; key skipped", .{ where, sk.index, if (sk.path.len > 0) "." else "", sk.path, kid, sk.message });
}

fn propertyName(r: *cfg.Reader, o: cfg.Object, path: []const u8, key: []const u8) cfg.ConfigError!?[]const u8 {
    const name = (try r.string(o, path, key)) orelse return null;
    if (name.len == 0 or name.len > 256 or std.mem.indexOfScalar(u8, name, 0) != null)
        return r.fail(r.field(path, key), "must be 1 to 256 bytes without NUL", .{});
    return name;
}

fn lowerHeader(r: *cfg.Reader, h: []const u8, path: []const u8) cfg.ConfigError![]const u8 {
    if (h.len == 0) return r.fail(path, "must not be empty", .{});
    for (h) |ch| if (ch <= ' ' or ch >= 0x7f or ch == ':') return r.fail(path, "not a valid header name", .{});
    return std.ascii.allocLowerString(r.arena, h);
}

fn parseRule(r: *cfg.Reader, c: *Config, v: cfg.Value, path: []const u8) cfg.ConfigError!Rule {
    const o = try r.object(v, path);
    try r.onlyKnown(o, path, &.{ "prefix", "path", "requires", "allow_missing" });
    const prefix = try r.string(o, path, "prefix");
    const exact = try r.string(o, path, "path");
    if ((prefix == null) == (exact == null)) return r.fail(path, "exactly one of \"prefix\" or \"path\" is required", .{});
    const names = (try r.stringList(o, path, "requires")) orelse &.{};
    const req = try r.arena.alloc(*Provider, names.len);
    for (names, 0..) |n, i| {
        req[i] = for (c.providers) |*p| {
            if (std.mem.eql(u8, p.name, n)) break p;
        } else return r.fail(r.field(path, "requires"), "unknown provider \"{s}\"", .{n});
    }
    const allow_missing = try r.boolean(o, path, "allow_missing", false);
    if (allow_missing and names.len == 0) return r.fail(r.field(path, "allow_missing"), "needs \"requires\"", .{});
    return .{ .prefix = prefix, .exact = exact, .requires = req, .allow_missing = allow_missing };
}

// ---------------------------------------------------------------- outcomes

const Failure = enum {
    missing,
    too_large,
    bad_format,
    header_b64,
    header_json,
    alg_unsupported,
    crit,
    payload_b64,
    payload_json,
    sig_b64,
    issuer,
    iss_type,
    sub_type,
    jti_type,
    aud_type,
    exp_type,
    nbf_type,
    iat_type,
    exp_required,
    expired,
    not_yet_valid,
    audience,
    no_key,
    verify_fail,
    fetch_fail,

    /// Short reasons, worded like Envoy's jwt_authn where it has one.
    fn reason(f: Failure) []const u8 {
        return switch (f) {
            .missing => "Jwt is missing",
            .too_large => "Jwt is too large",
            .bad_format => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            .header_b64 => "Jwt header is an invalid Base64url encoded",
            .header_json => "Jwt header is an invalid JSON",
            .alg_unsupported => "Jwt header [alg] is not supported",
            .crit => "Jwt header [crit] is not supported",
            .payload_b64 => "Jwt payload is an invalid Base64url encoded",
            .payload_json => "Jwt payload is an invalid JSON",
            .sig_b64 => "Jwt signature is an invalid Base64url encoded",
            .issuer => "Jwt issuer is not configured",
            .iss_type => "Jwt payload [iss] field is not a string",
            .sub_type => "Jwt payload [sub] field is not a string",
            .jti_type => "Jwt payload [jti] field is not a string",
            .aud_type => "Jwt payload [aud] field is not a string or string list",
            // Native's wording; fractional and large NumericDates are accepted here (RFC 7519 section 2).
            .exp_type => "Jwt payload [exp] field is not an integer",
            .nbf_type => "Jwt payload [nbf] field is not an integer",
            .iat_type => "Jwt payload [iat] field is not an integer",
            .exp_required => "Jwt has no expiration",
            .expired => "Jwt is expired",
            .not_yet_valid => "Jwt not yet valid",
            .audience => "Audiences in Jwt are not allowed",
            .no_key => "Jwks doesn't have key to match kid or alg from Jwt",
            .verify_fail => "Jwt verification fails",
            .fetch_fail => "Jwks remote fetch is failed",
        };
    }

    fn status(f: Failure) u32 {
        return if (f == .audience) 403 else 401;
    }
};

const TokenSource = union(enum) { header: []const u8, param: []const u8 };

const Verified = struct {
    provider: *Provider,
    payload: std.json.ObjectMap,
    payload_b64: []const u8,
    payload_json: []const u8,
    header_json: []const u8,
};

/// One token's verdict.
const Check = union(enum) {
    ok: Verified,
    fail: Failure,
    pending: *Provider,
};

/// Every token a provider found was verified: the first one's claims are
/// forwarded, and every location they came from is cleaned (forward: false).
const Accepted = struct { first: Verified, sources: []const TokenSource };

const Outcome = union(enum) {
    ok: ?Accepted, // null: no token and the rule allows that
    fail: Failure,
    pending: *Provider,
};

// ---------------------------------------------------------------- request path

pub fn onRequestHeaders(ctx: u32, _: u32, _: bool) sdk.Action {
    const root = sdk.rootOf(ctx) orelse return .@"continue";
    const c = roots.get(root) orelse return .@"continue";
    return switch (process(ctx, c, true)) {
        .proceed => .@"continue",
        .stop => .pause,
        .wait => blk: {
            paused.put(alloc, ctx, root) catch {};
            break :blk .pause;
        },
    };
}

const Step = enum { proceed, stop, wait };

/// Decides for the stream `ctx` (the effective context) and applies the
/// decision: header mutations, or a local reply. `may_wait` is false when
/// resuming after a callout, so a missing key set then fails the request.
fn process(ctx: u32, c: *Config, may_wait: bool) Step {
    var arena = std.heap.ArenaAllocator.init(alloc);
    defer arena.deinit();
    const a = arena.allocator();
    const raw_path = header(a, ":path") orelse "";
    const rule = matchRule(c, stripQuery(raw_path)) orelse return .proceed;
    if (rule.requires.len == 0) return .proceed;

    const outcome = evaluate(a, c, rule, raw_path, may_wait);
    switch (outcome) {
        .pending => |p| {
            const rm = p.remote.?;
            for (rm.waiters.items) |w| if (w == ctx) return .wait;
            rm.waiters.append(alloc, ctx) catch return .proceed;
            return .wait;
        },
        .ok => |maybe| {
            // Headers this filter owns are never taken from the client.
            for (rule.requires) |p| stripOutputHeaders(p);
            if (maybe) |v| forward(a, v, raw_path);
            sdk.incrementMetric(c.m_allowed, 1);
            return .proceed;
        },
        .fail => |f| {
            sdk.incrementMetric(c.m_denied, 1);
            sdk.logf(.debug, log_prefix ++ "request rejected: {s}", .{f.reason()});
            reject(a, c, f);
            return .stop;
        },
    }
}

/// Every token in every location of a provider is verified and any invalid one
/// fails that provider (Envoy does the same for a header plus a query token; here
/// repeated headers and repeated parameters count too). With several providers
/// (requires any), the first provider whose tokens all verify wins.
fn evaluate(a: std.mem.Allocator, c: *Config, rule: *const Rule, raw_path: []const u8, may_wait: bool) Outcome {
    const pairs = requestHeaderPairs(a);
    var first_failure: ?Failure = null;
    providers: for (rule.requires) |p| {
        const found = extract(a, p, raw_path, pairs);
        if (found.len == 0) continue;
        var first: ?Verified = null;
        for (found) |f| switch (verifyToken(a, c, p, f.token, may_wait)) {
            .ok => |v| if (first == null) {
                first = v;
            },
            .pending => |pp| return .{ .pending = pp },
            .fail => |fl| {
                if (first_failure == null or first_failure.? == .issuer) first_failure = fl; // prefer a provider-specific failure over "issuer not configured"
                continue :providers;
            },
        };
        const sources = a.alloc(TokenSource, found.len) catch return .{ .fail = .verify_fail };
        for (found, sources) |f, *src| src.* = f.source;
        return .{ .ok = .{ .first = first.?, .sources = sources } };
    }
    if (first_failure) |f| return .{ .fail = f };
    if (rule.allow_missing) return .{ .ok = null };
    return .{ .fail = .missing };
}

/// The request's header pairs, copied into the request arena (tokens point into it).
fn requestHeaderPairs(a: std.mem.Allocator) []const u8 {
    const raw = sdk.getHeaderPairs(.http_request_headers) orelse return &.{};
    defer sdk.free(raw);
    return a.dupe(u8, raw) catch &.{};
}

const Found = struct { token: []const u8, source: TokenSource };

/// Every token of provider `p`: each value of each configured header (repeated
/// headers included), then each occurrence of each configured query parameter.
fn extract(a: std.mem.Allocator, p: *const Provider, raw_path: []const u8, pairs: []const u8) []const Found {
    var out: std.ArrayList(Found) = .empty;
    for (p.from_headers) |loc| {
        var it = sdk.PairsIterator.init(pairs);
        while (it.next()) |kv| {
            if (!std.ascii.eqlIgnoreCase(kv[0], loc.name)) continue;
            const t = tokenAfterPrefix(p.prefix_match, kv[1], loc.prefix) orelse continue;
            out.append(a, .{ .token = t, .source = .{ .header = loc.name } }) catch return out.items;
        }
    }
    for (p.from_params) |name| {
        var it = QueryIterator.init(raw_path);
        while (it.next()) |kv| {
            if (!std.mem.eql(u8, percentDecode(a, kv.key), name)) continue;
            const t = percentDecode(a, kv.value);
            if (t.len > 0) out.append(a, .{ .token = t, .source = .{ .param = name } }) catch return out.items;
        }
    }
    return out.items;
}

fn tokenAfterPrefix(mode: PrefixMatch, value: []const u8, prefix: []const u8) ?[]const u8 {
    const t = switch (mode) {
        .anchored => blk: {
            if (value.len < prefix.len or !std.ascii.eqlIgnoreCase(value[0..prefix.len], prefix)) return null;
            break :blk std.mem.trim(u8, value[prefix.len..], " \t");
        },
        .envoy => if (prefix.len == 0) value else blk: {
            const at = std.mem.indexOf(u8, value, prefix) orelse return null;
            break :blk std.mem.trimStart(u8, value[at + prefix.len ..], " \t");
        },
    };
    return if (t.len == 0) null else t;
}

const QueryIterator = struct {
    parts: std.mem.SplitIterator(u8, .scalar),

    const Pair = struct { key: []const u8, value: []const u8 };

    fn init(raw_path: []const u8) QueryIterator {
        var query: []const u8 = "";
        if (std.mem.indexOfScalar(u8, raw_path, '?')) |q| query = raw_path[q + 1 ..];
        if (std.mem.indexOfScalar(u8, query, '#')) |h| query = query[0..h];
        return .{ .parts = std.mem.splitScalar(u8, query, '&') };
    }

    /// Parameters with a value ("k=v"); bare "k" and empty parts are passed over.
    fn next(it: *QueryIterator) ?Pair {
        while (it.parts.next()) |kv| {
            const eq = std.mem.indexOfScalar(u8, kv, '=') orelse continue;
            return .{ .key = kv[0..eq], .value = kv[eq + 1 ..] };
        }
        return null;
    }
};

/// %XX sequences decoded (as Envoy decodes query parameters); malformed ones are kept as they are.
fn percentDecode(a: std.mem.Allocator, s: []const u8) []const u8 {
    if (std.mem.indexOfScalar(u8, s, '%') == null) return s;
    const out = a.alloc(u8, s.len) catch return s;
    var n: usize = 0;
    var i: usize = 0;
    while (i < s.len) : (n += 1) {
        if (s[i] == '%' and i + 2 < s.len and std.ascii.isHex(s[i + 1]) and std.ascii.isHex(s[i + 2])) {
            out[n] = std.fmt.parseInt(u8, s[i + 1 .. i + 3], 16) catch unreachable;
            i += 3;
            continue;
        }
        out[n] = s[i];
        i += 1;
    }
    return out[0..n];
}

fn verifyToken(a: std.mem.Allocator, c: *Config, p: *Provider, token: []const u8, may_wait: bool) Check {
    if (c.max_token_bytes > 0 and token.len > c.max_token_bytes) return .{ .fail = .too_large };
    // Exactly three non-empty base64url sections.
    const d1 = std.mem.indexOfScalar(u8, token, '.') orelse return .{ .fail = .bad_format };
    const d2 = std.mem.indexOfScalarPos(u8, token, d1 + 1, '.') orelse return .{ .fail = .bad_format };
    if (std.mem.indexOfScalarPos(u8, token, d2 + 1, '.') != null) return .{ .fail = .bad_format };
    const h64 = token[0..d1];
    const p64 = token[d1 + 1 .. d2];
    const s64 = token[d2 + 1 ..];
    if (h64.len == 0 or p64.len == 0 or s64.len == 0) return .{ .fail = .bad_format };

    const hbytes = jwks.decodeB64(a, h64) orelse return .{ .fail = .header_b64 };
    const hdr = parseObject(a, hbytes) orelse return .{ .fail = .header_json };
    const alg_name = switch (hdr.get("alg") orelse return .{ .fail = .alg_unsupported }) {
        .string => |s| s,
        else => return .{ .fail = .alg_unsupported },
    };
    const alg = jwks.Alg.parse(alg_name) orelse return .{ .fail = .alg_unsupported }; // includes "none"
    if (hdr.get("crit") != null) return .{ .fail = .crit };
    const kid: ?[]const u8 = if (hdr.get("kid")) |k| switch (k) {
        .string => |s| s,
        else => return .{ .fail = .header_json },
    } else null;

    const pbytes = jwks.decodeB64(a, p64) orelse return .{ .fail = .payload_b64 };
    const payload = parseObject(a, pbytes) orelse return .{ .fail = .payload_json };
    const sig = jwks.decodeB64(a, s64) orelse return .{ .fail = .sig_b64 };
    if (claimTypeFailure(payload)) |f| return .{ .fail = f };

    // Issuer.
    if (p.issuer) |want| {
        const iss = payload.get("iss") orelse return .{ .fail = .issuer };
        switch (iss) {
            .string => |s| if (!std.mem.eql(u8, s, want)) return .{ .fail = .issuer },
            else => unreachable, // claimTypeFailure
        }
    }

    // Time: reject when now >= exp + skew or now < nbf - skew (RFC 7519 4.1.4/4.1.5).
    const now: i128 = sdk.nowNanos();
    const skew: i128 = @as(i128, p.clock_skew_s) * ns_per_s;
    var exp_ns: i128 = std.math.maxInt(i64) * ns_per_s;
    if (payload.get("exp")) |ev| {
        exp_ns = numericDateNs(ev).?; // claimTypeFailure checked the type
        if (now >= exp_ns + skew) return .{ .fail = .expired };
    } else if (p.require_expiration) return .{ .fail = .exp_required };
    if (payload.get("nbf")) |nv| {
        const nbf = numericDateNs(nv).?;
        if (now < nbf - skew) return .{ .fail = .not_yet_valid };
    }

    // Audiences: at least one configured audience must be in "aud".
    if (p.audiences) |want| {
        const aud = payload.get("aud") orelse return .{ .fail = .audience };
        const ok = switch (aud) {
            .string => |s| contains(want, s),
            .array => |arr| blk: {
                for (arr.items) |item| if (contains(want, item.string)) break :blk true;
                break :blk false;
            },
            else => unreachable, // claimTypeFailure
        };
        if (!ok) return .{ .fail = .audience };
    }

    const verified: Verified = .{ .provider = p, .payload = payload, .payload_b64 = p64, .payload_json = pbytes, .header_json = hbytes };

    // Key set (may be pending for a remote provider).
    const keys: *const jwks.KeySet = if (p.local) |*k| k else blk: {
        const rm = p.remote.?;
        if (rm.keys != null and sdk.nowNanos() < rm.expires_at) break :blk rm.keys.?;
        if (rm.in_flight != null) return .{ .pending = p };
        if (!may_wait) return .{ .fail = .fetch_fail };
        if (!startFetch(c, p)) return .{ .fail = .fetch_fail };
        return .{ .pending = p };
    };

    // A token verified before with the same key set skips the signature check.
    var digest: [32]u8 = undefined;
    std.crypto.hash.sha2.Sha256.hash(token, &digest, .{});
    if (cacheLookup(c, &digest, p)) {
        sdk.incrementMetric(c.m_cache_hit, 1);
        return .{ .ok = verified };
    }

    const signing_input = token[0..d2];
    var candidates: usize = 0;
    for (keys.keys) |*key| {
        if (std.meta.activeTag(key.material) != alg.keyType()) continue;
        if (key.alg) |ka| if (ka != alg) continue;
        if (key.material == .oct and key.material.oct.len < alg.minHmacKeyLen()) continue; // RFC 7518 section 3.2
        if (kid) |want| {
            const have = key.kid orelse continue;
            if (!std.mem.eql(u8, have, want)) continue;
        }
        candidates += 1;
        if (jwks.verify(alg, key, signing_input, sig)) {
            cacheInsert(c, &digest, p, exp_ns);
            return .{ .ok = verified };
        }
    }
    return .{ .fail = if (candidates == 0) .no_key else .verify_fail };
}

fn contains(list: []const []const u8, s: []const u8) bool {
    for (list) |x| if (std.mem.eql(u8, x, s)) return true;
    return false;
}

/// RFC 7519 section 4: iss, sub and jti are strings; aud a string or an array of
/// strings; exp, nbf and iat NumericDates (JSON numbers). Anything else rejects the token.
fn claimTypeFailure(payload: std.json.ObjectMap) ?Failure {
    inline for (.{ .{ "iss", Failure.iss_type }, .{ "sub", Failure.sub_type }, .{ "jti", Failure.jti_type } }) |cl| {
        if (payload.get(cl[0])) |v| if (v != .string) return cl[1];
    }
    if (payload.get("aud")) |v| switch (v) {
        .string => {},
        .array => |arr| for (arr.items) |item| if (item != .string) return .aud_type,
        else => return .aud_type,
    };
    inline for (.{ .{ "exp", Failure.exp_type }, .{ "nbf", Failure.nbf_type }, .{ "iat", Failure.iat_type } }) |cl| {
        if (payload.get(cl[0])) |v| if (numericDateNs(v) == null) return cl[1];
    }
    return null;
}

/// NumericDate (seconds, integer or fractional, any magnitude) to nanoseconds;
/// null for anything that is not a JSON number. Far dates are clamped to ±1e15 s.
fn numericDateNs(v: std.json.Value) ?i128 {
    const limit = 1e15;
    const f: f64 = switch (v) {
        .integer => |i| return @as(i128, std.math.clamp(i, -1_000_000_000_000_000, 1_000_000_000_000_000)) * ns_per_s,
        .float => |f| f,
        .number_string => |s| std.fmt.parseFloat(f64, s) catch return null,
        else => return null,
    };
    if (std.math.isNan(f)) return null;
    return @as(i128, @intFromFloat(@floor(std.math.clamp(f, -limit, limit) * 1e9)));
}

fn parseObject(a: std.mem.Allocator, bytes: []const u8) ?std.json.ObjectMap {
    const v = std.json.parseFromSliceLeaky(std.json.Value, a, bytes, .{ .duplicate_field_behavior = .@"error" }) catch return null;
    return switch (v) {
        .object => |o| o,
        else => null,
    };
}

fn cacheLookup(c: *Config, digest: *const [32]u8, p: *const Provider) bool {
    for (c.cache[0..c.cache_len]) |e| {
        if (e.provider == p.index and e.generation == p.generation and std.mem.eql(u8, &e.digest, digest)) return true;
    }
    return false;
}

/// Bounded FIFO: the oldest entry is replaced when the cache is full.
fn cacheInsert(c: *Config, digest: *const [32]u8, p: *const Provider, exp_ns: i128) void {
    if (c.cache.len == 0) return;
    c.cache[c.cache_next] = .{ .digest = digest.*, .provider = p.index, .generation = p.generation, .exp_ns = exp_ns };
    c.cache_next = (c.cache_next + 1) % c.cache.len;
    c.cache_len = @min(c.cache_len + 1, c.cache.len);
}

/// Applies a successful verification to the request: token locations removed
/// (forward: false), payload and claim headers, payload and header properties.
fn forward(a: std.mem.Allocator, acc: Accepted, raw_path: []const u8) void {
    const v = acc.first;
    const p = v.provider;
    var path = raw_path;
    if (!p.forward) for (acc.sources) |src| switch (src) {
        .header => |name| sdk.removeHeader(.http_request_headers, name) catch {},
        .param => |name| if (removeParam(a, path, name)) |np| {
            path = np;
            sdk.replaceHeader(.http_request_headers, ":path", np) catch {};
        },
    };
    if (p.payload_in_property) |name| setProperty(name, v.payload_json);
    if (p.header_in_property) |name| setProperty(name, v.header_json);
    if (p.forward_payload_header) |h| sdk.replaceHeader(.http_request_headers, h, v.payload_b64) catch {};
    for (p.claim_to_headers) |ch| {
        const val = claimValue(v.payload, ch.claim) orelse continue;
        const text = claimText(a, val) orelse continue;
        sdk.replaceHeader(.http_request_headers, ch.header, text) catch {};
    }
}

fn setProperty(name: []const u8, value: []const u8) void {
    sdk.setProperty(&.{name}, value) catch |e|
        sdk.logf(.warn, log_prefix ++ "could not set property {s}: {s}", .{ name, @errorName(e) });
}

fn stripOutputHeaders(p: *const Provider) void {
    if (p.forward_payload_header) |h| sdk.removeHeader(.http_request_headers, h) catch {};
    for (p.claim_to_headers) |ch| sdk.removeHeader(.http_request_headers, ch.header) catch {};
}

/// Looks up a claim; "a.b" walks into nested objects.
fn claimValue(payload: std.json.ObjectMap, name: []const u8) ?std.json.Value {
    if (payload.get(name)) |v| return v;
    var obj = payload;
    var it = std.mem.splitScalar(u8, name, '.');
    var cur: ?std.json.Value = null;
    while (it.next()) |seg| {
        cur = obj.get(seg) orelse return null;
        if (it.peek() != null) obj = switch (cur.?) {
            .object => |o| o,
            else => return null,
        };
    }
    return cur;
}

/// Strings as-is, numbers and booleans as JSON text, arrays of scalars comma-joined.
fn claimText(a: std.mem.Allocator, v: std.json.Value) ?[]const u8 {
    return switch (v) {
        .string => |s| s,
        .integer => |i| std.fmt.allocPrint(a, "{d}", .{i}) catch null,
        .float => |f| std.fmt.allocPrint(a, "{d}", .{f}) catch null,
        .bool => |b| if (b) "true" else "false",
        .number_string => |s| s,
        .array => |arr| blk: {
            var out: std.ArrayList(u8) = .empty;
            for (arr.items, 0..) |item, i| {
                const t = switch (item) {
                    .array, .object, .null => continue,
                    else => claimText(a, item) orelse continue,
                };
                if (i > 0 and out.items.len > 0) out.append(a, ',') catch return null;
                out.appendSlice(a, t) catch return null;
            }
            break :blk out.items;
        },
        else => null,
    };
}

fn removeParam(a: std.mem.Allocator, raw_path: []const u8, name: []const u8) ?[]const u8 {
    const q = std.mem.indexOfScalar(u8, raw_path, '?') orelse return null;
    var out: std.ArrayList(u8) = .empty;
    out.appendSlice(a, raw_path[0..q]) catch return null;
    var rest = raw_path[q + 1 ..];
    var frag: []const u8 = "";
    if (std.mem.indexOfScalar(u8, rest, '#')) |h| {
        frag = rest[h..];
        rest = rest[0..h];
    }
    var first = true;
    var it = std.mem.splitScalar(u8, rest, '&');
    while (it.next()) |kv| {
        const key = if (std.mem.indexOfScalar(u8, kv, '=')) |eq| kv[0..eq] else kv;
        if (std.mem.eql(u8, percentDecode(a, key), name) or kv.len == 0) continue;
        out.append(a, if (first) '?' else '&') catch return null;
        out.appendSlice(a, kv) catch return null;
        first = false;
    }
    out.appendSlice(a, frag) catch return null;
    return out.items;
}

fn reject(a: std.mem.Allocator, c: *const Config, f: Failure) void {
    const realm_raw = c.realm orelse if (c.realm_from_uri) requestUri(a) else (header(a, ":authority") orelse "");
    // Keep the realm a valid quoted-string.
    const realm: []u8 = a.dupe(u8, realm_raw) catch &.{};
    for (realm) |*ch| if (ch.* == '"' or ch.* == '\\' or ch.* < ' ' or ch.* == 0x7f) {
        ch.* = '_';
    };
    const challenge = if (f == .missing)
        std.fmt.allocPrint(a, "Bearer realm=\"{s}\"", .{realm}) catch "Bearer"
    else
        std.fmt.allocPrint(a, "Bearer realm=\"{s}\", error=\"invalid_token\"", .{realm}) catch "Bearer error=\"invalid_token\"";
    const headers = [_]sdk.Header{ .{ "www-authenticate", challenge }, .{ "content-type", "text/plain" } };
    sdk.sendLocalResponse(f.status(), "jwt_authn_access_denied", f.reason(), &headers) catch
        sdk.log(.err, log_prefix ++ "send_local_response failed");
}

/// The request URI as Envoy's native filter puts it in its realm:
/// <x-forwarded-proto>://<host><original path or path, cut to 256 bytes>.
fn requestUri(a: std.mem.Allocator) []const u8 {
    const path = header(a, "x-envoy-original-path") orelse header(a, ":path") orelse return "";
    const scheme = header(a, "x-forwarded-proto") orelse header(a, ":scheme") orelse "http";
    const host = header(a, ":authority") orelse "";
    return std.fmt.allocPrint(a, "{s}://{s}{s}", .{ scheme, host, path[0..@min(path.len, realm_path_max)] }) catch "";
}

fn header(a: std.mem.Allocator, name: []const u8) ?[]const u8 {
    const v = sdk.getHeader(.http_request_headers, name) orelse return null;
    defer sdk.free(v);
    return a.dupe(u8, v) catch null;
}

fn stripQuery(p: []const u8) []const u8 {
    const q = std.mem.indexOfAny(u8, p, "?#") orelse return p;
    return p[0..q];
}

fn matchRule(c: *const Config, path: []const u8) ?*const Rule {
    for (c.rules) |*rl| {
        if (rl.exact) |e| {
            if (std.mem.eql(u8, e, path)) return rl;
        } else if (rl.prefix) |p| {
            if (std.mem.startsWith(u8, path, p)) return rl;
        }
    }
    return null;
}

// ---------------------------------------------------------------- remote JWKS

fn startFetch(c: *Config, p: *Provider) bool {
    const rm = p.remote.?;
    if (rm.in_flight != null) return true;
    const headers = [_]sdk.Header{ .{ ":method", "GET" }, .{ ":path", rm.path }, .{ ":authority", rm.authority }, .{ "accept", "application/json" } };
    rm.last_fetch_start = sdk.nowNanos();
    const token = sdk.httpCall(rm.cluster, &headers, "", rm.timeout_ms) catch |e| {
        sdk.logf(.warn, log_prefix ++ "provider {s}: JWKS fetch from cluster {s} could not start: {s}", .{ p.name, rm.cluster, @errorName(e) });
        sdk.incrementMetric(c.m_fetch_failed, 1);
        return false;
    };
    rm.in_flight = token;
    return true;
}

pub fn onHttpCallResponse(root_id: u32, token: u32, num_headers: u32, body_size: u32, _: u32) void {
    const c = roots.get(root_id) orelse return;
    const p = for (c.providers) |*p| {
        if (p.remote) |rm| if (rm.in_flight != null and rm.in_flight.? == token) break p;
    } else return;
    const rm = p.remote.?;
    rm.in_flight = null;

    if (loadFetched(p, num_headers, body_size)) {
        sdk.incrementMetric(c.m_fetch_ok, 1);
    } else {
        sdk.incrementMetric(c.m_fetch_failed, 1);
        if (rm.keys != null and sdk.nowNanos() < rm.expires_at)
            sdk.logf(.warn, log_prefix ++ "provider {s}: JWKS refresh failed, keeping the cached key set", .{p.name});
    }

    // Resume (or answer) every request that waited for this key set.
    var waiters = rm.waiters;
    rm.waiters = .empty;
    defer waiters.deinit(alloc);
    for (waiters.items) |ctx| {
        if (paused.get(ctx) == null) continue; // stream went away meanwhile
        sdk.setEffectiveContext(ctx) catch continue;
        switch (process(ctx, c, false)) {
            .proceed => {
                _ = paused.remove(ctx);
                sdk.continueStream(.http_request) catch {};
            },
            .stop => _ = paused.remove(ctx),
            .wait => {}, // now waiting for another provider's key set
        }
    }
}

/// Reads the callout response and installs the new key set; false on failure.
fn loadFetched(p: *Provider, num_headers: u32, body_size: u32) bool {
    const rm = p.remote.?;
    if (num_headers == 0) {
        sdk.logf(.warn, log_prefix ++ "provider {s}: JWKS fetch failed (no response)", .{p.name});
        return false;
    }
    const status = sdk.getHttpCallResponseHeader(":status") orelse "";
    defer sdk.free(status);
    if (!std.mem.eql(u8, status, "200")) {
        sdk.logf(.warn, log_prefix ++ "provider {s}: JWKS fetch returned status {s}", .{ p.name, status });
        return false;
    }
    const body = sdk.getHttpCallResponseBody(body_size) orelse "";
    defer sdk.free(body);
    const arena = alloc.create(std.heap.ArenaAllocator) catch return false;
    arena.* = std.heap.ArenaAllocator.init(alloc);
    const a = arena.allocator();
    const ok = blk: {
        const v = std.json.parseFromSliceLeaky(std.json.Value, a, body, .{}) catch {
            sdk.logf(.warn, log_prefix ++ "provider {s}: JWKS response is not JSON", .{p.name});
            break :blk false;
        };
        var err: jwks.JwksError = .{};
        var skipped: std.ArrayList(jwks.Skipped) = .empty;
        const parsed = jwks.parseKeySet(a, v, &skipped, &err);
        const where = std.fmt.allocPrint(a, "providers[{d}].remote_jwks", .{p.index}) catch "remote_jwks";
        for (skipped.items) |sk| logSkipped(where, sk);
        const ks = parsed catch {
            sdk.logf(.warn, log_prefix ++ "provider {s}: JWKS response rejected: {s}: {s}", .{ p.name, err.path, err.message });
            break :blk false;
        };
        const ptr = a.create(jwks.KeySet) catch break :blk false;
        ptr.* = ks;
        if (rm.keys_arena) |old| {
            old.deinit();
            alloc.destroy(old);
        }
        rm.keys = ptr;
        rm.keys_arena = arena;
        rm.expires_at = sdk.nowNanos() + rm.cache_duration_ns;
        p.generation +%= 1;
        sdk.logf(.info, log_prefix ++ "provider {s}: loaded {d} key(s) from the remote JWKS", .{ p.name, ks.keys.len });
        break :blk true;
    };
    if (!ok) {
        arena.deinit();
        alloc.destroy(arena);
    }
    return ok;
}

/// Refreshes remote key sets that are due (or missing) on the timer.
pub fn onTick(root_id: u32) void {
    const c = roots.get(root_id) orelse return;
    const now = sdk.nowNanos();
    for (c.providers) |*p| if (p.remote) |rm| {
        if (rm.in_flight != null) continue;
        const due = rm.keys == null or now >= rm.expires_at or
            now -| rm.last_fetch_start >= rm.refresh_interval_ns / 2;
        if (due) _ = startFetch(c, p);
    };
}

pub fn onDelete(ctx: u32) void {
    if (paused.fetchRemove(ctx)) |kv| {
        if (roots.get(kv.value)) |c| for (c.providers) |p| if (p.remote) |rm| {
            for (rm.waiters.items, 0..) |w, i| if (w == ctx) {
                _ = rm.waiters.swapRemove(i);
                break;
            };
        };
    }
    _ = roots.remove(ctx);
}
