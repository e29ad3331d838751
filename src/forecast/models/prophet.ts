/**
 * A Prophet-style decomposable model (Taylor & Letham 2017):
 *   y(t) = k t + c + sum_j delta_j (t - s_j)_+  +  Fourier seasonality,
 * with 25 candidate changepoints in the first 80% of the history and a
 * Gaussian (L2) prior on the rate changes, solved in one ridge regression by
 * Cholesky. Prophet's Laplace prior would need an iterative solver; L2
 * keeps the fit a single linear solve, which matters at thousands of series.
 * The prior scale follows Prophet's default (0.05 on a 0..1 time axis for a
 * max-scaled series); the noise variance it is weighed against is estimated
 * from a first, lightly regularised pass.
 */
import { withIntervals } from "../interval.js";
import { ridgeSolve } from "../linalg.js";
import { calendarPeriods } from "../season.js";
import type { FittedModel, Forecaster, SeriesInput } from "../types.js";

const CHANGEPOINTS = 25;
const CHANGEPOINT_RANGE = 0.8;
const CHANGEPOINT_PRIOR_SCALE = 0.05;
const SEASONALITY_PRIOR_SCALE = 10;
/** The design matrix is built over at most this many recent points. */
const MAX_FIT_POINTS = 4000;

interface Design {
  periods: { period: number; order: number }[];
  changepoints: number[];
  cols: number;
}

function seasonalTerms(series: SeriesInput, n: number): { period: number; order: number }[] {
  const periods = new Set<number>();
  const m = Math.round(series.season);
  if (m > 1) periods.add(m);
  for (const p of calendarPeriods(series.intervalSeconds)) periods.add(p);
  const out: { period: number; order: number }[] = [];
  for (const period of [...periods].sort((a, b) => a - b)) {
    // two full cycles before a seasonality is believed, as Prophet's auto rules do
    if (period < 2 || n < 2 * period) continue;
    const order = Math.min(period === m ? 10 : 4, Math.floor(period / 2));
    if (order >= 1) out.push({ period, order });
  }
  return out;
}

function fillRow(row: Float64Array, t: number, tScaled: number, d: Design): void {
  row[0] = 1;
  row[1] = tScaled;
  let c = 2;
  for (const s of d.changepoints) row[c++] = tScaled > s ? tScaled - s : 0;
  for (const { period, order } of d.periods) {
    const w = (2 * Math.PI * t) / period;
    for (let k = 1; k <= order; k++) {
      row[c++] = Math.sin(k * w);
      row[c++] = Math.cos(k * w);
    }
  }
}

class FittedProphet implements FittedModel {
  readonly name = "prophet";
  constructor(
    private readonly beta: Float64Array,
    private readonly design: Design,
    private readonly n: number,
    private readonly offset: number,
    private readonly scale: number,
    private readonly sigma: number,
    private readonly rateSd: number,
  ) {}

  forecast(h: number) {
    const out = new Float64Array(h);
    const row = new Float64Array(this.design.cols);
    const span = Math.max(1, this.n - 1);
    for (let i = 0; i < h; i++) {
      const t = this.offset + this.n + i;
      fillRow(row, t, (this.n + i) / span, this.design);
      let v = 0;
      for (let c = 0; c < row.length; c++) v += row[c] * this.beta[c];
      out[i] = v * this.scale;
    }
    // noise plus the trend uncertainty of rate changes like the ones seen in the history
    return withIntervals(out, (step) => {
      const trendSd = this.rateSd * (step / span) * this.scale;
      return Math.sqrt(this.sigma * this.sigma + trendSd * trendSd);
    });
  }
}

export const prophet: Forecaster = {
  name: "prophet",
  fit(series: SeriesInput) {
    const all = series.values;
    const offset = Math.max(0, all.length - MAX_FIT_POINTS);
    const y = offset ? all.subarray(offset) : all;
    const n = y.length;
    if (n < 4) throw new Error("too short");
    let scale = 0;
    for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(y[i]));
    if (!(scale > 0)) scale = 1;
    const ys = Float64Array.from(y, (v) => v / scale);
    const cps = Math.min(CHANGEPOINTS, Math.floor(n / 4));
    const changepoints: number[] = [];
    for (let j = 1; j <= cps; j++) changepoints.push((CHANGEPOINT_RANGE * j) / (cps + 1));
    const periods = seasonalTerms(series, n);
    const cols = 2 + changepoints.length + periods.reduce((s, p) => s + 2 * p.order, 0);
    const design: Design = { periods, changepoints, cols };
    const x = new Float64Array(n * cols);
    const row = new Float64Array(cols);
    const span = Math.max(1, n - 1);
    for (let i = 0; i < n; i++) {
      // the seasonal phase uses the absolute index so a window of the history stays aligned
      fillRow(row, offset + i, i / span, design);
      x.set(row, i * cols);
    }
    const penalty = new Float64Array(cols);
    const solve = (noiseVar: number): Float64Array | undefined => {
      penalty[0] = 1e-6;
      penalty[1] = 1e-6;
      for (let c = 2; c < 2 + changepoints.length; c++) {
        penalty[c] = noiseVar / (CHANGEPOINT_PRIOR_SCALE * CHANGEPOINT_PRIOR_SCALE);
      }
      for (let c = 2 + changepoints.length; c < cols; c++) {
        penalty[c] = noiseVar / (SEASONALITY_PRIOR_SCALE * SEASONALITY_PRIOR_SCALE);
      }
      return ridgeSolve(x, ys, n, cols, penalty);
    };
    const residualVar = (beta: Float64Array): number => {
      let s = 0;
      for (let i = 0; i < n; i++) {
        let v = 0;
        for (let c = 0; c < cols; c++) v += x[i * cols + c] * beta[c];
        s += (ys[i] - v) * (ys[i] - v);
      }
      return s / Math.max(1, n - 1);
    };
    const first = solve(1e-4);
    if (!first) throw new Error("singular design");
    const beta = solve(Math.max(residualVar(first), 1e-8)) ?? first;
    let rateSd = 0;
    for (let c = 2; c < 2 + changepoints.length; c++) rateSd += beta[c] * beta[c];
    rateSd = changepoints.length ? Math.sqrt(rateSd / changepoints.length) : 0;
    const sigma = Math.sqrt(residualVar(beta)) * scale;
    return new FittedProphet(beta, design, n, offset, scale, sigma, rateSd);
  },
};
