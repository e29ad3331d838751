/**
 * Turning a point forecast plus per-step standard deviations into the
 * Forecast shape, with the guarantee callers rely on: every number is finite.
 */
import { INTERVAL_Z, type Forecast } from "./types.js";

export function withIntervals(meanValues: Float64Array, sd: (step: number) => number): Forecast {
  const h = meanValues.length;
  const lower = new Float64Array(h);
  const upper = new Float64Array(h);
  for (let i = 0; i < h; i++) {
    const s = sd(i + 1);
    const half = Number.isFinite(s) && s > 0 ? INTERVAL_Z * s : 0;
    lower[i] = meanValues[i] - half;
    upper[i] = meanValues[i] + half;
  }
  return { mean: meanValues, lower, upper };
}

export function isFiniteForecast(f: Forecast): boolean {
  for (const arr of [f.mean, f.lower, f.upper]) {
    for (let i = 0; i < arr.length; i++) if (!Number.isFinite(arr[i])) return false;
  }
  return true;
}

/**
 * Rejects forecasts that left the plausible range — an unstable fit can stay
 * finite yet run off to 1e30. The bound is generous: ten times the data's span
 * beyond its extremes.
 */
export function isPlausible(f: Forecast, min: number, max: number): boolean {
  const span = Math.max(max - min, Math.abs(max), Math.abs(min), 1e-9);
  const lo = min - 10 * span;
  const hi = max + 10 * span;
  for (let i = 0; i < f.mean.length; i++) if (!(f.mean[i] >= lo && f.mean[i] <= hi)) return false;
  return isFiniteForecast(f);
}
