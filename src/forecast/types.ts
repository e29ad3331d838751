/**
 * The shapes every forecasting model shares. A model is fitted once on a
 * series and then asked for any number of steps ahead; nothing here does I/O.
 */

/** A regularly spaced series: values[i] was observed at start + i * intervalSeconds. */
export interface SeriesInput {
  values: Float64Array;
  intervalSeconds: number;
  /** Season length in points; 1 (or less) means no seasonal component. */
  season: number;
  /**
   * How far ahead the forecast will be asked for. Models whose fitting
   * criterion can target it (multi-step error) use it; default: one season.
   */
  horizon?: number;
}

/**
 * A forecast H steps ahead. `lower`/`upper` bound an 80% prediction interval
 * (the level Prophet and most capacity tools report): wide enough to plan
 * with, narrow enough not to be useless on bursty traffic.
 */
export interface Forecast {
  mean: Float64Array;
  lower: Float64Array;
  upper: Float64Array;
}

/** The z-value of a central 80% normal interval. */
export const INTERVAL_Z = 1.2815515655446004;
export const INTERVAL_LEVEL = 0.8;

export interface FittedModel {
  /** The name of the model that actually produced the fit (a fallback reports its own name). */
  readonly name: string;
  forecast(horizon: number): Forecast;
}

export interface Forecaster {
  readonly name: string;
  /** Must not throw on degenerate input and must never yield NaN/Infinity. */
  fit(series: SeriesInput): FittedModel;
}
