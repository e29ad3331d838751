import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/errors.js";
import { planChecksum, parsePlanFile, serialisePlanFile } from "../../../src/engine/plan-file.js";
import { computePlan, type MigrationPlan } from "../../../src/engine/planner.js";
import { movesOfPlan } from "../../../src/cluster/reshape.js";
import { options, PlanBuilder } from "./builders.js";

const NOW = Date.UTC(2026, 0, 1, 12);

/** A plan that splits segment 0 off shard-1 and moves the new shard to nb. */
function splitPlan(): MigrationPlan {
  const b = new PlanBuilder().segment(0, [0, 300, 0], [0, 10, 0]).segment(1, [300, 0, 0]);
  const plan = computePlan(b.inputs(), options(), NOW);
  expect(plan.steps.map((s) => s.kind)).toEqual(["split", "move"]);
  return plan;
}

/** The plan file of `plan` after `edit`, its checksum recomputed (a hand edit that knows the format). */
function edited(plan: MigrationPlan, edit: (steps: Record<string, unknown>[]) => void): string {
  const copy = JSON.parse(JSON.stringify(plan)) as MigrationPlan;
  edit(copy.steps as unknown as Record<string, unknown>[]);
  const file = JSON.parse(serialisePlanFile(plan)) as { checksum: string; plan: MigrationPlan };
  file.plan = copy;
  file.checksum = planChecksum(copy);
  return JSON.stringify(file);
}

function refusal(text: string): string {
  try {
    parsePlanFile(text);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error("the plan file was accepted");
}

describe("plan files", () => {
  it("round-trip, and the moves they hold are what the plan says", () => {
    const plan = splitPlan();
    const back = parsePlanFile(serialisePlanFile(plan));
    expect(back).toEqual(plan);
    expect(movesOfPlan(back)).toMatchObject([{ shard: "shard-1", source: "na", target: "nb" }]);
  });

  it("a damaged or truncated file is refused", () => {
    const text = serialisePlanFile(splitPlan());
    expect(refusal(text.replace('"nb"', '"nc"'))).toMatch(/checksum does not match/);
    expect(refusal(text.slice(0, text.length / 2))).toMatch(/not complete JSON/);
  });

  it("a re-checksummed file whose steps are not whole is refused with what is missing, not a crash", () => {
    const plan = splitPlan();
    expect(refusal(edited(plan, (s) => delete s[0].diff))).toMatch(
      /step 1 splits shard-1 without its layout change/,
    );
    expect(refusal(edited(plan, (s) => (s[0].diff = { ops: [] })))).toMatch(/without its layout change/);
    expect(refusal(edited(plan, (s) => delete s[0].newShard))).toMatch(
      /without its new shard, node or segment/,
    );
    expect(refusal(edited(plan, (s) => delete s[1].target))).toMatch(
      /step 2 moves shard-7 without a source and a target/,
    );
    expect(refusal(edited(plan, (s) => (s[1].kind = "teleport")))).toMatch(
      /step 2 is neither a move nor a split/,
    );
    expect(refusal(edited(plan, (s) => (s[0] = null as unknown as Record<string, unknown>)))).toMatch(
      /step 1 is malformed/,
    );
  });
});
