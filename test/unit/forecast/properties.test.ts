/**
 * Property-based tests of the forecasting entry points on the series the
 * predict and plan commands and the simulator actually see: short, mostly
 * zeros, constant, spiky, one huge value, huge (up to the CSV reader's 1e15)
 * or tiny (1e-300) magnitudes, negative values. Every property is bounded (few
 * runs, short series, small horizons) so the file runs in a few seconds.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { predictAccessPattern } from "../../../src/forecast/access.js";
import { MAX_VALUE } from "../../../src/forecast/csv.js";
import { withIntervals } from "../../../src/forecast/interval.js";
import { forecastMany } from "../../../src/forecast/many.js";
import { FULL_CANDIDATES, MODELS } from "../../../src/forecast/models/registry.js";
import { detectSeason } from "../../../src/forecast/season.js";
import { selectModel } from "../../../src/forecast/select.js";
import { seededRandom } from "../../../src/forecast/stats.js";
import type { Forecast } from "../../../src/forecast/types.js";
import { HOURLY } from "./_series.js";

const SEASON = 24;
const MODEL_NAMES = Object.keys(MODELS);
const BASELINES = ["seasonal_naive", "weekly_naive", "naive", "drift", "mean"];

/** Poisson(lambda) by Knuth's method: fine for the small rates of per-segment counts. */
function poisson(rand: () => number, lambda: number): number {
  const limit = Math.exp(-lambda);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rand();
  } while (p > limit && k < 10_000);
  return k - 1;
}

/** Lengths around the edges of the models' rules: 1-3 points, one season, two seasons. */
const length = fc.oneof(
  fc.constantFrom(1, 2, 3, SEASON - 1, SEASON, SEASON + 1, 2 * SEASON - 1, 2 * SEASON, 2 * SEASON + 1),
  fc.integer({ min: 1, max: 60 }),
);

/** Integer access counts with Poisson noise, optionally following a daily cycle. */
const countSeries = fc
  .record({ n: length, seed: fc.integer(), rate: fc.constantFrom(0.05, 0.5, 3, 40), daily: fc.boolean() })
  .map(({ n, seed, rate, daily }) => {
    const rand = seededRandom(seed);
    return Float64Array.from({ length: n }, (_, i) =>
      poisson(rand, daily ? rate * (1 + Math.sin((2 * Math.PI * i) / SEASON)) : rate),
    );
  });

const magnitude = fc.constantFrom(1, 7, 1e6, MAX_VALUE, 1e-300);

/** Hostile but legal: every value finite and at most MAX_VALUE (what parseSeriesCsv lets through). */
const hostileSeries: fc.Arbitrary<Float64Array> = fc.oneof(
  length.map((n) => new Float64Array(n)),
  fc
    .tuple(
      length,
      fc.oneof(
        magnitude,
        magnitude.map((v) => -v),
      ),
    )
    .map(([n, v]) => new Float64Array(n).fill(v)),
  fc.tuple(length, fc.nat(), magnitude).map(([n, at, v]) => {
    const y = new Float64Array(n);
    y[at % n] = v;
    return y;
  }),
  fc.tuple(length, magnitude).map(([n, v]) => Float64Array.from({ length: n }, (_, i) => (i % 2 ? v : 0))),
  fc
    .tuple(length, fc.integer({ min: 1, max: 5 }), magnitude)
    .map(([n, burst, v]) => Float64Array.from({ length: n }, (_, i) => (i >= n - burst ? v * (i + 1) : 0))),
  countSeries,
  countSeries.map((y) => y.map((v) => -v)),
  fc
    .array(fc.double({ min: -MAX_VALUE, max: MAX_VALUE, noNaN: true }), { minLength: 1, maxLength: 60 })
    .map((a) => Float64Array.from(a)),
);

const horizon = fc.integer({ min: 1, max: 12 });
const season = fc.constantFrom(1, SEASON, 7);

/** Why a forecast breaks the contract, or "" when it keeps it. */
function contractBreach(f: Forecast, h: number): string {
  if (f.mean.length !== h || f.lower.length !== h || f.upper.length !== h) return "wrong length";
  for (let i = 0; i < h; i++) {
    const [lo, m, hi] = [f.lower[i], f.mean[i], f.upper[i]];
    if (![lo, m, hi].every(Number.isFinite)) return `step ${i}: not finite (${lo}, ${m}, ${hi})`;
    if (!(lo <= m && m <= hi)) return `step ${i}: not lower <= mean <= upper (${lo}, ${m}, ${hi})`;
  }
  return "";
}

const asArrays = (f: Forecast): number[][] => [Array.from(f.mean), Array.from(f.lower), Array.from(f.upper)];

describe("every registered model on hostile series", () => {
  it("returns finite, ordered forecasts of the asked length, the same every time", () => {
    fc.assert(
      fc.property(hostileSeries, season, horizon, fc.constantFrom(...MODEL_NAMES), (values, m, h, name) => {
        const fit = () =>
          MODELS[name].fit({ values, intervalSeconds: HOURLY, season: m, horizon: h }).forecast(h);
        const f = fit();
        expect(contractBreach(f, h)).toBe("");
        expect(asArrays(fit())).toEqual(asArrays(f));
      }),
      { numRuns: 150 },
    );
  });

  it("forecasts a constant series as that constant, and zeros as zeros", () => {
    fc.assert(
      fc.property(
        length,
        fc.oneof(
          fc.constant(0),
          magnitude,
          magnitude.map((v) => -v),
        ),
        season,
        horizon,
        fc.constantFrom(...MODEL_NAMES),
        (n, level, m, h, name) => {
          const values = new Float64Array(n).fill(level);
          const f = MODELS[name].fit({ values, intervalSeconds: HOURLY, season: m, horizon: h }).forecast(h);
          // prophet's ridge prior shrinks its coefficients a little (a relative 1e-4 on a short series)
          for (const v of f.mean) expect(Math.abs(v - level)).toBeLessThanOrEqual(1e-3 * Math.abs(level));
        },
      ),
      { numRuns: 200 },
    );
  });

  it("the baselines scale with the series", () => {
    fc.assert(
      fc.property(
        countSeries,
        season,
        horizon,
        fc.constantFrom(...BASELINES),
        fc.constantFrom(1e-3, 1 / 1024, 1e3, 1024, 1e9),
        (values, m, h, name, k) => {
          const fit = (y: Float64Array) =>
            MODELS[name].fit({ values: y, intervalSeconds: HOURLY, season: m, horizon: h }).forecast(h);
          const f = fit(values);
          const g = fit(values.map((v) => v * k));
          for (const key of ["mean", "lower", "upper"] as const) {
            for (let i = 0; i < h; i++) expect(g[key][i] / k).toBeCloseTo(f[key][i], 6);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("arima scales with the series: the units do not pick the order", () => {
    fc.assert(
      fc.property(countSeries, season, horizon, fc.constantFrom(1e-3, 1e3), (values, m, h, k) => {
        const fit = (y: Float64Array) =>
          MODELS.arima.fit({ values: y, intervalSeconds: HOURLY, season: m, horizon: h }).forecast(h);
        const f = fit(values);
        const g = fit(values.map((v) => v * k));
        const span = Math.max(1, ...values);
        for (let i = 0; i < h; i++) expect(Math.abs(g.mean[i] / k - f.mean[i])).toBeLessThan(1e-6 * span);
      }),
      { numRuns: 50 },
    );
  });
});

describe("interval computation", () => {
  it("keeps every bound finite and around the mean, even for a negative or non-finite sd", () => {
    // Up to 1e300: an sd near Number.MAX_VALUE overflows the bound to Infinity, on purpose — the
    // guarded wrapper then falls back to the baseline instead of passing on an exploded fit.
    const sd = fc.oneof(
      fc.double({ min: -1e300, max: 1e300 }),
      fc.constantFrom(1e300, -1e300, Infinity, -Infinity, NaN, 0, -0, Number.MIN_VALUE),
    );
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: -MAX_VALUE, max: MAX_VALUE, noNaN: true }), {
          minLength: 1,
          maxLength: 12,
        }),
        fc.array(sd, { minLength: 12, maxLength: 12 }),
        (means, sds) => {
          const f = withIntervals(Float64Array.from(means), (step) => sds[step - 1]);
          expect(contractBreach(f, means.length)).toBe("");
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("forecastMany on a batch of hostile series", () => {
  it("answers every series in order with a contract-keeping forecast, the same every time", () => {
    fc.assert(
      fc.property(
        fc.array(hostileSeries, { minLength: 1, maxLength: 3 }),
        horizon,
        fc.option(season, { nil: undefined }),
        (batch, h, m) => {
          const run = () =>
            forecastMany(
              batch.map((values, i) => ({ id: `s${i}`, values })),
              { intervalSeconds: HOURLY, horizon: h, season: m, hotFraction: 0.4, maxHot: 1 },
            );
          const out = run();
          expect(out.map((r) => r.id)).toEqual(batch.map((_, i) => `s${i}`));
          out.forEach((r, i) => {
            expect(contractBreach(r.forecast, h)).toBe("");
            expect(Number.isInteger(r.season) && r.season >= 1).toBe(true);
            if (batch[i].every((v) => v === batch[i][0])) {
              // flat series (never accessed, or always the same) forecast exactly their level
              expect(r.tier).toBe("flat");
              expect(Array.from(r.forecast.mean).every((v) => v === batch[i][0])).toBe(true);
            }
          });
          expect(run().map((r) => [r.model, ...asArrays(r.forecast)])).toEqual(
            out.map((r) => [r.model, ...asArrays(r.forecast)]),
          );
        },
      ),
      { numRuns: 25 },
    );
  });
});

describe("selection and season detection on hostile series", () => {
  it("selectModel picks among the candidates with positive weights summing to 1", () => {
    fc.assert(
      fc.property(hostileSeries, season, horizon, (values, m, h) => {
        const sel = selectModel({ values, intervalSeconds: HOURLY, season: m, horizon: h }, { horizon: h });
        const members = sel.choice.members;
        for (const member of members) expect(FULL_CANDIDATES).toContain(member.name);
        expect(members.every((member) => member.weight > 0)).toBe(true);
        expect(members.reduce((s, member) => s + member.weight, 0)).toBeCloseTo(1, 9);
        // the score is NaN only when the series is too short to backtest at all
        expect(Number.isFinite(sel.mase) || sel.plan.origins.length === 0).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  it("selectModel refuses an empty or unknown candidate list with a clear error", () => {
    const values = Float64Array.from({ length: 200 }, (_, i) => 10 + Math.sin(i / 4));
    const series = { values, intervalSeconds: HOURLY, season: 24, horizon: 6 };
    expect(() => selectModel(series, { horizon: 6, candidates: [] })).toThrow(
      /needs at least one candidate model/,
    );
    expect(() => selectModel(series, { horizon: 6, candidates: ["no_such_model"] })).toThrow(
      /unknown model no_such_model/,
    );
  });

  it("detectSeason returns 1 or a period seen twice, regardless of the series' units", () => {
    fc.assert(
      fc.property(hostileSeries, fc.constantFrom(HOURLY, 900, 86400, 7), fc.boolean(), (values, iv, scan) => {
        const s = detectSeason(values, iv, { scan });
        expect(Number.isInteger(s) && s >= 1).toBe(true);
        if (s > 1) expect(2 * s).toBeLessThanOrEqual(values.length);
        expect(detectSeason(values, iv, { scan })).toBe(s);
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(countSeries, fc.constantFrom(1e-3, 1e3), (values, k) => {
        expect(
          detectSeason(
            values.map((v) => v * k),
            HOURLY,
          ),
        ).toBe(detectSeason(values, HOURLY));
      }),
      { numRuns: 100 },
    );
  });
});

describe("predictAccessPattern on hostile access counts", () => {
  it("never reports negative or non-finite traffic, per zone and in total", () => {
    const counts = hostileSeries.map((y) => y.map(Math.abs));
    fc.assert(
      fc.property(counts, counts, horizon, fc.boolean(), (a, b, h, shares) => {
        const n = Math.min(a.length, b.length);
        const p = predictAccessPattern(
          { a: a.subarray(0, n), b: b.subarray(0, n) },
          { intervalSeconds: HOURLY, horizon: h, shares: shares ? { season: SEASON } : undefined },
        );
        for (const z of [p.zones.a, p.zones.b, p.total]) {
          const f = {
            mean: Float64Array.from(z.mean),
            lower: Float64Array.from(z.lower),
            upper: Float64Array.from(z.upper),
          };
          expect(contractBreach(f, h)).toBe("");
          expect(z.lower.every((v) => v >= 0)).toBe(true);
        }
      }),
      { numRuns: 40 },
    );
  });
});
