import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PreconditionError, UsageError } from "../../../src/errors.js";
import { candidateReasons } from "../../../src/engine/candidates.js";
import { estimateMove } from "../../../src/engine/cost.js";
import { validateMap } from "../../../src/engine/location-map.js";
import {
  applyPlanSteps,
  checkPlanFresh,
  computePlan,
  MigrationPlanner,
  type MigrationPlan,
} from "../../../src/engine/planner.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { MiB, options, PlanBuilder } from "./builders.js";

const NOW = Date.UTC(2026, 0, 1, 12);
const moves = (p: MigrationPlan) => p.steps.filter((s) => s.kind === "move");

describe("candidates", () => {
  const b = new PlanBuilder();
  it("a shard is a candidate when access from a far zone rises", () => {
    const r = candidateReasons(
      { shard: "s", node: "na", predicted: [10, 80, 0], recent: [10, 20, 0] },
      b.latency,
      undefined,
      options(),
    );
    expect(r).toEqual([{ kind: "rising-far", zone: "b", predicted: 80, recent: 20, extraMs: 49 }]);
  });
  it("a rise from the shard's own zone, or a steady far demand, is not a reason", () => {
    expect(
      candidateReasons(
        { shard: "s", node: "na", predicted: [90, 5, 0], recent: [20, 5, 0] },
        b.latency,
        undefined,
        options(),
      ),
    ).toEqual([]);
    expect(
      candidateReasons(
        { shard: "s", node: "na", predicted: [0, 50, 0], recent: [0, 50, 0] },
        b.latency,
        undefined,
        options(),
      ),
    ).toEqual([]);
  });
  it("a change of a sparse shard's zone counts as a rise: no floor in accesses by default", () => {
    // six accesses a horizon, their dominant zone moving from a to b: a rise of 3
    const sparse = { shard: "s", node: "na", predicted: [1, 4, 1], recent: [4, 1, 1] };
    expect(candidateReasons(sparse, b.latency, undefined, options()).map((x) => x.kind)).toEqual([
      "rising-far",
    ]);
    // a floor asked for still applies
    expect(candidateReasons(sparse, b.latency, undefined, options({ minRiseAccesses: 5 }))).toEqual([]);
  });
  it("a node short of resources makes its shards candidates", () => {
    const res = {
      na: {
        capacity: { cpu: 4, memoryBytes: 100, diskBytes: 100, shardSlots: 10 },
        load: { cpu: 3.9, memoryBytes: 1, diskBytes: 1, shards: 1 },
      },
    };
    const r = candidateReasons(
      { shard: "s", node: "na", predicted: [5, 0, 0], recent: [5, 0, 0] },
      b.latency,
      res,
      options(),
    );
    expect(r.map((x) => x.kind)).toEqual(["short-of-resources"]);
  });
});

describe("cost-benefit", () => {
  const b = new PlanBuilder();
  const subject = {
    predicted: [0, 100, 0],
    writeFraction: 0.5,
    bytes: 100 * MiB,
    sourceNode: "na",
    migrationTimestamp: 0,
  };
  it("benefit = Σ predicted × RTT saved; the copy time takes its share of the horizon", () => {
    const e = estimateMove(
      subject,
      "nb",
      b.latency,
      undefined,
      options({ horizonSeconds: 100, bandwidthBytesPerSecond: 10 * MiB }),
      NOW,
    );
    expect(e.benefitMs).toBe(100 * 49);
    expect(e.copySeconds).toBe(10);
    expect(e.costs.copyMs).toBeCloseTo(4900 * 0.1);
    expect(e.costs.pauseMs).toBeGreaterThan(0);
    expect(e.netMs).toBeCloseTo(e.benefitMs - e.costMs);
    expect(e.feasible).toBe(true);
  });
  it("inside the cooldown a move is infeasible; right after it, it carries a fading penalty", () => {
    const o = options({ cooldownMs: 60_000, recentMovePenaltyMs: 1000 });
    expect(
      estimateMove({ ...subject, migrationTimestamp: NOW - 30_000 }, "nb", b.latency, undefined, o, NOW)
        .feasible,
    ).toBe(false);
    const after = estimateMove(
      { ...subject, migrationTimestamp: NOW - 90_000 },
      "nb",
      b.latency,
      undefined,
      o,
      NOW,
    );
    expect(after.feasible).toBe(true);
    expect(after.costs.recentMoveMs).toBeCloseTo(500);
    // a move stamped by a coordinator whose clock was a day ahead: in the cooldown, said so (before:
    // "moved -86400 s ago")
    const ahead = estimateMove(
      { ...subject, migrationTimestamp: NOW + 86_400_000 },
      "nb",
      b.latency,
      undefined,
      o,
      NOW,
    );
    expect(ahead.feasible).toBe(false);
    expect(ahead.refusal).toMatch(
      /^moved at a time 86400 s ahead of this host's clock \(the clocks .* disagree\); cooldown is 60 s$/,
    );
  });
  it("a target that would be over full is refused", () => {
    const res = {
      nb: {
        capacity: { cpu: 1, memoryBytes: 1, diskBytes: 1000 * MiB, shardSlots: 2 },
        load: { cpu: 0, memoryBytes: 0, diskBytes: 0, shards: 2 },
      },
    };
    const e = estimateMove(subject, "nb", b.latency, res, options(), NOW);
    expect(e.feasible).toBe(false);
    expect(e.refusal).toMatch(/full/);
  });
  it("uncertainty is charged as risk", () => {
    const e = estimateMove(
      { ...subject, predictedSd: [0, 10, 0] },
      "nb",
      b.latency,
      undefined,
      options({ riskAversion: 2 }),
      NOW,
    );
    expect(e.costs.riskMs).toBeCloseTo(2 * 10 * 49);
  });
});

describe("computePlan", () => {
  it("moves a shard towards the zone whose access is predicted to rise, with the reasoning and inputs", () => {
    const b = new PlanBuilder().segment(1, [10, 200, 0], [10, 20, 0]);
    const plan = computePlan(b.inputs({ notes: ["latency: test"] }), options({ splitSegments: false }), NOW);
    expect(plan.mapVersion).toBe(7);
    expect(moves(plan)).toEqual([
      expect.objectContaining({
        kind: "move",
        shard: "shard-1",
        source: "na",
        target: "nb",
        bytes: 4 * 16 * MiB,
      }),
    ]);
    const a = plan.assessments.find((x) => x.shard === "shard-1")!;
    expect(a.decision).toBe("move");
    expect(a.predictedByZone).toEqual({ a: 10, b: 200, c: 0 });
    expect(a.candidateReasons[0]).toMatch(/zone b rises/);
    expect(plan.inputs.latency.zones).toEqual(["a", "b", "c"]);
    expect(plan.inputs.notes).toEqual(["latency: test"]);
    expect(JSON.parse(JSON.stringify(plan))).toEqual(plan); // plain data
  });

  it("splits a segment onto its own shard first when it alone is worth moving", () => {
    // segment 0 is pulled towards b, segment 1 (same shard) stays busy from a
    const b = new PlanBuilder().segment(0, [0, 300, 0], [0, 10, 0]).segment(1, [300, 0, 0]);
    const plan = computePlan(b.inputs(), options(), NOW);
    expect(plan.steps.map((s) => s.kind)).toEqual(["split", "move"]);
    const [split, move] = plan.steps;
    if (split.kind !== "split" || move.kind !== "move") throw new Error("unexpected steps");
    expect(split).toMatchObject({ shard: "shard-1", segment: 0, newShard: "shard-7" });
    expect(move).toMatchObject({ shard: "shard-7", source: "na", target: "nb", bytes: 16 * MiB });
    const next = applyPlanSteps({ map: b.map, version: 7 }, plan, NOW);
    validateMap(next);
    expect(next.shards.find((s) => s.id === "shard-7")).toMatchObject({
      node: "nb",
      ranges: [[0, 1]],
      migrationTimestamp: NOW,
    });
    expect(next.shards.find((s) => s.id === "shard-1")).toMatchObject({ node: "na", ranges: [[1, 4]] });
  });

  it("says why nothing moves", () => {
    const none = computePlan(new PlanBuilder().inputs(), options(), NOW);
    expect(none.steps).toEqual([]);
    expect(none.summary).toMatch(/nothing should move/);
    const steady = computePlan(new PlanBuilder().segment(1, [0, 50, 0]).inputs(), options(), NOW);
    expect(steady.assessments[0].reason).toMatch(/not a candidate/);
    const small = computePlan(
      new PlanBuilder().segment(1, [100, 30, 0], [100, 10, 0]).inputs(),
      options(),
      NOW,
    );
    expect(small.steps).toEqual([]);
    // (a move there would cost latency: said so, not as a negative saving)
    expect(small.assessments[0].reason).toMatch(
      /^no other node is nearer to the predicted accesses \(the best, nb, would add [\d.]+ (ms|s)\)/,
    );
  });

  it("postpones a move that does not pay off yet in the first interval", () => {
    const b = new PlanBuilder().segment(1, [10, 200, 0], [10, 20, 0]);
    const inputs = b.inputs();
    inputs.demand = inputs.demand.map((d) => ({ ...d, predictedNext: [10, 1, 0] }));
    const plan = computePlan(inputs, options({ splitSegments: false }), NOW);
    expect(plan.steps).toEqual([]);
    expect(plan.assessments[0]).toMatchObject({ postponed: true, target: "nb" });
  });

  it("postpones a move of a segment with nothing predicted for the first interval, and makes it once there is", () => {
    const b = new PlanBuilder().segment(1, [10, 200, 0], [10, 20, 0]);
    const quiet = b.inputs();
    quiet.demand = quiet.demand.map((d) => ({ ...d, predictedNext: [0, 0, 0] }));
    const later = computePlan(quiet, options({ splitSegments: false }), NOW);
    expect(later.steps).toEqual([]);
    expect(later.assessments[0]).toMatchObject({ postponed: true, target: "nb" });
    const busy = b.inputs();
    busy.demand = busy.demand.map((d) => ({ ...d, predictedNext: [0, 1, 0] }));
    const now = computePlan(busy, options({ splitSegments: false }), NOW);
    expect(now.steps).toMatchObject([{ kind: "move", target: "nb" }]);
  });

  it("refuses demand that does not fit the map or the zones", () => {
    const b = new PlanBuilder().segment(99, [1, 2, 3]);
    expect(() => computePlan(b.inputs(), options(), NOW)).toThrow(UsageError);
    const c = new PlanBuilder().segment(1, [1, 2]);
    expect(() => computePlan(c.inputs(), options(), NOW)).toThrow(/one value per zone/);
    expect(() =>
      computePlan(new PlanBuilder().inputs(), options({ maxConcurrentMigrations: -1 }), NOW),
    ).toThrow(UsageError);
  });
});

describe("plan freshness", () => {
  it("a plan against a stale map version is refused", () => {
    const b = new PlanBuilder().segment(1, [10, 200, 0], [10, 20, 0]);
    const plan = computePlan(b.inputs(), options(), NOW);
    expect(() => checkPlanFresh(plan, 7)).not.toThrow();
    expect(() => checkPlanFresh(plan, 8)).toThrow(PreconditionError);
    expect(() => applyPlanSteps({ map: b.map, version: 8 }, plan, NOW)).toThrow(/version 7.*version 8/);
  });

  it("a plan made against another cluster's map at the same version is refused", () => {
    const b = new PlanBuilder().segment(1, [10, 200, 0], [10, 20, 0]);
    const plan = computePlan(b.inputs(), options(), NOW);
    expect(plan.mapDigest).toMatch(/^[0-9a-f]{16}$/);
    // this cluster's map, read again (another object, its keys in another order): the same map
    const again = JSON.parse(JSON.stringify(b.map)) as typeof b.map;
    const reordered = Object.fromEntries(Object.entries(again).reverse()) as typeof b.map;
    expect(() => checkPlanFresh(plan, 7, reordered)).not.toThrow();
    // another cluster at version 7: made a millisecond apart, or one node's address differs
    const other = { ...b.map, updatedAt: b.map.updatedAt + 1 };
    expect(() => checkPlanFresh(plan, 7, other)).toThrow(/another location map .* also at version 7/);
    const moved = {
      ...b.map,
      nodes: b.map.nodes.map((n, i) => (i === 0 ? { ...n, address: "127.0.0.1:2" } : n)),
    };
    expect(() => checkPlanFresh(plan, 7, moved)).toThrow(PreconditionError);
    expect(() => applyPlanSteps({ map: other, version: 7 }, plan, NOW)).toThrow(/another location map/);
    // a plan from before the digest was recorded is checked by its version alone
    const { mapDigest: _, ...old } = plan;
    expect(() => checkPlanFresh(old, 7, other)).not.toThrow();
  });
});

describe("MigrationPlanner (planMigration / planAll through ports)", () => {
  it("plans for one key's shard only, against the clock and inputs it is given", () => {
    const b = new PlanBuilder();
    const seg = new Segmenter(24).segmentOf("user:42");
    const other = (seg + 12) % 24;
    b.segment(seg, [0, 0, 500], [0, 0, 10]).segment(other, [0, 500, 0], [0, 10, 0]);
    const planner = new MigrationPlanner({
      inputs: { read: () => b.inputs() },
      clock: { now: () => NOW },
      options: { riskAversion: 0 },
    });
    const one = planner.planMigration("user:42");
    expect(one.scope).toEqual({ kind: "key", key: "user:42", segment: seg, shard: b.shardOf(seg).id });
    expect(one.assessments.map((a) => a.shard)).toEqual([b.shardOf(seg).id]);
    expect(one.createdAt).toBe(NOW);
    const all = planner.planAll();
    expect(all.assessments.length).toBe(2);
    expect(() => planner.planMigration("")).toThrow(UsageError);
  });
});

// ---- properties ---------------------------------------------------------------

const demandArb = fc.array(
  fc.record({
    segment: fc.integer({ min: 0, max: 23 }),
    predicted: fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: 3, maxLength: 3 }),
    recent: fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: 3, maxLength: 3 }),
    writeFraction: fc.double({ min: 0, max: 1, noNaN: true }),
  }),
  { maxLength: 24 },
);

function unique<T extends { segment: number }>(list: T[]): T[] {
  const seen = new Map<number, T>();
  for (const d of list) seen.set(d.segment, d);
  return [...seen.values()];
}

describe("planner properties", () => {
  it("no plan exceeds the budget of concurrent migrations and bytes in flight", () => {
    fc.assert(
      fc.property(
        demandArb,
        fc.integer({ min: 0, max: 4 }),
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 100 }),
        (demand, maxMoves, maxMiB, inFlightMoves, inFlightMiB) => {
          const b = new PlanBuilder();
          for (const d of unique(demand)) b.segment(d.segment, d.predicted, d.recent, d.writeFraction);
          const plan = computePlan(
            b.inputs({ inFlight: { migrations: inFlightMoves, bytes: inFlightMiB * MiB } }),
            options({ maxConcurrentMigrations: maxMoves, maxBytesInFlight: maxMiB * MiB }),
            NOW,
          );
          const m = moves(plan);
          expect(m.length).toBeLessThanOrEqual(Math.max(0, maxMoves - inFlightMoves));
          const bytes = m.reduce((acc, s) => acc + (s.kind === "move" ? s.bytes : 0), 0);
          expect(bytes).toBeLessThanOrEqual(Math.max(0, maxMiB * MiB - inFlightMiB * MiB));
          expect(plan.budget.migrations).toBe(m.length);
          // each shard moves at most once per plan
          expect(new Set(m.map((s) => s.shard)).size).toBe(m.length);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("a shard inside its cooldown is never planned to move (nor split off to move)", () => {
    fc.assert(
      fc.property(
        demandArb,
        fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 6 }),
        fc.integer({ min: 0, max: 59_999 }),
        (demand, recent, ago) => {
          const b = new PlanBuilder();
          for (const d of unique(demand)) b.segment(d.segment, d.predicted, d.recent, d.writeFraction);
          const cooling = new Set(recent.map((i) => `shard-${i}`));
          for (const id of cooling) b.movedAt(id, NOW - ago);
          const plan = computePlan(b.inputs(), options({ cooldownMs: 60_000 }), NOW);
          for (const s of plan.steps) expect(cooling.has(s.shard)).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("replanning over time never moves a shard back within its cooldown", () => {
    fc.assert(
      fc.property(fc.array(demandArb, { minLength: 2, maxLength: 8 }), (rounds) => {
        const b = new PlanBuilder();
        const cooldownMs = 10 * 60_000;
        let map = b.map;
        let version = 1;
        const lastMove = new Map<string, number>();
        rounds.forEach((demand, i) => {
          const now = NOW + i * 3 * 60_000; // a round every 3 minutes: shorter than the cooldown
          const plan = computePlan(
            {
              map,
              mapVersion: version,
              latency: b.latency,
              demand: unique(demand),
              segmentBytes: () => MiB,
            },
            options({ cooldownMs }),
            now,
          );
          map = applyPlanSteps({ map, version }, plan, now);
          version++;
          for (const s of plan.steps) {
            if (s.kind !== "move") continue;
            const prev = lastMove.get(s.shard);
            if (prev !== undefined) expect(now - prev).toBeGreaterThanOrEqual(cooldownMs);
            lastMove.set(s.shard, now);
          }
          // split pieces carry the parent's last move
          for (const s of plan.steps)
            if (s.kind === "split" && lastMove.has(s.shard)) lastMove.set(s.newShard, lastMove.get(s.shard)!);
          validateMap(map);
        });
      }),
      { numRuns: 100 },
    );
  });

  it("a stationary workload yields no plan, wherever its shards are", () => {
    fc.assert(
      fc.property(
        demandArb,
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 6, maxLength: 6 }),
        (demand, placement) => {
          const b = new PlanBuilder();
          const nodes = ["na", "nb", "nc"];
          b.map = { ...b.map, shards: b.map.shards.map((s, i) => ({ ...s, node: nodes[placement[i]] })) };
          for (const d of unique(demand)) b.segment(d.segment, d.predicted, d.predicted, d.writeFraction); // predicted = recent
          const plan = computePlan(b.inputs(), options(), NOW);
          expect(plan.steps).toEqual([]);
        },
      ),
      { numRuns: 200 },
    );
  });
});
