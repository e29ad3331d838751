import { describe, expect, it } from "vitest";
import { backtestModel, planOrigins } from "../../../src/forecast/backtest.js";
import { MODELS } from "../../../src/forecast/models/registry.js";
import {
  HOURLY,
  expectAllFinite,
  meanAbsError,
  sinusoidWithTrend,
  stepChange,
  whiteNoise,
} from "./_series.js";

const H = 24;
const STRUCTURED = ["ets", "ets_fixed", "arima", "prophet", "mlp"];

describe("every model on a sinusoid with trend", () => {
  // Given three weeks of hourly data: level 100, slope 0.1/h, daily amplitude 20, noise sd 1
  const n = 24 * 21;
  const all = sinusoidWithTrend(n + H);
  const train = all.subarray(0, n);
  const actual = all.subarray(n);

  for (const name of STRUCTURED) {
    it(`${name} forecasts the next day within a few noise sds`, () => {
      // When the model forecasts a day ahead
      const f = MODELS[name]
        .fit({ values: train, intervalSeconds: HOURLY, season: 24, horizon: H })
        .forecast(H);
      // Then the error is small next to the amplitude (20) and the 80% interval mostly covers the truth
      expect(meanAbsError(f.mean, actual)).toBeLessThan(2);
      const covered = Array.from(actual).filter((v, i) => v >= f.lower[i] && v <= f.upper[i]).length;
      expect(covered / H).toBeGreaterThanOrEqual(0.6);
      expect(expectAllFinite(f.mean, f.lower, f.upper)).toBe(true);
    });
  }

  it("seasonal naive lags the trend by one season, and the non-seasonal baselines miss the cycle", () => {
    const fit = (name: string) =>
      MODELS[name].fit({ values: train, intervalSeconds: HOURLY, season: 24 }).forecast(H).mean;
    expect(meanAbsError(fit("seasonal_naive"), actual)).toBeLessThan(4);
    expect(meanAbsError(fit("naive"), actual)).toBeGreaterThan(8);
    expect(meanAbsError(fit("mean"), actual)).toBeGreaterThan(8);
  });
});

describe("a step change", () => {
  // Given a flat series at 10 that steps to 40 two thirds of the way through
  const all = stepChange(300 + H, 200);
  const train = all.subarray(0, 300);
  const actual = all.subarray(300);

  for (const name of ["seasonal_naive", "naive", "drift", "ets", "ets_fixed", "arima", "mlp"]) {
    it(`${name} forecasts the new level`, () => {
      const f = MODELS[name]
        .fit({ values: train, intervalSeconds: HOURLY, season: 1, horizon: H })
        .forecast(H);
      expect(meanAbsError(f.mean, actual)).toBeLessThan(2);
    });
  }

  it("prophet lands nearer the new level than the old (a piecewise-linear trend cannot jump)", () => {
    const f = MODELS.prophet
      .fit({ values: train, intervalSeconds: HOURLY, season: 1, horizon: H })
      .forecast(H);
    expect(meanAbsError(f.mean, actual)).toBeLessThan(15);
  });

  it("the mean model is dragged down by the old level", () => {
    const f = MODELS.mean.fit({ values: train, intervalSeconds: HOURLY, season: 1 }).forecast(H);
    expect(meanAbsError(f.mean, actual)).toBeGreaterThan(5);
  });
});

describe("white noise", () => {
  // Given noise around a constant: the best possible forecast is the mean
  const values = whiteNoise(24 * 14 + 72);
  const series = { values, intervalSeconds: HOURLY, season: 24 };
  const plan = planOrigins(values.length, H, 3, 48);
  const scores = Object.fromEntries(
    Object.entries(MODELS).map(([name, model]) => [name, backtestModel(series, model, plan).mase]),
  );

  it("no model beats the mean forecast by more than a little: there is no structure to find", () => {
    for (const name of Object.keys(MODELS)) expect(scores[name]).toBeGreaterThan(scores.mean * 0.9);
  });

  it("no structured model is much worse than the seasonal naive baseline", () => {
    for (const name of STRUCTURED) expect(scores[name]).toBeLessThan(scores.seasonal_naive * 1.1);
  });
});

describe("degenerate input never yields NaN or Infinity", () => {
  const cases: Record<string, Float64Array> = {
    "all zeros": new Float64Array(200),
    constant: new Float64Array(200).fill(7),
    "one point": Float64Array.of(3),
    "two points": Float64Array.of(3, 5),
    empty: new Float64Array(0),
    "shorter than two seasons": sinusoidWithTrend(30),
    "huge values": Float64Array.from({ length: 100 }, (_, i) => 1e300 * (1 + (i % 3))),
    "a single spike": Float64Array.from({ length: 120 }, (_, i) => (i === 60 ? 1e6 : 0)),
  };
  for (const [label, values] of Object.entries(cases)) {
    for (const name of Object.keys(MODELS)) {
      it(`${name} on ${label}`, () => {
        const f = MODELS[name].fit({ values, intervalSeconds: HOURLY, season: 24, horizon: 12 }).forecast(12);
        expect(f.mean.length).toBe(12);
        expect(expectAllFinite(f.mean, f.lower, f.upper)).toBe(true);
        if (label === "all zeros") expect(Array.from(f.mean).every((v) => Math.abs(v) < 1e-9)).toBe(true);
        if (label === "constant") expect(Array.from(f.mean).every((v) => Math.abs(v - 7) < 1e-6)).toBe(true);
      });
    }
  }
});

describe("a change of units", () => {
  // Given a count series that is all zeros but for one access near the end
  const counts = Float64Array.from({ length: 25 }, (_, i) => (i === 24 ? 1 : 0));

  it("arima picks the same order and scales its forecast with the series", () => {
    // When the same traffic is counted in thousandths and in thousands
    const fit = (k: number) =>
      MODELS.arima
        .fit({ values: counts.map((v) => v * k), intervalSeconds: HOURLY, season: 1, horizon: 3 })
        .forecast(3);
    const base = fit(1);
    // Then each forecast is the unit forecast times k (AICc used to weigh log(sigma^2) by each
    // candidate's own residual count, so the units decided between AR(2) and a constant mean)
    for (const k of [1e-3, 1e3]) {
      const f = fit(k);
      for (let i = 0; i < 3; i++) {
        expect(f.mean[i] / k).toBeCloseTo(base.mean[i], 9);
        expect(f.upper[i] / k).toBeCloseTo(base.upper[i], 9);
      }
    }
  });
});
