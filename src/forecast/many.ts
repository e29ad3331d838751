/**
 * Forecasting thousands of series within a budget. Traffic is skewed: a few
 * segments carry most accesses, and only their forecasts move shards. So:
 *  - flat series (all equal, e.g. never accessed) get the seasonal naive
 *    forecast, which is exact for them;
 *  - cold series pick between seasonal naive and fixed-parameter damped
 *    Holt-Winters on one backtest origin (a few linear passes);
 *  - hot series (the top `hotFraction` by volume, at most `maxHot`) get full
 *    rolling-origin selection, remembered in the cache.
 */
import { planOrigins, backtestModel, minTrainingPoints } from "./backtest.js";
import type { ModelSelectionCache } from "./cache.js";
import { CHEAP_CANDIDATES, modelByName } from "./models/registry.js";
import { detectSeason } from "./season.js";
import { forecasterFor, selectModel, type ModelChoice } from "./select.js";
import type { Forecast } from "./types.js";

export interface NamedSeries {
  id: string;
  values: Float64Array;
}

export type Tier = "flat" | "cold" | "hot";

export interface ManyOptions {
  intervalSeconds: number;
  horizon: number;
  /** Season in points for every series; detected per series (daily/weekly only) when omitted. */
  season?: number;
  /** Share of series, by total volume, that get full selection (default 0.01). */
  hotFraction?: number;
  /** Upper bound on fully selected series per call (default 50): keeps the call's cost bounded. */
  maxHot?: number;
  cache?: ModelSelectionCache;
}

export interface ManyResult {
  id: string;
  tier: Tier;
  model: string;
  season: number;
  forecast: Forecast;
}

export function isFlat(v: Float64Array): boolean {
  for (let i = 1; i < v.length; i++) if (v[i] !== v[0]) return false;
  return true;
}

function volume(v: Float64Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += Math.abs(v[i]);
  return s;
}

/**
 * The series that get full selection: the busiest that are not flat, at most `maxHot` and
 * `hotFraction` of all (rounded up).
 */
export function hotSeries(values: readonly Float64Array[], hotFraction: number, maxHot: number): Set<number> {
  const volumes = values.map(volume);
  const ranked = values.map((_, i) => i).filter((i) => volumes[i] > 0 && !isFlat(values[i]));
  ranked.sort((a, b) => volumes[b] - volumes[a]);
  const hotCount = Math.min(maxHot, Math.ceil(values.length * hotFraction), ranked.length);
  return new Set(ranked.slice(0, hotCount));
}

/** The flat tier's model: seasonal naive, exact for a series that never changes. */
export const FLAT_CHOICE: ModelChoice = {
  name: "seasonal_naive",
  members: [{ name: "seasonal_naive", weight: 1 }],
};

/** Picks the cheaper-tier model on one origin: two linear-time fits. */
export function cheapChoice(
  values: Float64Array,
  intervalSeconds: number,
  season: number,
  horizon: number,
): ModelChoice {
  const series = { values, intervalSeconds, season };
  const plan = planOrigins(values.length, horizon, 1, minTrainingPoints(season));
  let best = CHEAP_CANDIDATES[0] as string;
  if (plan.origins.length) {
    let bestMase = Infinity;
    for (const name of CHEAP_CANDIDATES) {
      const r = backtestModel(series, modelByName(name), plan);
      if (r.mase < bestMase) {
        bestMase = r.mase;
        best = name;
      }
    }
  }
  return { name: best, members: [{ name: best, weight: 1 }] };
}

export function forecastMany(series: NamedSeries[], opts: ManyOptions): ManyResult[] {
  const hot = hotSeries(
    series.map((s) => s.values),
    opts.hotFraction ?? 0.01,
    opts.maxHot ?? 50,
  );

  return series.map((s, i): ManyResult => {
    const season = opts.season ?? detectSeason(s.values, opts.intervalSeconds, { scan: hot.has(i) });
    const input = { values: s.values, intervalSeconds: opts.intervalSeconds, season, horizon: opts.horizon };
    let tier: Tier;
    let choice: ModelChoice;
    if (isFlat(s.values)) {
      tier = "flat";
      choice = FLAT_CHOICE;
    } else if (hot.has(i)) {
      tier = "hot";
      const cached = opts.cache?.get(s.id, s.values.length);
      choice = cached ?? selectModel(input, { horizon: opts.horizon }).choice;
      if (!cached) opts.cache?.set(s.id, s.values.length, choice);
    } else {
      tier = "cold";
      choice = cheapChoice(s.values, opts.intervalSeconds, season, opts.horizon);
    }
    const forecast = forecasterFor(choice).fit(input).forecast(opts.horizon);
    return { id: s.id, tier, model: choice.name, season, forecast };
  });
}
