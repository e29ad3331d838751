/**
 * Inverse-MASE weighted combinations. Combining the best few models is a
 * cheap, well-documented way to cut error (the M4 competition's lesson);
 * selection only keeps the ensemble when it backtests better than the best
 * single member.
 */
import type { ModelBacktest } from "./backtest.js";
import type { Forecast, FittedModel, Forecaster, SeriesInput } from "./types.js";

export interface WeightedMember {
  name: string;
  weight: number;
}

/** Weights proportional to 1 / MASE over the best `size` models, summing to 1. */
export function inverseMaseWeights(results: ModelBacktest[], size: number): WeightedMember[] {
  const ranked = results.filter((r) => Number.isFinite(r.mase)).sort((a, b) => a.mase - b.mase);
  const top = ranked.slice(0, size);
  const raw = top.map((r) => 1 / Math.max(r.mase, 1e-6));
  const total = raw.reduce((a, b) => a + b, 0);
  return top.map((r, i) => ({ name: r.name, weight: total > 0 ? raw[i] / total : 1 / top.length }));
}

export function combine(parts: Forecast[], weights: number[]): Forecast {
  const h = parts.length ? parts[0].mean.length : 0;
  const out: Forecast = { mean: new Float64Array(h), lower: new Float64Array(h), upper: new Float64Array(h) };
  parts.forEach((p, k) => {
    for (let i = 0; i < h; i++) {
      out.mean[i] += weights[k] * p.mean[i];
      out.lower[i] += weights[k] * p.lower[i];
      out.upper[i] += weights[k] * p.upper[i];
    }
  });
  return out;
}

/** A Forecaster that fits every member and returns their weighted mean (and weighted bounds). */
export function ensembleOf(members: { model: Forecaster; weight: number }[]): Forecaster {
  return {
    name: "ensemble",
    fit(series: SeriesInput): FittedModel {
      const fitted = members.map((m) => m.model.fit(series));
      return {
        name: "ensemble",
        forecast: (h) =>
          combine(
            fitted.map((f) => f.forecast(h)),
            members.map((m) => m.weight),
          ),
      };
    },
  };
}
