import { describe, expect, it } from "vitest";
import { mase, seasonalNaiveMae, smape } from "../../../src/forecast/metrics.js";

describe("seasonalNaiveMae", () => {
  it("is the mean absolute change at the season lag", () => {
    // |3-1| + |4-2| + |10-3| over 3 differences at lag 2
    expect(seasonalNaiveMae([1, 2, 3, 4, 10], 2)).toBeCloseTo((2 + 2 + 7) / 3);
  });

  it("uses lag 1 when m <= 1", () => {
    expect(seasonalNaiveMae([1, 3, 6], 1)).toBeCloseTo(2.5);
    expect(seasonalNaiveMae([1, 3, 6], 0)).toBeCloseTo(2.5);
  });

  it("is 0 when the series is too short or constant", () => {
    expect(seasonalNaiveMae([5], 1)).toBe(0);
    expect(seasonalNaiveMae([7, 7, 7, 7], 2)).toBe(0);
  });
});

describe("mase", () => {
  it("divides the forecast MAE by the scale", () => {
    expect(mase([10, 20], [12, 16], 2)).toBeCloseTo((2 + 4) / 2 / 2);
  });

  it("stays finite when the scale is 0", () => {
    expect(mase([5, 5], [5, 5], 0)).toBe(0);
    expect(mase([5, 5], [6, 4], 0)).toBeCloseTo(1 / 5);
    expect(mase([0, 0], [1, 1], 0)).toBe(1);
  });

  it("scores by the level, not 0 nor Infinity, when the scale is negligible or the ratio overflows", () => {
    // a scale of 1e-300 under errors of 1e10: the ratio overflowed to Infinity, which was printed as 0
    expect(mase([1e10, 1e10], [0, 0], 1e-300)).toBe(1);
    expect(Number.isFinite(mase([1e10, 1e10], [0, 0], 1e-300))).toBe(true);
    // rounding left of an exactly periodic series (1e-14 of its level): the error relative to the level
    expect(mase([100, 100], [90, 110], 1e-12)).toBeCloseTo(10 / 100);
    // a perfect forecast still scores 0, and a small real scale still divides
    expect(mase([100, 100], [100, 100], 1e-12)).toBe(0);
    expect(mase([100, 100], [99, 101], 0.5)).toBeCloseTo(2);
  });

  it("is 0 for an empty forecast", () => {
    expect(mase([], [], 1)).toBe(0);
  });
});

describe("smape", () => {
  it("is 200 |e| / (|a| + |f|) averaged, in percent", () => {
    // 200*2/(10+12) and 200*0/(4+4)
    expect(smape([10, 4], [12, 4])).toBeCloseTo((200 * (2 / 22) + 0) / 2);
  });

  it("counts points where both are 0 as no error", () => {
    expect(smape([0, 0], [0, 0])).toBe(0);
    expect(smape([0], [5])).toBeCloseTo(200);
  });
});
