/**
 * Rolling-origin backtesting: fit on everything before an origin, forecast the
 * next H points, score against what happened; repeat for a few origins spaced
 * H apart at the end of the series so the test windows never overlap.
 */
import { runAtOnce } from "../engine/steps.js";
import { mase, seasonalNaiveMae, smape } from "./metrics.js";
import type { Forecast, Forecaster, SeriesInput } from "./types.js";

export interface OriginPlan {
  /** Index of the first forecast point for each origin, ascending. */
  origins: number[];
  horizon: number;
}

/** How many origins to use: more for short horizons, so that ~150 points are scored, 3 to 10. */
export function defaultOriginCount(horizon: number): number {
  return Math.max(3, Math.min(10, Math.ceil(150 / Math.max(1, horizon))));
}

/** The fewest training points an origin may leave: two seasons, and never fewer than 16. */
export function minTrainingPoints(season: number): number {
  return Math.max(16, 2 * Math.max(1, Math.round(season)));
}

/**
 * Places `count` origins H apart ending at n - H. If the series is too short,
 * the horizon shrinks first (a shorter test beats no test) and then the count.
 */
export function planOrigins(n: number, horizon: number, count: number, minTrain: number): OriginPlan {
  let h = Math.max(1, Math.floor(horizon));
  let k = Math.max(1, count);
  const room = n - minTrain;
  if (room < 1) return { origins: [], horizon: h };
  if (k * h > room) h = Math.max(1, Math.floor(room / k));
  if (k * h > room) k = Math.max(1, Math.floor(room / h));
  const origins: number[] = [];
  for (let i = k; i >= 1; i--) origins.push(n - i * h);
  return { origins, horizon: h };
}

export interface OriginScore {
  origin: number;
  mase: number;
  smape: number;
}

export interface ModelBacktest {
  name: string;
  mase: number;
  smape: number;
  perOrigin: OriginScore[];
  /** The point forecasts, one per origin, kept so ensembles can be scored without refitting. */
  forecasts: Float64Array[];
}

/** The MASE scale for a training prefix: seasonal naive if a full season exists, else naive. */
export function scaleFor(train: ArrayLike<number>, season: number): number {
  const m = Math.round(season);
  return seasonalNaiveMae(train, m > 1 && train.length > m ? m : 1);
}

export function scoreForecasts(
  series: SeriesInput,
  plan: OriginPlan,
  forecasts: Float64Array[],
  name: string,
): ModelBacktest {
  const y = series.values;
  const perOrigin: OriginScore[] = plan.origins.map((origin, i) => {
    const actual = y.subarray(origin, origin + plan.horizon);
    const scale = scaleFor(y.subarray(0, origin), series.season);
    return { origin, mase: mase(actual, forecasts[i], scale), smape: smape(actual, forecasts[i]) };
  });
  const avg = (f: (s: OriginScore) => number): number =>
    perOrigin.length ? perOrigin.reduce((s, o) => s + f(o), 0) / perOrigin.length : 0;
  return { name, mase: avg((o) => o.mase), smape: avg((o) => o.smape), perOrigin, forecasts };
}

export function backtestModel(series: SeriesInput, model: Forecaster, plan: OriginPlan): ModelBacktest {
  return runAtOnce(backtestModelSteps(series, model, plan));
}

/** backtestModel a step at a time: a step per origin (one fit and forecast). */
export function* backtestModelSteps(
  series: SeriesInput,
  model: Forecaster,
  plan: OriginPlan,
): Generator<void, ModelBacktest, void> {
  const forecasts: Float64Array[] = [];
  for (const origin of plan.origins) {
    forecasts.push(forecastFrom(series, model, origin, plan.horizon).mean);
    yield;
  }
  return scoreForecasts(series, plan, forecasts, model.name);
}

/** Fits on the points before `origin` and forecasts `horizon` steps. */
export function forecastFrom(
  series: SeriesInput,
  model: Forecaster,
  origin: number,
  horizon: number,
): Forecast {
  const train = { ...series, values: series.values.subarray(0, origin), horizon };
  return model.fit(train).forecast(horizon);
}
