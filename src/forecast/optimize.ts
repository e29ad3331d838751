/**
 * Nelder-Mead simplex minimisation. Derivative-free, which suits the
 * recursive smoothing and CSS objectives whose gradients are awkward; bounds
 * are handled by the callers through smooth transforms (logistic, tanh).
 */

export interface MinimizeOptions {
  maxEvaluations?: number;
  /** Stop when the simplex's function values differ by less than this (relative). */
  tolerance?: number;
  /** Initial step per coordinate. */
  step?: number;
}

export interface MinimizeResult {
  x: Float64Array;
  value: number;
  evaluations: number;
}

export function nelderMead(
  f: (x: Float64Array) => number,
  start: ArrayLike<number>,
  opts: MinimizeOptions = {},
): MinimizeResult {
  const n = start.length;
  const maxEval = opts.maxEvaluations ?? 200 * Math.max(1, n);
  const tol = opts.tolerance ?? 1e-7;
  const step = opts.step ?? 0.5;
  let evals = 0;
  const safe = (x: Float64Array): number => {
    evals++;
    const v = f(x);
    return Number.isFinite(v) ? v : Number.MAX_VALUE;
  };
  if (n === 0) {
    const x = new Float64Array(0);
    return { x, value: safe(x), evaluations: evals };
  }
  const pts: Float64Array[] = [];
  const vals: number[] = [];
  pts.push(Float64Array.from(start));
  for (let i = 0; i < n; i++) {
    const p = Float64Array.from(start);
    p[i] += step;
    pts.push(p);
  }
  for (const p of pts) vals.push(safe(p));
  const order = Array.from({ length: n + 1 }, (_, i) => i);
  const centroid = new Float64Array(n);
  const trial = (a: Float64Array, b: Float64Array, t: number): Float64Array => {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = a[i] + t * (b[i] - a[i]);
    return out;
  };
  while (evals < maxEval) {
    order.sort((a, b) => vals[a] - vals[b]);
    const best = order[0];
    const worst = order[n];
    const second = order[n - 1];
    const spread = Math.abs(vals[worst] - vals[best]);
    if (spread <= tol * (Math.abs(vals[best]) + 1e-12)) break;
    centroid.fill(0);
    for (let k = 0; k < n; k++) {
      const p = pts[order[k]];
      for (let i = 0; i < n; i++) centroid[i] += p[i] / n;
    }
    const reflected = trial(centroid, pts[worst], -1);
    const fr = safe(reflected);
    if (fr < vals[best]) {
      const expanded = trial(centroid, pts[worst], -2);
      const fe = safe(expanded);
      if (fe < fr) {
        pts[worst] = expanded;
        vals[worst] = fe;
      } else {
        pts[worst] = reflected;
        vals[worst] = fr;
      }
    } else if (fr < vals[second]) {
      pts[worst] = reflected;
      vals[worst] = fr;
    } else {
      const outside = fr < vals[worst];
      const contracted = trial(centroid, outside ? reflected : pts[worst], 0.5);
      const fc = safe(contracted);
      if (fc < Math.min(fr, vals[worst])) {
        pts[worst] = contracted;
        vals[worst] = fc;
      } else {
        for (let k = 1; k <= n; k++) {
          const idx = order[k];
          pts[idx] = trial(pts[best], pts[idx], 0.5);
          vals[idx] = safe(pts[idx]);
        }
      }
    }
  }
  let bi = 0;
  for (let i = 1; i <= n; i++) if (vals[i] < vals[bi]) bi = i;
  return { x: pts[bi], value: vals[bi], evaluations: evals };
}

export function logistic(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

export function logit(p: number): number {
  const q = Math.min(1 - 1e-9, Math.max(1e-9, p));
  return Math.log(q / (1 - q));
}
