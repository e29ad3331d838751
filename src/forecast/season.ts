/**
 * Seasonal period detection. Access traffic is driven by people, so the
 * periods worth looking for first are the day and the week, expressed in the
 * series' own interval; an autocorrelation scan is the fallback for anything
 * else (batch jobs every N minutes). The scan costs O(n * 400), so bulk
 * callers may skip it.
 */
import { mean, scaled, unitScale } from "./stats.js";

/** Minimum autocorrelation for a lag to count as a season. */
const MIN_SEASONAL_ACF = 0.3;
/** Minimum autocorrelation at the daily or weekly lag. */
const MIN_CALENDAR_ACF = 0.1;
/** The fallback scan never looks further than this, so detection stays O(n * 400). */
const MAX_SCAN_LAG = 400;
/** How far the ACF must climb back from its trough for a fallback peak to count. */
const MIN_PEAK_RISE = 0.25;

/** Removes the least-squares line so that a trend does not masquerade as autocorrelation. */
export function detrend(values: ArrayLike<number>): Float64Array {
  const n = values.length;
  const out = new Float64Array(n);
  if (n === 0) return out;
  const tMean = (n - 1) / 2;
  const yMean = mean(values);
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (i - tMean) * (values[i] - yMean);
    sxx += (i - tMean) * (i - tMean);
  }
  const slope = sxx > 0 ? sxy / sxx : 0;
  for (let i = 0; i < n; i++) out[i] = values[i] - yMean - slope * (i - tMean);
  return out;
}

/** Autocorrelation of a zero-mean series at one lag (0 when the series is flat). */
export function acfAt(centered: Float64Array, lag: number, denom?: number): number {
  const n = centered.length;
  if (lag <= 0 || lag >= n) return 0;
  let d = denom ?? 0;
  if (denom === undefined) for (let i = 0; i < n; i++) d += centered[i] * centered[i];
  if (!(d > 0)) return 0;
  let s = 0;
  for (let i = lag; i < n; i++) s += centered[i] * centered[i - lag];
  return s / d;
}

/** The daily and weekly periods in points, when they are whole numbers of intervals. */
export function calendarPeriods(intervalSeconds: number): number[] {
  const out: number[] = [];
  for (const seconds of [86400, 7 * 86400]) {
    const p = seconds / intervalSeconds;
    if (p >= 2 && Math.abs(p - Math.round(p)) < 1e-6) out.push(Math.round(p));
  }
  return out;
}

/**
 * Returns the season length in points, or 1 when the data shows none.
 * A candidate needs at least two full cycles in the data. The daily period is
 * preferred over the weekly one unless the weekly autocorrelation is clearly
 * stronger, because a shorter season is cheaper and needs less history.
 */
export function detectSeason(
  values: ArrayLike<number>,
  intervalSeconds: number,
  opts: { scan?: boolean } = {},
): number {
  const n = values.length;
  // (small values scaled up first: the squares of 1e-200 underflow to 0, and the series looked flat)
  const k = unitScale(values);
  const centered = detrend(k === 1 ? values : scaled(values, k));
  let denom = 0;
  for (let i = 0; i < n; i++) denom += centered[i] * centered[i];
  if (!(denom > 0) || n < 8) return 1;

  const candidates = calendarPeriods(intervalSeconds).filter((p) => 2 * p <= n);
  let best = 1;
  // a calendar period is plausible a priori, so a weaker but clearly non-random correlation suffices
  let bestAcf = Math.max(MIN_CALENDAR_ACF, 3 / Math.sqrt(n));
  for (const p of candidates) {
    const r = acfAt(centered, p, denom);
    // the weekly period must beat the daily one by a margin to be worth its cost
    if (r > (best === 1 ? bestAcf : bestAcf + 0.1)) {
      best = p;
      bestAcf = r;
    }
  }
  if (best > 1) return best;

  // Fallback: the first clear local maximum of the ACF beyond lag 1.
  if (opts.scan === false) return 1;
  const maxLag = Math.min(MAX_SCAN_LAG, Math.floor(n / 2));
  if (maxLag < 3) return 1;
  const acf = new Float64Array(maxLag + 2);
  for (let lag = 1; lag <= maxLag + 1 && lag < n; lag++) acf[lag] = acfAt(centered, lag, denom);
  // a peak only counts if the ACF first fell well below it: a slowly decaying
  // ACF (a persistent but aperiodic series) has wiggles, not seasons
  let trough = acf[1];
  for (let lag = 2; lag <= maxLag; lag++) {
    trough = Math.min(trough, acf[lag]);
    const peak = acf[lag] >= acf[lag - 1] && acf[lag] >= acf[lag + 1];
    if (peak && acf[lag] >= MIN_SEASONAL_ACF && acf[lag] - trough >= MIN_PEAK_RISE) return lag;
  }
  return 1;
}

/**
 * Seasonal strength in [0, 1] from a classical decomposition (moving-average
 * trend, per-phase means): 1 - var(remainder) / var(season + remainder), the
 * measure R's forecast package uses to decide on seasonal differencing.
 */
/** Centred moving average of length m (2 x m when m is even); NaN where the window does not fit. */
export function centredMovingAverage(values: ArrayLike<number>, m: number): Float64Array {
  const n = values.length;
  const half = Math.floor(m / 2);
  const trend = new Float64Array(n).fill(NaN);
  if (n < m + 1) return trend;
  let window = 0;
  for (let i = 0; i < m; i++) window += values[i];
  for (let c = half; c + m - half <= n; c++) {
    const start = c - half;
    if (start > 0) window += values[start + m - 1] - values[start - 1];
    if (m % 2 === 0) {
      if (start + m < n) trend[c] = (window + (values[start + m] - values[start]) / 2) / m;
      else trend[c] = window / m;
    } else {
      trend[c] = window / m;
    }
  }
  return trend;
}

/**
 * Classical decomposition's seasonal profile, indexed by (i mod m): the mean
 * deviation (or ratio, when multiplicative) from the moving-average trend,
 * centred to sum to 0 (or average 1).
 */
export function seasonalProfile(values: ArrayLike<number>, m: number, multiplicative: boolean): Float64Array {
  const trend = centredMovingAverage(values, m);
  const sum = new Float64Array(m);
  const count = new Float64Array(m);
  for (let i = 0; i < values.length; i++) {
    if (Number.isNaN(trend[i])) continue;
    if (multiplicative && !(trend[i] > 0)) continue;
    sum[i % m] += multiplicative ? values[i] / trend[i] : values[i] - trend[i];
    count[i % m]++;
  }
  const profile = new Float64Array(m);
  for (let p = 0; p < m; p++) profile[p] = count[p] ? sum[p] / count[p] : multiplicative ? 1 : 0;
  const avg = mean(profile);
  for (let p = 0; p < m; p++) {
    if (multiplicative) profile[p] = avg > 0 ? profile[p] / avg : 1;
    else profile[p] -= avg;
  }
  return profile;
}

/**
 * Seasonal strength in [0, 1] from a classical decomposition (moving-average
 * trend, per-phase means): 1 - var(remainder) / var(season + remainder), the
 * measure R's forecast package uses to decide on seasonal differencing.
 */
export function seasonalStrength(values: ArrayLike<number>, m: number): number {
  const n = values.length;
  if (m <= 1 || n < 2 * m + 1) return 0;
  const trend = centredMovingAverage(values, m);
  const seasonal = seasonalProfile(values, m, false);
  let vd = 0;
  let vr = 0;
  let md = 0;
  let mr = 0;
  let k = 0;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(trend[i])) continue;
    md += values[i] - trend[i];
    mr += values[i] - trend[i] - seasonal[i % m];
    k++;
  }
  md /= k;
  mr /= k;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(trend[i])) continue;
    const d = values[i] - trend[i] - md;
    const r = values[i] - trend[i] - seasonal[i % m] - mr;
    vd += d * d;
    vr += r * r;
  }
  if (!(vd > 0)) return 0;
  return Math.max(0, Math.min(1, 1 - vr / vd));
}
