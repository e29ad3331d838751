/**
 * The safety net around every non-trivial model: if fitting throws, or the
 * forecast is non-finite or implausible, the seasonal naive forecast is used
 * instead. Callers can therefore trust any Forecaster to return finite numbers.
 */
import { isPlausible } from "../interval.js";
import { minMax } from "../stats.js";
import type { Forecast, FittedModel, Forecaster, SeriesInput } from "../types.js";
import { seasonalNaive } from "./baselines.js";

export function guarded(inner: Forecaster): Forecaster {
  return {
    name: inner.name,
    fit(series: SeriesInput): FittedModel {
      const fallback = (): FittedModel => seasonalNaive.fit(series);
      let model: FittedModel;
      try {
        model = inner.fit(series);
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
