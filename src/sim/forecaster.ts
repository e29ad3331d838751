/**
 * The simulator's forecaster: the real one from src/forecast (forecastMany),
 * wrapped as a batch function. By default every series gets forecastMany's
 * budget tier (seasonal naive or fixed damped Holt-Winters, picked by a
 * backtest per call): a replay forecasts every segment's total every few
 * intervals (the zones' shares come from zone-shares.ts), and full selection
 * for the hottest series (maxHot > 0) was both slower (minutes instead of
 * seconds per trace) and no better on the traces we tried (docs/PLACEMENT.md). The simulator takes any BatchForecast,
 * so tests can pass a deterministic stub.
 */
import { forecastMany, ModelSelectionCache } from "../forecast/index.js";

export interface SeriesToForecast {
  id: string;
  values: Float64Array;
}

/** A forecast of one series: means and, optionally, an 80% interval (as src/forecast reports). */
export interface SeriesForecast {
  mean: ArrayLike<number>;
  lower?: ArrayLike<number>;
  upper?: ArrayLike<number>;
}

/** Returns the forecast (length `horizon`) for each series, in order. */
export type BatchForecast = (
  series: readonly SeriesToForecast[],
  opts: { intervalSeconds: number; horizon: number },
) => SeriesForecast[];

export interface ForecasterStats {
  calls: number;
  series: number;
  models: Record<string, number>;
}

/** A BatchForecast over src/forecast's forecastMany, with its own selection cache. */
export function engineForecaster(opts: { hotFraction?: number; maxHot?: number } = { maxHot: 0 }): {
  forecast: BatchForecast;
  stats: ForecasterStats;
} {
  const cache = new ModelSelectionCache();
  const stats: ForecasterStats = { calls: 0, series: 0, models: {} };
  const forecast: BatchForecast = (series, o) => {
    stats.calls++;
    stats.series += series.length;
    const results = forecastMany([...series], {
      intervalSeconds: o.intervalSeconds,
      horizon: o.horizon,
      cache,
      hotFraction: opts.hotFraction,
      maxHot: opts.maxHot,
    });
    return results.map((r) => {
      stats.models[r.model] = (stats.models[r.model] ?? 0) + 1;
      return r.forecast;
    });
  };
  return { forecast, stats };
}
