//! ECDSA on P-521 with SHA-512 (JWS "ES512", RFC 7518 §3.4), verification only.
//!
//! Zig's std has no P-521, so the curve is built here on std.crypto.ff's
//! Montgomery arithmetic: Jacobian coordinates with a = -3, and Shamir's trick
//! for u1·G + u2·Q. Verification handles public data only (message, signature,
//! public key), so nothing here needs to be constant-time.
const std = @import("std");
const ff = std.crypto.ff;
const Sha512 = std.crypto.hash.sha2.Sha512;

const M = ff.Modulus(521);
const Fe = M.Fe;

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
const p_bytes = hexBytes("01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
const n_bytes = hexBytes("01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409");
const b_bytes = hexBytes("0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00");
const gx_bytes = hexBytes("00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66");
const gy_bytes = hexBytes("011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650");

/// x - 2 for the Fermat inverses (p and n both end in a byte >= 2).
fn minusTwo(x: [coord_len]u8) [coord_len]u8 {
    var out = x;
    out[coord_len - 1] -= 2;
    return out;
}
const p_minus_2 = minusTwo(p_bytes);
const n_minus_2 = minusTwo(n_bytes);

const Curve = struct { p: M, n: M, b: Fe, g: Point, one: Fe, zero: Fe };

/// Jacobian point (X/Z², Y/Z³), coordinates in Montgomery form; Z = 0 is infinity.
const Point = struct { x: Fe, y: Fe, z: Fe };

var curve_state: ?Curve = null;

/// The moduli need runtime setup (R² computation): done once, on first use.
fn curve() *const Curve {
    if (curve_state == null) {
        const p = M.fromBytes(&p_bytes, .big) catch unreachable;
        const one = montgomery(p, &[_]u8{1}) catch unreachable;
        var zero = p.zero;
        zero.montgomery = true;
        curve_state = .{
            .p = p,
            .n = M.fromBytes(&n_bytes, .big) catch unreachable,
            .b = montgomery(p, &b_bytes) catch unreachable,
            .g = .{ .x = montgomery(p, &gx_bytes) catch unreachable, .y = montgomery(p, &gy_bytes) catch unreachable, .z = one },
            .one = one,
            .zero = zero,
        };
    }
    return &curve_state.?;
}

fn montgomery(m: M, bytes: []const u8) error{Invalid}!Fe {
    var x = Fe.fromBytes(m, bytes, .big) catch return error.Invalid; // also rejects values >= m
    m.toMontgomery(&x) catch unreachable;
    return x;
}

/// A validated public key: both coordinates below p and the point on the curve.
pub const PublicKey = struct { x: Fe, y: Fe };

pub fn publicKey(x: []const u8, y: []const u8) error{Invalid}!PublicKey {
    if (x.len != coord_len or y.len != coord_len) return error.Invalid;
    const c = curve();
    const px = try montgomery(c.p, x);
    const py = try montgomery(c.p, y);
    // y² = x³ - 3x + b
    const m = c.p;
    const x3 = m.mul(m.sq(px), px);
    const rhs = m.add(m.sub(x3, times(m, px, 3)), c.b);
    if (!m.sq(py).eql(rhs)) return error.Invalid;
    return .{ .x = px, .y = py };
}

fn times(m: M, x: Fe, comptime k: comptime_int) Fe {
    var out = x;
    for (1..k) |_| out = m.add(out, x);
    return out;
}

fn isInfinity(a: Point) bool {
    return a.z.isZero();
}

/// dbl-2001-b (a = -3).
fn double(c: *const Curve, a: Point) Point {
    if (isInfinity(a) or a.y.isZero()) return .{ .x = c.one, .y = c.one, .z = c.zero };
    const m = c.p;
    const delta = m.sq(a.z);
    const gamma = m.sq(a.y);
    const beta = m.mul(a.x, gamma);
    const alpha = times(m, m.mul(m.sub(a.x, delta), m.add(a.x, delta)), 3);
    const x3 = m.sub(m.sq(alpha), times(m, beta, 8));
    const z3 = m.sub(m.sub(m.sq(m.add(a.y, a.z)), gamma), delta);
    const y3 = m.sub(m.mul(alpha, m.sub(times(m, beta, 4), x3)), times(m, m.sq(gamma), 8));
    return .{ .x = x3, .y = y3, .z = z3 };
}

/// add-2007-bl, with the doubling and inverse cases handled explicitly.
fn add(c: *const Curve, a: Point, b: Point) Point {
    if (isInfinity(a)) return b;
    if (isInfinity(b)) return a;
    const m = c.p;
    const z1z1 = m.sq(a.z);
    const z2z2 = m.sq(b.z);
    const u_1 = m.mul(a.x, z2z2);
    const u_2 = m.mul(b.x, z1z1);
    const s1 = m.mul(m.mul(a.y, b.z), z2z2);
    const s2 = m.mul(m.mul(b.y, a.z), z1z1);
    const h = m.sub(u_2, u_1);
    const r = times(m, m.sub(s2, s1), 2);
    if (h.isZero()) {
        if (r.isZero()) return double(c, a);
        return .{ .x = c.one, .y = c.one, .z = c.zero };
    }
    const i = m.sq(times(m, h, 2));
    const j = m.mul(h, i);
    const v = m.mul(u_1, i);
    const x3 = m.sub(m.sub(m.sq(r), j), times(m, v, 2));
    const y3 = m.sub(m.mul(r, m.sub(v, x3)), times(m, m.mul(s1, j), 2));
    const z3 = m.mul(m.sub(m.sub(m.sq(m.add(a.z, b.z)), z1z1), z2z2), h);
    return .{ .x = x3, .y = y3, .z = z3 };
}

fn bit(bytes: *const [coord_len]u8, i: usize) bool {
    return (bytes[coord_len - 1 - i / 8] >> @intCast(i % 8)) & 1 == 1;
}

/// A scalar mod n from big-endian bytes: null when it is 0 or >= n.
fn scalar(n: M, bytes: []const u8) ?Fe {
    const s = Fe.fromBytes(n, bytes, .big) catch return null;
    if (s.isZero()) return null;
    return s;
}

fn scalarBytes(x: Fe) [coord_len]u8 {
    var out: [coord_len]u8 = undefined;
    x.toBytes(&out, .big) catch unreachable;
    return out;
}

/// True when `sig` (r ‖ s, 132 bytes) is a valid ES512 signature of `msg` (SEC 1 §4.1.4).
pub fn verify(pk: PublicKey, msg: []const u8, sig: []const u8) bool {
    if (sig.len != signature_len) return false;
    const c = curve();
    const n = c.n;
    const r = scalar(n, sig[0..coord_len]) orelse return false;
    const s = scalar(n, sig[coord_len..]) orelse return false;
    var digest: [Sha512.digest_length]u8 = undefined;
    Sha512.hash(msg, &digest, .{});
    // The 512-bit digest is shorter than n (521 bits), so it is used whole.
    const e = Fe.fromBytes(n, &digest, .big) catch return false;
    const w = n.powWithEncodedPublicExponent(s, &n_minus_2, .big) catch return false;
    const u_1 = scalarBytes(n.mul(e, w));
    const u_2 = scalarBytes(n.mul(r, w));

    const q: Point = .{ .x = pk.x, .y = pk.y, .z = c.one };
    const gq = add(c, c.g, q);
    var acc: Point = .{ .x = c.one, .y = c.one, .z = c.zero };
    var i: usize = 521;
    while (i > 0) {
        i -= 1;
        acc = double(c, acc);
        const b1 = bit(&u_1, i);
        const b2 = bit(&u_2, i);
        if (b1 and b2) acc = add(c, acc, gq) else if (b1) acc = add(c, acc, c.g) else if (b2) acc = add(c, acc, q);
    }
    if (isInfinity(acc)) return false;

    // Affine x = X / Z², then compared with r modulo n.
    const p = c.p;
    const z_inv = p.powWithEncodedPublicExponent(acc.z, &p_minus_2, .big) catch return false;
    var x = p.mul(acc.x, p.sq(z_inv));
    p.fromMontgomery(&x) catch return false;
    const x_mod_n = n.reduce(x.v);
    return std.mem.eql(u8, &scalarBytes(x_mod_n), &scalarBytes(r));
}
