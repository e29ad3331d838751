/**
 * Seasonal ARIMA with automatic order selection, in the spirit of
 * Hyndman & Khandakar's auto.arima but smaller:
 *  - seasonal differencing when the seasonal strength exceeds 0.64,
 *  - ordinary differencing (up to 2) while the KPSS test rejects stationarity,
 *  - coefficients by conditional sum of squares, kept stationary/invertible by
 *    the partial-autocorrelation transform,
 *  - (p, q) from a small grid by AICc, then the seasonal (P, Q) for the winner.
 * Fitted on the most recent MAX_FIT_POINTS points: older history rarely changes
 * short-term ARIMA forecasts and the CSS cost is linear in the length.
 */
import { withIntervals } from "../interval.js";
import { nelderMead } from "../optimize.js";
import { seasonalStrength } from "../season.js";
import { mean, variance } from "../stats.js";
import type { FittedModel, Forecaster, SeriesInput } from "../types.js";
import {
  KPSS_CRITICAL_5PCT,
  cssResiduals,
  difference,
  expand,
  kpssStatistic,
  psiWeights,
  toStationary,
  type ArimaOrder,
  type LagTerms,
} from "./arima-core.js";

const MAX_FIT_POINTS = 3000;
const SEASONAL_STRENGTH_FOR_DIFFERENCING = 0.64;
const NON_SEASONAL_GRID: [number, number][] = [
  [0, 0],
  [1, 0],
  [0, 1],
  [1, 1],
  [2, 0],
  [0, 2],
  [2, 1],
  [1, 2],
];

interface ArimaFit {
  order: ArimaOrder;
  ar: LagTerms;
  ma: LagTerms;
  mu: number;
  sse: number;
  nEff: number;
  aicc: number;
}

function fitOrder(w: Float64Array, order: ArimaOrder, withMean: boolean): ArimaFit | undefined {
  const { p, q, P, Q, m } = order;
  const mu = withMean ? mean(w) : 0;
  const z = Float64Array.from(w, (v) => v - mu);
  const k = p + q + P + Q;
  const maxLag = p + P * m;
  const nEff = z.length - maxLag;
  if (nEff < 2 * (k + 2) + 8) return undefined;
  const build = (x: ArrayLike<number>): { ar: LagTerms; ma: LagTerms } => {
    const arNs = toStationary(Array.prototype.slice.call(x, 0, p));
    const maNs = toStationary(Array.prototype.slice.call(x, p, p + q)).map((v) => -v);
    const arS = toStationary(Array.prototype.slice.call(x, p + q, p + q + P));
    const maS = toStationary(Array.prototype.slice.call(x, p + q + P, k)).map((v) => -v);
    return { ar: expand(arNs, arS, m, -1), ma: expand(maNs, maS, m, 1) };
  };
  const scratch = new Float64Array(z.length);
  const objective = (x: Float64Array): number => {
    const { ar, ma } = build(x);
    return cssResiduals(z, ar, ma, scratch);
  };
  const res = nelderMead(objective, new Float64Array(k).fill(0.1), {
    maxEvaluations: 80 * k + 40,
    tolerance: 1e-6,
    step: 0.4,
  });
  if (!Number.isFinite(res.value)) return undefined;
  const { ar, ma } = build(res.x);
  const params = k + (withMean ? 1 : 0) + 1;
  const sigma2 = Math.max(res.value / nEff, 1e-300);
  // Every order is scored on the same n, the length of w (forecast::auto.arima's CSS AIC uses
  // n - d - D*m too): weighed by each order's own nEff, log(sigma2) would add (n - nEff) * log(units^2)
  // to the orders with longer lags, and the series' units (counts or thousands) would pick the order.
  const n = z.length;
  const aicc = n * Math.log(sigma2) + 2 * params + (2 * params * (params + 1)) / Math.max(1, n - params - 1);
  return { order, ar, ma, mu, sse: res.value, nEff, aicc };
}

/** Chooses D and d: seasonal strength for D, repeated KPSS tests for d. */
export function chooseDifferencing(y: Float64Array, m: number): { d: number; D: number } {
  let D = 0;
  if (m > 1 && y.length >= 3 * m && seasonalStrength(y, m) > SEASONAL_STRENGTH_FOR_DIFFERENCING) D = 1;
  let x = D ? difference(y, m) : y;
  let d = 0;
  while (d < 2 && x.length > 10 && variance(x) > 0 && kpssStatistic(x) > KPSS_CRITICAL_5PCT) {
    x = difference(x, 1);
    d++;
  }
  return { d, D };
}

class FittedArima implements FittedModel {
  readonly name = "arima";
  constructor(
    private readonly y: Float64Array,
    private readonly fit: ArimaFit,
    private readonly residuals: Float64Array,
    private readonly z: Float64Array,
  ) {}

  get order(): ArimaOrder {
    return this.fit.order;
  }

  forecast(h: number) {
    const { ar, ma, mu, order } = this.fit;
    const { d, D, m } = order;
    const z = this.z;
    const n = z.length;
    // extend z and the residuals into the future with zero future shocks
    const zz = new Float64Array(n + h);
    zz.set(z);
    const ee = new Float64Array(n + h);
    ee.set(this.residuals);
    for (let t = n; t < n + h; t++) {
      let pred = 0;
      for (let k = 0; k < ar.lags.length; k++) {
        const idx = t - ar.lags[k];
        pred += ar.coefs[k] * (idx >= 0 ? zz[idx] : 0);
      }
      for (let k = 0; k < ma.lags.length; k++) {
        const idx = t - ma.lags[k];
        if (idx >= 0) pred += ma.coefs[k] * ee[idx];
      }
      zz[t] = pred;
    }
    let fc = new Float64Array(h);
    for (let i = 0; i < h; i++) fc[i] = zz[n + i] + mu;
    // undo the differences, innermost (last applied) first
    const levels: Float64Array[] = [this.y];
    let x = this.y;
    if (D) levels.push((x = difference(x, m)));
    for (let i = 0; i < d; i++) levels.push((x = difference(x, 1)));
    for (let level = levels.length - 2; level >= 0; level--) {
      const base = levels[level];
      const lag = level === 0 && D ? m : 1;
      const out = new Float64Array(h);
      for (let i = 0; i < h; i++) {
        const prev = i - lag >= 0 ? out[i - lag] : base[base.length - lag + i];
        out[i] = prev + fc[i];
      }
      fc = out;
    }
    const sigma = Math.sqrt(this.fit.sse / Math.max(1, this.fit.nEff));
    const psi = psiWeights(ar, ma, d, D, m, h);
    const cum = new Float64Array(h);
    let acc = 0;
    for (let j = 0; j < h; j++) {
      acc += psi[j] * psi[j];
      cum[j] = acc;
    }
    return withIntervals(fc, (step) => sigma * Math.sqrt(cum[step - 1]));
  }
}

export const arima: Forecaster = {
  name: "arima",
  fit(series: SeriesInput) {
    const all = series.values;
    const y = all.length > MAX_FIT_POINTS ? all.slice(all.length - MAX_FIT_POINTS) : all;
    let m = Math.max(1, Math.round(series.season));
    if (y.length < 3 * m) m = 1;
    const { d, D } = chooseDifferencing(y, m);
    let w = D ? difference(y, m) : y;
    for (let i = 0; i < d; i++) w = difference(w, 1);
    // a mean on the differenced scale is a drift; beyond one difference it would be a quadratic trend
    const withMean = d + D <= 1;
    const base = { d, D, m };
    let best: ArimaFit | undefined;
    const consider = (f: ArimaFit | undefined): void => {
      if (f && (!best || f.aicc < best.aicc)) best = f;
    };
    const seasonalStart = m > 1 && D ? { P: 0, Q: 1 } : { P: 0, Q: 0 };
    for (const [p, q] of NON_SEASONAL_GRID)
      consider(fitOrder(w, { ...base, p, q, ...seasonalStart }, withMean));
    if (best && m > 1) {
      const { p, q } = (best as ArimaFit).order;
      for (const [P, Q] of [
        [0, 0],
        [1, 0],
        [0, 1],
        [1, 1],
      ]) {
        if (P === seasonalStart.P && Q === seasonalStart.Q) continue;
        consider(fitOrder(w, { ...base, p, q, P, Q }, withMean));
      }
    }
    if (!best) {
      best = fitOrder(w, { ...base, p: 0, q: 0, P: 0, Q: 0 }, withMean);
      if (!best) throw new Error("series too short for ARIMA");
    }
    const chosen = best as ArimaFit;
    const z = Float64Array.from(w, (v) => v - chosen.mu);
    const residuals = new Float64Array(z.length);
    cssResiduals(z, chosen.ar, chosen.ma, residuals);
    return new FittedArima(y, chosen, residuals, z);
  },
};
