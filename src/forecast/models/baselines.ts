/**
 * The baselines every other model must beat: naive (last value), seasonal
 * naive (the same point one season ago), drift (the line from the first to the
 * last point) and the mean. Intervals follow Hyndman & Athanasopoulos,
 * "Forecasting: Principles and Practice", section 5.5.
 */
import { withIntervals } from "../interval.js";
import { mean, rms } from "../stats.js";
import type { FittedModel, Forecaster, SeriesInput } from "../types.js";

function fitted(name: string, forecast: FittedModel["forecast"]): FittedModel {
  return { name, forecast };
}

/** Residual sd of the lag-k "same as k steps ago" forecast over the training data. */
function lagResidualSd(y: Float64Array, lag: number): number {
  if (y.length <= lag) return 0;
  const r = new Float64Array(y.length - lag);
  for (let i = lag; i < y.length; i++) r[i - lag] = y[i] - y[i - lag];
  return rms(r);
}

export const seasonalNaive: Forecaster = {
  name: "seasonal_naive",
  fit(series: SeriesInput): FittedModel {
    const y = series.values;
    const n = y.length;
    const m = Math.max(1, Math.round(series.season));
    // Too short for one full season: fall back to the last value.
    const lag = n >= m ? m : 1;
    const sigma = lagResidualSd(y, lag);
    return fitted("seasonal_naive", (h) => {
      const out = new Float64Array(h);
      if (n === 0) return withIntervals(out, () => 0);
      for (let i = 0; i < h; i++) out[i] = y[n - lag + (i % lag)];
      return withIntervals(out, (step) => sigma * Math.sqrt(Math.floor((step - 1) / lag) + 1));
    });
  },
};

export const naive: Forecaster = {
  name: "naive",
  fit(series) {
    return renamed(seasonalNaive.fit({ ...series, season: 1 }), "naive");
  },
};

function renamed(model: FittedModel, name: string): FittedModel {
  return { name, forecast: (h) => model.forecast(h) };
}

export const drift: Forecaster = {
  name: "drift",
  fit(series) {
    const y = series.values;
    const n = y.length;
    const slope = n > 1 ? (y[n - 1] - y[0]) / (n - 1) : 0;
    const resid = new Float64Array(Math.max(0, n - 1));
    for (let i = 1; i < n; i++) resid[i - 1] = y[i] - y[i - 1] - slope;
    const sigma = rms(resid);
    const last = n ? y[n - 1] : 0;
    return fitted("drift", (h) => {
      const out = new Float64Array(h);
      for (let i = 0; i < h; i++) out[i] = last + slope * (i + 1);
      return withIntervals(out, (step) => sigma * Math.sqrt(step * (1 + step / Math.max(1, n - 1))));
    });
  },
};

export const meanModel: Forecaster = {
  name: "mean",
  fit(series) {
    const y = series.values;
    const mu = mean(y);
    const resid = Float64Array.from(y, (v) => v - mu);
    const sigma = rms(resid) * Math.sqrt(1 + 1 / Math.max(1, y.length));
    return fitted("mean", (h) => withIntervals(new Float64Array(h).fill(mu), () => sigma));
  },
};

/**
 * Seasonal naive at the weekly period (in the series' own interval) when two
 * weeks of history exist: human-driven traffic repeats by weekday, which the
 * daily season cannot express. Without two weeks it is the seasonal naive.
 */
export const weeklyNaive: Forecaster = {
  name: "weekly_naive",
  fit(series) {
    const week = (7 * 86400) / series.intervalSeconds;
    const usable = Number.isInteger(week) && week > 1 && series.values.length >= 2 * week;
    return renamed(seasonalNaive.fit({ ...series, season: usable ? week : series.season }), "weekly_naive");
  },
};
