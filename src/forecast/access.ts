/**
 * predictAccessPattern — the specification's predict_access_pattern: given a
 * segment's access counts per origin zone, the expected accesses per zone for
 * the next horizon, from the model that backtests best on each zone's series.
 * Pure: the caller reads the access windows and passes the numbers in.
 */
import type { ModelSelectionCache } from "./cache.js";
import { forecasterFor, selectModel, type ModelChoice } from "./select.js";
import { detectSeason } from "./season.js";
import { INTERVAL_LEVEL, INTERVAL_Z } from "./types.js";

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
}

export function predictAccessPattern(
  perZoneSeries: Record<string, Float64Array>,
  options: AccessPatternOptions,
): AccessPatternForecast {
  const horizon = Math.max(1, Math.floor(options.horizon));
  const zones: Record<string, ZoneForecast> = {};
  const totalMean = new Float64Array(horizon);
  const totalVar = new Float64Array(horizon);
  for (const zone of Object.keys(perZoneSeries).sort()) {
    const values = perZoneSeries[zone];
    const season = options.season ?? detectSeason(values, options.intervalSeconds);
    const input = { values, intervalSeconds: options.intervalSeconds, season, horizon };
    const key = `${options.cacheKey ?? ""}/${zone}`;
    let choice: ModelChoice | undefined = options.cache?.get(key, values.length);
    if (!choice) {
      choice = selectModel(input, { horizon }).choice;
      options.cache?.set(key, values.length, choice);
    }
    const f = forecasterFor(choice).fit(input).forecast(horizon);
    // access counts cannot be negative; clamp rather than report impossible traffic
    const clamp = (x: number): number => (Number.isFinite(x) ? Math.max(0, x) : 0);
    zones[zone] = {
      model: choice.name,
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
