import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PreconditionError, UsageError } from "../../../src/errors.js";
import { checkPlanSteps } from "../../../src/engine/plan-check.js";
import { computePlan, type MigrationPlan, type PlanStep } from "../../../src/engine/planner.js";
import { options, PlanBuilder } from "./builders.js";

const NOW = Date.UTC(2026, 0, 1, 12);

/** Segment 0 split off shard-1 (on na) into a new shard moved to nb: steps [split, move]. */
function splitPlan(): { b: PlanBuilder; plan: MigrationPlan } {
  const b = new PlanBuilder().segment(0, [0, 300, 0], [0, 10, 0]).segment(1, [300, 0, 0]);
  const plan = computePlan(b.inputs(), options(), NOW);
  expect(plan.steps.map((s) => s.kind)).toEqual(["split", "move"]);
  return { b, plan };
}

/** The steps after `edit` on a deep copy. */
function edited(steps: readonly PlanStep[], edit: (s: PlanStep[]) => void): PlanStep[] {
  const copy = structuredClone(steps) as PlanStep[];
  edit(copy);
  return copy;
}

function refusal(b: PlanBuilder, steps: PlanStep[], kind: typeof UsageError = UsageError): string {
  try {
    checkPlanSteps(b.map, steps);
  } catch (err) {
    expect(err).toBeInstanceOf(kind);
    expect((err as Error).message).toMatch(/nothing was applied/);
    return (err as Error).message;
  }
  throw new Error("the steps were accepted");
}

describe("checkPlanSteps", () => {
  it("accepts what the planner makes", () => {
    const { b, plan } = splitPlan();
    expect(() => checkPlanSteps(b.map, plan.steps)).not.toThrow();
  });

  it("refuses a split made twice, naming the second step", () => {
    const { b, plan } = splitPlan();
    const [split, move] = plan.steps;
    // the audit's file: [split shard-1 → shard-N, split again, move shard-N]
    expect(refusal(b, [split, split, move])).toMatch(
      new RegExp(`step 2 splits ${split.shard}, which step 1 split already`),
    );
  });

  it("refuses a shard moved twice, and a split of a shard moved or created before", () => {
    const { b, plan } = splitPlan();
    const [split, move] = plan.steps as [PlanStep & { kind: "split" }, PlanStep & { kind: "move" }];
    expect(refusal(b, [split, move, move])).toMatch(
      new RegExp(`step 3 moves ${move.shard}, which step 2 moved already`),
    );
    const other = b.map.shards.find((s) => s.id !== split.shard)!;
    const target = b.map.nodes.find((n) => n.id !== other.node)!.id;
    const moveOther: PlanStep = { ...move, shard: other.id, source: other.node, target };
    expect(refusal(b, [moveOther, moveOther])).toMatch(/step 2 moves .* which step 1 moved already/);
    // a split of the shard a move took away
    const moveParent: PlanStep = { ...move, shard: split.shard, source: split.node, target };
    expect(refusal(b, [moveParent, split, move])).toMatch(/step 2 splits .* which step 1 moved already/);
    // a split of the shard an earlier split created
    const splitChild = edited([split], (s) => {
      const st = s[0] as PlanStep & { kind: "split" };
      st.shard = split.newShard;
      st.newShard = "shard-99";
    })[0];
    expect(refusal(b, [split, splitChild])).toMatch(
      new RegExp(`step 2 splits ${split.newShard}, which step 1 created already`),
    );
  });

  it("refuses a split whose new shard exists, or whose layout change is another one", () => {
    const { b, plan } = splitPlan();
    const existing = b.map.shards.find((s) => s.id !== plan.steps[0].shard)!.id;
    expect(
      refusal(
        b,
        edited(plan.steps, (s) => ((s[0] as { newShard: string }).newShard = existing)),
      ),
    ).toMatch(new RegExp(`step 1 splits .* into ${existing}, which exists already`));
    // the step names one shard, its layout change splits another
    expect(
      refusal(
        b,
        edited(plan.steps, (s) => {
          const op = (s[0] as PlanStep & { kind: "split" }).diff.ops[0] as { shard: string };
          op.shard = existing;
        }),
      ),
    ).toMatch(/its layout change says something else/);
    // pieces that take segments the shard does not hold, or a range that would not fit in memory
    for (const ranges of [[[0, 1]], [[0, 1e12]], [[5, 3]]]) {
      expect(
        refusal(
          b,
          edited(plan.steps, (s) => {
            const op = (s[0] as PlanStep & { kind: "split" }).diff.ops[0] as {
              pieces: { ranges: unknown }[];
            };
            op.pieces[0].ranges = ranges;
          }),
        ),
      ).toMatch(/pieces/);
    }
  });

  it("refuses a split whose layout change has null or odd pieces or ops (not a crash), and a new shard numbered past 2^53", () => {
    const { b, plan } = splitPlan();
    const op = (s: PlanStep[]) => (s[0] as PlanStep & { kind: "split" }).diff.ops as unknown[];
    for (const damage of [
      (s: PlanStep[]) => ((op(s)[0] as { pieces: unknown[] }).pieces = [null, null]),
      (s: PlanStep[]) => ((op(s)[0] as { pieces: unknown[] }).pieces[0] = null),
      (s: PlanStep[]) => ((op(s)[0] as { pieces: unknown[] }).pieces[1] = 7),
      (s: PlanStep[]) => ((op(s)[0] as { pieces: unknown }).pieces = "two"),
      (s: PlanStep[]) => (op(s)[0] = null),
    ])
      expect(refusal(b, edited(plan.steps, damage))).toMatch(/its layout change says something else/);
    const huge = "shard-99999999999999999999";
    expect(
      refusal(
        b,
        edited(plan.steps, (s) => {
          const split = s[0] as PlanStep & { kind: "split" };
          const move = s[1] as PlanStep & { kind: "move" };
          split.newShard = huge;
          (split.diff.ops[0] as { pieces: { id: string }[] }).pieces[1].id = huge;
          move.shard = huge;
        }),
      ),
    ).toMatch(
      new RegExp(`step 1 splits shard-1 into ${huge}, whose number is past what a shard id may carry`),
    );
  });

  it("refuses a split whose new shard takes more than the segment the step names", () => {
    const { b, plan } = splitPlan();
    const pieces = () =>
      edited(plan.steps, (s) => {
        const op = (s[0] as PlanStep & { kind: "split" }).diff.ops[0] as { pieces: { ranges: unknown }[] };
        op.pieces[0].ranges = [[2, 4]];
        op.pieces[1].ranges = [[0, 2]]; // segments 0 and 1, while the step splits off segment 0
      });
    expect(refusal(b, pieces())).toMatch(
      /step 1 splits shard-1 into pieces that are not its segments \(segment 0 split off\)/,
    );
    // the same check without a consequence (plan --verify applies nothing)
    expect(() => checkPlanSteps(b.map, pieces(), "")).toThrow(/\(segment 0 split off\)$/);
  });

  it("refuses a step whose source is not where the map has the shard (exit 2), a missing target (exit 3)", () => {
    const { b, plan } = splitPlan();
    const split = plan.steps[0] as PlanStep & { kind: "split" };
    const move = plan.steps[1] as PlanStep & { kind: "move" };
    const other = b.map.shards.find((s) => s.id !== split.shard)!;
    const elsewhere = b.map.nodes.filter((n) => n.id !== other.node).map((n) => n.id);
    // the audit's case: the plan says node-3, the map node-1; the dry run printed the plan's source
    const wrong: PlanStep = { ...move, shard: other.id, source: elsewhere[0], target: elsewhere[1] };
    expect(refusal(b, [wrong])).toMatch(
      new RegExp(`step 1 moves ${other.id} from ${elsewhere[0]}, but the map has it on ${other.node}`),
    );
    expect(
      refusal(
        b,
        edited(plan.steps, (s) => ((s[0] as { node: string }).node = elsewhere[0])),
      ),
    ).toMatch(/step 1 splits .* on .* but the map has it on/);
    expect(
      refusal(b, [{ ...move, shard: other.id, source: other.node, target: "node-9" }], PreconditionError),
    ).toMatch(/step 1 moves .* to node-9, which is not in the location map/);
    expect(refusal(b, [{ ...move, shard: "shard-999", source: "na", target: "nb" }])).toMatch(
      /shard-999, which is not in the location map/,
    );
    expect(refusal(b, [{ ...move, shard: other.id, source: other.node, target: other.node }])).toMatch(
      /where it is already/,
    );
  });

  it("accepts every plan the planner makes, and refuses any of them with one step repeated anywhere", () => {
    const demand = fc.array(
      fc.record({
        segment: fc.integer({ min: 0, max: 23 }),
        zones: fc.tuple(fc.nat(400), fc.nat(400), fc.nat(400)),
      }),
      { minLength: 1, maxLength: 8 },
    );
    fc.assert(
      fc.property(demand, fc.nat(), fc.nat(), (segs, pick, at) => {
        const b = new PlanBuilder();
        for (const s of segs) b.segment(s.segment, [...s.zones]);
        const plan = computePlan(b.inputs(), options(), NOW);
        checkPlanSteps(b.map, plan.steps);
        if (plan.steps.length === 0) return;
        const steps = [...plan.steps];
        steps.splice(at % (steps.length + 1), 0, steps[pick % steps.length]);
        expect(() => checkPlanSteps(b.map, steps)).toThrow(UsageError);
      }),
      { numRuns: 200 },
    );
  });
});
