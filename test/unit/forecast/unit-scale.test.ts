/**
 * Forecasting does not depend on the unit a series is given in: MASE is
 * scale-free, and a series of small values (1e-10, or 1e-200 whose squares
 * underflow) is fitted, scored and given a season exactly as the same series in
 * larger units.
 */
import { describe, expect, it } from "vitest";
import { evaluateSelection } from "../../../src/forecast/evaluate.js";
import { detectSeason } from "../../../src/forecast/season.js";
import { seededRandom, gaussian, scaled, unitScale } from "../../../src/forecast/stats.js";
import { MODELS } from "../../../src/forecast/models/registry.js";

/** 200 hourly points: a daily sine around 100 with noise. */
function series(): Float64Array {
  const rand = seededRandom(3);
  return Float64Array.from(
    { length: 200 },
    (_, i) => 100 + 50 * Math.sin((2 * Math.PI * i) / 24) + 5 * gaussian(rand),
  );
}

describe("unitScale", () => {
  it("is a power of two bringing the largest magnitude below 1 into [1, 2), and 1 otherwise", () => {
    for (const peak of [0.75, 1e-3, 3e-10, 1e-200, 1e-307]) {
      const k = unitScale([0, -peak, peak / 2]);
      expect(Math.log2(k) % 1).toBe(0);
      expect(peak * k).toBeGreaterThanOrEqual(1);
      expect(peak * k).toBeLessThan(2);
    }
    for (const x of [[1], [-3, 0.5], [0, 0], [], [1e300]]) expect(unitScale(x)).toBe(1);
    // below the normal range, as far as a finite power of two goes
    expect(unitScale([5e-320])).toBe(2 ** 1023);
  });
});

describe("a series in small units", () => {
  const base = series();
  const reference = evaluateSelection({ values: base, intervalSeconds: 3600, season: 24 }, { horizon: 24 });
  const mase = (e: typeof reference) => Object.fromEntries(e.models.map((m) => [m.name, m.mase]));

  for (const unit of [1e-3, 1e-10, 1e-200]) {
    it(`× ${unit}: the same season, the same MASE per model and the same selection`, () => {
      const values = scaled(base, unit);
      expect(detectSeason(values, 3600)).toBe(detectSeason(base, 3600));
      const e = evaluateSelection({ values, intervalSeconds: 3600, season: 24 }, { horizon: 24 });
      const got = mase(e);
      for (const [name, m] of Object.entries(mase(reference))) expect(got[name], name).toBeCloseTo(m, 9);
      expect(e.final.name).toBe(reference.final.name);
    });
  }

  it("forecasts in the series' own unit", () => {
    const unit = 1e-10;
    const f = MODELS.ets.fit({ values: scaled(base, unit), intervalSeconds: 3600, season: 24 }).forecast(24);
    const g = MODELS.ets.fit({ values: base, intervalSeconds: 3600, season: 24 }).forecast(24);
    for (let i = 0; i < 24; i++) expect(f.mean[i] / unit).toBeCloseTo(g.mean[i], 6);
  });
});
