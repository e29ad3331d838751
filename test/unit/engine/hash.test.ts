import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Fnv1a64, fnv1a64Bytes, fnv1a64Hex, keyHash64Hex } from "../../../src/engine/hash.js";
import { Segmenter, validateKey, decodeKeyBytes, utf8Length } from "../../../src/engine/segmenter.js";

// The key hash is fmix64(FNV-1a 64(utf8(key))); vectors computed independently (Python, big integers).
const KEY_GOLDEN: [string, string][] = [
  ["", "efd01f60ba992926"],
  ["a", "82a2a958a9bece5b"],
  ["foobar", "2c22194922d1672b"],
  ["é", "9d55ccb9ba86763b"],
  ["😀", "da89b0991f06f386"],
  ["user:42", "998817bee6718248"],
];

// Golden vectors: the published FNV-1a 64 values for "", "a", "foobar" (isthe.com/chongo/tech/comp/fnv),
// and values for multi-byte UTF-8 computed by an independent implementation over the UTF-8 bytes.
// Changing any of these moves every key to another segment.
const GOLDEN: [string, string][] = [
  ["", "cbf29ce484222325"],
  ["a", "af63dc4c8601ec8c"],
  ["foobar", "85944171f73967e8"],
  ["é", "0ac21707b7181e01"],
  ["😀", "feff073875020288"],
  ["user:42", "6c151ea4dcd221c2"],
];

describe("fnv1a64", () => {
  it.each(GOLDEN)("hashes %j to %s", (key, hex) => {
    expect(fnv1a64Hex(key)).toBe(hex);
    expect(fnv1a64Bytes(new TextEncoder().encode(key))).toBe(hex);
  });

  it.each(KEY_GOLDEN)("key hash of %j is %s", (key, hex) => {
    expect(keyHash64Hex(key)).toBe(hex);
  });

  it("agrees with the byte form on many random strings", () => {
    for (let i = 0; i < 500; i++) {
      const key = Array.from({ length: 1 + (i % 40) }, (_, j) =>
        String.fromCodePoint(((i * 7919 + j * 104729) % 0x2ffff) + 32),
      )
        .join("")
        .replace(/[\ud800-\udfff]/g, "x");
      expect(fnv1a64Hex(key)).toBe(fnv1a64Bytes(new TextEncoder().encode(key)));
    }
  });

  it("gives the same hash over bytes given in pieces as over them at once (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (pieces) => {
        const sum = new Fnv1a64();
        for (const p of pieces) sum.update(p);
        expect(sum.hex()).toBe(fnv1a64Bytes(Buffer.concat(pieces)));
      }),
    );
    expect(new Fnv1a64().hex()).toBe("cbf29ce484222325"); // nothing given: the offset basis
  });
});

describe("Segmenter", () => {
  it("maps keys to pinned segments (stable across processes and versions)", () => {
    const seg = new Segmenter(4096);
    expect(seg.segmentOf("user:42")).toBe(2456);
    expect(seg.segmentOf("a")).toBe(2090);
    expect(new Segmenter(100_000).segmentOf("foobar")).toBe(17239);
    expect(new Segmenter(100_000).segmentOf("😀")).toBe(85366);
  });

  it("puts hashes into equal ranges: segment = floor(hash · n / 2^64)", () => {
    for (const n of [1, 2, 3, 7, 4096, 100_000, 1 << 20]) {
      const seg = new Segmenter(n);
      for (const key of ["", "a", "foobar", "user:42"].filter(Boolean)) {
        const h = BigInt("0x" + keyHash64Hex(key));
        expect(seg.segmentOf(key)).toBe(Number((h * BigInt(n)) >> 64n));
      }
    }
  });

  it("takes the ASCII fast path and the general path to the same segment: floor(keyHash64 · n / 2^64)", () => {
    // ASCII keys take asciiKeySegment; a key with any other character falls back to keyHash64
    const key = fc.oneof(
      fc.string({
        unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)),
        minLength: 1,
        maxLength: 80,
      }),
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }).filter((k) => !k.includes("\ufffd")),
    );
    fc.assert(
      fc.property(key, fc.integer({ min: 1, max: 1 << 20 }), (k, n) => {
        const h = BigInt("0x" + keyHash64Hex(k));
        expect(new Segmenter(n, 4096).segmentOf(k)).toBe(Number((h * BigInt(n)) >> 64n));
      }),
      { numRuns: 2000 },
    );
  });

  it("spreads keys evenly", () => {
    const seg = new Segmenter(64);
    const counts = new Array(64).fill(0);
    for (let i = 0; i < 64_000; i++) counts[seg.segmentOf(`key-${i}`)]++;
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(150);
  });

  it("refuses a bad segment count", () => {
    expect(() => new Segmenter(0)).toThrow(/segment count/);
    expect(() => new Segmenter(1.5)).toThrow(/segment count/);
    expect(() => new Segmenter((1 << 20) + 1)).toThrow(/segment count/);
  });
});

describe("validateKey (hostile keys)", () => {
  it("refuses the empty key", () => expect(() => validateKey("", 1024)).toThrow(/empty/));
  it("refuses a 1 MB key", () =>
    expect(() => validateKey("x".repeat(1 << 20), 1024)).toThrow(/longer than 1024/));
  it("counts UTF-8 bytes, not characters", () => {
    expect(utf8Length("é😀a")).toBe(2 + 4 + 1);
    expect(() => validateKey("é".repeat(600), 1024)).toThrow(/1200 bytes/);
  });
  it("refuses lone surrogates (no UTF-8 form)", () =>
    expect(() => validateKey("ab\ud800c", 1024)).toThrow(/UTF-8/));
  it("refuses U+FFFD, what undecodable bytes become", () =>
    expect(() => validateKey("a\ufffdb", 1024)).toThrow(
      /holds U\+FFFD, the replacement character: bytes that are not UTF-8 turn into it/,
    ));
  it("refuses non-strings", () => expect(() => validateKey(42, 1024)).toThrow(/string/));
  it("decodes UTF-8 bytes strictly", () => {
    expect(decodeKeyBytes(new Uint8Array([0x68, 0x69]))).toBe("hi");
    expect(decodeKeyBytes(new Uint8Array([0xef, 0xbb, 0xbf, 0x68, 0x69]))).toBe("\uFEFFhi");
    expect(() => decodeKeyBytes(new Uint8Array([0xff, 0xfe, 0x41]))).toThrow(/not valid UTF-8/);
  });
});
