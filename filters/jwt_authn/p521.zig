//! ECDSA on P-521 with SHA-512 (JWS "ES512", RFC 7518 §3.4), verification only.
//!
//! Zig's std has no P-521. The base field uses that p = 2^521 - 1 is a Mersenne
//! prime: 18 limbs of 29 bits in u64 (522 bits, 2^522 ≡ 2), so a product is a
//! plain 18×18 schoolbook whose high columns fold back doubled; the scalars mod n
//! (a few operations per signature) use std.crypto.ff. Points are Jacobian with
//! a = -3, and u1·G + u2·Q is one pass over 4-bit windows of both scalars.
//! Verification handles public data only (message, signature, public key), so
//! nothing here needs to be constant-time.
const std = @import("std");
const ff = std.crypto.ff;
const Sha512 = std.crypto.hash.sha2.Sha512;

/// Scalars mod n.
const M = ff.Modulus(521);
const Scalar = M.Fe;

/// Bytes of one coordinate or scalar; a JWS signature is r ‖ s.
pub const coord_len = 66;
pub const signature_len = 2 * coord_len;

fn hexBytes(comptime s: []const u8) [coord_len]u8 {
    @setEvalBranchQuota(10_000);
    var out: [coord_len]u8 = undefined;
    _ = std.fmt.hexToBytes(&out, s) catch unreachable;
    return out;
}

// SEC 2 v2 §2.6.1 (secp521r1), as printed by `openssl ecparam -name secp521r1 -param_enc explicit -text`.
const n_bytes = hexBytes("01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409");
const b_bytes = hexBytes("0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00");
const gx_bytes = hexBytes("00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66");
const gy_bytes = hexBytes("011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650");

const n_minus_2 = blk: {
    var out = n_bytes;
    out[coord_len - 1] -= 2; // n ends in 0x09
    break :blk out;
};

// ---------------------------------------------------------------- the field mod p = 2^521 - 1

const limb_count = 18;
const radix = 29;
const mask: u64 = (1 << radix) - 1;
const top_bits = 521 - radix * (limb_count - 1); // 28 bits of the value in the top limb

/// Σ limb[i]·2^(29·i). After `carry` every limb is below 2^29 (value < 2^522, not
/// necessarily below p); `canonical` gives the unique representative below p.
const F = [limb_count]u64;

const f_zero: F = @splat(0);
const f_one: F = blk: {
    var one: F = @splat(0);
    one[0] = 1;
    break :blk one;
};

/// 4p limb by limb: every limb is above any normalized limb, so a + 4p - b never underflows.
const four_p: F = blk: {
    var out: F = @splat((mask) * 4);
    out[limb_count - 1] = ((1 << top_bits) - 1) * 4;
    break :blk out;
};

/// Moves each limb's excess into the next; returns what leaves the top limb.
fn propagate(a: *F) u64 {
    var c: u64 = 0;
    for (a) |*l| {
        l.* += c;
        c = l.* >> radix;
        l.* &= mask;
    }
    return c;
}

/// Normalizes: 2^522 ≡ 2 (mod p), so a carry out of the top re-enters doubled at the bottom.
fn carry(a: *F) void {
    var c = propagate(a);
    while (c != 0) {
        a[0] += 2 * c;
        c = propagate(a);
    }
}

fn fadd(a: F, b: F) F {
    var r: F = undefined;
    for (&r, a, b) |*x, y, z| x.* = y + z;
    carry(&r);
    return r;
}

fn fsub(a: F, b: F) F {
    var r: F = undefined;
    for (&r, a, b, four_p) |*x, y, z, q| x.* = y + q - z;
    carry(&r);
    return r;
}

fn ftimes(a: F, comptime k: u64) F {
    var r: F = undefined;
    for (&r, a) |*x, y| x.* = y * k;
    carry(&r);
    return r;
}

/// Inputs normalized (limbs < 2^29): a column holds at most 18 products below 2^58, and a
/// folded high column adds twice at most 17 more, so every sum stays below 2^64.
fn fmul(a: F, b: F) F {
    var c: Columns = @splat(0);
    for (a, 0..) |x, i| {
        for (b, 0..) |y, j| c[i + j] += x * y;
    }
    return fold(c);
}

/// fmul(a, a) with each cross product computed once (the column sums are the same).
fn fsq(a: F) F {
    var c: Columns = @splat(0);
    for (a, 0..) |x, i| {
        c[2 * i] += x * x;
        const d = 2 * x;
        for (a[i + 1 ..], i + 1..) |y, j| c[i + j] += d * y;
    }
    return fold(c);
}

const Columns = [2 * limb_count - 1]u64;

/// Column k + 18 weighs 2^(29k)·2^522 ≡ 2·2^(29k).
fn fold(c: Columns) F {
    var r: F = undefined;
    for (&r, 0..) |*x, k| x.* = c[k] + if (k + limb_count < c.len) 2 * c[k + limb_count] else 0;
    carry(&r);
    return r;
}

fn isP(a: F) bool {
    for (a[0 .. limb_count - 1]) |l| if (l != mask) return false;
    return a[limb_count - 1] == (1 << top_bits) - 1;
}

/// The representative below p.
fn canonical(a: F) F {
    var r = a;
    carry(&r);
    while (true) { // 2^521 ≡ 1: fold bit 521 and above back to the bottom
        const hi = r[limb_count - 1] >> top_bits;
        if (hi == 0) break;
        r[limb_count - 1] &= (1 << top_bits) - 1;
        r[0] += hi;
        _ = propagate(&r);
    }
    return if (isP(r)) f_zero else r;
}

fn feql(a: F, b: F) bool {
    return std.mem.eql(u64, &canonical(a), &canonical(b));
}

fn fIsZero(a: F) bool {
    return feql(a, f_zero);
}

/// Big-endian bytes to a field element; null unless the value is below p.
fn fromBytes(b: *const [coord_len]u8) ?F {
    if (b[0] > 1) return null; // at most 521 bits
    var r: F = @splat(0);
    var acc: u64 = 0;
    var bits: u6 = 0;
    var li: usize = 0;
    var i: usize = coord_len;
    while (i > 0) {
        i -= 1;
        acc |= @as(u64, b[i]) << bits;
        bits += 8;
        if (bits >= radix) {
            r[li] = acc & mask;
            li += 1;
            acc >>= radix;
            bits -= radix;
        }
    }
    if (li < limb_count) r[li] = acc;
    if (isP(r)) return null;
    return r;
}

fn toBytes(a: F) [coord_len]u8 {
    const r = canonical(a);
    var out: [coord_len]u8 = @splat(0);
    var acc: u64 = 0;
    var bits: u7 = 0;
    var li: usize = 0;
    var i: usize = coord_len;
    while (i > 0) {
        while (bits < 8 and li < limb_count) : (li += 1) {
            acc |= r[li] << @intCast(bits);
            bits += radix;
        }
        i -= 1;
        out[i] = @truncate(acc);
        acc >>= 8;
        bits -|= 8;
    }
    return out;
}

/// a^(p-2) = a^-1: p - 2 = 2^521 - 3 has every bit set but bit 1.
fn finv(a: F) F {
    var r = a;
    var i: usize = 520;
    while (i > 0) {
        i -= 1;
        r = fsq(r);
        if (i != 1) r = fmul(r, a);
    }
    return r;
}

// ---------------------------------------------------------------- the curve

const b_coef = fromBytes(&b_bytes).?;
const generator: Point = .{ .x = fromBytes(&gx_bytes).?, .y = fromBytes(&gy_bytes).?, .z = f_one };
const infinity: Point = .{ .x = f_one, .y = f_one, .z = f_zero };

/// Jacobian point (X/Z², Y/Z³); Z = 0 is the point at infinity.
const Point = struct { x: F, y: F, z: F };

/// A validated public key: both coordinates below p and the point on the curve.
pub const PublicKey = struct { x: F, y: F };

pub fn publicKey(x: []const u8, y: []const u8) error{Invalid}!PublicKey {
    if (x.len != coord_len or y.len != coord_len) return error.Invalid;
    const px = fromBytes(x[0..coord_len]) orelse return error.Invalid;
    const py = fromBytes(y[0..coord_len]) orelse return error.Invalid;
    // y² = x³ - 3x + b
    const rhs = fadd(fsub(fmul(fsq(px), px), ftimes(px, 3)), b_coef);
    if (!feql(fsq(py), rhs)) return error.Invalid;
    return .{ .x = px, .y = py };
}

fn isInfinity(a: Point) bool {
    return fIsZero(a.z);
}

/// dbl-2001-b (a = -3).
fn double(a: Point) Point {
    if (isInfinity(a) or fIsZero(a.y)) return infinity;
    const delta = fsq(a.z);
    const gamma = fsq(a.y);
    const beta = fmul(a.x, gamma);
    const alpha = ftimes(fmul(fsub(a.x, delta), fadd(a.x, delta)), 3);
    const x3 = fsub(fsq(alpha), ftimes(beta, 8));
    const z3 = fsub(fsub(fsq(fadd(a.y, a.z)), gamma), delta);
    const y3 = fsub(fmul(alpha, fsub(ftimes(beta, 4), x3)), ftimes(fsq(gamma), 8));
    return .{ .x = x3, .y = y3, .z = z3 };
}

/// add-2007-bl, with the doubling and inverse cases handled explicitly.
fn add(a: Point, b: Point) Point {
    if (isInfinity(a)) return b;
    if (isInfinity(b)) return a;
    const z1z1 = fsq(a.z);
    const z2z2 = fsq(b.z);
    const u_1 = fmul(a.x, z2z2);
    const u_2 = fmul(b.x, z1z1);
    const s1 = fmul(fmul(a.y, b.z), z2z2);
    const s2 = fmul(fmul(b.y, a.z), z1z1);
    const h = fsub(u_2, u_1);
    const r = ftimes(fsub(s2, s1), 2);
    if (fIsZero(h)) return if (fIsZero(r)) double(a) else infinity;
    const i = fsq(ftimes(h, 2));
    const j = fmul(h, i);
    const v = fmul(u_1, i);
    const x3 = fsub(fsub(fsq(r), j), ftimes(v, 2));
    const y3 = fsub(fmul(r, fsub(v, x3)), ftimes(fmul(s1, j), 2));
    const z3 = fmul(fsub(fsub(fsq(fadd(a.z, b.z)), z1z1), z2z2), h);
    return .{ .x = x3, .y = y3, .z = z3 };
}

/// 4-bit window `w` of a big-endian scalar (bits 4w..4w+3).
fn nibble(bytes: *const [coord_len]u8, w: usize) u4 {
    return @truncate(bytes[coord_len - 1 - w / 2] >> @intCast(4 * (w % 2)));
}

/// 0·P .. 15·P.
fn multiples(p: Point) [16]Point {
    var t: [16]Point = undefined;
    t[0] = infinity;
    for (1..16) |i| t[i] = add(t[i - 1], p);
    return t;
}

var n_state: ?M = null;

/// The order's Montgomery setup (R² computation) happens once, on first use.
fn order() M {
    if (n_state == null) n_state = M.fromBytes(&n_bytes, .big) catch unreachable;
    return n_state.?;
}

/// A scalar mod n from big-endian bytes: null when it is 0 or >= n.
fn scalar(n: M, bytes: []const u8) ?Scalar {
    const s = Scalar.fromBytes(n, bytes, .big) catch return null;
    if (s.isZero()) return null;
    return s;
}

fn scalarBytes(x: Scalar) [coord_len]u8 {
    var out: [coord_len]u8 = undefined;
    x.toBytes(&out, .big) catch unreachable;
    return out;
}

/// True when `sig` (r ‖ s, 132 bytes) is a valid ES512 signature of `msg` (SEC 1 §4.1.4).
pub fn verify(pk: PublicKey, msg: []const u8, sig: []const u8) bool {
    if (sig.len != signature_len) return false;
    const n = order();
    const r = scalar(n, sig[0..coord_len]) orelse return false;
    const s = scalar(n, sig[coord_len..]) orelse return false;
    var digest: [Sha512.digest_length]u8 = undefined;
    Sha512.hash(msg, &digest, .{});
    // The 512-bit digest is shorter than n (521 bits), so it is used whole.
    const e = Scalar.fromBytes(n, &digest, .big) catch return false;
    const w = n.powWithEncodedPublicExponent(s, &n_minus_2, .big) catch return false;
    const u_1 = scalarBytes(n.mul(e, w));
    const u_2 = scalarBytes(n.mul(r, w));

    // u1·G + u2·Q, both scalars read 4 bits at a time from the top.
    const tg = multiples(generator);
    const tq = multiples(.{ .x = pk.x, .y = pk.y, .z = f_one });
    var acc = infinity;
    var window: usize = (521 + 3) / 4;
    while (window > 0) {
        window -= 1;
        for (0..4) |_| acc = double(acc);
        acc = add(acc, tg[nibble(&u_1, window)]);
        acc = add(acc, tq[nibble(&u_2, window)]);
    }
    if (isInfinity(acc)) return false;

    // Affine x = X / Z², then compared with r modulo n (x < p < 2n).
    const z_inv = finv(acc.z);
    const x_bytes = toBytes(fmul(acc.x, fsq(z_inv)));
    const x_int = ff.Uint(521).fromBytes(&x_bytes, .big) catch return false;
    return std.mem.eql(u8, &scalarBytes(n.reduce(x_int)), &scalarBytes(r));
}
