import { describe, expect, it } from "vitest";
import {
  demandFromZoneSeries,
  demandSteps,
  FULL_SELECTION_SEGMENTS,
  type SegmentZoneSeries,
} from "../../../src/commands/plan.js";
import { detectSeason, FULL_CANDIDATES, predictAccessPattern } from "../../../src/forecast/index.js";
import { selectionPlan } from "../../../src/forecast/select.js";

/** A day of 5-minute intervals. */
const DAY = 288;

/**
 * Accesses per zone over `days` days and `extra` intervals: 20 an interval, 90% from zone a in the
 * first half of each day and from zone b in the second, the rest from c.
 */
function rotating(days: number, extra: number): Record<string, Float64Array> {
  const n = days * DAY + extra;
  const a = new Float64Array(n);
  const b = new Float64Array(n);
  const c = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const firstHalf = i % DAY < DAY / 2;
    (firstHalf ? a : b)[i] = 18;
    c[i] = 2;
  }
  return { a, b, c };
}

describe("demandFromZoneSeries (shardctl plan and the dashboard's plan preview)", () => {
  it("splits the forecast total by the daily share profile: the zone that comes next, not the last one seen", () => {
    // the series end 3 intervals before the daily switch from a to b; the horizon (6) reaches past it
    const perZone = rotating(3, DAY / 2 - 3);
    const { demand, note } = demandFromZoneSeries([{ segment: 7, perZone }], ["a", "b", "c"], 300, 1800);
    expect(demand).toHaveLength(1);
    const [d] = demand;
    expect(d.segment).toBe(7);
    // recent (the 6 intervals before the latest 6) is a's alone; the next 6: half a's, half b's
    expect(d.recent).toEqual([108, 0, 12]);
    expect(d.predicted[1]).toBeGreaterThan(0.3 * (d.predicted[0] + d.predicted[1]));
    expect(d.predicted[0]).toBeGreaterThan(0.3 * (d.predicted[0] + d.predicted[1]));
    // the first interval after now is still a's
    expect(d.predictedNext![0]).toBeGreaterThan(5 * d.predictedNext![1]);
    const total = Array.from(d.predicted).reduce((x, y) => x + y, 0);
    expect(total).toBeGreaterThan(6 * 20 * 0.8);
    expect(total).toBeLessThan(6 * 20 * 1.2);
    expect(Array.from(d.predictedSd!).every((x) => x >= 0 && Number.isFinite(x))).toBe(true);
    expect(note).toMatch(/288-interval season/);
  });

  it("cuts a horizon longer than a third of the series, and says so, returning the horizon it reached", () => {
    const ones = Float64Array.from({ length: 60 }, () => 4);
    const within = demandFromZoneSeries([{ segment: 1, perZone: { a: ones } }], ["a"], 60, 1200);
    expect(within.horizonSeconds).toBe(1200);
    expect(within.note).not.toMatch(/cut/);
    const day = demandFromZoneSeries([{ segment: 1, perZone: { a: ones } }], ["a"], 60, 86_400);
    expect(day.horizonSeconds).toBe(1200); // 20 of the 60 one-minute intervals
    expect(day.note).toMatch(/the horizon asked for, 86400 s, is cut to 1200 s/);
    expect(day.demand[0].predicted[0]).toBeCloseTo(within.demand[0].predicted[0], 6);
  });

  it("says when the horizon asked for is rounded to the windows' intervals (10 s ran as 60 s without a word)", () => {
    const ones = Float64Array.from({ length: 60 }, () => 4);
    const plan = (seconds: number) =>
      demandFromZoneSeries([{ segment: 1, perZone: { a: ones } }], ["a"], 60, seconds);
    const up = plan(10);
    expect(up.horizonSeconds).toBe(60);
    expect(up.note).toMatch(/the horizon asked for, 10 s, is rounded to 60 s: .* 60-s intervals/);
    expect(plan(100).note).toMatch(/the horizon asked for, 100 s, is rounded to 120 s/);
    expect(plan(80).note).toMatch(/the horizon asked for, 80 s, is rounded to 60 s/);
    // a whole number of intervals: no note
    expect(plan(120).note).not.toMatch(/rounded|cut/);
  });

  it("takes the write fraction from the writes and totals over the latest horizon, and skips silent segments", () => {
    const ones = Float64Array.from({ length: 40 }, () => 4);
    const writes = Float64Array.from({ length: 40 }, (_, i) => (i >= 36 ? 1 : 0));
    const { demand } = demandFromZoneSeries(
      [
        { segment: 1, perZone: { a: ones }, writes, totals: ones },
        { segment: 2, perZone: { a: new Float64Array(40) } },
        { segment: 3, perZone: { a: ones } },
      ],
      ["a", "b"],
      60,
      240,
    );
    expect(demand.map((d) => d.segment)).toEqual([1, 3]);
    expect(demand[0].writeFraction).toBeCloseTo(4 / 16, 10);
    expect(demand[1].writeFraction).toBe(0);
    // zone b has no series: no demand from it
    expect(demand[0].predicted[1]).toBe(0);
    expect(demand[0].recent).toEqual([16, 0]);
  });

  it("hostile series: NaN, negative and infinite counts give finite demand; nothing at all gives none", () => {
    const bad = Float64Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? NaN : i % 3 === 1 ? -5 : 3));
    bad[29] = Infinity;
    const { demand } = demandFromZoneSeries(
      [{ segment: 0, perZone: { a: bad, b: bad } }],
      ["a", "b"],
      60,
      300,
    );
    // a segment with some bad counts still has accesses: it is forecast, not skipped as silent
    expect(demand).toHaveLength(1);
    for (const d of demand) {
      for (const x of [d.predicted, d.recent, d.predictedSd!, d.predictedNext!].flatMap((v) => Array.from(v)))
        expect(Number.isFinite(x)).toBe(true);
    }
    expect(demandFromZoneSeries([], ["a"], 60, 300).demand).toEqual([]);
  });

  it("share groups: segments missing a zone or with shorter series forecast alone, NaN counts count as none", () => {
    const ramp = (k: number) => Float64Array.from({ length: 60 }, (_, i) => k * (10 + (i % 7)));
    const half = (x: Float64Array) => Float64Array.from(x, (v) => v / 2);
    const withNaN = ramp(3);
    withNaN[5] = NaN;
    withNaN[6] = -4;
    const series: SegmentZoneSeries[] = [
      { segment: 1, perZone: { a: ramp(4), b: half(ramp(4)) } },
      { segment: 2, perZone: { a: withNaN, b: half(ramp(3)) } },
      { segment: 3, perZone: { a: ramp(2) } }, // no zone b at all
      { segment: 4, perZone: { a: ramp(5).subarray(20), b: half(ramp(5)).subarray(20) } }, // 40 intervals
    ];
    const { demand, note } = demandFromZoneSeries(series, ["a", "b"], 60, 600);
    expect(demand.map((d) => d.segment)).toEqual([1, 2, 3, 4]);
    for (const d of demand)
      for (const x of [d.predicted, d.recent, d.predictedSd!, d.predictedNext!].flatMap((v) => Array.from(v)))
        expect(Number.isFinite(x) && x >= 0).toBe(true);
    // segments 1 and 2 come 2:1 from a and b: one group; 3 (all from a) differs, 4 is not compared
    expect(note).toContain("2 segment(s) in 1 group(s)");
    expect(demand[2].predicted[1]).toBe(0);
  });

  it("chooses models by full backtests for the busiest segments only, the cheap tier for the others, and says so", () => {
    // 60 one-minute intervals of a rising trend (full selection and the cheap tier forecast it
    // differently), segment k carrying k + 1 times as much, all from zones a and b
    const n = FULL_SELECTION_SEGMENTS + 5;
    const series: SegmentZoneSeries[] = Array.from({ length: n }, (_, k) => {
      const a = Float64Array.from({ length: 60 }, (_, i) => (k + 1) * (10 + 2 * i));
      const b = Float64Array.from(a, (x) => x / 2);
      return { segment: 1000 + k, perZone: { a, b } };
    });
    const { demand, note } = demandFromZoneSeries(series, ["a", "b"], 60, 1200);
    expect(note).toContain(
      `full backtests for the ${FULL_SELECTION_SEGMENTS} busiest segment(s), by the cheap tier (seasonal naive or fixed Holt-Winters) for the other 5`,
    );
    expect(note).toMatch(/over the last 20 interval\(s\)/); // no season: the latest 20 intervals' shares
    // every segment's zones come in one proportion: one share group, whose counts give the shares
    expect(note).toContain(`${n} segment(s) in 1 group(s) whose zone counts follow one pattern`);
    const pooled = Object.fromEntries(
      ["a", "b"].map((z) => [
        z,
        Float64Array.from({ length: 60 }, (_, i) => series.reduce((s, x) => s + x.perZone[z][i], 0)),
      ]),
    );
    const predicted = (k: number, selection: "full" | "cheap") => {
      const f = predictAccessPattern(series[k].perZone, {
        intervalSeconds: 60,
        horizon: 20,
        shares: { season: 0, priorSpan: 20, pooled },
        selection,
      });
      return ["a", "b"].map((z) => f.zones[z].mean.reduce((x, y) => x + y, 0));
    };
    const byFull = predicted(n - 1, "full");
    const byCheap = predicted(0, "cheap");
    // the tiers differ on these series (so the comparisons below can tell which one was used)
    expect(predicted(0, "full")[0]).not.toBeCloseTo(byCheap[0], 3);
    for (const [i, x] of byFull.entries()) expect(demand[n - 1].predicted[i]).toBeCloseTo(x, 6);
    for (const [i, x] of byCheap.entries()) expect(demand[0].predicted[i]).toBeCloseTo(x, 6);
    // below the bound everything gets full selection, and the note says nothing of tiers
    expect(demandFromZoneSeries(series.slice(0, 3), ["a", "b"], 60, 1200).note).not.toMatch(/cheap tier/);
  });

  it("can be run a step at a time (demandSteps): the set-up, each fit of a full selection, each segment; the same demand", () => {
    const ones = Float64Array.from({ length: 40 }, (_, i) => 4 + (i % 3));
    const series = [1, 2, 3].map((segment) => ({ segment, perZone: { a: ones, b: ones } }));
    const count = (fullSelection: number) => {
      const steps = demandSteps(series, ["a", "b"], 60, 600, undefined, fullSelection);
      let yields = 0;
      let r = steps.next();
      for (; !r.done; r = steps.next()) yields++;
      return { yields, demand: r.value };
    };
    // the cheap tier alone: a turn after the set-up, then one per segment
    const cheap = count(0);
    expect(cheap.yields).toBe(1 + 3);
    // full selection for the three: a turn after each candidate model's fit at each backtest origin too
    const full = count(3);
    // (what fitChosen backtests on: the segment's total, its detected season, a 10-interval horizon)
    const total = Float64Array.from(ones, (x) => 2 * x);
    const season = detectSeason(total, 60, { scan: true });
    const origins = selectionPlan({ values: total, intervalSeconds: 60, season }, 10).origins.length;
    expect(origins).toBeGreaterThan(1);
    expect(full.yields).toBe(1 + 3 + 3 * FULL_CANDIDATES.length * origins);
    expect(full.demand).toEqual(demandFromZoneSeries(series, ["a", "b"], 60, 600));
  });

  it("gives the loop a turn while it reads many segments' counts, before any forecast", () => {
    const few = Float64Array.from({ length: 12 }, (_, i) => i % 2);
    const series = Array.from({ length: 5000 }, (_, segment) => ({ segment, perZone: { a: few } }));
    const steps = demandSteps(series, ["a"], 60, 120, undefined, 0);
    let yields = 0;
    while (!steps.next().done) yields++;
    // 4 turns while reading 5,000 segments (one per 1,024), 19 + 78 while grouping them (one per 256
    // summed, one per 64 placed), one after the set-up, one per segment
    expect(yields).toBe(4 + 19 + 78 + 1 + 5000);
  });
});
