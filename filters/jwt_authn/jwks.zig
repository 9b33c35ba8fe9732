//! JWKS parsing and JWS signature verification, all with Zig std crypto.
//!
//! Keys are parsed once (at configure time for inline JWKS, once per fetch for
//! remote JWKS) into ready-to-use public keys, so a request only hashes and
//! verifies. A key this filter cannot or must not use (unknown type or curve,
//! RSA under 2048 bits, HMAC keys shorter than the hash) is skipped and reported,
//! and only a set with no usable key at all is an error.
const std = @import("std");
const crypto = std.crypto;
const rsa = @import("rsa.zig");
const p521 = @import("p521.zig");
const P256 = crypto.sign.ecdsa.EcdsaP256Sha256;
const P384 = crypto.sign.ecdsa.EcdsaP384Sha384;
const Ed25519 = crypto.sign.Ed25519;
const sha2 = crypto.hash.sha2;
const hmac = crypto.auth.hmac.sha2;
const b64 = std.base64.url_safe_no_pad;

pub const Alg = enum {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,

    /// Only these names are accepted; "none" and anything else is unsupported.
    pub fn parse(s: []const u8) ?Alg {
        return std.meta.stringToEnum(Alg, s);
    }

    pub fn keyType(a: Alg) KeyType {
        return switch (a) {
            .HS256, .HS384, .HS512 => .oct,
            .RS256, .RS384, .RS512, .PS256, .PS384, .PS512 => .rsa,
            .ES256 => .ec256,
            .ES384 => .ec384,
            .ES512 => .ec521,
            .EdDSA => .ed25519,
        };
    }

    /// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
    pub fn minHmacKeyLen(a: Alg) usize {
        return switch (a) {
            .HS384 => 48,
            .HS512 => 64,
            else => 32,
        };
    }
};

pub const KeyType = enum { oct, rsa, ec256, ec384, ec521, ed25519 };

pub const Material = union(KeyType) {
    oct: []const u8,
    rsa: *const rsa.PublicKey, // large (the modulus type holds up to 16384 bits): kept behind a pointer
    ec256: P256.PublicKey,
    ec384: P384.PublicKey,
    ec521: p521.PublicKey,
    ed25519: Ed25519.PublicKey,
};

pub const Key = struct {
    kid: ?[]const u8,
    alg: ?Alg, // the JWK's "alg": when present the token's alg must equal it
    material: Material,
};

pub const KeySet = struct {
    keys: []const Key,
};

/// Where a JWKS problem was found and what it is, for config error messages.
pub const JwksError = struct { path: []const u8 = "", message: []const u8 = "" };

pub const ParseError = error{ InvalidJwks, OutOfMemory };

/// Decodes base64url without padding (the JOSE encoding) into `a`.
pub fn decodeB64(a: std.mem.Allocator, s: []const u8) ?[]u8 {
    const n = b64.Decoder.calcSizeForSlice(s) catch return null;
    const out = a.alloc(u8, n) catch return null;
    b64.Decoder.decode(out, s) catch return null;
    return out;
}

/// A key left out of the set, with where and why (logged by the caller).
pub const Skipped = struct { index: usize, kid: ?[]const u8, path: []const u8, message: []const u8 };

/// Parses a JWKS object `{"keys":[...]}`. Keys that are malformed or that this
/// filter cannot use are left out and listed in `skipped`; only a set that
/// ends up empty is an error (Envoy's native filter also loads the usable keys
/// of a set and skips the rest).
pub fn parseKeySet(a: std.mem.Allocator, v: std.json.Value, skipped: *std.ArrayList(Skipped), err: *JwksError) ParseError!KeySet {
    const obj = switch (v) {
        .object => |o| o,
        else => return fail(err, "", "expected a JWKS object {\"keys\": [...]}"),
    };
    const keys_v = obj.get("keys") orelse return fail(err, "keys", "required field is missing");
    const arr = switch (keys_v) {
        .array => |x| x.items,
        else => return fail(err, "keys", "expected array"),
    };
    var keys: std.ArrayList(Key) = .empty;
    for (arr, 0..) |kv, i| {
        var kerr: JwksError = .{};
        if (parseKey(a, kv, &kerr)) |k| {
            if (k) |key| try keys.append(a, key);
        } else |e| {
            if (e == error.OutOfMemory) return e;
            const kid: ?[]const u8 = switch (kv) {
                .object => |o| if (o.get("kid")) |kid_v| switch (kid_v) {
                    .string => |s| s,
                    else => null,
                } else null,
                else => null,
            };
            try skipped.append(a, .{ .index = i, .kid = kid, .path = kerr.path, .message = kerr.message });
        }
    }
    if (keys.items.len == 0) return fail(err, "keys", "no usable key");
    return .{ .keys = keys.items };
}

fn fail(err: *JwksError, path: []const u8, msg: []const u8) ParseError {
    err.path = path;
    err.message = msg;
    return error.InvalidJwks;
}

fn failf(a: std.mem.Allocator, err: *JwksError, path: []const u8, comptime fmt: []const u8, args: anytype) ParseError {
    return fail(err, path, try std.fmt.allocPrint(a, fmt, args));
}

fn rsaBits(n: []const u8) usize {
    const t = std.mem.trimStart(u8, n, &.{0});
    return if (t.len == 0) 0 else t.len * 8 - @clz(t[0]);
}

fn str(o: std.json.ObjectMap, key: []const u8, err: *JwksError) ParseError!?[]const u8 {
    const v = o.get(key) orelse return null;
    return switch (v) {
        .string => |s| s,
        else => fail(err, key, "expected string"),
    };
}

fn bytesField(a: std.mem.Allocator, o: std.json.ObjectMap, key: []const u8, err: *JwksError) ParseError![]u8 {
    const s = (try str(o, key, err)) orelse return fail(err, key, "required field is missing");
    return decodeB64(a, s) orelse fail(err, key, "invalid base64url");
}

/// Returns null for keys that are not for signatures ("use": "enc").
fn parseKey(a: std.mem.Allocator, v: std.json.Value, err: *JwksError) ParseError!?Key {
    const o = switch (v) {
        .object => |x| x,
        else => return fail(err, "", "expected object"),
    };
    if (try str(o, "use", err)) |use| if (!std.mem.eql(u8, use, "sig")) return null;
    const kty = (try str(o, "kty", err)) orelse return fail(err, "kty", "required field is missing");
    const kid = try str(o, "kid", err);
    var alg: ?Alg = null;
    if (try str(o, "alg", err)) |s| alg = Alg.parse(s) orelse return fail(err, "alg", "unsupported algorithm");

    var material: Material = undefined;
    if (std.mem.eql(u8, kty, "oct")) {
        const k = try bytesField(a, o, "k", err);
        const min = if (alg) |al| al.minHmacKeyLen() else 32;
        if (k.len < min) return failf(a, err, "k", "HMAC key of {d} bytes is shorter than {d} (RFC 7518 section 3.2)", .{ k.len, min });
        material = .{ .oct = k };
    } else if (std.mem.eql(u8, kty, "RSA")) {
        const n = try bytesField(a, o, "n", err);
        const e = try bytesField(a, o, "e", err);
        const pk = try a.create(rsa.PublicKey);
        pk.* = rsa.publicKey(n, e) catch |ke| return switch (ke) {
            error.TooSmall => failf(a, err, "n", "RSA key of {d} bits is below 2048 (RFC 7518 section 3.3)", .{rsaBits(n)}),
            error.TooLarge => failf(a, err, "n", "RSA key of {d} bits is above 16384", .{rsaBits(n)}),
            error.BadModulus => fail(err, "n", "invalid RSA modulus"),
            error.BadExponent => fail(err, "e", "invalid RSA exponent (odd, above 1, at most 32 bits)"),
        };
        material = .{ .rsa = pk };
    } else if (std.mem.eql(u8, kty, "EC")) {
        const crv = (try str(o, "crv", err)) orelse return fail(err, "crv", "required field is missing");
        const x = try bytesField(a, o, "x", err);
        const y = try bytesField(a, o, "y", err);
        if (std.mem.eql(u8, crv, "P-256")) {
            material = .{ .ec256 = try ecKey(P256, x, y, err) };
        } else if (std.mem.eql(u8, crv, "P-384")) {
            material = .{ .ec384 = try ecKey(P384, x, y, err) };
        } else if (std.mem.eql(u8, crv, "P-521")) {
            if (x.len != p521.coord_len) return fail(err, "x", "wrong coordinate length for the curve");
            if (y.len != p521.coord_len) return fail(err, "y", "wrong coordinate length for the curve");
            material = .{ .ec521 = p521.publicKey(x, y) catch return fail(err, "x", "point is not on the curve") };
        } else return failf(a, err, "crv", "unsupported curve {s} (P-256, P-384 or P-521)", .{crv});
    } else if (std.mem.eql(u8, kty, "OKP")) {
        const crv = (try str(o, "crv", err)) orelse return fail(err, "crv", "required field is missing");
        if (!std.mem.eql(u8, crv, "Ed25519")) return failf(a, err, "crv", "unsupported curve {s} (Ed25519)", .{crv});
        const x = try bytesField(a, o, "x", err);
        if (x.len != 32) return fail(err, "x", "expected 32 bytes");
        material = .{ .ed25519 = Ed25519.PublicKey.fromBytes(x[0..32].*) catch return fail(err, "x", "invalid Ed25519 public key") };
    } else return failf(a, err, "kty", "unsupported key type {s} (oct, RSA, EC or OKP)", .{kty});

    if (alg) |al| if (al.keyType() != std.meta.activeTag(material)) return fail(err, "alg", "does not match the key type");
    return .{ .kid = kid, .alg = alg, .material = material };
}

fn ecKey(comptime E: type, x: []const u8, y: []const u8, err: *JwksError) ParseError!E.PublicKey {
    const flen = E.PublicKey.compressed_sec1_encoded_length - 1;
    if (x.len != flen) return fail(err, "x", "wrong coordinate length for the curve");
    if (y.len != flen) return fail(err, "y", "wrong coordinate length for the curve");
    var sec1: [E.PublicKey.uncompressed_sec1_encoded_length]u8 = undefined;
    sec1[0] = 4;
    @memcpy(sec1[1..][0..flen], x);
    @memcpy(sec1[1 + flen ..][0..flen], y);
    return E.PublicKey.fromSec1(&sec1) catch fail(err, "x", "point is not on the curve");
}

/// True when `sig` is a valid `alg` signature of `msg` under `key`.
/// The caller has already checked that the key type matches the algorithm.
pub fn verify(alg: Alg, key: *const Key, msg: []const u8, sig: []const u8) bool {
    return switch (alg) {
        .HS256 => verifyHmac(hmac.HmacSha256, key, msg, sig),
        .HS384 => verifyHmac(hmac.HmacSha384, key, msg, sig),
        .HS512 => verifyHmac(hmac.HmacSha512, key, msg, sig),
        .RS256 => verifyRsa(.pkcs1, sha2.Sha256, key, msg, sig),
        .RS384 => verifyRsa(.pkcs1, sha2.Sha384, key, msg, sig),
        .RS512 => verifyRsa(.pkcs1, sha2.Sha512, key, msg, sig),
        .PS256 => verifyRsa(.pss, sha2.Sha256, key, msg, sig),
        .PS384 => verifyRsa(.pss, sha2.Sha384, key, msg, sig),
        .PS512 => verifyRsa(.pss, sha2.Sha512, key, msg, sig),
        .ES256 => verifyEc(P256, key.material.ec256, msg, sig),
        .ES384 => verifyEc(P384, key.material.ec384, msg, sig),
        .ES512 => p521.verify(key.material.ec521, msg, sig),
        .EdDSA => blk: {
            if (sig.len != Ed25519.Signature.encoded_length) break :blk false;
            const s = Ed25519.Signature.fromBytes(sig[0..Ed25519.Signature.encoded_length].*);
            s.verify(msg, key.material.ed25519) catch break :blk false;
            break :blk true;
        },
    };
}

fn verifyHmac(comptime H: type, key: *const Key, msg: []const u8, sig: []const u8) bool {
    if (sig.len != H.mac_length) return false;
    var mac: [H.mac_length]u8 = undefined;
    H.create(&mac, msg, key.material.oct);
    return crypto.timing_safe.eql([H.mac_length]u8, mac, sig[0..H.mac_length].*);
}

fn verifyRsa(comptime scheme: enum { pkcs1, pss }, comptime H: type, key: *const Key, msg: []const u8, sig: []const u8) bool {
    return switch (scheme) {
        .pkcs1 => rsa.verifyPkcs1(H, key.material.rsa, msg, sig),
        .pss => rsa.verifyPss(H, key.material.rsa, msg, sig),
    };
}

fn verifyEc(comptime E: type, pk: E.PublicKey, msg: []const u8, sig: []const u8) bool {
    if (sig.len != E.Signature.encoded_length) return false;
    const s = E.Signature.fromBytes(sig[0..E.Signature.encoded_length].*);
    s.verify(msg, pk) catch return false;
    return true;
}
