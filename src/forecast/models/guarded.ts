/**
 * The safety net around every non-trivial model: if fitting throws, or the
 * forecast is non-finite or implausible, the seasonal naive forecast is used
 * instead. Callers can therefore trust any Forecaster to return finite numbers.
 * A series of small values (all below 1 in magnitude) is fitted scaled up by a
 * power of two (`unitScale`), and its forecast scaled back, so that a model's
 * absolute tolerances do not make its fit depend on the series' unit.
 */
import { isPlausible } from "../interval.js";
import { minMax, scaled, unitScale } from "../stats.js";
import type { Forecast, FittedModel, Forecaster, SeriesInput } from "../types.js";
import { seasonalNaive } from "./baselines.js";

export function guarded(inner: Forecaster): Forecaster {
  return {
    name: inner.name,
    fit(series: SeriesInput): FittedModel {
      const fallback = (): FittedModel => seasonalNaive.fit(series);
      const k = unitScale(series.values);
      let model: FittedModel;
      try {
        model =
          k === 1
            ? inner.fit(series)
            : unscaled(inner.fit({ ...series, values: scaled(series.values, k) }), k);
      } catch {
        return fallback();
      }
      const { min, max } = minMax(series.values);
      return {
        name: model.name,
        forecast(h: number): Forecast {
          try {
            const f = model.forecast(h);
            if (f.mean.length === h && isPlausible(f, min, max)) return f;
          } catch {
            // fall through to the baseline
          }
          return fallback().forecast(h);
        },
      };
    },
  };
}

/** A model fitted on the series times `k`, forecasting in the series' own unit. */
function unscaled(model: FittedModel, k: number): FittedModel {
  return {
    name: model.name,
    forecast(h: number): Forecast {
      const f = model.forecast(h);
      return { mean: scaled(f.mean, 1 / k), lower: scaled(f.lower, 1 / k), upper: scaled(f.upper, 1 / k) };
    },
  };
}
