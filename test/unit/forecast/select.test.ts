import { describe, expect, it } from "vitest";
import { ModelSelectionCache } from "../../../src/forecast/cache.js";
import { chooseFromBacktests, selectModel, selectModelSteps } from "../../../src/forecast/select.js";
import { predictAccessPattern, predictAccessPatternSteps } from "../../../src/forecast/access.js";
import { FULL_CANDIDATES } from "../../../src/forecast/models/registry.js";
import { evaluateSelection } from "../../../src/forecast/evaluate.js";
import { planOrigins, type ModelBacktest } from "../../../src/forecast/backtest.js";
import { HOURLY, sinusoidWithTrend, whiteNoise } from "./_series.js";

describe("planOrigins", () => {
  it("places origins one horizon apart, ending one horizon before the end", () => {
    expect(planOrigins(100, 10, 3, 20)).toEqual({ origins: [70, 80, 90], horizon: 10 });
  });

  it("shrinks the horizon, then the count, when the series is short", () => {
    expect(planOrigins(50, 20, 3, 20)).toEqual({ origins: [20, 30, 40], horizon: 10 });
    expect(planOrigins(22, 20, 3, 20)).toEqual({ origins: [20, 21], horizon: 1 });
    expect(planOrigins(10, 5, 3, 20).origins).toEqual([]);
  });
});

describe("selectModel", () => {
  it("prefers a seasonal model over the non-seasonal baselines on a clean cycle", () => {
    const series = { values: sinusoidWithTrend(24 * 14), intervalSeconds: HOURLY, season: 24 };
    const s = selectModel(series, { horizon: 24, candidates: ["drift", "seasonal_naive", "ets"] });
    expect(s.results.map((r) => r.name)).toEqual(["drift", "seasonal_naive", "ets"]);
    expect(["ets", "ensemble"]).toContain(s.choice.name);
    const byName = Object.fromEntries(s.results.map((r) => [r.name, r.mase]));
    expect(byName.ets).toBeLessThan(byName.drift);
    expect(s.mase).toBeLessThanOrEqual(Math.min(...s.results.map((r) => r.mase)));
  });

  it("can be run a step at a time (selectModelSteps): a step per candidate's fit at each origin, the same selection", () => {
    const series = { values: sinusoidWithTrend(24 * 14), intervalSeconds: HOURLY, season: 24 };
    const opts = { horizon: 24, candidates: ["drift", "seasonal_naive", "ets"] };
    const steps = selectModelSteps(series, opts);
    let yields = 0;
    let r = steps.next();
    for (; !r.done; r = steps.next()) yields++;
    const whole = selectModel(series, opts);
    expect(yields).toBe(3 * whole.plan.origins.length);
    expect(r.value).toEqual(whole);
    // the same through the access-pattern API, which plans call a step at a time
    const perZone = { a: series.values, b: Float64Array.from(series.values, (x) => x / 2) };
    const options = { intervalSeconds: HOURLY, horizon: 24, season: 24, shares: { season: 24 } };
    const forecast = predictAccessPatternSteps(perZone, options);
    let turns = 0;
    let f = forecast.next();
    for (; !f.done; f = forecast.next()) turns++;
    expect(turns).toBeGreaterThan(FULL_CANDIDATES.length);
    expect(f.value).toEqual(predictAccessPattern(perZone, options));
  });

  it("falls back to seasonal naive when the series is too short to backtest", () => {
    const s = selectModel(
      { values: Float64Array.of(1, 2, 3), intervalSeconds: HOURLY, season: 1 },
      { horizon: 5 },
    );
    expect(s.choice.name).toBe("seasonal_naive");
    expect(s.results).toEqual([]);
  });
});

describe("chooseFromBacktests", () => {
  const plan = { origins: [4], horizon: 2 };
  const series = { values: Float64Array.of(0, 1, 0, 1, 10, 10), intervalSeconds: 60, season: 1 };
  const result = (name: string, f: number[], mase: number): ModelBacktest => ({
    name,
    mase,
    smape: 0,
    perOrigin: [],
    forecasts: [Float64Array.from(f)],
  });

  it("keeps the best single model when combining does not help", () => {
    const c = chooseFromBacktests(series, plan, [result("a", [10, 10], 0), result("b", [0, 0], 10)]);
    expect(c.choice).toEqual({ name: "a", members: [{ name: "a", weight: 1 }] });
  });

  it("picks the inverse-MASE ensemble when it scores lower", () => {
    // one model over-forecasts by 2, the other under-forecasts by 2: their average is exact
    const c = chooseFromBacktests(series, plan, [result("hi", [12, 12], 2), result("lo", [8, 8], 2)]);
    expect(c.choice.name).toBe("ensemble");
    expect(c.choice.members.map((m) => m.weight)).toEqual([0.5, 0.5]);
    expect(c.mase).toBe(0);
  });
});

describe("evaluateSelection", () => {
  it("scores the selection out of sample and reports one choice per origin", () => {
    const series = { values: whiteNoise(24 * 12), intervalSeconds: HOURLY, season: 24 };
    const e = evaluateSelection(series, { horizon: 24, candidates: ["seasonal_naive", "mean", "drift"] });
    expect(e.choices).toHaveLength(e.plan.origins.length);
    expect(e.models.map((m) => m.name)).toEqual(["seasonal_naive", "mean", "drift"]);
    // on noise the mean wins, and out-of-sample selection finds it (or an ensemble with it)
    expect(e.selected.mase).toBeLessThan(e.models[0].mase);
  });

  it("reports its progress after every model fit, ending at the total it announced", () => {
    const series = { values: whiteNoise(24 * 12), intervalSeconds: HOURLY, season: 24 };
    const opts = { horizon: 24, candidates: ["seasonal_naive", "mean", "drift"] };
    const seen: { fits: number; totalFits: number; stage: string }[] = [];
    const e = evaluateSelection(series, opts, (p) => seen.push(p));
    expect(seen.length).toBeGreaterThan(0);
    const total = seen[0].totalFits;
    expect(seen.map((p) => p.fits)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(seen.every((p) => p.totalFits === total)).toBe(true);
    // every model at every outer origin, then the inner selection at each outer origin
    expect(seen[0].stage).toBe("backtest seasonal_naive");
    expect(seen[total - 1].stage).toBe(
      `selection at origin ${e.plan.origins.length} of ${e.plan.origins.length}`,
    );
    expect(seen.filter((p) => p.stage.startsWith("backtest")).length).toBe(3 * e.plan.origins.length);
    // the same result as without a listener
    expect(evaluateSelection(series, opts).selected.mase).toBe(e.selected.mase);
  });
});

describe("ModelSelectionCache", () => {
  const choice = { name: "ets", members: [{ name: "ets", weight: 1 }] };

  it("returns the choice until the series grows past a threshold", () => {
    const cache = new ModelSelectionCache({ maxGrowthFraction: 0.1, maxGrowthPoints: 50 });
    cache.set("seg-1", 1000, choice);
    expect(cache.get("seg-1", 1000)).toEqual(choice);
    expect(cache.get("seg-1", 1050)).toEqual(choice);
    // more than 50 new points: revisit
    expect(cache.get("seg-1", 1051)).toBeUndefined();
    // more than 10% growth on a short series: revisit
    cache.set("seg-2", 100, choice);
    expect(cache.get("seg-2", 110)).toEqual(choice);
    expect(cache.get("seg-2", 111)).toBeUndefined();
    // a shorter series is a different series (e.g. a reset window): revisit
    expect(cache.get("seg-1", 999)).toBeUndefined();
    expect(cache.get("unknown", 10)).toBeUndefined();
    expect(cache.size).toBe(2);
  });
});
