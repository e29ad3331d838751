/**
 * The planner and moves backing off (PlanInputs.avoid): a pair that failed is
 * not proposed until its back-off ends, and takes no slot of the budget, so
 * the moves ranked below it go ahead.
 */
import { describe, expect, it } from "vitest";
import type { MoveBackoffEntry } from "../../../src/engine/move-backoff.js";
import { computePlan, type MigrationPlan } from "../../../src/engine/planner.js";
import { options, PlanBuilder } from "./builders.js";

const NOW = Date.UTC(2026, 0, 1, 12);
const moves = (p: MigrationPlan) =>
  p.steps.flatMap((s) => (s.kind === "move" ? [{ source: s.source, target: s.target }] : []));
const assessment = (p: MigrationPlan, shard: string) => p.assessments.find((a) => a.shard === shard)!;

/** shard-1 (na) rises sharply from zone b; shard-2 (na) less so from zone c: one slot, shard-1 ranks first. */
function twoCandidates(): PlanBuilder {
  return new PlanBuilder()
    .segment(0, [10, 900, 0], [10, 20, 0])
    .segment(1, [10, 900, 0], [10, 20, 0])
    .segment(4, [10, 0, 300], [10, 0, 20])
    .segment(5, [10, 0, 300], [10, 0, 20]);
}

function backingOff(shard: string, target: string, until: number): MoveBackoffEntry {
  return { shard, target, failures: 2, failedAt: NOW - 1000, until, lastError: "shard-exists" };
}

describe("moves backing off", () => {
  it("without a back-off, the best move takes the only slot and the other is deferred", () => {
    const b = twoCandidates();
    const plan = computePlan(b.inputs(), options({ maxConcurrentMigrations: 1 }), NOW);
    expect(moves(plan)).toEqual([{ source: "na", target: "nb" }]);
    expect(assessment(plan, "shard-2").decision).toBe("deferred");
  });

  it("a pair backing off is not proposed, and the next move gets its slot", () => {
    const b = twoCandidates();
    const plan = computePlan(
      b.inputs({ avoid: [backingOff("shard-1", "nb", NOW + 60_000)] }),
      options({ maxConcurrentMigrations: 1 }),
      NOW,
    );
    expect(moves(plan)).toEqual([{ source: "na", target: "nc" }]);
    expect(assessment(plan, "shard-2").decision).toBe("move");
    const a = assessment(plan, "shard-1");
    expect(a.decision).toBe("stay");
    expect(a.reason).toContain(
      `not to nb (backing off until ${new Date(NOW + 60_000).toISOString()} after 2 failed moves)`,
    );
    expect(plan.inputs.notes).toContain(
      `backing off: shard-1 → nb until ${new Date(NOW + 60_000).toISOString()} (2 failures: shard-exists)`,
    );
  });

  it("only the pair backs off: the shard may still go to another target, and other shards to that one", () => {
    // shard-1's demand comes from b and c alike: with nb backing off, nc is the next best target
    const b = new PlanBuilder().segment(0, [0, 600, 600], [0, 20, 20]).segment(1, [0, 600, 600], [0, 20, 20]);
    b.segment(4, [10, 900, 0], [10, 20, 0]);
    const plan = computePlan(
      b.inputs({ avoid: [backingOff("shard-1", "nb", NOW + 60_000)] }),
      options({ splitSegments: false }),
      NOW,
    );
    const steps = plan.steps.flatMap((s) => (s.kind === "move" ? [[s.shard, s.target]] : []));
    expect(steps).toContainEqual(["shard-1", "nc"]);
    expect(steps).toContainEqual(["shard-2", "nb"]);
  });

  it("a back-off that has ended, or one of another shard, changes nothing", () => {
    const b = twoCandidates();
    const o = options({ maxConcurrentMigrations: 1 });
    const plain = computePlan(b.inputs(), o, NOW);
    for (const avoid of [[backingOff("shard-1", "nb", NOW)], [backingOff("shard-9", "nb", NOW + 1000)]]) {
      const plan = computePlan(b.inputs({ avoid }), o, NOW);
      expect(plan.steps).toEqual(plain.steps);
      expect(plan.assessments).toEqual(plain.assessments);
    }
  });

  it("a split-then-move of a backing-off pair is not proposed either", () => {
    // one hot segment in a four-segment shard: the planner would split it off and move it to nb
    const b = new PlanBuilder().segment(0, [10, 900, 0], [10, 20, 0]);
    expect(computePlan(b.inputs(), options(), NOW).steps.map((s) => s.kind)).toEqual(["split", "move"]);
    const plan = computePlan(b.inputs({ avoid: [backingOff("shard-1", "nb", NOW + 1)] }), options(), NOW);
    expect(plan.steps).toEqual([]);
    expect(assessment(plan, "shard-1").reason).toMatch(/not to nb \(backing off until/);
  });
});
