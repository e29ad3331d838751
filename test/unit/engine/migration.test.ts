import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { initialLayout, validateMap } from "../../../src/engine/location-map.js";
import {
  MIGRATION_PHASES,
  advance,
  canAdvance,
  commitMap,
  newJournal,
  recoveryAction,
  type MigrationPhase,
} from "../../../src/engine/migration.js";

const nodes = ["n1", "n2"].map((id, i) => ({ id, address: `127.0.0.1:${9000 + i}`, zone: "ab"[i] }));
const map = () => initialLayout(64, nodes, { shardsPerNode: 2, now: 0 });

describe("migration state machine", () => {
  it("walks the happy path and records each phase's time", () => {
    const m = map();
    let j = newJournal({ id: "m1", shard: m.shards[0], target: "n2", planVersion: 4, term: 1, now: 10 });
    for (const [phase, t] of [
      ["copying", 11],
      ["fenced", 12],
      ["prepared", 13],
      ["committed", 14],
      ["done", 15],
    ] as const) {
      j = advance(j, phase, t);
    }
    expect(j.phaseAt).toEqual({
      journaled: 10,
      copying: 11,
      fenced: 12,
      prepared: 13,
      committed: 14,
      done: 15,
    });
  });

  it("allows abort before the commit point and never after", () => {
    for (const p of ["journaled", "copying", "fenced", "prepared"] as MigrationPhase[])
      expect(canAdvance(p, "aborted")).toBe(true);
    for (const p of ["committed", "done", "aborted"] as MigrationPhase[])
      expect(canAdvance(p, "aborted")).toBe(false);
  });

  it("refuses illegal transitions (no skipping the prepare vote)", () => {
    const j = newJournal({ id: "m1", shard: map().shards[0], target: "n2", planVersion: 1, term: 0, now: 0 });
    expect(() => advance(j, "committed", 1)).toThrow(/cannot go from journaled to committed/);
    expect(() =>
      newJournal({ id: "m2", shard: map().shards[0], target: "n1", planVersion: 1, term: 0, now: 0 }),
    ).toThrow(/already on n1/);
  });

  it("commits by moving the shard to the target at epoch + 1 with a migration timestamp", () => {
    const m = map();
    const j = newJournal({ id: "m1", shard: m.shards[1], target: "n2", planVersion: 1, term: 0, now: 0 });
    const next = commitMap(m, j, 777, 3);
    validateMap(next);
    expect(next.shards[1]).toMatchObject({ node: "n2", epoch: 2, migrationTimestamp: 777 });
    expect(next.term).toBe(3);
    expect(next.shards.filter((s, i) => s !== m.shards[i]).length).toBe(1);
    // a second commit of the same journal is refused: the shard is no longer at the source epoch
    expect(() => commitMap(next, j, 778)).toThrow(/map moved on/);
  });

  it("decides recovery from the map, per the failure matrix", () => {
    const m = map();
    const base = newJournal({ id: "m1", shard: m.shards[0], target: "n2", planVersion: 1, term: 0, now: 0 });
    // before the commit, from every phase: roll back
    for (const phase of ["journaled", "copying", "fenced", "prepared"] as MigrationPhase[]) {
      expect(recoveryAction({ ...base, phase }, m).kind).toBe("roll-back");
    }
    // commit txn sent, outcome unknown: the map decides
    const committedMap = commitMap(m, base, 5);
    expect(recoveryAction({ ...base, phase: "prepared" }, committedMap).kind).toBe("roll-forward");
    expect(recoveryAction({ ...base, phase: "committed" }, committedMap).kind).toBe("roll-forward");
    expect(recoveryAction({ ...base, phase: "done" }, committedMap).kind).toBe("nothing");
    expect(recoveryAction({ ...base, phase: "aborted" }, m).kind).toBe("nothing");
  });

  it("never rolls forward unless the map shows the target at the next epoch (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...MIGRATION_PHASES),
        fc.constantFrom("n1", "n2"),
        fc.integer({ min: 1, max: 4 }),
        (phase, node, epoch) => {
          const m = map();
          const j = {
            ...newJournal({ id: "m", shard: m.shards[0], target: "n2", planVersion: 1, term: 0, now: 0 }),
            phase,
          };
          m.shards[0] = { ...m.shards[0], node, epoch };
          const action = recoveryAction(j, m);
          if (action.kind === "roll-forward") {
            expect(node).toBe("n2");
            expect(epoch).toBe(j.fromEpoch + 1);
          }
          if (phase === "done" || phase === "aborted") expect(action.kind).toBe("nothing");
        },
      ),
    );
  });
});
