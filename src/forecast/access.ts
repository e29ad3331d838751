/**
 * predictAccessPattern — the specification's predict_access_pattern: given a
 * segment's access counts per origin zone, the expected accesses per zone for
 * the next horizon. Two methods:
 *  - per zone (default): the model that backtests best on each zone's series;
 *  - `shares`: top-down — the model that backtests best on the segment's
 *    total, split over the zones by their share profile over the season
 *    (zone-shares.ts). Better when each zone's series is sparse; the zones'
 *    intervals are then the shares' standard error around that split (the
 *    total's own interval is reported on `total`).
 * Pure: the caller reads the access windows and passes the numbers in.
 */
import { runAtOnce } from "../engine/steps.js";
import { UsageError } from "../errors.js";
import type { ModelSelectionCache } from "./cache.js";
import { forecasterFor, selectModelSteps, type ModelChoice } from "./select.js";
import { cheapChoice, FLAT_CHOICE, isFlat } from "./many.js";
import { detectSeason } from "./season.js";
import { INTERVAL_LEVEL, INTERVAL_Z } from "./types.js";
import { zoneShares } from "./zone-shares.js";

export interface ZoneForecast {
  /** The model (or "ensemble") that produced the forecast; "sum_of_zones" for the total. */
  model: string;
  mean: number[];
  lower: number[];
  upper: number[];
}

export interface AccessPatternForecast {
  zones: Record<string, ZoneForecast>;
  /** The sum over zones; its interval assumes the zones' errors are independent. */
  total: ZoneForecast;
  horizon: number;
  intervalSeconds: number;
  /** Central coverage of lower..upper (0.8). */
  intervalLevel: number;
}

export interface AccessPatternOptions {
  intervalSeconds: number;
  horizon: number;
  /** Season in points; detected per zone when omitted. */
  season?: number;
  /** Remembers each zone's model choice between calls. */
  cache?: ModelSelectionCache;
  /** Prefix of the cache keys (e.g. the segment id), so that zones of different segments do not collide. */
  cacheKey?: string;
  /**
   * Forecast the total and split it by the zones' share profile with this season (in points; 0: the
   * recent shares only; see chooseShareSeason), instead of forecasting each zone on its own.
   */
  shares?: {
    season: number;
    priorSpan?: number;
    /**
     * The zones' counts the shares are estimated from, when not the segment's own: its share
     * group's (shareGroups), each zone's series as long as the segment's.
     */
    pooled?: Record<string, ArrayLike<number>>;
  };
  /**
   * How the model is chosen: "full" (default) backtests every candidate on rolling origins
   * (selectModel, ~35 ms for a 60-point series); "cheap" is forecastMany's cold tier — seasonal
   * naive or fixed damped Holt-Winters on one origin, seasonal naive for a flat series — for the
   * many segments of a plan whose forecasts are not worth the full cost. The cache is not used.
   */
  selection?: "full" | "cheap";
}

// access counts cannot be negative; clamp rather than report impossible traffic
const clamp = (x: number): number => (Number.isFinite(x) ? Math.max(0, x) : 0);

function* fitChosen(
  values: Float64Array,
  key: string,
  options: AccessPatternOptions,
  horizon: number,
): Generator<void, { model: string; mean: Float64Array; lower: Float64Array; upper: Float64Array }, void> {
  const cheap = options.selection === "cheap";
  const season = options.season ?? detectSeason(values, options.intervalSeconds, { scan: !cheap });
  const input = { values, intervalSeconds: options.intervalSeconds, season, horizon };
  let choice: ModelChoice | undefined = cheap ? undefined : options.cache?.get(key, values.length);
  if (cheap) {
    choice = isFlat(values) ? FLAT_CHOICE : cheapChoice(values, options.intervalSeconds, season, horizon);
  } else if (!choice) {
    choice = (yield* selectModelSteps(input, { horizon })).choice;
    options.cache?.set(key, values.length, choice);
  }
  return { model: choice.name, ...forecasterFor(choice).fit(input).forecast(horizon) };
}

function* topDown(
  perZoneSeries: Record<string, Float64Array>,
  options: AccessPatternOptions & { shares: NonNullable<AccessPatternOptions["shares"]> },
  horizon: number,
): Generator<void, AccessPatternForecast, void> {
  const names = Object.keys(perZoneSeries).sort();
  const n = names.length ? perZoneSeries[names[0]].length : 0;
  for (const z of names) {
    if (perZoneSeries[z].length !== n) throw new UsageError("every zone's series must have the same length");
  }
  const totalSeries = new Float64Array(n);
  for (const z of names) {
    const s = perZoneSeries[z];
    for (let i = 0; i < n; i++) totalSeries[i] += clamp(s[i]);
  }
  const t = yield* fitChosen(totalSeries, `${options.cacheKey ?? ""}/total`, options, horizon);
  const pooled = options.shares.pooled;
  if (pooled) {
    const same = Object.keys(pooled).sort().join(",") === names.join(",");
    if (!same || names.some((z) => pooled[z].length !== n))
      throw new UsageError("the pooled share counts need the segment's zones, each as long as its series");
  }
  const counts = names.map((z) => pooled?.[z] ?? perZoneSeries[z]);
  const { share, support } = zoneShares(counts, n, horizon, {
    season: options.shares.season,
    priorSpan: options.shares.priorSpan,
  });
  const zones: Record<string, ZoneForecast> = {};
  names.forEach((z, zi) => {
    const mean: number[] = [];
    const lower: number[] = [];
    const upper: number[] = [];
    for (let i = 0; i < horizon; i++) {
      const m = clamp(t.mean[i]) * share[zi][i];
      const half =
        INTERVAL_Z * clamp(t.mean[i]) * Math.sqrt((share[zi][i] * (1 - share[zi][i])) / support[i]);
      mean.push(m);
      lower.push(Math.max(0, m - half));
      upper.push(m + half);
    }
    zones[z] = { model: `${t.model}×shares`, mean, lower, upper };
  });
  const total: ZoneForecast = {
    model: t.model,
    mean: Array.from(t.mean, clamp),
    lower: Array.from(t.lower, clamp),
    upper: Array.from(t.upper, clamp),
  };
  return { zones, total, horizon, intervalSeconds: options.intervalSeconds, intervalLevel: INTERVAL_LEVEL };
}

export function predictAccessPattern(
  perZoneSeries: Record<string, Float64Array>,
  options: AccessPatternOptions,
): AccessPatternForecast {
  return runAtOnce(predictAccessPatternSteps(perZoneSeries, options));
}

/**
 * predictAccessPattern a step at a time: full model selection yields after each candidate's fit
 * at each backtest origin, so that a caller forecasting on an event loop (a plan, the autopilot,
 * the dashboard) never holds it for a whole selection.
 */
export function* predictAccessPatternSteps(
  perZoneSeries: Record<string, Float64Array>,
  options: AccessPatternOptions,
): Generator<void, AccessPatternForecast, void> {
  if (options.selection !== undefined && options.selection !== "full" && options.selection !== "cheap") {
    throw new UsageError(`selection must be "full" or "cheap", got ${JSON.stringify(options.selection)}`);
  }
  const horizon = Math.max(1, Math.floor(options.horizon));
  if (options.shares) return yield* topDown(perZoneSeries, { ...options, shares: options.shares }, horizon);
  const zones: Record<string, ZoneForecast> = {};
  const totalMean = new Float64Array(horizon);
  const totalVar = new Float64Array(horizon);
  for (const zone of Object.keys(perZoneSeries).sort()) {
    const f = yield* fitChosen(perZoneSeries[zone], `${options.cacheKey ?? ""}/${zone}`, options, horizon);
    zones[zone] = {
      model: f.model,
      mean: Array.from(f.mean, clamp),
      lower: Array.from(f.lower, clamp),
      upper: Array.from(f.upper, clamp),
    };
    for (let i = 0; i < horizon; i++) {
      totalMean[i] += clamp(f.mean[i]);
      const sd = (f.upper[i] - f.lower[i]) / (2 * INTERVAL_Z);
      totalVar[i] += Number.isFinite(sd) ? sd * sd : 0;
    }
  }
  const half = Array.from(totalVar, (v) => INTERVAL_Z * Math.sqrt(v));
  const total: ZoneForecast = {
    model: "sum_of_zones",
    mean: Array.from(totalMean),
    lower: Array.from(totalMean, (m, i) => Math.max(0, m - half[i])),
    upper: Array.from(totalMean, (m, i) => m + half[i]),
  };
  return { zones, total, horizon, intervalSeconds: options.intervalSeconds, intervalLevel: INTERVAL_LEVEL };
}
