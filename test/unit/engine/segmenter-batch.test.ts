import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Segmenter, utf8Length, validateKey } from "../../../src/engine/segmenter.js";

describe("Segmenter.segmentsOf (the batch path)", () => {
  it("gives every key the segment segmentOf gives it", () => {
    const seg = new Segmenter(100_000);
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }), { maxLength: 50 }),
        (keys) => {
          const valid = keys.filter((k) => !k.includes("\ufffd"));
          const out = seg.segmentsOf(valid, new Uint32Array(valid.length));
          expect(Array.from(out)).toEqual(valid.map((k) => seg.segmentOf(k)));
        },
      ),
      { numRuns: 200 },
    );
  });

  it("takes a range of the keys", () => {
    const seg = new Segmenter(4096);
    const keys = ["a", "user:42", "b", "c"];
    const out = new Uint32Array(8).fill(7);
    seg.segmentsOf(keys, out, 1, 2);
    expect(Array.from(out.subarray(0, 3))).toEqual([seg.segmentOf("user:42"), seg.segmentOf("b"), 7]);
  });

  it("refuses a batch holding a bad key with the error segmentOf gives", () => {
    const seg = new Segmenter(64, 16);
    const out = new Uint32Array(4);
    expect(() => seg.segmentsOf(["ok", ""], out)).toThrow(/empty/);
    expect(() => seg.segmentsOf(["ok", "\ud800x"], out)).toThrow(/not valid UTF-8/);
    expect(() => seg.segmentsOf(["ok", "a\ufffd"], out)).toThrow(/holds U\+FFFD, the replacement character/);
    expect(() => seg.segmentsOf(["ok", "x".repeat(1 << 20)], out)).toThrow(/longer than/);
    expect(() => seg.segmentsOf(["ok", 5 as unknown as string], out)).toThrow(/must be a string/);
  });

  it("refuses ranges outside the keys and outputs too small", () => {
    const seg = new Segmenter(64);
    expect(() => seg.segmentsOf(["a", "b"], new Uint32Array(1))).toThrow(/do not fit/);
    expect(() => seg.segmentsOf(["a", "b"], new Uint32Array(4), 1, 2)).toThrow(/outside/);
    expect(() => seg.segmentsOf(["a", "b"], new Uint32Array(4), -1, 1)).toThrow(/outside/);
    expect(() => seg.segmentsOf(["a", "b"], new Uint32Array(4), 0.5, 1)).toThrow(/outside/);
  });
});

describe("Segmenter key validation in the hash pass", () => {
  it("counts UTF-8 bytes as validateKey does", () => {
    const seg = new Segmenter(64, 6);
    expect(() => seg.segmentOf("ééé")).not.toThrow(); // 6 bytes
    expect(() => seg.segmentOf("éééé")).toThrow(/8 bytes/);
    expect(() => seg.segmentOf("€€")).not.toThrow(); // 6 bytes
    expect(() => seg.segmentOf("€€a")).toThrow(/7 bytes/);
    expect(() => seg.segmentOf("😀a")).not.toThrow(); // 5 bytes
    expect(() => seg.segmentOf("😀😀")).toThrow(/8 bytes/);
  });

  it("throws exactly when validateKey does (property)", () => {
    const seg = new Segmenter(1024, 24);
    const unit = fc.oneof(
      fc.integer({ min: 0x20, max: 0x7e }),
      fc.integer({ min: 0x80, max: 0x7ff }),
      fc.integer({ min: 0xd800, max: 0xdfff }),
      fc.constant(0xfffd),
      fc.integer({ min: 0x800, max: 0xffff }),
    );
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 30 }), (units) => {
        const key = String.fromCharCode(...units);
        let expected: string | undefined;
        try {
          validateKey(key, 24);
        } catch (err) {
          expected = (err as Error).message;
        }
        if (expected === undefined) {
          expect(() => seg.segmentOf(key)).not.toThrow();
          expect(utf8Length(key)).toBeLessThanOrEqual(24);
        } else expect(() => seg.segmentOf(key)).toThrow(expected);
      }),
      { numRuns: 500 },
    );
  });
});
