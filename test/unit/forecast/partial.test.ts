/**
 * The newest interval of the windows is still running: forecasts use its
 * expected whole count, so that they do not drop to nothing each time an
 * interval begins.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { demandFromWindows } from "../../../src/commands/plan.js";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { completeNewest, elapsedFraction } from "../../../src/forecast/partial.js";

describe("completeNewest", () => {
  it("is exact for a steady rate, however much of the interval has passed", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.01, max: 0.99, noNaN: true }),
        fc.integer({ min: 1, max: 1e6 }),
        (f, rate) => {
          const out = completeNewest([rate, rate, rate * f], f);
          expect(out[2]).toBeCloseTo(rate, 6);
        },
      ),
    );
  });

  it("moves from the previous interval's count at its start to its own count at its end", () => {
    expect(completeNewest([120, 0], 0)[1]).toBe(120);
    expect(completeNewest([120, 0], 0.5)[1]).toBe(30);
    expect(completeNewest([120, 40], 0.999)[1]).toBeCloseTo(40, 1);
  });

  it("leaves the other values, a single point and a finished interval as they are, and copies", () => {
    const xs = Float64Array.from([5, 7, 1]);
    const out = completeNewest(xs, 0.25);
    expect(Array.from(out.subarray(0, 2))).toEqual([5, 7]);
    expect(xs[2]).toBe(1);
    expect(Array.from(completeNewest([3], 0.1))).toEqual([3]);
    expect(Array.from(completeNewest([3, 4], 1))).toEqual([3, 4]);
    expect(Array.from(completeNewest([], 0.5))).toEqual([]);
  });

  it("treats a hostile fraction as no time elapsed or a finished interval, never NaN", () => {
    for (const f of [-1, -Infinity])
      expect(completeNewest([10, 2], f)[1]).toBe(completeNewest([10, 2], 0)[1]);
    expect(completeNewest([10, 0], -1)[1]).toBe(10);
    for (const f of [Number.NaN, Infinity, 2]) expect(completeNewest([10, 2], f)[1]).toBe(2);
  });

  it("elapsedFraction: the part of the interval holding now that has passed", () => {
    const m = Date.UTC(2026, 10, 27, 8, 40, 0);
    expect(elapsedFraction(m, 60)).toBe(0);
    expect(elapsedFraction(m + 15_000, 60)).toBe(0.25);
    expect(elapsedFraction(m + 59_999, 60)).toBeCloseTo(1, 3);
    expect(elapsedFraction(-30_000, 60)).toBe(0.5);
  });
});

describe("demand from the windows across an interval boundary", () => {
  it("does not drop to nothing in the first seconds of a new minute", () => {
    // Given 60 accesses from zone b in the last seconds of a minute
    const w = new AccessWindows({ segmentCount: 16, zones: ["a", "b", "c"] });
    const m0 = Date.UTC(2026, 10, 27, 8, 39, 0);
    for (let i = 0; i < 60; i++) w.record(3, true, 1, m0 + 50_000 + i * 100);
    const zoneB = (now: number) =>
      demandFromWindows(w, [3], ["a", "b", "c"], 3600, now).demand[0].predicted[1];
    // When the plan is made half a second before and half a second after the minute ends
    const before = zoneB(m0 + 59_500);
    const after = zoneB(m0 + 60_500);
    // Then both predict about the same demand from zone b (before: all of it was the unchanged forecast)
    expect(before).toBeGreaterThan(100);
    expect(after).toBeGreaterThan(0.8 * before);
    // and a whole silent minute later the demand has gone
    expect(zoneB(m0 + 121_000)).toBeLessThan(1);
  });
});
