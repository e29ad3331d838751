import { describe, expect, it } from "vitest";
import { ModelSelectionCache } from "../../../src/forecast/cache.js";
import { forecastMany } from "../../../src/forecast/many.js";
import { predictAccessPattern } from "../../../src/forecast/access.js";
import { HOURLY, expectAllFinite, sinusoidWithTrend } from "./_series.js";

describe("forecastMany", () => {
  // Given 40 series: one loud, many quiet, some never accessed
  const series = Array.from({ length: 40 }, (_, i) => ({
    id: `s${i}`,
    values:
      i % 10 === 9
        ? new Float64Array(24 * 10)
        : sinusoidWithTrend(24 * 10, {
            level: i === 0 ? 10_000 : 10 + i,
            amplitude: i === 0 ? 2000 : 5,
            seed: i,
          }),
  }));

  it("gives full selection only to the hottest series, cheap models to the rest", () => {
    const cache = new ModelSelectionCache();
    const out = forecastMany(series, { intervalSeconds: HOURLY, horizon: 24, hotFraction: 0.025, cache });
    expect(out.map((r) => r.id)).toEqual(series.map((s) => s.id));
    expect(out.filter((r) => r.tier === "hot").map((r) => r.id)).toEqual(["s0"]);
    expect(out.filter((r) => r.tier === "flat")).toHaveLength(4);
    for (const r of out.filter((x) => x.tier === "cold"))
      expect(["seasonal_naive", "ets_fixed"]).toContain(r.model);
    for (const r of out) {
      expect(r.forecast.mean).toHaveLength(24);
      expect(expectAllFinite(r.forecast.mean, r.forecast.lower, r.forecast.upper)).toBe(true);
    }
    expect(out[0].season).toBe(24);
    // the hot series' choice is remembered
    expect(cache.get("s0", 240)?.name).toBe(out[0].model);
  });
});

describe("predictAccessPattern", () => {
  const perZone = {
    "eu-west": sinusoidWithTrend(24 * 8, { level: 50, amplitude: 30, slope: 0, seed: 1 }),
    "us-east": sinusoidWithTrend(24 * 8, { level: 5, amplitude: 10, slope: 0, seed: 2 }),
    idle: new Float64Array(24 * 8),
  };

  it("forecasts every zone and their total, never negative", () => {
    const p = predictAccessPattern(perZone, { intervalSeconds: HOURLY, horizon: 12 });
    expect(Object.keys(p.zones)).toEqual(["eu-west", "idle", "us-east"]);
    expect(p.horizon).toBe(12);
    expect(p.intervalSeconds).toBe(HOURLY);
    expect(p.intervalLevel).toBe(0.8);
    for (const z of [...Object.values(p.zones), p.total]) {
      expect(z.mean).toHaveLength(12);
      for (const arr of [z.mean, z.lower, z.upper]) {
        expect(arr.every((v) => Number.isFinite(v) && v >= 0)).toBe(true);
      }
      z.mean.forEach((m, i) => expect(z.lower[i]).toBeLessThanOrEqual(m + 1e-9));
    }
    expect(p.zones.idle.mean.every((v) => v === 0)).toBe(true);
    p.total.mean.forEach((m, i) =>
      expect(m).toBeCloseTo(
        p.zones["eu-west"].mean[i] + p.zones["us-east"].mean[i] + p.zones.idle.mean[i],
        6,
      ),
    );
    expect(p.total.model).toBe("sum_of_zones");
  });

  it("uses and fills the cache, keyed per segment and zone", () => {
    const cache = new ModelSelectionCache();
    const first = predictAccessPattern(perZone, {
      intervalSeconds: HOURLY,
      horizon: 12,
      cache,
      cacheKey: "seg-7",
    });
    expect(cache.size).toBe(3);
    expect(cache.get("seg-7/eu-west", 24 * 8)?.name).toBe(first.zones["eu-west"].model);
    const again = predictAccessPattern(perZone, {
      intervalSeconds: HOURLY,
      horizon: 12,
      cache,
      cacheKey: "seg-7",
    });
    expect(again).toEqual(first);
  });

  it("chooses by the cheap tier when asked (seasonal naive or fixed Holt-Winters), leaving the cache alone", () => {
    const cache = new ModelSelectionCache();
    const p = predictAccessPattern(perZone, {
      intervalSeconds: HOURLY,
      horizon: 12,
      cache,
      cacheKey: "seg-8",
      selection: "cheap",
    });
    expect(["seasonal_naive", "ets_fixed"]).toContain(p.zones["eu-west"].model);
    expect(["seasonal_naive", "ets_fixed"]).toContain(p.zones["us-east"].model);
    expect(p.zones.idle.model).toBe("seasonal_naive"); // flat: exact
    expect(p.zones.idle.mean.every((v) => v === 0)).toBe(true);
    expect(cache.size).toBe(0);
    for (const z of Object.values(p.zones))
      expect(z.mean.every((v) => Number.isFinite(v) && v >= 0)).toBe(true);
  });

  it("refuses a selection it does not know", () => {
    for (const selection of ["fast", "", "FULL", 1, null])
      expect(() =>
        predictAccessPattern(perZone, {
          intervalSeconds: HOURLY,
          horizon: 12,
          selection: selection as unknown as "full",
        }),
      ).toThrow(/selection must be "full" or "cheap"/);
  });
});

describe("predictAccessPattern with zone shares (top-down)", () => {
  // 40 accesses an hour in all; the dominant zone (80%) is "a" from 0 to 12 h and "b" from 12 to 24 h
  const days = 4;
  const perZone = { a: new Float64Array(24 * days), b: new Float64Array(24 * days) };
  for (let i = 0; i < 24 * days; i++) {
    const aDominant = i % 24 < 12;
    perZone.a[i] = aDominant ? 32 : 8;
    perZone.b[i] = aDominant ? 8 : 32;
  }

  it("splits the total's forecast by the share profile, and sees the change coming", () => {
    // history ends at 10 h: two hours before "b" takes over
    const cut = { a: perZone.a.subarray(0, 24 * 3 + 10), b: perZone.b.subarray(0, 24 * 3 + 10) };
    const p = predictAccessPattern(cut, { intervalSeconds: HOURLY, horizon: 6, shares: { season: 24 } });
    p.total.mean.forEach((m, i) => {
      expect(m).toBeCloseTo(p.zones.a.mean[i] + p.zones.b.mean[i], 6);
      expect(m).toBeCloseTo(40, 0);
    });
    expect(p.zones.a.mean[0]).toBeGreaterThan(p.zones.b.mean[0]);
    expect(p.zones.b.mean[4]).toBeGreaterThan(2 * p.zones.a.mean[4]);
    expect(p.zones.a.model).toMatch(/×shares$/);
    // every zone's interval is finite, never negative, and holds its mean
    for (const z of Object.values(p.zones)) {
      expect(z.lower.every((v, i) => v >= 0 && v <= z.mean[i] + 1e-9)).toBe(true);
      expect(z.upper.every((v) => Number.isFinite(v))).toBe(true);
    }
  });

  it("refuses zones of different lengths", () => {
    expect(() =>
      predictAccessPattern(
        { a: new Float64Array(50), b: new Float64Array(49) },
        { intervalSeconds: HOURLY, horizon: 6, shares: { season: 24 } },
      ),
    ).toThrow(/same length/);
  });
});
