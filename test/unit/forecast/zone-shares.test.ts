import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/errors.js";
import {
  chiSquareQuantile,
  chooseShareSeason,
  groupCounts,
  normalQuantile,
  recentShares,
  shareGroups,
  shareGroupsSteps,
  shareSurprise,
  zoneShares,
} from "../../../src/forecast/zone-shares.js";
import { seededRandom } from "../../../src/forecast/stats.js";

/**
 * Follow-the-sun counts: `perInterval` accesses per interval (Poisson-ish, from a seed), the dominant
 * zone (share `dominant`) rotating through the zones over each `season` intervals.
 */
function rotating(opts: {
  n: number;
  season: number;
  zones?: number;
  perInterval: number;
  dominant?: number;
  seed?: number;
}): Float64Array[] {
  const Z = opts.zones ?? 3;
  const rand = seededRandom(opts.seed ?? 7);
  const out = Array.from({ length: Z }, () => new Float64Array(opts.n));
  for (let i = 0; i < opts.n; i++) {
    const d = Math.floor(((i % opts.season) / opts.season) * Z);
    for (let k = 0; k < opts.perInterval; k++) {
      const u = rand();
      const share = opts.dominant ?? 0.7;
      const z = u < share ? d : (d + 1 + Math.floor(((u - share) / (1 - share)) * (Z - 1))) % Z;
      out[z][i] += 1;
    }
  }
  return out;
}

const dominantAt = (share: Float64Array[], step: number) =>
  share.reduce((best, s, z) => (s[step] > share[best][step] ? z : best), 0);

describe("zoneShares", () => {
  it("learns where the next intervals' accesses come from, one season ahead, from sparse counts", () => {
    const season = 48;
    const counts = rotating({ n: season * 4, season, perInterval: 2 });
    // the history ends just before a change of dominant zone (phase 16 of 48 → zone 1)
    const end = season * 3 + 14;
    const { share, support } = zoneShares(counts, end, 6, { season, historyEnd: end });
    // the recent intervals say zone 0; the profile knows zone 1 takes over at step 2
    expect(dominantAt(share, 0)).toBe(0);
    expect(dominantAt(share, 5)).toBe(1);
    for (let step = 0; step < 6; step++) {
      const total = share.reduce((acc, s) => acc + s[step], 0);
      expect(total).toBeCloseTo(1, 12);
      expect(support[step]).toBeGreaterThan(5);
    }
    // the recent shares alone still say zone 0 at step 5
    const flat = zoneShares(counts, end, 6, { season: 0, historyEnd: end });
    expect(dominantAt(flat.share, 5)).toBe(0);
  });

  it("never reads data at or after historyEnd", () => {
    const season = 24;
    const counts = rotating({ n: season * 3, season, perInterval: 5 });
    const end = season * 2;
    const a = zoneShares(counts, end, 10, { season, historyEnd: end });
    const poisoned = counts.map((c) => {
      const copy = Float64Array.from(c);
      copy.fill(1e9, end);
      return copy;
    });
    const b = zoneShares(poisoned, end, 10, { season, historyEnd: end });
    expect(b.share).toEqual(a.share);
  });

  it("falls back to the recent shares with less than a season of history or no season", () => {
    const counts = [Float64Array.of(0, 0, 9, 9), Float64Array.of(3, 3, 0, 0)];
    const recent = recentShares(counts, 0, 4);
    expect(recent[0]).toBeCloseTo(19 / 26, 12); // add-one smoothed: (18 + 1) / (24 + 2)
    const { share, support } = zoneShares(counts, 4, 3, { season: 288, priorSpan: 4 });
    for (let step = 0; step < 3; step++) {
      expect(share[0][step]).toBeCloseTo(recent[0], 12);
      // nothing pooled: the shares rest on the 24 recent accesses (+ one per zone), not on the prior's weight
      expect(support[step]).toBe(26);
    }
  });

  it("takes the latest span with accesses for its prior when the recent span has none (not uniform shares)", () => {
    // zone b sent everything, then the last interval was quiet: a one-interval prior (a horizon of
    // one interval) held only the add-one counts, and the shares came out uniform, as if zone a
    // had sent as much as b (`predict --horizon 60` then showed half the access from zone a)
    const counts = [Float64Array.of(0, 0, 0, 0, 0), Float64Array.of(5, 8, 7, 6, 0)];
    const { share, support } = zoneShares(counts, 5, 2, { season: 288, priorSpan: 1 });
    for (let step = 0; step < 2; step++) {
      expect(share[1][step]).toBeCloseTo(7 / 8, 12); // the shares of interval 3: (6 + 1) / (6 + 2)
      expect(support[step]).toBe(8);
    }
    // nothing ever recorded: the add-one counts alone, uniform
    const none = zoneShares([new Float64Array(5), new Float64Array(5)], 5, 1, { season: 288, priorSpan: 1 });
    expect(none.share[0][0]).toBeCloseTo(0.5, 12);
  });

  it("gives valid shares for any counts (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.nat(50), { minLength: 30, maxLength: 30 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 0, max: 12 }),
        fc.integer({ min: 0, max: 40 }),
        (rows, season, start) => {
          const counts = rows.map((r) => Float64Array.from(r));
          const { share, support } = zoneShares(counts, start, 5, { season });
          for (let step = 0; step < 5; step++) {
            let total = 0;
            for (const s of share) {
              expect(s[step]).toBeGreaterThan(0);
              expect(Number.isFinite(s[step])).toBe(true);
              total += s[step];
            }
            expect(total).toBeCloseTo(1, 9);
            expect(support[step]).toBeGreaterThan(0);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("refuses malformed input with a UsageError", () => {
    const ok = [new Float64Array(10), new Float64Array(10)];
    expect(() => zoneShares([], 0, 1, { season: 2 })).toThrow(UsageError);
    expect(() => zoneShares([new Float64Array(10), new Float64Array(9)], 0, 1, { season: 2 })).toThrow(
      /same length/,
    );
    expect(() => zoneShares(ok, 0, -1, { season: 2 })).toThrow(UsageError);
    expect(() => zoneShares(ok, 0, 1.5, { season: 2 })).toThrow(UsageError);
    expect(() => zoneShares(ok, 0, 1, { season: 2, halfWindow: -1 })).toThrow(UsageError);
    expect(() => zoneShares(ok, 0, 1, { season: 2, priorWeight: 0 })).toThrow(UsageError);
    expect(() => zoneShares(ok, 0, 1, { season: 2, priorWeight: Number.NaN })).toThrow(UsageError);
    expect(() => zoneShares(ok, 0, 1, { season: 2, prior: [1] })).toThrow(/one share per zone/);
    expect(() => zoneShares(ok, 0, 1, { season: 2, priorSpan: 0 })).toThrow(/priorSpan/);
    expect(() => zoneShares(ok, Number.NaN, 1, { season: 2 })).toThrow(/start/);
    expect(() => zoneShares(ok, -1, 1, { season: 2 })).toThrow(/start/);
    expect(() => zoneShares(ok, 0, 1, { season: 2, historyEnd: Number.NaN })).toThrow(/historyEnd/);
    // NaN and negative counts are ignored, not propagated
    const dirty = [Float64Array.of(Number.NaN, -5, 3), Float64Array.of(1, 1, 1)];
    const { share } = zoneShares(dirty, 3, 2, { season: 0 });
    for (const s of share) for (const x of s) expect(Number.isFinite(x)).toBe(true);
  });
});

describe("chooseShareSeason", () => {
  it("finds the period the shares rotate with, also when it is not a calendar period", () => {
    const segments = [0, 1, 2].map((seed) => rotating({ n: 37 * 5, season: 37, perInterval: 3, seed }));
    expect(chooseShareSeason(segments, 60).season).toBe(37);
  });

  it("finds the day in 5-minute data after one day, when the total volume has no cycle", () => {
    const segments = [1, 2].map((seed) => rotating({ n: 288 + 150, season: 288, perInterval: 2, seed }));
    expect(chooseShareSeason(segments, 300).season).toBe(288);
  });

  it("whatever it chooses for steady shares still forecasts them steady", () => {
    const rand = seededRandom(3);
    const steady = [0, 1].map(() => {
      const counts = Array.from({ length: 3 }, () => new Float64Array(288 * 3));
      for (let i = 0; i < 288 * 3; i++)
        for (let k = 0; k < 4; k++) counts[Math.min(2, Math.floor(rand() * 3))][i] += 1;
      return counts;
    });
    const choice = chooseShareSeason(steady, 300);
    // pooling earlier days is just a larger sample of the same shares: it may win, by little
    expect(choice.scores.length).toBeGreaterThan(0);
    for (const s of choice.scores) expect(Math.abs(s.logLoss - s.baseline)).toBeLessThan(0.05);
    const { share } = zoneShares(steady[0], 288 * 3, 12, { season: choice.season });
    for (const s of share) for (const x of s) expect(Math.abs(x - 1 / 3)).toBeLessThan(0.15);
    expect(chooseShareSeason([], 300).season).toBe(0);
  });

  it("refuses series of different shapes", () => {
    expect(() =>
      chooseShareSeason([[new Float64Array(10)], [new Float64Array(10), new Float64Array(10)]], 60),
    ).toThrow(UsageError);
    expect(() => chooseShareSeason([[new Float64Array(10)], [new Float64Array(11)]], 60)).toThrow(UsageError);
  });
});

describe("shareSurprise", () => {
  it("stays quiet while the pattern repeats and speaks when it changes", () => {
    const season = 48;
    const counts = rotating({ n: season * 4, season, perInterval: 10 });
    const end = season * 3 + 20;
    expect(shareSurprise(counts, end - 6, end, { season, historyEnd: end }).surprised).toBe(false);
    // the last six intervals all come from zone 2, where the profile expects zone 1
    const changed = counts.map((c) => Float64Array.from(c));
    for (let i = end - 6; i < end; i++) {
      for (const c of changed) c[i] = 0;
      changed[2][i] = 10;
    }
    const s = shareSurprise(changed, end - 6, end, { season, historyEnd: end });
    expect(s.surprised).toBe(true);
    expect(s.chi2).toBeGreaterThan(s.critical);
    expect(s.observed).toBe(60);
  });

  it("is never surprised by an empty span or a single zone", () => {
    const counts = rotating({ n: 100, season: 20, perInterval: 0 });
    expect(shareSurprise(counts, 90, 100, { season: 20 }).surprised).toBe(false);
    expect(shareSurprise([Float64Array.from({ length: 50 }, () => 4)], 40, 50, { season: 0 }).surprised).toBe(
      false,
    );
  });
});

describe("shareGroups", () => {
  const season = 48;
  const n = season * 4;
  /** The rotating pattern `lag` intervals later (its zones change `lag` intervals earlier). */
  const shifted = (lag: number, perInterval: number, seed: number) =>
    rotating({ n: n + lag, season, perInterval, seed }).map((c) => c.slice(lag, lag + n));

  it("groups the segments that follow one pattern and keeps a shifted one apart, busiest first", () => {
    const segments = [
      shifted(0, 2, 1),
      shifted(0, 6, 2), // the busiest
      shifted(12, 6, 3), // a quarter of a season off: another pattern
      shifted(0, 3, 4),
      shifted(12, 2, 5),
    ];
    const { groupOf, members } = shareGroups(segments, { block: 12 });
    expect(members).toEqual([
      [1, 3, 0],
      [2, 4],
    ]);
    expect(Array.from(groupOf)).toEqual([0, 0, 1, 0, 1]);
  });

  it("does not merge on too little evidence, nor a segment without accesses", () => {
    const busy = shifted(0, 6, 1);
    const sparse = shifted(0, 6, 2).map((c) => c.map((x, i) => (i % 24 === 0 ? x : 0)));
    const empty = busy.map((c) => new Float64Array(c.length));
    // the sparse segment saw ~48 accesses: its comparison with the busy one rests on fewer than 100
    expect(shareGroups([busy, sparse, empty]).members).toEqual([[0], [1], [2]]);
    expect(shareGroups([busy, sparse, empty], { minEvidence: 20 }).members).toEqual([[0, 1], [2]]);
  });

  it("compares only [historyStart, historyEnd): what lies outside cannot split a group", () => {
    const a = shifted(0, 4, 1);
    const b = shifted(0, 4, 2);
    // b's last season comes from zone 2 only, and its first from zone 1 only
    for (let i = 0; i < season; i++) {
      b[0][i] = b[2][i] = 0;
      b[1][i] = 50;
      b[0][n - 1 - i] = b[1][n - 1 - i] = 0;
      b[2][n - 1 - i] = 50;
    }
    expect(shareGroups([a, b]).members).toHaveLength(2);
    expect(shareGroups([a, b], { historyStart: season, historyEnd: n - season }).members).toEqual([[0, 1]]);
  });

  it("gives a sparse segment its pattern a season ahead where its own counts cannot", () => {
    // a segment with one access per interval, and four busier ones of the same pattern
    const sparse = rotating({ n, season, perInterval: 1, seed: 11 });
    const segments = [sparse, ...[12, 13, 14, 15].map((seed) => shifted(0, 3, seed))];
    const { groupOf, members } = shareGroups(segments);
    expect(members[groupOf[0]]).toContain(0);
    expect(members[groupOf[0]].length).toBe(5);
    const pooled = groupCounts(segments, members[groupOf[0]]);
    // score each way over the last season, one horizon (6) at a time, from the data before it
    const correct = (counts: Float64Array[]) => {
      let right = 0;
      for (let end = n - season; end < n; end += 6) {
        const { share } = zoneShares(counts, end, 6, { season, historyEnd: end });
        for (let step = 0; step < 6; step++)
          if (dominantAt(share, step) === Math.floor((((end + step) % season) / season) * 3)) right++;
      }
      return right;
    };
    expect(correct(pooled)).toBe(season);
    expect(correct(sparse)).toBeLessThan(correct(pooled));
  });

  it("yields every 256 segments it sums and every 64 it places when run a step at a time, with the same groups", () => {
    const segments = Array.from({ length: 600 }, (_, k) => shifted(k % 2 ? 12 : 0, 1, k));
    const steps = shareGroupsSteps(segments);
    let yields = 0;
    let r = steps.next();
    for (; !r.done; r = steps.next()) yields++;
    expect(yields).toBe(2 + 9);
    expect(r.value).toEqual(shareGroups(segments));
  });

  it("puts every segment in exactly one group (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.nat(20), { minLength: 24, maxLength: 24 }), { minLength: 1, maxLength: 12 }),
        (rows) => {
          // each row: one segment's counts, 12 intervals of 2 zones
          const segments = rows.map((r) => [
            Float64Array.from(r.slice(0, 12)),
            Float64Array.from(r.slice(12)),
          ]);
          const { groupOf, members } = shareGroups(segments, { block: 3, minEvidence: 0 });
          const seen = members.flat().sort((x, y) => x - y);
          expect(seen).toEqual(segments.map((_, i) => i));
          members.forEach((m, g) => m.forEach((a) => expect(groupOf[a]).toBe(g)));
        },
      ),
    );
  });

  it("refuses malformed input with a UsageError, and groups nothing from nothing", () => {
    const a = shifted(0, 2, 1);
    expect(shareGroups([])).toEqual({ groupOf: new Int32Array(0), members: [] });
    expect(() => shareGroups([a, a.map((c) => c.slice(1))])).toThrow(UsageError);
    expect(() => shareGroups([a, a.slice(1)])).toThrow(UsageError);
    expect(() => shareGroups([a], { block: 0 })).toThrow(UsageError);
    expect(() => shareGroups([a], { block: 1.5 })).toThrow(UsageError);
    expect(() => shareGroups([a], { level: 1 })).toThrow(UsageError);
    expect(() => shareGroups([a], { minEvidence: -1 })).toThrow(UsageError);
    expect(() => groupCounts([a], [])).toThrow(UsageError);
    // NaN, negative and infinite counts count as none, as zoneShares reads them
    const odd = a.map((c) => c.map((x, i) => (i === 3 ? NaN : i === 4 ? -5 : i === 5 ? Infinity : x)));
    const { members } = shareGroups([a, odd]);
    expect(members.flat().sort()).toEqual([0, 1]);
    for (const c of groupCounts([a, odd], [0, 1]))
      for (const x of c) expect(Number.isFinite(x) && x >= 0).toBe(true);
  });
});

describe("quantiles", () => {
  it("match tabulated values", () => {
    expect(normalQuantile(0.975)).toBeCloseTo(1.959964, 5);
    expect(normalQuantile(0.01)).toBeCloseTo(-2.326348, 5);
    expect(normalQuantile(0.5)).toBeCloseTo(0, 12);
    // χ² quantiles (Wilson–Hilferty is within 1% here)
    expect(chiSquareQuantile(2, 0.99)).toBeCloseTo(9.21, 0);
    expect(chiSquareQuantile(4, 0.95) / 9.488).toBeCloseTo(1, 2);
    expect(() => normalQuantile(1)).toThrow(UsageError);
    expect(chiSquareQuantile(0, 0.99)).toBe(Infinity);
  });
});
