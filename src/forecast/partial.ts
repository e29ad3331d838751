/**
 * The newest interval of an access series is still running: the windows give
 * the accesses counted in it so far. Fitted as it is, a full interval of 0
 * (or of a few) would be read as traffic stopping, every time an interval
 * begins: a forecast made a second into a new minute would drop to nearly
 * nothing, one made a second before it would not. completeNewest replaces it
 * with the expected count of the whole interval: what was counted so far,
 * plus the remaining part of the interval at a rate that leans on what this
 * interval showed as more of it has passed (weight f, the fraction elapsed)
 * and on the previous interval's rate otherwise. So the estimate moves
 * smoothly from the previous interval's count (f → 0) to the interval's own
 * count (f → 1).
 */

/**
 * A copy of `series` whose last value, counted over the fraction `elapsed`
 * (0..1) of its interval, is completed to an estimate of the whole interval.
 * With fewer than two points, or `elapsed` ≥ 1 (or NaN), the copy is unchanged;
 * a negative `elapsed` counts as none.
 */
export function completeNewest(series: ArrayLike<number>, elapsed: number): Float64Array {
  const out = Float64Array.from(series);
  const n = out.length;
  if (n < 2 || !(elapsed < 1)) return out;
  const f = elapsed > 0 ? elapsed : 0;
  const sofar = out[n - 1];
  // the rest of the interval, (1 - f) of it, at the rate f · sofar / f + (1 - f) · previous per interval
  out[n - 1] = sofar + (1 - f) * (sofar + (1 - f) * out[n - 2]);
  return out;
}

/** completeNewest on each series of a record (per zone, say). */
export function completeNewestEach(
  series: Readonly<Record<string, ArrayLike<number>>>,
  elapsed: number,
): Record<string, Float64Array> {
  const out: Record<string, Float64Array> = {};
  for (const [name, xs] of Object.entries(series)) out[name] = completeNewest(xs, elapsed);
  return out;
}

/** How much of the interval of `resolutionSeconds` that holds `nowMs` has passed (0 ≤ f < 1). */
export function elapsedFraction(nowMs: number, resolutionSeconds: number): number {
  const res = resolutionSeconds * 1000;
  const into = nowMs - Math.floor(nowMs / res) * res;
  return into / res;
}
