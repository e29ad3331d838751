/** Small numeric helpers shared by the models. All guard against empty input. */

export function mean(x: ArrayLike<number>, from = 0, to = x.length): number {
  if (to <= from) return 0;
  let s = 0;
  for (let i = from; i < to; i++) s += x[i];
  return s / (to - from);
}

export function variance(x: ArrayLike<number>, from = 0, to = x.length): number {
  if (to - from < 2) return 0;
  const m = mean(x, from, to);
  let s = 0;
  for (let i = from; i < to; i++) s += (x[i] - m) * (x[i] - m);
  return s / (to - from - 1);
}

export function median(x: ArrayLike<number>): number {
  if (x.length === 0) return 0;
  const s = Float64Array.from(x).sort();
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function minMax(x: ArrayLike<number>): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
  }
  return x.length ? { min, max } : { min: 0, max: 0 };
}

/**
 * The power of two that brings a series whose largest magnitude is below 1 into [1, 2), and 1 for
 * any other (or an all-zero) series. The models' fitting and the season detection have absolute
 * floors (a simplex's stopping test, a variance floor, a ridge term) that are negligible for counts
 * but not for values of 1e-10, and squares of 1e-200 underflow to 0: fitted on the series times
 * this factor, with the forecast divided by it, results do not depend on the unit the series is
 * given in. A power of two makes both multiplications exact.
 */
export function unitScale(x: ArrayLike<number>): number {
  let peak = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]);
    if (a > peak) peak = a;
  }
  if (!(peak > 0) || peak >= 1) return 1;
  // 2^e with peak * 2^e in [1, 2); for peaks below 2^-1023 (subnormal), 2^1023, the largest power
  // of two there is: they are scaled as far as can be
  return 2 ** Math.min(1023, -Math.floor(Math.log2(peak)));
}

/** Multiplies every value by `k` (a new array). */
export function scaled(x: ArrayLike<number>, k: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * k;
  return out;
}

/** Root mean square of a residual vector, skipping non-finite entries. */
export function rms(x: ArrayLike<number>, from = 0): number {
  let s = 0;
  let n = 0;
  for (let i = from; i < x.length; i++) {
    if (Number.isFinite(x[i])) {
      s += x[i] * x[i];
      n++;
    }
  }
  return n ? Math.sqrt(s / n) : 0;
}

export function allFinite(x: ArrayLike<number>): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}

/** Deterministic PRNG (mulberry32) so that trained models are reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal sample via Box-Muller, from a uniform source. */
export function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}
