/**
 * The arithmetic of a seasonal ARIMA model: differencing, the expanded lag
 * polynomials, conditional-sum-of-squares residuals and psi weights. Order
 * selection lives in arima.ts.
 */

export interface ArimaOrder {
  p: number;
  d: number;
  q: number;
  P: number;
  D: number;
  Q: number;
  m: number;
}

/** A sparse lag polynomial: value_t = sum coef[i] * x_{t - lag[i]}. */
export interface LagTerms {
  lags: Int32Array;
  coefs: Float64Array;
  maxLag: number;
}

export function difference(x: Float64Array, lag: number): Float64Array {
  const out = new Float64Array(Math.max(0, x.length - lag));
  for (let i = lag; i < x.length; i++) out[i - lag] = x[i] - x[i - lag];
  return out;
}

/**
 * Maps unconstrained reals to the coefficients of a stationary AR polynomial
 * (Jones 1980: partial autocorrelations through tanh, then Durbin-Levinson).
 * Used for both AR and MA parts so that every fit is stationary and invertible.
 */
export function toStationary(x: ArrayLike<number>): Float64Array {
  const k = x.length;
  const phi = new Float64Array(k);
  const prev = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    const r = Math.tanh(x[i]) * 0.99;
    prev.set(phi);
    phi[i] = r;
    for (let j = 0; j < i; j++) phi[j] = prev[j] - r * prev[i - 1 - j];
  }
  return phi;
}

/** Inverse of toStationary, for warm starts: coefficients -> unconstrained reals. */
export function fromStationary(phi: ArrayLike<number>): Float64Array {
  const k = phi.length;
  let cur = Float64Array.from(phi);
  const x = new Float64Array(k);
  for (let i = k - 1; i >= 0; i--) {
    const r = Math.max(-0.9899, Math.min(0.9899, cur[i]));
    x[i] = Math.atanh(r / 0.99);
    const next = new Float64Array(i);
    const den = 1 - r * r;
    for (let j = 0; j < i; j++) next[j] = (cur[j] + r * cur[i - 1 - j]) / den;
    cur = next;
  }
  return x;
}

/**
 * Expands (1 + sum a_i B^i)(1 + A B^m) into sparse terms (excluding lag 0).
 * With sign = -1 the same routine expands AR polynomials written as
 * (1 - sum phi_i B^i)(1 - Phi B^m) into "predict from the past" coefficients.
 */
export function expand(
  nonSeasonal: ArrayLike<number>,
  seasonal: ArrayLike<number>,
  m: number,
  sign: 1 | -1,
): LagTerms {
  const terms = new Map<number, number>();
  const add = (lag: number, c: number): void => {
    terms.set(lag, (terms.get(lag) ?? 0) + c);
  };
  // polynomial 1 + sign*(...) ; we return coefficient c_k such that poly = 1 + sum c_k B^k,
  // then for AR (sign -1) the predictor uses -c_k.
  const a = Array.from(nonSeasonal, (v) => sign * v);
  const s = Array.from(seasonal, (v) => sign * v);
  for (let i = 0; i < a.length; i++) add(i + 1, a[i]);
  for (let j = 0; j < s.length; j++) {
    add((j + 1) * m, s[j]);
    for (let i = 0; i < a.length; i++) add((j + 1) * m + i + 1, a[i] * s[j]);
  }
  const lags: number[] = [];
  const coefs: number[] = [];
  for (const [lag, c] of [...terms.entries()].sort((x, y) => x[0] - y[0])) {
    if (c === 0) continue;
    lags.push(lag);
    coefs.push(sign === -1 ? -c : c);
  }
  return {
    lags: Int32Array.from(lags),
    coefs: Float64Array.from(coefs),
    maxLag: lags.length ? lags[lags.length - 1] : 0,
  };
}

/**
 * Conditional-sum-of-squares residuals of z (already differenced, mean removed):
 * e_t = z_t - sum ar_k z_{t-k} - sum ma_k e_{t-k}, starting once every AR lag exists.
 * Returns the SSE; fills `residuals` when given.
 */
export function cssResiduals(z: Float64Array, ar: LagTerms, ma: LagTerms, residuals?: Float64Array): number {
  const n = z.length;
  const start = ar.maxLag;
  const e = residuals ?? new Float64Array(n);
  e.fill(0, 0, Math.min(start, n));
  let sse = 0;
  const arL = ar.lags;
  const arC = ar.coefs;
  const maL = ma.lags;
  const maC = ma.coefs;
  for (let t = start; t < n; t++) {
    let pred = 0;
    for (let k = 0; k < arL.length; k++) pred += arC[k] * z[t - arL[k]];
    for (let k = 0; k < maL.length; k++) {
      const idx = t - maL[k];
      if (idx >= start) pred += maC[k] * e[idx];
    }
    const r = z[t] - pred;
    e[t] = r;
    sse += r * r;
    // an explosive recursion is a bad candidate, not a reason to keep summing
    if (!(sse < 1e300)) return Infinity;
  }
  return sse;
}

/** Dense polynomial product. */
function polyMul(a: number[], b: number[]): number[] {
  const out = new Array<number>(a.length + b.length - 1).fill(0);
  for (let i = 0; i < a.length; i++) for (let j = 0; j < b.length; j++) out[i + j] += a[i] * b[j];
  return out;
}

/**
 * psi weights of the full model (differencing included), for the h-step
 * forecast variance sigma^2 * sum_{j<h} psi_j^2.
 */
export function psiWeights(
  ar: LagTerms,
  ma: LagTerms,
  d: number,
  D: number,
  m: number,
  h: number,
): Float64Array {
  // AR side as dense 1 - sum a_k B^k, times the differencing operators
  const arDense = new Array<number>(ar.maxLag + 1).fill(0);
  arDense[0] = 1;
  for (let k = 0; k < ar.lags.length; k++) arDense[ar.lags[k]] -= ar.coefs[k];
  let full = arDense;
  for (let i = 0; i < d; i++) full = polyMul(full, [1, -1]);
  for (let i = 0; i < D; i++) {
    const s = new Array<number>(m + 1).fill(0);
    s[0] = 1;
    s[m] = -1;
    full = polyMul(full, s);
  }
  const maDense = new Float64Array(h);
  for (let k = 0; k < ma.lags.length; k++) if (ma.lags[k] < h) maDense[ma.lags[k]] = ma.coefs[k];
  const psi = new Float64Array(h);
  psi[0] = 1;
  for (let j = 1; j < h; j++) {
    let v = maDense[j];
    const upto = Math.min(j, full.length - 1);
    for (let k = 1; k <= upto; k++) v -= full[k] * psi[j - k];
    psi[j] = v;
  }
  return psi;
}

/** KPSS level-stationarity statistic with the Newey-West long-run variance ("short" lag). */
export function kpssStatistic(x: Float64Array): number {
  const n = x.length;
  if (n < 4) return 0;
  let mu = 0;
  for (let i = 0; i < n; i++) mu += x[i];
  mu /= n;
  let s = 0;
  let sumS2 = 0;
  let gamma0 = 0;
  for (let i = 0; i < n; i++) {
    const e = x[i] - mu;
    s += e;
    sumS2 += s * s;
    gamma0 += e * e;
  }
  const lags = Math.trunc(4 * Math.pow(n / 100, 0.25));
  let lrv = gamma0 / n;
  for (let l = 1; l <= lags; l++) {
    let g = 0;
    for (let i = l; i < n; i++) g += (x[i] - mu) * (x[i - l] - mu);
    lrv += (2 * (1 - l / (lags + 1)) * g) / n;
  }
  if (!(lrv > 0)) return 0;
  return sumS2 / (n * n * lrv);
}

/** 5% critical value of the KPSS level test (Kwiatkowski et al. 1992). */
export const KPSS_CRITICAL_5PCT = 0.463;
