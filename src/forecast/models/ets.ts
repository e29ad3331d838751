/**
 * Holt-Winters exponential smoothing (the ETS family without the likelihood
 * machinery): additive or multiplicative seasonality, optional damped trend,
 * smoothing parameters fitted by minimising the one-step SSE with Nelder-Mead.
 * `ets` tries the sensible configurations and keeps the one with the lowest
 * AICc; `ets_fixed` uses textbook parameters and no search, for cold series.
 */
import { withIntervals } from "../interval.js";
import { logistic, logit, nelderMead } from "../optimize.js";
import { seasonalProfile } from "../season.js";
import { mean } from "../stats.js";
import type { FittedModel, Forecaster, SeriesInput } from "../types.js";

export type Seasonality = "none" | "additive" | "multiplicative";

export interface EtsConfig {
  seasonality: Seasonality;
  /** false = no trend at all; true = damped additive trend (undamped trends over-shoot a day ahead). */
  trend: boolean;
}

export interface EtsParams {
  alpha: number;
  beta: number;
  gamma: number;
  phi: number;
}

interface EtsState {
  level: number;
  trend: number;
  /** Seasonal indices, indexed by (time mod m). */
  seasonal: Float64Array;
}

const PHI_MIN = 0.8;
const PHI_MAX = 0.98;

function initialState(y: Float64Array, m: number, cfg: EtsConfig): EtsState {
  const n = y.length;
  const seasonal = new Float64Array(Math.max(1, m));
  if (cfg.seasonality === "none" || m <= 1) {
    const k = Math.min(n, 10);
    const level = mean(y, 0, Math.max(1, Math.min(n, 3)));
    const trend = cfg.trend && k > 1 ? (y[k - 1] - y[0]) / (k - 1) : 0;
    if (cfg.seasonality === "multiplicative") seasonal.fill(1);
    return { level, trend, seasonal };
  }
  // The seasonal start comes from a decomposition of the whole history, not
  // the first cycle: one odd first day would otherwise shape every forecast
  // whenever the fitted gamma is small.
  const mult = cfg.seasonality === "multiplicative";
  seasonal.set(seasonalProfile(y, m, mult));
  const level = mean(y, 0, m);
  const trend = cfg.trend && n >= 2 * m ? (mean(y, m, 2 * m) - level) / m : 0;
  return { level, trend, seasonal };
}

/** The forecast steps the fitting criterion scores: 1 and up to three points across the horizon. */
export function criterionSteps(n: number, horizon: number): Int32Array {
  const h = Math.max(1, Math.min(horizon, Math.floor(n / 3)));
  return Int32Array.from(new Set([1, Math.ceil(h / 4), Math.ceil(h / 2), h]));
}

interface SmoothResult {
  /** One-step sum of squared errors: the noise level for intervals. */
  sse: number;
  /** Mean over the criterion steps of the mean squared h-step error: what is minimised. */
  amse: number;
  state: EtsState;
}

/**
 * Runs the smoothing recursions over y. Besides the one-step error it scores
 * the h-step forecasts made at every t for the criterion steps (Hyndman's
 * "amse" criterion): parameters fitted to one-step error alone drift to
 * alpha ~ 1, which tracks noise and forecasts a day ahead badly.
 * Allocation-free in the loop: it is the hot path of the parameter search.
 */
function smooth(
  y: Float64Array,
  m: number,
  cfg: EtsConfig,
  p: EtsParams,
  init: EtsState,
  steps: Int32Array,
  residuals?: Float64Array,
): SmoothResult {
  let l = init.level;
  let b = init.trend;
  const s = Float64Array.from(init.seasonal);
  const period = cfg.seasonality === "none" ? 1 : Math.max(1, m);
  const { alpha, beta, gamma } = p;
  const phi = cfg.trend ? p.phi : 0;
  const mult = cfg.seasonality === "multiplicative";
  const add = cfg.seasonality === "additive";
  const k = steps.length;
  const damp = new Float64Array(k);
  for (let j = 0; j < k; j++) {
    let acc = 0;
    let pw = 1;
    for (let i = 0; i < steps[j]; i++) acc += pw *= phi;
    damp[j] = acc;
  }
  const stepSse = new Float64Array(k);
  const stepCount = new Float64Array(k);
  let sse = 0;
  const n = y.length;
  for (let t = 0; t < n; t++) {
    const idx = t % period;
    const base = l + phi * b;
    const si = add || mult ? s[idx] : 0;
    const yhat = mult ? base * si : base + si;
    const e = y[t] - yhat;
    sse += e * e;
    if (residuals) residuals[t] = e;
    let lNew: number;
    if (mult) {
      lNew = alpha * (si !== 0 ? y[t] / si : y[t]) + (1 - alpha) * base;
      if (base !== 0) s[idx] = gamma * (y[t] / base) + (1 - gamma) * si;
    } else {
      lNew = alpha * (y[t] - si) + (1 - alpha) * base;
      if (add) s[idx] = gamma * (y[t] - base) + (1 - gamma) * si;
    }
    b = cfg.trend ? beta * (lNew - l) + (1 - beta) * phi * b : 0;
    l = lNew;
    for (let j = 1; j < k; j++) {
      const target = t + steps[j];
      if (target >= n) continue;
      const bh = l + damp[j] * b;
      const sh = add || mult ? s[target % period] : 0;
      const f = mult ? bh * sh : bh + sh;
      const err = y[target] - f;
      stepSse[j] += err * err;
      stepCount[j]++;
    }
    if (!(sse < 1e300)) break;
  }
  stepSse[0] = sse;
  stepCount[0] = n;
  let amse = 0;
  for (let j = 0; j < k; j++) amse += stepCount[j] ? stepSse[j] / stepCount[j] / k : 0;
  return { sse, amse, state: { level: l, trend: b, seasonal: s } };
}

function decode(x: Float64Array, cfg: EtsConfig): EtsParams {
  const alpha = 0.001 + 0.998 * logistic(x[0]);
  let k = 1;
  const beta = cfg.trend ? alpha * (0.001 + 0.998 * logistic(x[k++])) : 0;
  const gamma = cfg.seasonality !== "none" ? (1 - alpha) * (0.001 + 0.998 * logistic(x[k++])) : 0;
  const phi = cfg.trend ? PHI_MIN + (PHI_MAX - PHI_MIN) * logistic(x[k++]) : 0;
  return { alpha, beta, gamma, phi };
}

export const FIXED_PARAMS: EtsParams = { alpha: 0.3, beta: 0.05, gamma: 0.2, phi: 0.9 };

/** Fits one configuration; params fixed when given, searched otherwise. */
export function fitEts(series: SeriesInput, cfg: EtsConfig, fixed?: EtsParams, name = "ets"): FittedEts {
  const y = series.values;
  const m = cfg.seasonality === "none" ? 1 : Math.max(1, Math.round(series.season));
  const init = initialState(y, m, cfg);
  const steps = fixed
    ? Int32Array.of(1)
    : criterionSteps(y.length, series.horizon ?? Math.max(1, Math.round(series.season)));
  let params: EtsParams;
  let k: number;
  if (fixed) {
    params = fixed;
    k = 0;
  } else {
    const start = [logit(0.3)];
    if (cfg.trend) start.push(logit(0.1));
    if (cfg.seasonality !== "none") start.push(logit(0.2));
    if (cfg.trend) start.push(logit(0.5));
    const res = nelderMead((x) => smooth(y, m, cfg, decode(x, cfg), init, steps).amse, start, {
      maxEvaluations: 60 * start.length + 60,
      tolerance: 1e-6,
      step: 1,
    });
    params = decode(res.x, cfg);
    k = start.length;
  }
  const residuals = new Float64Array(y.length);
  const { state, sse, amse } = smooth(y, m, cfg, params, init, steps, residuals);
  return new FittedEts(cfg, m, params, state, sse, amse, y.length, k, name);
}

export class FittedEts implements FittedModel {
  readonly name: string;
  constructor(
    readonly config: EtsConfig,
    private readonly m: number,
    readonly params: EtsParams,
    private readonly state: EtsState,
    readonly sse: number,
    /** The fitting criterion's value (multi-step mean squared error). */
    readonly amse: number,
    private readonly n: number,
    private readonly paramCount: number,
    name = "ets",
  ) {
    this.name = name;
  }

  /**
   * An AICc-style score on the fitting criterion, for choosing among
   * configurations; the seasonal initial states count as parameters.
   */
  aicc(): number {
    const n = this.n;
    const k =
      this.paramCount +
      1 +
      (this.config.trend ? 1 : 0) +
      (this.config.seasonality !== "none" ? this.m - 1 : 0);
    const sigma2 = Math.max(this.amse, 1e-300);
    const base = n * Math.log(sigma2) + 2 * k;
    return n - k - 1 > 0 ? base + (2 * k * (k + 1)) / (n - k - 1) : Infinity;
  }

  forecast(h: number) {
    const { level, trend, seasonal } = this.state;
    const { alpha, beta, gamma, phi } = this.params;
    const m = this.m;
    const out = new Float64Array(h);
    let damp = 0;
    let phiPow = 1;
    const cfg = this.config;
    for (let i = 0; i < h; i++) {
      if (cfg.trend) {
        phiPow *= phi;
        damp += phiPow;
      }
      const base = level + damp * trend;
      const si = seasonal[(this.n + i) % Math.max(1, cfg.seasonality === "none" ? 1 : m)];
      out[i] =
        cfg.seasonality === "multiplicative" ? base * si : cfg.seasonality === "additive" ? base + si : base;
    }
    const sigma = Math.sqrt(this.sse / Math.max(1, this.n));
    // h-step variance of the additive damped model (Hyndman et al. 2008, class 1)
    const cum = new Float64Array(h + 1);
    let acc = 1;
    let phiJ = 0;
    let pw = 1;
    cum[1] = 1;
    for (let j = 1; j < h; j++) {
      if (cfg.trend) {
        pw *= phi;
        phiJ += pw;
      }
      const seasonalHit = cfg.seasonality !== "none" && j % m === 0 ? gamma : 0;
      const c = alpha * (1 + (cfg.trend ? (beta / Math.max(alpha, 1e-9)) * phiJ : 0)) + seasonalHit;
      acc += c * c;
      cum[j + 1] = acc;
    }
    return withIntervals(out, (step) => sigma * Math.sqrt(cum[Math.min(step, h)]));
  }
}

function seasonalConfigs(series: SeriesInput): EtsConfig[] {
  const y = series.values;
  const m = Math.round(series.season);
  const configs: EtsConfig[] = [
    { seasonality: "none", trend: false },
    { seasonality: "none", trend: true },
  ];
  // a seasonal component needs two full cycles to be estimated at all
  if (m > 1 && y.length >= 2 * m) {
    configs.push({ seasonality: "additive", trend: false }, { seasonality: "additive", trend: true });
    let positive = true;
    for (let i = 0; i < y.length; i++) if (!(y[i] > 0)) positive = false;
    if (positive) configs.push({ seasonality: "multiplicative", trend: true });
  }
  return configs;
}

export const ets: Forecaster = {
  name: "ets",
  fit(series) {
    let best: FittedEts | undefined;
    for (const cfg of seasonalConfigs(series)) {
      const f = fitEts(series, cfg);
      if (!best || f.aicc() < best.aicc()) best = f;
    }
    return best as FittedEts;
  },
};

/** Cheap tier: damped additive Holt-Winters with fixed textbook parameters, no search. */
export const etsFixed: Forecaster = {
  name: "ets_fixed",
  fit(series) {
    const m = Math.round(series.season);
    const seasonal = m > 1 && series.values.length >= 2 * m;
    const cfg: EtsConfig = { seasonality: seasonal ? "additive" : "none", trend: true };
    return fitEts(series, cfg, FIXED_PARAMS, "ets_fixed");
  },
};
