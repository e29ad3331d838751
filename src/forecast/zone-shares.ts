/**
 * Zone shares: where a segment's accesses come from, as a profile over the
 * season, separate from how many accesses come.
 *
 * Forecasting each origin zone's counts on its own (as `predictAccessPattern`
 * does) works for dense series, but a segment with a few accesses per
 * interval splits them over its zones, and each zone's series is then mostly
 * noise: seasonal naive repeats yesterday's noise, and the forecast's interval
 * is as wide as the counts. Who accesses a segment usually follows the clock
 * (users wake up zone by zone) far more steadily than how much they access
 * it. So this is the top-down approach of hierarchical forecasting with
 * proportions that vary over the season (Hyndman & Athanasopoulos, FPP 3,
 * §11.2): forecast the total with any model, split it by the shares.
 *
 * The share of zone z at step i is estimated by pooling every earlier season
 * at the same phase, ± `halfWindow` intervals around it:
 *
 *     share_z(i) = (Σ_{d ≥ 1} Σ_{|o| ≤ w} c_z(i − d·m + o) + k · prior_z) / (n + k)
 *
 * with n the pooled total and `prior` (by default the shares of the last
 * `priorSpan` intervals, add-one smoothed) weighted as k = `priorWeight`
 * accesses, so a phase that was rarely seen leans on the recent shares, and
 * a series shorter than one season gets the recent shares alone. `support`
 * (n + k, or the recent accesses where nothing was pooled) measures how much
 * the estimate rests on; the standard error of a share is √(s(1 − s)/support).
 *
 * `shareSurprise` checks whether the counts of a recent span departed from
 * what the profile expected for them (Pearson's χ² over the zones): a change
 * of pattern the profile has not seen yet, which callers answer by reacting
 * to what they observe.
 *
 * Pure: no I/O.
 */
import { runAtOnce } from "../engine/steps.js";
import { UsageError } from "../errors.js";
import { calendarPeriods, detectSeason } from "./season.js";

export interface ZoneShareOptions {
  /** Season of the shares in intervals (e.g. 288 for a day of 5-minute intervals); < 2: none. */
  season: number;
  /** Intervals pooled on either side of each phase (default 2). */
  halfWindow?: number;
  /** Weight of the prior, in accesses (default 5). */
  priorWeight?: number;
  /** Intervals whose shares form the default prior (default 6). */
  priorSpan?: number;
  /** Only data before this index is used (default: all of it). */
  historyEnd?: number;
  /** The prior shares (sum 1), instead of the recent ones. */
  prior?: ArrayLike<number>;
}

export interface ZoneShares {
  /** share[z][step]: zone z's share at index start + step. Each step's shares sum to 1. */
  share: Float64Array[];
  /**
   * Accesses behind each step's shares: the pooled ones plus the prior's weight, or, where nothing
   * was pooled (less than a season of history), the recent accesses the prior was taken from.
   */
  support: Float64Array;
}

/** A count as the profile reads it: NaN, negative and infinite values count as none. */
const pos = (x: number): number => (x > 0 && x < Infinity ? x : 0);

function checkZones(counts: readonly ArrayLike<number>[]): number {
  if (counts.length === 0) throw new UsageError("zone shares need at least one zone's series");
  const n = counts[0].length;
  for (const c of counts) {
    if (c.length !== n) throw new UsageError("every zone's series must have the same length");
  }
  return n;
}

/** Each zone's accesses in [from, to) plus one (add-one smoothing), and their sum. */
function recentCounts(
  counts: readonly ArrayLike<number>[],
  from: number,
  to: number,
): { perZone: Float64Array; total: number } {
  const perZone = new Float64Array(counts.length);
  let total = 0;
  for (let z = 0; z < counts.length; z++) {
    let s = 1;
    for (let j = Math.max(0, from); j < to; j++) s += pos(counts[z][j]);
    perZone[z] = s;
    total += s;
  }
  return { perZone, total };
}

/** The last index before `to` where some zone has an access; −1 if none has. */
function lastAccessBefore(counts: readonly ArrayLike<number>[], to: number): number {
  for (let j = Math.min(to, counts[0]?.length ?? 0) - 1; j >= 0; j--)
    for (let z = 0; z < counts.length; z++) if (pos(counts[z][j]) > 0) return j;
  return -1;
}

/** Add-one smoothed shares of the counts in [from, to). */
export function recentShares(counts: readonly ArrayLike<number>[], from: number, to: number): Float64Array {
  const { perZone, total } = recentCounts(counts, from, to);
  for (let z = 0; z < perZone.length; z++) perZone[z] /= total;
  return perZone;
}

/**
 * The zones' shares at indices start .. start + steps − 1 (start may lie in
 * the past, for backtests; only data before `historyEnd` is pooled).
 */
export function zoneShares(
  counts: readonly ArrayLike<number>[],
  start: number,
  steps: number,
  opts: ZoneShareOptions,
): ZoneShares {
  const n = checkZones(counts);
  const Z = counts.length;
  const end = Math.min(n, opts.historyEnd ?? n);
  const hw = opts.halfWindow ?? 2;
  const k = opts.priorWeight ?? 5;
  const span = opts.priorSpan ?? 6;
  if (!Number.isInteger(steps) || steps < 0)
    throw new UsageError("zone shares: steps must be an integer ≥ 0");
  if (!Number.isInteger(hw) || hw < 0) throw new UsageError("zone shares: halfWindow must be an integer ≥ 0");
  if (!(k > 0)) throw new UsageError("zone shares: priorWeight must be > 0");
  if (!Number.isInteger(span) || span < 1)
    throw new UsageError("zone shares: priorSpan must be an integer ≥ 1");
  if (!Number.isInteger(start) || start < 0)
    throw new UsageError("zone shares: start must be an integer ≥ 0");
  if (!(end >= 0)) throw new UsageError("zone shares: historyEnd must be ≥ 0");
  // the prior, and the accesses behind it: when nothing is pooled, the shares rest on them alone
  let prior: Float64Array;
  let priorCount = k;
  if (opts.prior) prior = Float64Array.from(opts.prior);
  else {
    let recent = recentCounts(counts, end - span, end);
    // nothing in the span (add-one counts alone would make the shares uniform, as if every zone had
    // sent the same): the shares of the latest span that holds accesses, however long ago
    if (recent.total === Z) {
      const last = lastAccessBefore(counts, end - span);
      if (last >= 0) recent = recentCounts(counts, last + 1 - span, last + 1);
    }
    prior = recent.perZone.map((c) => c / recent.total);
    priorCount = recent.total;
  }
  if (prior.length !== Z) throw new UsageError("zone shares: the prior needs one share per zone");
  const m = Math.round(opts.season);
  const share = Array.from({ length: Z }, () => new Float64Array(steps));
  const support = new Float64Array(steps);
  const pooled = new Float64Array(Z);
  for (let step = 0; step < steps; step++) {
    const i = start + step;
    pooled.fill(0);
    let total = 0;
    if (m >= 2) {
      for (let back = i - m; back + hw >= 0; back -= m) {
        const lo = Math.max(0, back - hw);
        const hi = Math.min(end, back + hw + 1);
        for (let j = lo; j < hi; j++) {
          for (let z = 0; z < Z; z++) {
            const x = pos(counts[z][j]);
            pooled[z] += x;
            total += x;
          }
        }
      }
    }
    for (let z = 0; z < Z; z++) share[z][step] = (pooled[z] + k * prior[z]) / (total + k);
    support[step] = total > 0 ? total + k : priorCount;
  }
  return { share, support };
}

export interface ShareSeasonChoice {
  /** The chosen season in intervals, 0 when none predicts the shares better than the recent ones. */
  season: number;
  /** Mean log loss per access of each candidate, and of the recent shares alone, on the same span. */
  scores: { season: number; logLoss: number; baseline: number }[];
}

/**
 * Log loss of share forecasts made at each origin i in [from, n) for the `horizon` intervals from i
 * (cut at n), from the data before i, summed over the series; `seen` counts the accesses scored.
 */
function shareLogLoss(
  series: readonly (readonly ArrayLike<number>[])[],
  from: number,
  n: number,
  horizon: number,
  opts: Omit<ZoneShareOptions, "historyEnd">,
): { loss: number; seen: number } {
  let loss = 0;
  let seen = 0;
  for (const counts of series) {
    for (let i = from; i < n; i++) {
      const steps = Math.min(horizon, n - i);
      let t = 0;
      for (let z = 0; z < counts.length; z++) for (let j = i; j < i + steps; j++) t += pos(counts[z][j]);
      if (t === 0) continue;
      const { share } = zoneShares(counts, i, steps, { ...opts, historyEnd: i });
      for (let z = 0; z < counts.length; z++) {
        for (let j = 0; j < steps; j++) {
          const x = pos(counts[z][i + j]);
          if (x > 0) loss -= x * Math.log(share[z][j]);
        }
      }
      seen += t;
    }
  }
  return { loss, seen };
}

/**
 * Which season do the zones' shares follow? Candidates are the calendar
 * periods of the interval (a day, a week) and the season `detectSeason` finds
 * in each zone's counts summed over the series; each needs one earlier season
 * before the span it is scored on: the last min(L, n − season) intervals, L
 * the longest candidate that fits in the history. There, a candidate's share
 * forecasts over the caller's horizon (each from the data before its origin)
 * are scored by their mean multinomial log loss per access, summed over the
 * series (e.g. segments: their shares may peak at different times, so they
 * are forecast one by one; pass the busiest ones on a large cluster), against
 * the recent shares alone. The candidate that improves on them most wins; 0
 * when none does.
 */
export function chooseShareSeason(
  series: readonly (readonly ArrayLike<number>[])[],
  intervalSeconds: number,
  opts: Omit<ZoneShareOptions, "season" | "historyEnd"> & {
    /** The forecasts are scored over this many intervals ahead, the caller's horizon (default 1). */
    horizon?: number;
  } = {},
): ShareSeasonChoice {
  const horizon = Math.max(1, Math.floor(opts.horizon ?? 1));
  if (series.length === 0) return { season: 0, scores: [] };
  const n = checkZones(series[0]);
  const Z = series[0].length;
  const summed = Array.from({ length: Z }, () => new Float64Array(n));
  for (const counts of series) {
    if (checkZones(counts) !== n || counts.length !== Z)
      throw new UsageError("every series must have the same zones and length");
    for (let z = 0; z < Z; z++) for (let i = 0; i < n; i++) summed[z][i] += pos(counts[z][i]);
  }
  const candidates = new Set<number>(calendarPeriods(intervalSeconds));
  for (const c of summed) {
    const m = detectSeason(c, intervalSeconds);
    if (m >= 2) candidates.add(m);
  }
  const fitting = [...candidates].filter((m) => m < n).sort((a, b) => a - b);
  // every candidate is scored over as long a span as the longest fitting one, so a short season is
  // not chosen on a handful of intervals
  const longest = fitting.length ? fitting[fitting.length - 1] : 0;
  const scores: ShareSeasonChoice["scores"] = [];
  let best = 0;
  let bestGain = 0;
  // the recent shares alone depend on the span only: scored once per span, not once per candidate
  const baselines = new Map<number, { loss: number; seen: number }>();
  for (const m of fitting) {
    const span = Math.min(longest, n - m);
    if (span < 1) continue;
    const withSeason = shareLogLoss(series, n - span, n, horizon, { ...opts, season: m });
    let without = baselines.get(span);
    if (!without)
      baselines.set(span, (without = shareLogLoss(series, n - span, n, horizon, { ...opts, season: 0 })));
    if (withSeason.seen === 0) continue;
    const logLoss = withSeason.loss / withSeason.seen;
    const baseline = without.loss / without.seen;
    scores.push({ season: m, logLoss, baseline });
    if (baseline - logLoss > bestGain) {
      best = m;
      bestGain = baseline - logLoss;
    }
  }
  return { season: best, scores };
}

export interface ShareGroupOptions {
  /** Intervals per compared block (default 12; the callers use two horizons). */
  block?: number;
  /** Significance level of the homogeneity test (default 0.01). */
  level?: number;
  /**
   * The least evidence a merge needs: Σ over the blocks of n_a·n_g/(n_a + n_g), the accesses a
   * comparison of the two rests on (default 100). Below it the test could not tell patterns apart.
   */
  minEvidence?: number;
  /** Groups each segment is compared with, the busiest ones (default 64). */
  maxCandidates?: number;
  /** Only counts in [historyStart, historyEnd) are compared (default: all of them). */
  historyStart?: number;
  historyEnd?: number;
}

/**
 * Which segments follow one share pattern? Each segment's counts are summed
 * over blocks of `block` intervals (zone by zone); segments are taken busiest
 * first, and each joins the group it cannot be told apart from — Pearson's
 * χ² test of homogeneity of its zone counts against the group's, block by
 * block (one 2 × zones table per block where both saw accesses; Pearson's
 * rather than the G-test, which rejects too often on small counts), at `level` — resting
 * on at least `minEvidence` accesses, the one with the lowest statistic
 * against its critical value; else it starts a group of its own. Pooling a
 * group's counts gives each member's share profile the accesses of all
 * (`groupCounts`): for sparse segments far more than their own. A segment
 * without accesses in the span stays alone. Returns the group of each
 * segment, and each group's members (busiest first).
 */
export function shareGroups(
  segments: readonly (readonly ArrayLike<number>[])[],
  opts: ShareGroupOptions = {},
): ShareGroups {
  return runAtOnce(shareGroupsSteps(segments, opts));
}

export interface ShareGroups {
  /** groupOf[a]: the group of segment a (an index into members). */
  groupOf: Int32Array;
  /** Each group's segments, busiest first. */
  members: number[][];
}

/** Segments shareGroupsSteps compares between two yields (each with up to maxCandidates groups). */
const GROUP_CHUNK = 64;
/** Segments whose counts shareGroupsSteps sums into blocks between two yields. */
const BLOCK_CHUNK = 256;

/**
 * shareGroups a step at a time (for callers on an event loop): yields every BLOCK_CHUNK segments
 * while it sums their blocks, then every GROUP_CHUNK segments it places.
 */
export function* shareGroupsSteps(
  segments: readonly (readonly ArrayLike<number>[])[],
  opts: ShareGroupOptions = {},
): Generator<void, ShareGroups, void> {
  const L = opts.block ?? 12;
  const level = opts.level ?? 0.01;
  const minEvidence = opts.minEvidence ?? 100;
  const maxCandidates = opts.maxCandidates ?? 64;
  if (!Number.isInteger(L) || L < 1) throw new UsageError("share groups: block must be an integer ≥ 1");
  if (!(level > 0 && level < 1)) throw new UsageError("share groups: level must be in (0, 1)");
  if (!(minEvidence >= 0)) throw new UsageError("share groups: minEvidence must be ≥ 0");
  const groupOf = new Int32Array(segments.length);
  const members: number[][] = [];
  if (segments.length === 0) return { groupOf, members };
  const n = checkZones(segments[0]);
  const Z = segments[0].length;
  for (const c of segments) {
    if (c.length !== Z || checkZones(c) !== n)
      throw new UsageError("share groups: every segment must have the same zones and length");
  }
  const end = Math.min(n, opts.historyEnd ?? n);
  const start = Math.max(0, Math.min(end, opts.historyStart ?? 0));
  const nb = Math.ceil((end - start) / L);
  // blocks[a][b·Z + z]: segment a's accesses from zone z in block b
  const blocks: Float64Array[] = [];
  for (const c of segments) {
    const out = new Float64Array(nb * Z);
    for (let z = 0; z < Z; z++)
      for (let j = start; j < end; j++) out[Math.floor((j - start) / L) * Z + z] += pos(c[z][j]);
    blocks.push(out);
    if (blocks.length % BLOCK_CHUNK === 0) yield;
  }
  const volume = blocks.map((b) => b.reduce((s, x) => s + x, 0));
  const order = [...segments.keys()].sort((x, y) => volume[y] - volume[x] || x - y);
  // busiest first; `rank`: a group's place in this list
  const groups: { blocks: Float64Array; volume: number; index: number; rank: number }[] = [];
  const critical = new Map<number, number>();
  for (const [rank, a] of order.entries()) {
    if (rank % GROUP_CHUNK === GROUP_CHUNK - 1) yield;
    const own = blocks[a];
    let best: (typeof groups)[number] | undefined;
    let bestRatio = 1;
    if (volume[a] > 0) {
      // groups stay sorted busiest first: the candidates are the first maxCandidates
      for (const g of groups.slice(0, maxCandidates)) {
        let G = 0;
        let df = 0;
        let evidence = 0;
        for (let b = 0; b < nb; b++) {
          let na = 0;
          let ng = 0;
          for (let z = 0; z < Z; z++) {
            na += own[b * Z + z];
            ng += g.blocks[b * Z + z];
          }
          if (!(na > 0 && ng > 0)) continue;
          const N = na + ng;
          evidence += (na * ng) / N;
          let zonesSeen = 0;
          for (let z = 0; z < Z; z++) {
            const xa = own[b * Z + z];
            const xg = g.blocks[b * Z + z];
            if (xa + xg === 0) continue;
            zonesSeen++;
            const ea = (na * (xa + xg)) / N;
            const eg = (ng * (xa + xg)) / N;
            G += (xa - ea) ** 2 / ea + (xg - eg) ** 2 / eg;
          }
          df += zonesSeen - 1;
        }
        if (df === 0 || evidence < minEvidence) continue;
        let q = critical.get(df);
        if (q === undefined) critical.set(df, (q = chiSquareQuantile(df, 1 - level)));
        if (G / q < bestRatio) {
          bestRatio = G / q;
          best = g;
        }
      }
    }
    if (!best) {
      best = { blocks: new Float64Array(nb * Z), volume: 0, index: members.length, rank: groups.length };
      groups.push(best);
      members.push([]);
    }
    for (let i = 0; i < own.length; i++) best.blocks[i] += own[i];
    best.volume += volume[a];
    members[best.index].push(a);
    groupOf[a] = best.index;
    // keep the groups busiest first: the one that grew moves up past the ones it now outweighs
    for (let i = best.rank; i > 0 && groups[i - 1].volume < best.volume; i--) {
      groups[i] = groups[i - 1];
      groups[i].rank = i;
      groups[i - 1] = best;
      best.rank = i - 1;
    }
  }
  return { groupOf, members };
}

/** The zones' counts summed over `members` (a share group: indices into `segments`). */
export function groupCounts(
  segments: readonly (readonly ArrayLike<number>[])[],
  members: readonly number[],
): Float64Array[] {
  if (members.length === 0) throw new UsageError("group counts: the group has no members");
  const first = segments[members[0]];
  const n = checkZones(first);
  return first.map((_, z) => {
    const out = new Float64Array(n);
    for (const a of members) {
      const c = segments[a][z];
      for (let j = 0; j < n; j++) out[j] += pos(c[j]);
    }
    return out;
  });
}

export interface ShareSurprise {
  /** Pearson's χ² of the observed counts against the profile's expectation. */
  chi2: number;
  /** The χ² quantile at the chosen level, with (zones − 1) degrees of freedom. */
  critical: number;
  surprised: boolean;
  observed: number;
}

/**
 * Did the counts in [from, to) depart from what the share profile (built from
 * the data before each interval) expected for them? χ² at `level` (default 0.99).
 */
export function shareSurprise(
  counts: readonly ArrayLike<number>[],
  from: number,
  to: number,
  opts: ZoneShareOptions & { level?: number },
): ShareSurprise {
  checkZones(counts);
  const Z = counts.length;
  const observed = new Float64Array(Z);
  const expected = new Float64Array(Z);
  let seen = 0;
  for (let i = Math.max(0, from); i < to; i++) {
    let t = 0;
    for (let z = 0; z < Z; z++) t += pos(counts[z][i]);
    if (t === 0) continue;
    const { share } = zoneShares(counts, i, 1, { ...opts, historyEnd: Math.min(i, opts.historyEnd ?? i) });
    for (let z = 0; z < Z; z++) {
      observed[z] += pos(counts[z][i]);
      expected[z] += t * share[z][0];
    }
    seen += t;
  }
  let chi2 = 0;
  for (let z = 0; z < Z; z++) if (expected[z] > 0) chi2 += (observed[z] - expected[z]) ** 2 / expected[z];
  const critical = chiSquareQuantile(Z - 1, opts.level ?? 0.99);
  return { chi2, critical, surprised: Z > 1 && seen > 0 && chi2 > critical, observed: seen };
}

/** Wilson–Hilferty approximation of the χ² quantile (k ≥ 1 degrees of freedom). */
export function chiSquareQuantile(k: number, p: number): number {
  if (k < 1) return Infinity;
  const z = normalQuantile(p);
  const a = 2 / (9 * k);
  return k * (1 - a + z * Math.sqrt(a)) ** 3;
}

/** Acklam's rational approximation of the standard normal quantile (|error| < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new UsageError("a quantile needs 0 < p < 1");
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (
      (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    );
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
  );
}
