/**
 * Forecast error measures. MASE is scale-free and comparable across series
 * (1.0 = as good as the in-sample seasonal naive forecast), which is why model
 * selection ranks by it; sMAPE is reported because operators read percentages.
 */

/**
 * Mean absolute error of the one-season-back forecast over the training data:
 * the MASE denominator. m <= 1 uses the previous point (naive). Returns 0 for
 * a series that never changes at that lag.
 */
export function seasonalNaiveMae(train: ArrayLike<number>, m: number): number {
  const lag = Math.max(1, Math.round(m));
  if (train.length <= lag) return 0;
  let s = 0;
  for (let i = lag; i < train.length; i++) s += Math.abs(train[i] - train[i - lag]);
  return s / (train.length - lag);
}

/**
 * Below this fraction of the series level, a seasonal naive error is rounding, not a scale: an
 * exactly periodic series leaves ~1e-14 of its level, and dividing by that scored 1e14.
 */
export const NEGLIGIBLE_SCALE = 1e-9;

/**
 * MASE of one forecast. When the scale is 0 (a constant training series), or negligible next to
 * the level of the values scored (NEGLIGIBLE_SCALE), or so small that the ratio overflows, a
 * perfect forecast scores 0 and any error scores by the error relative to the series level, so
 * the result stays finite and meaningful.
 */
export function mase(actual: ArrayLike<number>, forecast: ArrayLike<number>, scale: number): number {
  const n = Math.min(actual.length, forecast.length);
  if (n === 0) return 0;
  let s = 0;
  let level = 0;
  for (let i = 0; i < n; i++) {
    s += Math.abs(actual[i] - forecast[i]);
    level += Math.abs(actual[i]);
  }
  const mae = s / n;
  level /= n;
  if (scale > 0 && scale > NEGLIGIBLE_SCALE * level) {
    const r = mae / scale;
    if (Number.isFinite(r)) return r;
  }
  if (mae === 0) return 0;
  return level > 0 ? mae / level : 1;
}

/** Symmetric MAPE in percent (0..200); a point where both values are 0 counts as 0 error. */
export function smape(actual: ArrayLike<number>, forecast: ArrayLike<number>): number {
  const n = Math.min(actual.length, forecast.length);
  if (n === 0) return 0;
  let s = 0;
  for (let i = 0; i < n; i++) {
    const d = Math.abs(actual[i]) + Math.abs(forecast[i]);
    if (d > 0) s += (2 * Math.abs(actual[i] - forecast[i])) / d;
  }
  return (100 * s) / n;
}
