/**
 * Key → segment: the 64-bit key hash (keyHash64) mapped onto `segmentCount` equal hash
 * ranges. Segment s holds the hashes in [s·2^64/n, (s+1)·2^64/n).
 */
import { UsageError } from "../errors.js";
import { asciiKeySegment, keyHash64, segmentOfHash } from "./hash.js";

export const MAX_SEGMENTS = 1 << 20;

export class Segmenter {
  readonly segmentCount: number;
  readonly maxKeyBytes: number;
  private readonly scratch = new Uint32Array(4);
  /** Where segmentsOf's touch pass leaves its loads, so that they are not optimised away. */
  private touched = 0;

  constructor(segmentCount: number, maxKeyBytes = 1024) {
    if (!Number.isInteger(segmentCount) || segmentCount < 1 || segmentCount > MAX_SEGMENTS) {
      throw new UsageError(`segment count must be an integer from 1 to ${MAX_SEGMENTS}, got ${segmentCount}`);
    }
    this.segmentCount = segmentCount;
    this.maxKeyBytes = maxKeyBytes;
  }

  /**
   * The segment of a key, validating it in the same pass as the hash: a key
   * must be a non-empty, well-formed string of at most maxKeyBytes UTF-8 bytes.
   */
  segmentOf(key: string): number {
    if (typeof key !== "string" || key.length === 0 || key.length > this.maxKeyBytes) {
      validateKey(key, this.maxKeyBytes); // throws the precise error
    }
    // an ASCII key is well-formed and its UTF-8 length is its length, checked above
    const ascii = asciiKeySegment(key, this.segmentCount);
    if (ascii >= 0) return ascii;
    const h = keyHash64(key, this.scratch);
    if (h[3] !== 0 || h[2] > this.maxKeyBytes) validateKey(key, this.maxKeyBytes);
    return segmentOfHash(h[0], h[1], this.segmentCount);
  }

  /**
   * The segments of keys[from], keys[from + 1], … into out[0..n), each key
   * validated as segmentOf does (the first bad key throws). For batches of
   * events, before AccessWindows.recordBatch. A first pass reads one
   * character of every key, so that the cache misses on the keys' memory
   * overlap (measured: about a third less time per key for keys drawn at
   * random from 1,000,000) instead of following one another.
   */
  segmentsOf(keys: readonly string[], out: Uint32Array, from = 0, n = keys.length - from): Uint32Array {
    if (!Number.isInteger(from) || !Number.isInteger(n) || from < 0 || n < 0 || from + n > keys.length) {
      throw new UsageError(`keys ${from}..${from + n} are outside the ${keys.length} given`);
    }
    if (n > out.length) throw new UsageError(`${n} segments do not fit an array of ${out.length}`);
    // touch every key first: independent loads whose cache misses overlap, where the hash loop
    // (hundreds of instructions per key) would take them one at a time
    let touched = 0;
    for (let i = 0; i < n; i++) {
      const key = keys[from + i];
      if (typeof key === "string" && key.length > 0) touched += key.charCodeAt(0);
    }
    this.touched = touched;
    for (let i = 0; i < n; i++) out[i] = this.segmentOf(keys[from + i]);
    return out;
  }

  /** The first hash (as a 16-hex-digit string) of segment s's range, for display. */
  rangeStartHex(segment: number): string {
    const start = (BigInt(segment) << 64n) / BigInt(this.segmentCount);
    return start.toString(16).padStart(16, "0");
  }
}

/**
 * A key is a non-empty, well-formed Unicode string (no lone surrogates, so it
 * has a UTF-8 form) of at most maxKeyBytes UTF-8 bytes.
 */
export function validateKey(key: unknown, maxKeyBytes: number): asserts key is string {
  if (typeof key !== "string") throw new UsageError(`a key must be a string, got ${typeof key}`);
  if (key.length === 0)
    throw new UsageError("the key is empty", { hint: "keys are 1 or more bytes of UTF-8" });
  // quick bound before counting bytes: a UTF-16 unit is at most 3 UTF-8 bytes
  if (key.length > maxKeyBytes) {
    throw new UsageError(`the key is longer than ${maxKeyBytes} bytes (limits.maxKeyBytes)`, {
      hint: "use a shorter key, or raise limits.maxKeyBytes in the config",
    });
  }
  // U+FFFD is what undecodable bytes become when argv or a body is decoded leniently, so a key
  // holding it was not UTF-8 on the wire; refusing it keeps one key from aliasing many byte strings.
  if (!key.isWellFormed())
    throw new UsageError("the key is not valid UTF-8 (it holds a lone surrogate, which has no UTF-8 form)");
  if (key.includes("\ufffd")) {
    throw new UsageError(
      "the key holds U+FFFD, the replacement character: bytes that are not UTF-8 turn into it when decoded, so keys may not contain it (it would make one key of many byte strings)",
      {
        hint: "if the key was typed or generated as text, leave out U+FFFD; if it is bytes, encode them (e.g. as hex)",
      },
    );
  }
  const bytes = utf8Length(key);
  if (bytes > maxKeyBytes) {
    throw new UsageError(`the key is ${bytes} bytes; the limit is ${maxKeyBytes} (limits.maxKeyBytes)`, {
      hint: "use a shorter key, or raise limits.maxKeyBytes in the config",
    });
  }
}

export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/**
 * Decodes bytes that arrive as a key (argv, a file, the network) strictly: a
 * byte sequence that is not UTF-8 is an error, never silently replaced.
 */
export function decodeKeyBytes(bytes: Uint8Array): string {
  try {
    // ignoreBOM: a leading U+FEFF is part of the key, not a mark to strip
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new UsageError("the key is not valid UTF-8");
  }
}
