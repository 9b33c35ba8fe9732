//! RSA signature verification for JWS RS256/384/512 (RSASSA-PKCS1-v1_5) and
//! PS256/384/512 (RSASSA-PSS, MGF1 with the same hash, salt as long as the
//! hash: RFC 7518 §3.5) with any modulus from 2048 to 16384 bits.
//!
//! std.crypto.Certificate.rsa stops at 4096 bits and wants the modulus size
//! at compile time, so the encodings (RFC 8017 §9) are checked here on top of
//! std.crypto.ff's modular exponentiation.
const std = @import("std");
const ff = std.crypto.ff;

/// RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used".
pub const min_bits = 2048;
/// BoringSSL's limit for RSA public-key operations (what Envoy's native filter accepts).
pub const max_bits = 16384;

const M = ff.Modulus(max_bits);

pub const PublicKey = struct {
    n: M,
    e: []const u8, // big-endian, no leading zero
    k: usize, // modulus length in bytes = signature length
    bits: usize,
};

pub const KeyError = error{ TooSmall, TooLarge, BadModulus, BadExponent };

/// `n` and `e` big-endian (leading zeros allowed, as some JWKS publishers pad them).
pub fn publicKey(n_bytes: []const u8, e_bytes: []const u8) KeyError!PublicKey {
    const n = std.mem.trimStart(u8, n_bytes, &.{0});
    const e = std.mem.trimStart(u8, e_bytes, &.{0});
    if (n.len == 0) return error.BadModulus;
    const bits = n.len * 8 - @clz(n[0]);
    if (bits < min_bits) return error.TooSmall;
    if (bits > max_bits) return error.TooLarge;
    if (n[n.len - 1] & 1 == 0) return error.BadModulus;
    // An odd exponent of at most 32 bits, above 1 (std and BoringSSL accept the same range).
    if (e.len == 0 or e.len > 4 or e[e.len - 1] & 1 == 0 or (e.len == 1 and e[0] == 1)) return error.BadExponent;
    const m = M.fromBytes(n, .big) catch return error.BadModulus;
    return .{ .n = m, .e = e, .k = n.len, .bits = bits };
}

/// s^e mod n as k big-endian bytes into `out`; false when s >= n or the length is wrong.
fn encrypt(key: *const PublicKey, sig: []const u8, out: []u8) bool {
    if (sig.len != key.k) return false;
    const s = M.Fe.fromBytes(key.n, sig, .big) catch return false;
    const m = key.n.powWithEncodedPublicExponent(s, key.e, .big) catch return false;
    m.toBytes(out[0..key.k], .big) catch return false;
    return true;
}

fn digestInfo(comptime H: type) []const u8 {
    const sha2 = std.crypto.hash.sha2;
    return switch (H) {
        sha2.Sha256 => &.{ 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 },
        sha2.Sha384 => &.{ 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 },
        sha2.Sha512 => &.{ 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 },
        else => @compileError("unsupported hash"),
    };
}

/// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.2): EM = 00 01 FF..FF 00 DigestInfo(H(msg)).
pub fn verifyPkcs1(comptime H: type, key: *const PublicKey, msg: []const u8, sig: []const u8) bool {
    var buf: [max_bits / 8]u8 = undefined;
    const em = buf[0..key.k];
    if (!encrypt(key, sig, em)) return false;
    const prefix = comptime digestInfo(H);
    const t_len = prefix.len + H.digest_length;
    if (key.k < t_len + 11) return false;
    const ps_end = key.k - t_len - 1;
    if (em[0] != 0 or em[1] != 1 or em[ps_end] != 0) return false;
    for (em[2..ps_end]) |b| if (b != 0xff) return false;
    if (!std.mem.eql(u8, em[ps_end + 1 ..][0..prefix.len], prefix)) return false;
    var digest: [H.digest_length]u8 = undefined;
    H.hash(msg, &digest, .{});
    return std.mem.eql(u8, em[key.k - H.digest_length ..], &digest);
}

/// RSASSA-PSS (RFC 8017 §8.1.2 / EMSA-PSS-VERIFY §9.1.2), sLen = hLen.
pub fn verifyPss(comptime H: type, key: *const PublicKey, msg: []const u8, sig: []const u8) bool {
    const h_len = H.digest_length;
    var buf: [max_bits / 8]u8 = undefined;
    if (!encrypt(key, sig, buf[0..key.k])) return false;
    const em_bits = key.bits - 1;
    const em_len = (em_bits + 7) / 8;
    // When modBits - 1 is a multiple of 8 the encoded message is one byte shorter than k.
    if (em_len < key.k and buf[0] != 0) return false;
    const em = buf[key.k - em_len .. key.k];
    if (em_len < 2 * h_len + 2 or em[em_len - 1] != 0xbc) return false;
    const db_len = em_len - h_len - 1;
    const masked_db = em[0..db_len];
    const hh = em[db_len..][0..h_len];
    const zero_bits: u4 = @intCast(8 * em_len - em_bits);
    const top_mask: u8 = @truncate(@as(u16, 0xff) >> zero_bits);
    if (masked_db[0] & ~top_mask != 0) return false;

    var db_buf: [max_bits / 8]u8 = undefined;
    const db = db_buf[0..db_len];
    mgf1(H, hh, db);
    for (db, masked_db) |*d, m| d.* ^= m;
    db[0] &= top_mask;
    const ps_len = db_len - h_len - 1;
    for (db[0..ps_len]) |b| if (b != 0) return false;
    if (db[ps_len] != 1) return false;

    var m_hash: [h_len]u8 = undefined;
    H.hash(msg, &m_hash, .{});
    var h = H.init(.{});
    h.update(&@as([8]u8, @splat(0)));
    h.update(&m_hash);
    h.update(db[db_len - h_len ..]);
    var want: [h_len]u8 = undefined;
    h.final(&want);
    return std.mem.eql(u8, &want, hh);
}

/// MGF1 (RFC 8017 §B.2.1): out = H(seed ‖ 0) ‖ H(seed ‖ 1) ‖ ... truncated.
fn mgf1(comptime H: type, seed: []const u8, out: []u8) void {
    var counter: u32 = 0;
    var off: usize = 0;
    while (off < out.len) : (counter += 1) {
        var c: [4]u8 = undefined;
        std.mem.writeInt(u32, &c, counter, .big);
        var h = H.init(.{});
        h.update(seed);
        h.update(&c);
        var block: [H.digest_length]u8 = undefined;
        h.final(&block);
        const n = @min(block.len, out.len - off);
        @memcpy(out[off..][0..n], block[0..n]);
        off += n;
    }
}
