/**
 * `migrate` checks a plan's whole step list against the map before anything
 * runs (src/engine/plan-check.ts): the dry run and --apply refuse the same
 * hostile plans with exit 2, and the map is left as it was.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { LocationMap } from "../../../src/engine/location-map.js";
import { serialisePlanFile } from "../../../src/engine/plan-file.js";
import {
  DEFAULT_PLANNER_OPTIONS,
  PLAN_FORMAT,
  splitOutSegment,
  type MigrationPlan,
  type PlanStep,
} from "../../../src/engine/planner.js";
import { cli } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-migrate-plan-"));
  // a token, so that --apply would reach the agents if the plan got past the checks
  env = {
    SHARDCTL_DATA_DIR: join(dir, "data"),
    SHARDCTL_CONFIG: join(dir, "shardctl.yaml"),
    SHARDCTL_TOKEN: "t".repeat(32),
  };
  writeFileSync(join(dir, "shardctl.yaml"), "segments: 64\n");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const mapText = () => readFileSync(join(dir, "data/location-map.json"), "utf8");
const readMap = () => JSON.parse(mapText()) as { version: number; map: LocationMap };

function planFile(version: number, steps: PlanStep[]): string {
  const plan: MigrationPlan = {
    format: PLAN_FORMAT,
    mapVersion: version,
    createdAt: 0,
    scope: { kind: "all" },
    inputs: {
      horizonSeconds: 3600,
      latency: { zones: [], rttMs: [] } as never,
      notes: [],
      inFlight: { migrations: 0, bytes: 0 },
    },
    options: DEFAULT_PLANNER_OPTIONS,
    assessments: [],
    steps,
    budget: { maxConcurrentMigrations: 1, maxBytesInFlight: 1, migrations: 0, bytes: 0 },
    summary: "hand-made",
  };
  const file = join(dir, `plan-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, serialisePlanFile(plan));
  return file;
}

const move = (shard: string, source: string, target: string): PlanStep => ({
  kind: "move",
  shard,
  source,
  target,
  bytes: 0,
  benefitMs: 1,
  costMs: 0,
  netMs: 1,
  copySeconds: 0,
});

describe("migrate with a plan file", () => {
  it("refuses, dry run and --apply alike, a plan that splits a shard twice, moves one twice or names the wrong source", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    const { version, map } = readMap();
    const parent = map.shards[0];
    const newShard = `shard-${map.nextShardSeq}`;
    const segment = parent.ranges[0][0];
    const split: PlanStep = {
      kind: "split",
      shard: parent.id,
      segment,
      newShard,
      node: parent.node,
      diff: splitOutSegment(map, parent.id, segment, newShard),
    };
    const target = map.nodes.find((n) => n.id !== parent.node)!.id;
    const other = map.shards.find((s) => s.node !== parent.node)!;
    const elsewhere = map.nodes.filter((n) => n.id !== other.node).map((n) => n.id);
    const before = mapText();
    const cases: [PlanStep[], RegExp][] = [
      [[split, split, move(newShard, parent.node, target)], /step 2 splits .* which step 1 split already/],
      [
        [split, move(newShard, parent.node, target), move(newShard, target, parent.node)],
        new RegExp(`step 3 moves ${newShard}, which step 2 moved already`),
      ],
      [
        [move(other.id, elsewhere[0], elsewhere[1])],
        new RegExp(`step 1 moves ${other.id} from ${elsewhere[0]}, but the map has it on ${other.node}`),
      ],
    ];
    for (const [steps, why] of cases) {
      const file = planFile(version, steps);
      for (const args of [
        ["migrate", file],
        ["migrate", "--apply", file],
      ]) {
        const r = await cli(args, env);
        expect(r.code, `${args.join(" ")}: ${r.err}`).toBe(2);
        expect(r.err).toMatch(why);
        expect(r.err).toMatch(/nothing was applied/);
        expect(r.err).not.toMatch(/would (move|split)/);
        expect(r.out).toBe("");
        expect(mapText()).toBe(before);
      }
    }
    // the same steps without the repeat pass the check: the dry run lists them with the map's source
    const ok = await cli(["migrate", planFile(version, [split, move(newShard, parent.node, target)])], env);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.err).toMatch(/would split/);
  });
});
