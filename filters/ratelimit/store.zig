//! Token buckets in Envoy's shared data, with a bounded key space.
//!
//! The ABI has no delete: a shared-data key lives as long as the Envoy process. So
//! buckets are not one key each. A bucket's identity (route, limit, connection and
//! descriptor values) is hashed with SHA-256: 16 bytes name the bucket, 8 more pick one
//! of `sets` shared-data entries, and that entry holds up to `ways` bucket records. The
//! filter writes at most `sets` keys per domain, each at most `ways * record_len` bytes,
//! whatever the number of distinct clients.
//!
//! Each decision reads the set, refills and takes a token in one record, and writes the
//! whole set back with the cas it read, redoing the decision on CAS_MISMATCH. Every
//! decision on a bucket is therefore serialized across workers: no over-admission.
//!
//! A bucket not in its set takes an empty record, else a record whose bucket has
//! refilled to full (a full bucket is the same as a new one: nothing is lost), else the
//! record that will be full soonest: that one is lost (its key starts again from a full
//! bucket), and the decision reports it so the filter can count it.
const std = @import("std");
const sdk = @import("proxy_wasm");

pub const ways = 4;
/// id (16) | credit (u128 LE) | last refill ns (u64 LE) | ns at which the bucket is full again (u64 LE)
pub const record_len = 48;
const id_len = 16;

pub const Bucket = struct {
    max_tokens: u64,
    tokens_per_fill: u64,
    fill_interval_ns: u64,
};

pub const Decision = struct {
    allowed: bool,
    remaining: u64,
    reset_s: u64,
    /// a record whose bucket was not yet full made room for this one
    evicted: bool = false,
};

const refused: Decision = .{ .allowed = false, .remaining = 0, .reset_s = 1 };

/// The cas used to create a set: "create if absent". In the ABI, cas 0 is an
/// unconditional write, so two workers that both read NotFound would both
/// succeed and both admit (the later write erases the earlier take; seen in
/// Envoy with --concurrency 2 about once in 400 bursts on a fresh key). Envoy
/// (proxy-wasm-cpp-host SharedData::set) ignores the cas when the key does not
/// exist, and checks it when the key exists: a non-zero cas that the existing
/// entry does not carry fails with CAS_MISMATCH. Cas values come from one
/// process-wide u32 counter that starts at 1, so an existing entry carries
/// maxInt(u32) only if its last write was the 4294967295th shared-data write of
/// the process.
const create_cas: u32 = std.math.maxInt(u32);

/// Takes one token from the bucket named `identity` (refilled to `now`), or says when
/// the next one comes. `sets` is part of the key, so a configuration with another
/// size never shares records with this one.
pub fn take(a: std.mem.Allocator, domain: []const u8, sets: u32, identity: []const u8, b: Bucket, now: u64) Decision {
    var digest: [32]u8 = undefined;
    std.crypto.hash.sha2.Sha256.hash(identity, &digest, .{});
    const id = digest[0..id_len];
    const set = std.mem.readInt(u64, digest[16..24], .little) % sets;
    const key = std.fmt.allocPrint(a, "ratelimit:{s}:{d}:{d}", .{ domain, sets, set }) catch return refused;
    var attempt: u32 = 0;
    while (attempt < 64) : (attempt += 1) {
        var recs: [ways * record_len]u8 = undefined;
        var n: usize = 0;
        var cas: u32 = create_cas;
        if (sdk.getSharedData(key) catch null) |sv| {
            defer sdk.free(sv.value);
            cas = sv.cas;
            // a value of another shape (not written by this filter) is overwritten
            if (sv.value.len % record_len == 0 and sv.value.len <= recs.len) {
                @memcpy(recs[0..sv.value.len], sv.value);
                n = sv.value.len / record_len;
            }
        }
        var slot = Slot.pick(recs[0 .. n * record_len], id, now);
        const d = slot.takeToken(b, now);
        if (!d.allowed) return d; // a denial changes nothing, so nothing is written
        @memcpy(recs[slot.index * record_len ..][0..id_len], id);
        slot.store(recs[slot.index * record_len ..][0..record_len]);
        if (slot.index == n) n += 1;
        sdk.setSharedData(key, recs[0 .. n * record_len], cas) catch |e| {
            if (e == error.CasMismatch) continue; // another worker wrote the set: decide again on its state
            sdk.logf(.warn, "ratelimit: shared data write failed ({s}); denying", .{@errorName(e)});
            return refused;
        };
        return d;
    }
    sdk.log(.warn, "ratelimit: too much contention on a bucket; denying");
    return refused;
}

/// One bucket's record in a set: where it is and its state once refilled.
const Slot = struct {
    index: usize,
    found: bool,
    evicted: bool,
    credit: u128 = 0,
    last: u64 = 0,
    full_at: u64 = 0,

    /// The record of `id`, else the record a new bucket takes (see the module doc).
    fn pick(recs: []const u8, id: *const [id_len]u8, now: u64) Slot {
        const n = recs.len / record_len;
        var soonest: usize = 0;
        var soonest_at: u64 = std.math.maxInt(u64);
        for (0..n) |i| {
            const r = recs[i * record_len ..][0..record_len];
            if (std.mem.eql(u8, r[0..id_len], id)) return .{
                .index = i,
                .found = true,
                .evicted = false,
                .credit = std.mem.readInt(u128, r[16..32], .little),
                .last = std.mem.readInt(u64, r[32..40], .little),
            };
            const at = std.mem.readInt(u64, r[40..48], .little);
            if (at < soonest_at) {
                soonest, soonest_at = .{ i, at };
            }
        }
        if (n < ways) return .{ .index = n, .found = false, .evicted = false };
        return .{ .index = soonest, .found = false, .evicted = soonest_at > now };
    }

    /// Refills to `now` (continuous, capped at max_tokens) and takes a token if a whole one is there.
    /// Credit is counted in units where one token is fill_interval_ns and a nanosecond adds tokens_per_fill.
    fn takeToken(s: *Slot, b: Bucket, now: u64) Decision {
        const one: u128 = b.fill_interval_ns;
        const cap: u128 = @as(u128, b.max_tokens) * one;
        if (!s.found) {
            s.credit, s.last = .{ cap, now };
        } else {
            s.credit = @min(cap, s.credit);
            if (now > s.last) {
                s.credit = @min(cap, s.credit + @as(u128, now - s.last) * b.tokens_per_fill);
                s.last = now;
            }
        }
        if (s.credit < one) return .{ .allowed = false, .remaining = 0, .reset_s = resetSeconds(s.credit, one, b) };
        s.credit -= one;
        const missing = std.math.divCeil(u128, cap - s.credit, b.tokens_per_fill) catch 0;
        s.full_at = std.math.cast(u64, @as(u128, s.last) + missing) orelse std.math.maxInt(u64);
        return .{ .allowed = true, .remaining = @intCast(s.credit / one), .reset_s = resetSeconds(s.credit, one, b), .evicted = s.evicted };
    }

    fn store(s: Slot, r: *[record_len]u8) void {
        std.mem.writeInt(u128, r[16..32], s.credit, .little);
        std.mem.writeInt(u64, r[32..40], s.last, .little);
        std.mem.writeInt(u64, r[40..48], s.full_at, .little);
    }
};

/// 0 while a whole token is available, else whole seconds until the next one, rounded up
/// (a client that waits that long finds a token; Envoy's x-ratelimit-reset rounds the same way).
fn resetSeconds(credit: u128, one: u128, b: Bucket) u64 {
    if (credit >= one) return 0;
    const ns = std.math.divCeil(u128, one - credit, b.tokens_per_fill) catch 0;
    return @intCast(std.math.divCeil(u128, ns, std.time.ns_per_s) catch 0);
}
