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

  it("a byte order mark and an upper-case checksum are read; a malformed checksum is called so", () => {
    const plan = splitPlan();
    const text = serialisePlanFile(plan);
    expect(parsePlanFile("\ufeff" + text)).toEqual(plan);
    const sum = planChecksum(plan);
    expect(parsePlanFile(text.replace(sum, sum.toUpperCase()))).toEqual(plan);
    expect(refusal(text.replace(sum, sum.slice(1)))).toMatch(
      new RegExp(`the checksum "${sum.slice(1)}" is not 16 hexadecimal digits; nothing was applied`),
    );
    expect(refusal(text.replace(`"checksum": "${sum}",`, ""))).toMatch(/the checksum is missing/);
    // with no consequence to state (plan --verify applies nothing), the message says only what is wrong
    expect(() => parsePlanFile(text.slice(0, 20), "f.json", "")).toThrow(
      /^f\.json is refused: it is not complete JSON \(truncated or corrupt\)$/,
    );
  });

  it("a re-checksummed map digest that is not 16 hex digits is refused; a plan without one is read", () => {
    const plan = splitPlan();
    const file = (p: unknown) =>
      JSON.stringify({ format: "shardctl-plan-file/1", checksum: planChecksum(p as MigrationPlan), plan: p });
    for (const digest of [5, "", "xyz", "ABCDEF0123456789", "0123456789abcdef0", null])
      expect(refusal(file({ ...plan, mapDigest: digest }))).toMatch(
        /the plan's map digest .* is not 16 lowercase/,
      );
    const { mapDigest: _, ...old } = plan;
    expect(parsePlanFile(file(old))).toEqual(old);
  });

  it("a re-checksummed move whose size is not a number of bytes is refused", () => {
    const plan = splitPlan();
    for (const bytes of [-5, "lots", null, 1e300, 1.5])
      expect(refusal(edited(plan, (s) => (s[1].bytes = bytes)))).toMatch(
        /step 2 moves shard-7 with a size that is not a number of bytes/,
      );
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
    // a shard id that is not one, quoted and cut short (a 100,000-character id was echoed whole)
    const long = refusal(edited(plan, (s) => (s[1].shard = "x".repeat(100_000))));
    expect(long).toMatch(/step 2 names "x{80}…", which is not a shard id/);
    expect(long.length).toBeLessThan(400);
  });
});
