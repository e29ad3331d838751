/**
 * The key hash: FNV-1a 64 over the key's UTF-8 bytes, then MurmurHash3's
 * 64-bit finaliser (fmix64). Both are published, language-neutral functions
 * (a client in any language computes the same segment), need no allocation
 * and are fast on short keys. The finaliser matters: segments are taken from
 * the TOP bits, and plain FNV-1a barely moves its top bits for keys that
 * differ in their last bytes (`key-1`, `key-2`, …). Pinned by golden vectors
 * in test/unit/engine/hash.test.ts — changing it moves every key.
 *
 * 64-bit arithmetic is emulated on two 32-bit halves: FNV's prime is
 * 2^40 + 0x1b3, so hash * prime = hash * 0x1b3 + (hash << 40).
 */

const OFFSET_HI = 0xcbf29ce4;
const OFFSET_LO = 0x84222325;
const TWO_POW_MINUS_32 = 2 ** -32;

/**
 * The hash of `key`, as [hi, lo] unsigned 32-bit halves, written into `out`.
 * When `out` has 4 slots, out[2] receives the key's UTF-8 length and out[3] is
 * 1 if the key has no faithful UTF-8 form (a lone surrogate, or U+FFFD — what
 * undecodable bytes become), so that validation needs no second pass.
 *
 * One FNV step is lo ^= byte, then (hi:lo) · 0x1b3 + ((hi:lo) << 40): the low
 * half by imul, the high half gets imul(hi, 0x1b3), lo << 8 and the carry out
 * of lo · 0x1b3, which is below 2^41 and so exact as a double; scaling it by
 * 2^-32 and truncating is that carry. This is the hot loop of every access
 * event: reading the characters (charCodeAt) costs more than the arithmetic.
 */
export function fnv1a64(key: string, out: Uint32Array = new Uint32Array(2)): Uint32Array {
  let hi = OFFSET_HI | 0;
  let lo = OFFSET_LO | 0;
  /** UTF-8 bytes beyond one per UTF-16 unit */
  let extra = 0;
  let invalid = 0;
  const n = key.length;
  for (let i = 0; i < n; i++) {
    let c = key.charCodeAt(i);
    if (c < 0x80) {
      lo ^= c;
      hi = (Math.imul(hi, 0x1b3) + (lo << 8) + (((lo >>> 0) * 0x1b3 * TWO_POW_MINUS_32) | 0)) | 0;
      lo = Math.imul(lo, 0x1b3);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < n ? key.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else invalid = 1;
    } else if (c === 0xfffd) invalid = 1;
    // a multi-byte UTF-8 sequence (a lone surrogate is hashed as itself and flagged invalid)
    let len: number;
    let byte0: number;
    if (c < 0x800) {
      len = 2;
      byte0 = 0xc0 | (c >> 6);
    } else if (c < 0x10000) {
      len = 3;
      byte0 = 0xe0 | (c >> 12);
    } else {
      len = 4;
      byte0 = 0xf0 | (c >> 18);
    }
    // a pair of UTF-16 units gives 4 bytes: 2 more than its units; a single unit len - 1 more
    extra += c >= 0x10000 ? 2 : len - 1;
    for (let k = 0; k < len; k++) {
      lo ^= k === 0 ? byte0 : 0x80 | ((c >> (6 * (len - 1 - k))) & 0x3f);
      hi = (Math.imul(hi, 0x1b3) + (lo << 8) + (((lo >>> 0) * 0x1b3 * TWO_POW_MINUS_32) | 0)) | 0;
      lo = Math.imul(lo, 0x1b3);
    }
  }
  out[0] = hi >>> 0;
  out[1] = lo >>> 0;
  if (out.length >= 4) {
    out[2] = n + extra;
    out[3] = invalid;
  }
  return out;
}

/** The hash as 16 lowercase hex digits (for golden vectors and display). */
export function fnv1a64Hex(key: string): string {
  const [hi, lo] = fnv1a64(key);
  return hex64(hi, lo);
}

function hex64(hi: number, lo: number): string {
  return (hi >>> 0).toString(16).padStart(8, "0") + (lo >>> 0).toString(16).padStart(8, "0");
}

/**
 * The low half of the last product mulHi computed: its second result, passed
 * without allocating (the engine is single-threaded and mulHi's callers read
 * it at once).
 */
let productLo = 0;

/** (ah:al) · (bh:bl) mod 2^64: returns the high half (as int32 bits), the low half in productLo. */
function mulHi(ah: number, al: number, bh: number, bl: number): number {
  const a0 = al & 0xffff;
  const a1 = al >>> 16;
  const b0 = bl & 0xffff;
  const b1 = bl >>> 16;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const p11 = a1 * b1;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  productLo = (mid << 16) | (p00 & 0xffff);
  return (p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16) + Math.imul(ah, bl) + Math.imul(al, bh)) | 0;
}

/**
 * MurmurHash3's fmix64 on (hi:lo): k ^= k >> 33; k *= c1; k ^= k >> 33;
 * k *= c2; k ^= k >> 33. Returns the high half; the low half is in productLo.
 */
function fmix64(hi: number, lo: number): number {
  lo ^= hi >>> 1;
  hi = mulHi(hi, lo, 0xff51afd7, 0xed558ccd);
  lo = productLo ^ (hi >>> 1);
  hi = mulHi(hi, lo, 0xc4ceb9fe, 0x1a85ec53);
  productLo ^= hi >>> 1;
  return hi;
}

/** The key hash (FNV-1a 64, then fmix64) as [hi, lo] in `out` (and, with 4 slots, fnv1a64's length and validity). */
export function keyHash64(key: string, out: Uint32Array = new Uint32Array(2)): Uint32Array {
  fnv1a64(key, out);
  out[0] = fmix64(out[0], out[1]) >>> 0;
  out[1] = productLo >>> 0;
  return out;
}

/**
 * floor(hash · segmentCount / 2^64) for the hash (hi:lo), computed from the
 * halves without losing precision (segmentCount ≤ 2^20: every partial sum stays below 2^53).
 */
export function segmentOfHash(hi: number, lo: number, segmentCount: number): number {
  return Math.floor(
    ((hi >>> 0) * segmentCount + Math.floor((lo >>> 0) * segmentCount * TWO_POW_MINUS_32)) * TWO_POW_MINUS_32,
  );
}

/**
 * The segment of a key made only of ASCII characters (each one UTF-8 byte),
 * or -1 at the first character that is not: keyHash64 and segmentOfHash in
 * one pass, with no typed-array round trips. This is the hot path of every
 * access event; the general path handles everything else.
 */
export function asciiKeySegment(key: string, segmentCount: number): number {
  let hi = OFFSET_HI | 0;
  let lo = OFFSET_LO | 0;
  const n = key.length;
  for (let i = 0; i < n; i++) {
    const c = key.charCodeAt(i);
    if (c >= 0x80) return -1;
    lo ^= c;
    hi = (Math.imul(hi, 0x1b3) + (lo << 8) + (((lo >>> 0) * 0x1b3 * TWO_POW_MINUS_32) | 0)) | 0;
    lo = Math.imul(lo, 0x1b3);
  }
  hi = fmix64(hi, lo);
  return segmentOfHash(hi, productLo, segmentCount);
}

export function keyHash64Hex(key: string): string {
  const h = keyHash64(key);
  return hex64(h[0], h[1]);
}

/** FNV-1a 64 over raw bytes (used for checksums of plain data, never for keys). */
export function fnv1a64Bytes(bytes: Uint8Array): string {
  return new Fnv1a64().update(bytes).hex();
}

/**
 * FNV-1a 64 over bytes given in pieces: update() with each piece in turn,
 * then hex() is fnv1a64Bytes of their concatenation. For a checksum computed
 * a step at a time (AccessWindows.serializeStream).
 */
export class Fnv1a64 {
  private hi = OFFSET_HI | 0;
  private lo = OFFSET_LO | 0;

  update(bytes: Uint8Array): this {
    let hi = this.hi;
    let lo = this.lo;
    for (let i = 0; i < bytes.length; i++) {
      lo ^= bytes[i];
      hi =
        (Math.imul(hi, 0x1b3) +
          (lo << 8) +
          ((((lo >>> 16) * 0x1b3 + (((lo & 0xffff) * 0x1b3) >>> 16)) >>> 16) | 0)) |
        0;
      lo = Math.imul(lo, 0x1b3);
    }
    this.hi = hi;
    this.lo = lo;
    return this;
  }

  /** The 16 hex digits of the hash so far. */
  hex(): string {
    return (this.hi >>> 0).toString(16).padStart(8, "0") + (this.lo >>> 0).toString(16).padStart(8, "0");
  }
}
