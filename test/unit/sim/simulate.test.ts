import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { defaultZoneMatrix, LatencyModel, nodesOverZones } from "../../../src/engine/latency.js";
import { UsageError } from "../../../src/errors.js";
import { engineForecaster, type BatchForecast } from "../../../src/sim/forecaster.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import {
  DEFAULT_SIM_OPTIONS,
  percentileOf,
  simulate,
  trailingMean,
  type SimOptions,
} from "../../../src/sim/simulate.js";
import { seededRandom } from "../../../src/forecast/stats.js";
import { parseTrace, type Trace } from "../../../src/sim/trace.js";

const Z = ["a", "b", "c"];
const latency = LatencyModel.fromZoneMatrix(defaultZoneMatrix(Z));
const START = Date.UTC(2024, 0, 1);
const STEP = 60_000; // one-minute decision intervals keep the traces small

/**
 * A follow-the-sun trace: `keys` keys, `perInterval` accesses each per minute;
 * the dominant zone (90%) rotates every `period / 3` minutes, key k shifted by k minutes.
 */
function rotatingTrace(opts: {
  keys: number;
  intervals: number;
  period: number;
  perInterval: number;
}): Trace {
  const lines: string[] = [];
  for (let j = 0; j < opts.intervals; j++) {
    for (let k = 0; k < opts.keys; k++) {
      const dominant = Math.floor((((j + k * 3) % opts.period) / opts.period) * 3);
      for (let i = 0; i < opts.perInterval; i++) {
        const t = START + j * STEP + Math.floor(((i + 0.5) / opts.perInterval) * STEP);
        const zone = i % 10 === 9 ? (dominant + 1) % 3 : dominant;
        lines.push(`${t},key-${k},${i % 5 === 0 ? "write" : "read"},${Z[zone]}`);
      }
    }
  }
  lines.sort((x, y) => Number(x.split(",")[0]) - Number(y.split(",")[0]));
  return parseTrace(lines.join("\n"), Z);
}

/** A stub forecaster that knows the season: the value one period ago (the test is about the simulator). */
const seasonal =
  (period: number): BatchForecast =>
  (series, o) =>
    series.map((s) => {
      const n = s.values.length;
      const mean = Array.from({ length: o.horizon }, (_, h) =>
        n - period + h >= 0 ? s.values[n - period + h] : (s.values[n - 1] ?? 0),
      );
      return { mean };
    });

const small: Partial<SimOptions> = {
  intervalSeconds: 60,
  leadSeconds: 5,
  horizonIntervals: 3,
  cooldownIntervals: 3,
  historyIntervals: 120,
  segmentCount: 64,
  keyBytes: 1024 * 1024,
};

const trace30 = rotatingTrace({ keys: 3, intervals: 120, period: 30, perInterval: 20 });

describe("simulate", () => {
  const trace = rotatingTrace({ keys: 2, intervals: 180, period: 30, perInterval: 20 });

  it("predictive beats reactive on a rotating workload it can forecast, and the oracle bounds everyone", () => {
    const r = simulate(trace, latency, seasonal(30), small);
    const { static: st, reactive, predictive, oracle } = r.policies;
    expect(st!.migrations).toBe(0);
    expect(st!.bytes_moved).toBe(0);
    expect(predictive!.mean_ms).toBeLessThan(reactive!.mean_ms);
    expect(reactive!.mean_ms).toBeLessThan(st!.mean_ms);
    for (const p of [st!, reactive!, predictive!])
      expect(oracle!.mean_ms).toBeLessThanOrEqual(p.mean_ms + 1e-9);
    expect(predictive!.migrations).toBeGreaterThan(0);
    expect(predictive!.bytes_moved).toBe(predictive!.migrations * 1024 * 1024);
    expect(r.events).toBe(trace.length);
    expect(r.intervals).toBe(180);
  });

  it("reports each policy's progress, interval by interval, in the order the policies run", () => {
    const seen: string[] = [];
    const r = simulate(trace, latency, seasonal(30), {
      ...small,
      policies: ["reactive", "static", "oracle"],
      onProgress: (policy, done, intervals) => seen.push(`${policy} ${done}/${intervals}`),
    });
    const n = r.intervals;
    const of = (policy: string) => seen.filter((s) => s.startsWith(`${policy} `));
    expect(of("reactive")).toEqual(Array.from({ length: n }, (_, i) => `reactive ${i + 1}/${n}`));
    expect(of("static")).toEqual(Array.from({ length: n }, (_, i) => `static ${i + 1}/${n}`));
    expect(of("oracle")).toEqual([`oracle 0/${n}`, `oracle ${n}/${n}`]);
    expect(seen.indexOf(`static 1/${n}`)).toBeGreaterThan(seen.indexOf(`reactive ${n}/${n}`));
  });

  it("runs the predictive policy with the real forecaster from src/forecast", () => {
    const { forecast, stats } = engineForecaster();
    const r = simulate(trace, latency, forecast, { ...small, policies: ["predictive"] });
    expect(stats.calls).toBeGreaterThan(0);
    expect(Object.keys(stats.models).length).toBeGreaterThan(0);
    expect(r.policies.predictive!.mean_ms).toBeGreaterThan(0);
    expect(r.policies.static).toBeUndefined();
  });

  it("charges the write pause: writes in the fenced tail wait for the cutover", () => {
    // one key whose zone flips from a to b at minute 10; writes arrive 10 ms before every boundary
    const lines: string[] = [];
    for (let j = 0; j < 20; j++) {
      const zone = j < 10 ? "a" : "b";
      for (let i = 0; i < 30; i++) lines.push(`${START + j * STEP + i * 1000},k,read,${zone}`);
      lines.push(`${START + (j + 1) * STEP - 10},k,write,${zone}`);
    }
    const t = parseTrace(lines.join("\n"), Z);
    const paused = simulate(t, latency, undefined, { ...small, writePauseMs: 50, policies: ["oracle"] })
      .policies.oracle!;
    const free = simulate(t, latency, undefined, { ...small, writePauseMs: 0, policies: ["oracle"] }).policies
      .oracle!;
    expect(paused.migrations).toBeGreaterThanOrEqual(1);
    expect(free.migrations).toBe(paused.migrations);
    // each write fenced at a cutover waited 10 ms and was then served by the new node (50 ms from zone a)
    const extra = (paused.mean_ms - free.mean_ms) * t.length;
    expect(extra).toBeCloseTo(paused.migrations * (10 + 50 - 1), 6);
  });

  it("a decision sees the interval in progress up to the decision time, and nothing after it", () => {
    // one key read once a second from zone a, then from zone c; the switch comes either at the start
    // of interval 12 (55 s of it are before the decision at b_13 − 5 s) or 5 s before its end (after it)
    const run = (switchAt: number) => {
      const lines: string[] = [];
      for (let s = 0; s < 20 * 60; s++) lines.push(`${START + s * 1000},k,read,${s < switchAt ? "a" : "c"}`);
      const t = parseTrace(lines.join("\n"), Z);
      let lat: Float64Array = new Float64Array(0);
      simulate(t, latency, undefined, {
        ...small,
        horizonIntervals: 1,
        cooldownIntervals: 0,
        policies: ["reactive"],
        onLatencies: (_, l) => (lat = l),
      });
      // the latency of each interval's accesses (all served alike within an interval)
      return Array.from({ length: 20 }, (_, j) => lat[j * 60]);
    };
    const early = run(12 * 60);
    expect(early[11]).toBe(1); // on a's node by then
    expect(early[12]).toBe(50); // the switch is seen during interval 12…
    expect(early[13]).toBe(1); // …and the key is on c's node from b_13
    const late = run(13 * 60 - 5);
    expect(late[12]).toBe(1);
    expect(late[13]).toBe(50); // the last 5 s of interval 12 came after the decision at b_13 − 5 s
    expect(late[14]).toBe(1);
  });

  it("decides from the first boundary: a key far from all its accesses moves before H + 1 intervals are seen", () => {
    // one key read once a second from one zone for 20 intervals, H = 6: its initial node is not that
    // zone's, so both planner-driven policies move it at b_1, on what they saw of interval 0 (warm-up)
    const at = (zone: string) => {
      const lines: string[] = [];
      for (let s = 0; s < 20 * 60; s++) lines.push(`${START + s * 1000},k,read,${zone}`);
      const t = parseTrace(lines.join("\n"), Z);
      const lat = new Map<string, Float64Array>();
      const r = simulate(t, latency, seasonal(30), {
        ...small,
        horizonIntervals: 6,
        cooldownIntervals: 6,
        onLatencies: (p, l) => lat.set(p, l),
      });
      return { r, lat };
    };
    const far = Z.map(at).find(({ r }) => r.policies.static!.mean_ms > 1)!;
    expect(far).toBeDefined();
    for (const p of ["reactive", "predictive"]) {
      const l = far.lat.get(p)!;
      expect(l[0]).toBeGreaterThan(1); // interval 0 on the initial node
      expect(l[60]).toBe(1); // from b_1 on the node of the key's zone
      expect(l[l.length - 1]).toBe(1);
      expect(far.r.policies[p as "reactive"]!.migrations).toBe(1);
    }
  });

  it("carries out no cutover at the trace's end: a move there would serve none of it", () => {
    // one key read once a second from zone a, from zone c from the start of interval `switchAt` on
    const migrations = (switchAt: number) => {
      const lines: string[] = [];
      for (let s = 0; s < 20 * 60; s++)
        lines.push(`${START + s * 1000},k,read,${s < switchAt * 60 ? "a" : "c"}`);
      const t = parseTrace(lines.join("\n"), Z);
      const r = simulate(t, latency, undefined, {
        ...small,
        horizonIntervals: 1,
        cooldownIntervals: 0,
        policies: ["reactive"],
      }).policies.reactive!;
      return { migrations: r.migrations, bytes: r.bytes_moved };
    };
    const never = migrations(20);
    // a change seen in interval 18 is followed at b_19, inside the trace: one more move
    expect(migrations(18).migrations).toBe(never.migrations + 1);
    // one seen in the last interval would be followed at the trace's end: no move, nothing counted
    expect(migrations(19)).toEqual(never);
  });

  it("plans over the horizon's replayed part only: no move for accesses after the trace's end", () => {
    // one key whose dominant zone (90%) rotates a → b → c every 10 one-minute intervals; in the
    // last interval of each a-phase (j ≡ 9 mod 30) b already has 55%. A trace of L intervals ends
    // there when L = 100: moving to b at b_99 gains a little in interval 99 and much in the b-phase
    // after it, which is not replayed: no policy moves for it. One interval more, and it is.
    const run = (L: number) => {
      const lines: string[] = [];
      for (let j = 0; j < L; j++) {
        const dom = Math.floor(((j % 30) / 30) * 3);
        for (let i = 0; i < 20; i++) {
          const zone = j % 30 === 9 ? (i < 11 ? 1 : 0) : i % 10 === 9 ? (dom + 1) % 3 : dom;
          lines.push(`${START + j * STEP + i * 3000},k,read,${Z[zone]}`);
        }
      }
      const r = simulate(parseTrace(lines.join("\n"), Z), latency, seasonal(30), {
        ...small,
        policies: ["reactive", "predictive"],
      });
      return { reactive: r.policies.reactive!.migrations, predictive: r.policies.predictive!.migrations };
    };
    const before = run(99);
    expect(before.predictive).toBe(before.reactive);
    expect(run(100)).toEqual(before);
    // with the b-phase's first interval replayed, predictive moves for it (reactive sees it too late)
    expect(run(101).predictive).toBe(before.predictive + 1);
  });

  it("a burst the forecast missed gets the reactive check, even with the zone mix the profile expects", () => {
    // 10 accesses a minute (80% from zone c, 10% each from a and b) for 40 minutes, then 100 a
    // minute in the same mix, and a forecaster that always says 10: the shares are as expected,
    // only the volume surprises
    const steady: BatchForecast = (series, o) =>
      series.map(() => ({ mean: new Array<number>(o.horizon).fill(10) }));
    const lines: string[] = [];
    const zoneOf = (i: number) => (i % 10 === 0 ? "a" : i % 10 === 1 ? "b" : "c");
    for (let j = 0; j < 50; j++) {
      const n = j < 40 ? 10 : 100;
      for (let i = 0; i < n; i++) lines.push(`${START + j * STEP + (i * STEP) / n},k,read,${zoneOf(i)}`);
    }
    const t = parseTrace(lines.join("\n"), Z);
    let lat: Float64Array = new Float64Array(0);
    const r = simulate(t, latency, steady, {
      ...small,
      minRiseAccesses: 30, // the trickle's start (10 → 30 accesses per horizon; the warm-up's 8 from c → 26) is no rise
      policies: ["predictive"],
      onLatencies: (_, l) => (lat = l),
    });
    const c = (e: number) => (t.zone[e] === 2 ? lat[e] : undefined);
    expect(c(2)).toBe(50); // the key's shard starts away from zone c
    expect(c(399)).toBe(50); // a steady load from the expected zones moves nothing
    expect(r.policies.predictive!.migrations).toBe(1);
    // the burst starts in interval 40 (events 400…); seen during it, the move lands at b_41
    expect(c(400 + 99)).toBe(50);
    expect(c(400 + 100 + 2)).toBe(1);
  });

  it("pools the shares of sparse keys that follow one pattern (share groups), within each pattern", () => {
    // 12 keys, 0.9 accesses a minute each, the dominant zone (70%) rotating every 20 minutes; in
    // the second trace each key is shifted by a third of the period times k: three patterns
    const sparse = (shift: number) => {
      const rand = seededRandom(5);
      const lines: string[] = [];
      for (let j = 0; j < 600; j++)
        for (let k = 0; k < 12; k++) {
          if (rand() >= 0.9) continue;
          const dominant = Math.floor((((j + k * shift) % 60) / 60) * 3);
          const u = rand();
          const zone = u < 0.7 ? dominant : (dominant + (u < 0.85 ? 1 : 2)) % 3;
          lines.push(`${START + j * STEP + Math.floor(rand() * STEP)},key-${k},read,${Z[zone]}`);
        }
      lines.sort((x, y) => Number(x.split(",")[0]) - Number(y.split(",")[0]));
      return parseTrace(lines.join("\n"), Z);
    };
    const run = (t: Trace, shareGroups: boolean) =>
      simulate(t, latency, seasonal(60), {
        ...small,
        historyIntervals: 600,
        policies: ["predictive"],
        shareGroups,
      }).policies.predictive!;
    const one = sparse(0);
    const pooled = run(one, true);
    const alone = run(one, false);
    expect(pooled.mean_ms).toBeLessThan(alone.mean_ms);
    // keys of three patterns (four keys each) pool within their pattern only, and still gain
    const three = sparse(20);
    const pooled3 = run(three, true);
    const alone3 = run(three, false);
    expect(pooled3.mean_ms).toBeLessThan(alone3.mean_ms);
  });

  it("more nodes per zone still work, and every policy is reported", () => {
    const lat6 = LatencyModel.fromZoneMatrix(defaultZoneMatrix(Z), nodesOverZones(Z, 6));
    const r = simulate(trace, lat6, seasonal(30), small);
    expect(Object.keys(r.policies)).toEqual(["static", "reactive", "predictive", "oracle"]);
    expect(r.nodes).toBe(6);
  });

  it("refuses bad options and a predictive run without a forecaster", () => {
    expect(() => simulate(trace, latency, undefined, small)).toThrow(/needs a forecaster/);
    expect(() => simulate(trace, latency, seasonal(30), { ...small, leadSeconds: 60 })).toThrow(UsageError);
    expect(() => simulate(trace, latency, seasonal(30), { ...small, horizonIntervals: 0 })).toThrow(
      UsageError,
    );
  });

  it("the oracle is a lower bound on the mean of every policy (random small traces)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            dt: fc.integer({ min: 0, max: 40_000 }),
            key: fc.integer({ min: 0, max: 3 }),
            write: fc.boolean(),
            zone: fc.integer({ min: 0, max: 2 }),
          }),
          { minLength: 1, maxLength: 150 },
        ),
        fc.integer({ min: 0, max: 3 }),
        (events, cooldown) => {
          let t = START;
          const text = events
            .map((e) => `${(t += e.dt)},k${e.key},${e.write ? "write" : "read"},${Z[e.zone]}`)
            .join("\n");
          const tr = parseTrace(text, Z);
          const r = simulate(tr, latency, seasonal(10), {
            ...small,
            horizonIntervals: 1,
            cooldownIntervals: cooldown,
            minRiseAccesses: 0,
          });
          const o = r.policies.oracle!.mean_ms;
          for (const p of ["static", "reactive", "predictive"] as const)
            expect(o).toBeLessThanOrEqual(r.policies[p]!.mean_ms + 1e-9);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe("the oracle", () => {
  /** Random events over a few one-minute intervals: 1–3 keys, reads and writes, some in the fenced tail. */
  const eventsOver = (lastInterval: number, maxLength: number) =>
    fc.array(
      fc.record({
        interval: fc.integer({ min: 0, max: lastInterval }),
        offset: fc.oneof(
          fc.integer({ min: 0, max: STEP - 1 }),
          fc.integer({ min: STEP - 60, max: STEP - 1 }),
        ),
        key: fc.integer({ min: 0, max: 2 }),
        write: fc.boolean(),
        zone: fc.integer({ min: 0, max: 2 }),
      }),
      { minLength: 1, maxLength },
    );
  const randomEvents = eventsOver(6, 60);
  const traceOf = (
    events: { interval: number; offset: number; key: number; write: boolean; zone: number }[],
  ) => {
    const lines = events
      .map((e) => ({ ...e, t: START + e.interval * STEP + e.offset }))
      .sort((x, y) => x.t - y.t)
      .map((e) => `${e.t},k${e.key},${e.write ? "write" : "read"},${Z[e.zone]}`);
    return parseTrace(lines.join("\n"), Z);
  };

  /**
   * The least total latency over every schedule (one node per interval per segment, changes at least
   * `spacing` intervals apart, from the initial node), by enumeration, with the simulator's accounting
   * written out again: an access costs the RTT to its segment's node, and a write in the fenced tail
   * before a change waits for the boundary and is served by the new node.
   */
  function bruteForce(tr: Trace, spacing: number, pauseMs: number, lat = latency): number {
    const latency = lat;
    const N = latency.nodes.length;
    const segmenter = new Segmenter(small.segmentCount!);
    const layout = initialLayout(
      small.segmentCount!,
      latency.nodes.map((n) => ({ ...n, address: "sim" })),
      {
        shardsPerNode: DEFAULT_SIM_OPTIONS.shardsPerNode,
        now: START,
      },
    );
    const nodeOf = (seg: number) =>
      latency.nodes.findIndex(
        (n) => n.id === layout.shards.find((s) => s.ranges[0][0] <= seg && seg < s.ranges[0][1])!.node,
      );
    const t0 = Math.floor(tr.t[0] / STEP) * STEP;
    const nI = Math.floor((tr.t[tr.length - 1] - t0) / STEP) + 1;
    const bySeg = new Map<number, number[]>();
    for (let e = 0; e < tr.length; e++) {
      const s = segmenter.segmentOf(tr.keys[tr.key[e]]);
      bySeg.set(s, [...(bySeg.get(s) ?? []), e]);
    }
    let total = 0;
    for (const [seg, events] of bySeg) {
      let best = Infinity;
      const schedule = new Array<number>(nI);
      const visit = (j: number, last: number) => {
        if (j === nI) {
          let c = 0;
          for (const e of events) {
            const i = Math.floor((tr.t[e] - t0) / STEP);
            const end = t0 + (i + 1) * STEP;
            const n = schedule[i];
            const m = i + 1 < nI ? schedule[i + 1] : n;
            const z = tr.zone[e];
            c +=
              m !== n && tr.write[e] && tr.t[e] >= end - pauseMs
                ? end - tr.t[e] + latency.rtt[z * N + m]
                : latency.rtt[z * N + n];
          }
          best = Math.min(best, c);
          return;
        }
        for (let n = 0; n < N; n++) {
          const prev = j === 0 ? nodeOf(seg) : schedule[j - 1];
          if (j === 0 && n !== prev) continue;
          if (n !== prev && last >= 0 && j - last < spacing) continue;
          schedule[j] = n;
          visit(j + 1, n !== prev ? j : last);
        }
      };
      visit(0, -1);
      total += best;
    }
    return total;
  }

  it("is the exact optimum with several nodes per zone (nodes with the same round trips are one candidate)", () => {
    // five nodes over three zones: a-1, b-1, c-1, a-2, b-2; the enumeration tries every node
    const five = LatencyModel.fromZoneMatrix(defaultZoneMatrix(Z), nodesOverZones(Z, 5));
    // fewer intervals: the enumeration tries 5^intervals schedules per segment
    const shortEvents = eventsOver(4, 40);
    fc.assert(
      fc.property(
        shortEvents,
        fc.integer({ min: 0, max: 3 }),
        fc.constantFrom(0, 50),
        (events, cooldown, pause) => {
          const tr = traceOf(events);
          const r = simulate(tr, five, undefined, {
            ...small,
            cooldownIntervals: cooldown,
            writePauseMs: pause,
            policies: ["oracle"],
          });
          expect(r.policies.oracle!.mean_ms * tr.length).toBeCloseTo(
            bruteForce(tr, cooldown, pause, five),
            6,
          );
        },
      ),
      { numRuns: 40 },
    );
  });

  it("is the exact optimum over every schedule that keeps the cooldown between changes (enumeration)", () => {
    fc.assert(
      fc.property(
        randomEvents,
        fc.integer({ min: 0, max: 4 }),
        fc.constantFrom(0, 50),
        (events, cooldown, pause) => {
          const tr = traceOf(events);
          const r = simulate(tr, latency, undefined, {
            ...small,
            cooldownIntervals: cooldown,
            writePauseMs: pause,
            policies: ["oracle"],
          });
          expect(r.policies.oracle!.mean_ms * tr.length).toBeCloseTo(bruteForce(tr, cooldown, pause), 6);
          if (cooldown > 0) {
            expect(r.oracle_without_cooldown!.mean_ms * tr.length).toBeCloseTo(bruteForce(tr, 0, pause), 6);
            expect(r.oracle_without_cooldown!.mean_ms).toBeLessThanOrEqual(r.policies.oracle!.mean_ms + 1e-9);
          } else expect(r.oracle_without_cooldown).toBeUndefined();
        },
      ),
      { numRuns: 80 },
    );
  });

  it("never moves a segment twice within the cooldown, and neither does any planner-driven policy", () => {
    const cooldown = 4;
    const last = new Map<string, Int32Array>();
    const changedAt = new Map<string, Map<number, number>>();
    let changes = 0;
    const r = simulate(trace30, latency, seasonal(30), {
      ...small,
      cooldownIntervals: cooldown,
      onPlacement: (policy, j, at) => {
        const prev = last.get(policy);
        const seen = changedAt.get(policy) ?? new Map<number, number>();
        changedAt.set(policy, seen);
        if (prev)
          for (let s = 0; s < at.length; s++) {
            if (at[s] === prev[s]) continue;
            changes++;
            if (seen.has(s)) expect(j - seen.get(s)!).toBeGreaterThanOrEqual(cooldown);
            seen.set(s, j);
          }
        last.set(policy, Int32Array.from(at));
      },
    });
    for (const p of ["reactive", "predictive", "oracle"] as const)
      expect(r.policies[p]!.migrations).toBeGreaterThan(2);
    expect(changes).toBeGreaterThan(10);
    for (const p of ["static", "reactive", "predictive"] as const)
      expect(r.policies.oracle!.mean_ms).toBeLessThanOrEqual(r.policies[p]!.mean_ms + 1e-9);
  });
});

describe("helpers", () => {
  it("percentile and trailing mean", () => {
    expect(percentileOf(Float64Array.from([5, 1, 3, 2, 4]), 99)).toBe(5);
    expect(percentileOf(Float64Array.from([5, 1, 3, 2, 4]), 50)).toBe(3);
    expect(Array.from(trailingMean([3, 3, 6, 0], 2))).toEqual([3, 3, 4.5, 3]);
  });
});
