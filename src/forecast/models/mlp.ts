/**
 * A small feed-forward neural autoregression (like R's nnetar): one hidden
 * tanh layer over the last few normalised values and the values one and two
 * seasons back, trained with Adam on squared error for a bounded number of
 * epochs with a deterministic seed, early-stopped on the most recent 10% of
 * windows. It learns the correction to the seasonal naive forecast rather
 * than the level itself: an untrained or confused network then degrades to
 * the baseline instead of running away during the recursive forecast. It is a
 * candidate like any other: model selection only picks it where it backtests
 * better.
 */
import { withIntervals } from "../interval.js";
import { gaussian, mean, seededRandom, variance } from "../stats.js";
import type { FittedModel, Forecaster, SeriesInput } from "../types.js";

const SHORT_LAGS = 6;
const HIDDEN = 8;
const EPOCHS = 25;
const BATCH = 32;
const LEARNING_RATE = 0.01;
const MAX_SAMPLES = 1500;
const SEED = 20240607;

interface Weights {
  w1: Float64Array; // HIDDEN x inputs
  b1: Float64Array;
  w2: Float64Array; // HIDDEN
  b2: Float64Array; // 1
}

function inputLags(n: number, m: number): number[] {
  const lags: number[] = [];
  for (let l = 1; l <= SHORT_LAGS; l++) lags.push(l);
  if (m > SHORT_LAGS) for (const l of [m, 2 * m]) if (l < n / 2) lags.push(l);
  return lags.filter((l) => l < n / 2);
}

/** Network output for the input vector stored at x[at .. at + inputs); fills `hidden`. */
function predictOne(wt: Weights, x: Float64Array, at: number, inputs: number, hidden: Float64Array): number {
  let out = wt.b2[0];
  for (let j = 0; j < HIDDEN; j++) {
    let a = wt.b1[j];
    const off = j * inputs;
    for (let i = 0; i < inputs; i++) a += wt.w1[off + i] * x[at + i];
    const hj = Math.tanh(a);
    hidden[j] = hj;
    out += wt.w2[j] * hj;
  }
  return out;
}

class FittedMlp implements FittedModel {
  readonly name = "mlp";
  constructor(
    private readonly anchor: number,
    private readonly z: Float64Array,
    private readonly lags: number[],
    private readonly weights: Weights,
    private readonly mu: number,
    private readonly sd: number,
    private readonly sigma: number,
    private readonly m: number,
  ) {}

  forecast(h: number) {
    const n = this.z.length;
    const zz = new Float64Array(n + h);
    zz.set(this.z);
    const x = new Float64Array(this.lags.length);
    const hidden = new Float64Array(HIDDEN);
    for (let t = n; t < n + h; t++) {
      for (let i = 0; i < this.lags.length; i++) x[i] = zz[t - this.lags[i]];
      // the correction is clamped so a run-away step cannot feed on itself
      const correction = Math.max(-3, Math.min(3, predictOne(this.weights, x, 0, this.lags.length, hidden)));
      zz[t] = zz[t - this.anchor] + correction;
    }
    const out = new Float64Array(h);
    for (let i = 0; i < h; i++) out[i] = zz[n + i] * this.sd + this.mu;
    // heuristic growth: recursive errors accumulate, but seasonal inputs re-anchor after a season
    const cap = Math.max(1, this.m);
    return withIntervals(out, (step) => this.sigma * Math.sqrt(1 + Math.min(step - 1, cap) / 2));
  }
}

export const mlp: Forecaster = {
  name: "mlp",
  fit(series: SeriesInput) {
    const y = series.values;
    const n = y.length;
    const m = Math.max(1, Math.round(series.season));
    const mu = mean(y);
    const sd = Math.sqrt(variance(y));
    const lags = inputLags(n, m);
    // the forecast is anchored on the same point one season back (the last point without a season)
    const anchor = m > 1 && lags.includes(m) ? m : 1;
    const maxLag = lags.length ? Math.max(...lags) : 0;
    if (!(sd > 0) || lags.length === 0 || n - maxLag < 20) throw new Error("not enough signal for the MLP");
    const z = Float64Array.from(y, (v) => (v - mu) / sd);
    const first = Math.max(maxLag, n - MAX_SAMPLES);
    const samples = n - first;
    const inputs = lags.length;
    const xs = new Float64Array(samples * inputs);
    const ts = new Float64Array(samples);
    for (let s = 0; s < samples; s++) {
      const t = first + s;
      for (let i = 0; i < inputs; i++) xs[s * inputs + i] = z[t - lags[i]];
      ts[s] = z[t] - z[t - anchor];
    }
    const valStart = Math.floor(samples * 0.9);
    const rand = seededRandom(SEED);
    const wt: Weights = {
      w1: Float64Array.from({ length: HIDDEN * inputs }, () => gaussian(rand) / Math.sqrt(inputs)),
      b1: new Float64Array(HIDDEN),
      // a zero output layer starts the network at "no correction" (the seasonal naive forecast), and
      // early stopping keeps that start unless training beats it on the held-out windows
      w2: new Float64Array(HIDDEN),
      b2: new Float64Array(1),
    };
    const params = [wt.w1, wt.b1, wt.w2, wt.b2];
    const grads = params.map((p) => new Float64Array(p.length));
    const m1 = params.map((p) => new Float64Array(p.length));
    const m2 = params.map((p) => new Float64Array(p.length));
    const hidden = new Float64Array(HIDDEN);
    const [gw1, gb1, gw2, gb2] = grads;
    const { w2 } = wt;
    const order = Array.from({ length: valStart }, (_, i) => i);
    let step = 0;
    const validationLoss = (): number => {
      let s = 0;
      for (let k = valStart; k < samples; k++) {
        const e = predictOne(wt, xs, k * inputs, inputs, hidden) - ts[k];
        s += e * e;
      }
      return samples > valStart ? s / (samples - valStart) : 0;
    };
    let best = params.map((p) => Float64Array.from(p));
    let bestLoss = validationLoss();
    for (let epoch = 0; epoch < EPOCHS; epoch++) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (let b = 0; b < order.length; b += BATCH) {
        for (const g of grads) g.fill(0);
        const end = Math.min(order.length, b + BATCH);
        for (let k = b; k < end; k++) {
          const s = order[k];
          const at = s * inputs;
          const err = predictOne(wt, xs, at, inputs, hidden) - ts[s];
          gb2[0] += err;
          for (let j = 0; j < HIDDEN; j++) {
            gw2[j] += err * hidden[j];
            const dh = err * w2[j] * (1 - hidden[j] * hidden[j]);
            gb1[j] += dh;
            const off = j * inputs;
            for (let i = 0; i < inputs; i++) gw1[off + i] += dh * xs[at + i];
          }
        }
        step++;
        const scaleGrad = 1 / (end - b);
        const c1 = 1 - Math.pow(0.9, step);
        const c2 = 1 - Math.pow(0.999, step);
        for (let p = 0; p < params.length; p++) {
          const w = params[p];
          for (let i = 0; i < w.length; i++) {
            const g = grads[p][i] * scaleGrad;
            m1[p][i] = 0.9 * m1[p][i] + 0.1 * g;
            m2[p][i] = 0.999 * m2[p][i] + 0.001 * g * g;
            w[i] -= (LEARNING_RATE * (m1[p][i] / c1)) / (Math.sqrt(m2[p][i] / c2) + 1e-8);
          }
        }
      }
      const loss = validationLoss();
      if (loss < bestLoss) {
        bestLoss = loss;
        best = params.map((p) => Float64Array.from(p));
      }
    }
    const trained: Weights = { w1: best[0], b1: best[1], w2: best[2], b2: best[3] };
    let sse = 0;
    for (let s = 0; s < samples; s++) {
      const e = predictOne(trained, xs, s * inputs, inputs, hidden) - ts[s];
      sse += e * e;
    }
    const sigma = Math.sqrt(sse / samples) * sd;
    return new FittedMlp(anchor, z, lags, trained, mu, sd, sigma, m);
  },
};
