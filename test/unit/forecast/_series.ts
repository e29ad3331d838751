/** Synthetic series with known structure, shared by the forecast tests. */
import { gaussian, seededRandom } from "../../../src/forecast/stats.js";

export const HOURLY = 3600;

/** level + slope*t + amplitude*sin(2 pi t / season) + noise, deterministic for a seed. */
export function sinusoidWithTrend(
  n: number,
  opts: {
    season?: number;
    level?: number;
    slope?: number;
    amplitude?: number;
    noise?: number;
    seed?: number;
  } = {},
): Float64Array {
  const { season = 24, level = 100, slope = 0.1, amplitude = 20, noise = 1, seed = 1 } = opts;
  const rand = seededRandom(seed);
  return Float64Array.from(
    { length: n },
    (_, t) => level + slope * t + amplitude * Math.sin((2 * Math.PI * t) / season) + noise * gaussian(rand),
  );
}

export function whiteNoise(n: number, seed = 3, level = 50, sd = 5): Float64Array {
  const rand = seededRandom(seed);
  return Float64Array.from({ length: n }, () => level + sd * gaussian(rand));
}

/** A flat series that steps from `before` to `after` at index `at`, with a little noise. */
export function stepChange(n: number, at: number, before = 10, after = 40, seed = 5): Float64Array {
  const rand = seededRandom(seed);
  return Float64Array.from({ length: n }, (_, t) => (t < at ? before : after) + 0.5 * gaussian(rand));
}

export function meanAbsError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

export function expectAllFinite(...arrays: ArrayLike<number>[]): boolean {
  return arrays.every((arr) => Array.from(arr).every(Number.isFinite));
}
