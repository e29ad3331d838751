import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { initialLayout, validateMap } from "../../../src/engine/location-map.js";
import {
  MIGRATION_PHASES,
  OWNER_LEASE_MS,
  advance,
  canAdvance,
  checkRecord,
  commitLayout,
  commitMap,
  elapsedMs,
  endRecord,
  isOrphaned,
  layoutCommitted,
  looksLikeRecord,
  newJournal,
  recoveryAction,
  type LayoutChange,
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

  it("a record ended after the wall clock was stepped back is storable: no negative write pause", () => {
    const m = map();
    let j = newJournal({
      id: "m1",
      shard: m.shards[0],
      target: "n2",
      planVersion: 4,
      term: 1,
      now: 3_600_010,
    });
    j = advance(j, "copying", 3_600_011);
    j = advance(j, "fenced", 3_600_012);
    // the clock steps back an hour here: the cut-over's end is "before" the fence
    j = advance(j, "prepared", 13);
    j = advance(j, "committed", 14);
    const record = { ...j, bytesCopied: 0, entriesCopied: 0, rounds: 0 };
    const done = endRecord(record, "done", 15, { writePauseMs: elapsedMs(3_600_012, 14) });
    expect(done.writePauseMs).toBeUndefined();
    // before: writePauseMs −3,599,998, and the journal refused the record ("bug: not a storable …")
    expect(() => checkRecord(done)).not.toThrow();
    expect(elapsedMs(10, 25)).toBe(15);
    expect(elapsedMs(10, 10)).toBe(0);
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

describe("layout changes (splits and merges) in the migration machinery", () => {
  const splitChange = (m: ReturnType<typeof map>): LayoutChange => {
    const sh = m.shards[0];
    return {
      op: {
        kind: "split",
        shard: sh.id,
        node: sh.node,
        reason: "hot-segment",
        pieces: [
          { id: sh.id, ranges: [[1, sh.ranges[0][1]]], load: 0 },
          { id: "shard-99", ranges: [[0, 1]], load: 0 },
        ],
      },
      pieceNodes: { "shard-99": "n2" },
      epochs: { [sh.id]: sh.epoch },
      nodes: { [sh.id]: sh.node },
    };
  };

  it("commits a split with the new piece on its node, every involved shard at a new epoch", () => {
    const m = map();
    const next = commitLayout(m, splitChange(m), 50, 3);
    validateMap(next);
    expect(next.term).toBe(3);
    expect(next.shards.find((s) => s.id === "shard-99")).toMatchObject({
      node: "n2",
      epoch: 1,
      ranges: [[0, 1]],
    });
    expect(next.shards.find((s) => s.id === m.shards[0].id)).toMatchObject({
      epoch: m.shards[0].epoch + 1,
      ranges: [[1, m.shards[0].ranges[0][1]]],
    });
    expect(layoutCommitted(next, splitChange(m))).toBe(true);
    expect(layoutCommitted(m, splitChange(m))).toBe(false);
  });

  it("a commit without a term is an operator's (term 0), whatever term the map was last written by", () => {
    const m = { ...map(), term: 7 };
    expect(commitLayout(m, splitChange(m), 50).term).toBe(0);
    const j = newJournal({ id: "m-op", shard: m.shards[0], target: "n2", planVersion: 1, term: 0, now: 1 });
    expect(commitMap(m, j, 60).term).toBe(0);
    expect(commitMap(m, j, 60, 9).term).toBe(9);
  });

  it("refuses the commit when an involved shard moved on or the piece's node left", () => {
    const m = map();
    const moved = { ...m, shards: m.shards.map((s, i) => (i === 0 ? { ...s, epoch: s.epoch + 1 } : s)) };
    expect(() => commitLayout(moved, splitChange(m), 50)).toThrow(/moved on/);
    const gone = {
      ...m,
      nodes: m.nodes.filter((n) => n.id !== "n2"),
      shards: m.shards.filter((s) => s.node !== "n2"),
    };
    expect(() => commitLayout(gone, splitChange(m), 50)).toThrow();
    const exists = commitLayout(m, splitChange(m), 50);
    expect(() =>
      commitLayout(exists, { ...splitChange(m), epochs: { [m.shards[0].id]: m.shards[0].epoch + 1 } }, 60),
    ).toThrow(/exists already/);
  });

  it("commits a merge: the kept shard takes the ranges at an epoch above all merged ones", () => {
    const m = map();
    const [a, b] = [m.shards[0], m.shards[1]];
    const change: LayoutChange = {
      op: {
        kind: "merge",
        shards: [a.id, b.id],
        node: a.node,
        ranges: [[a.ranges[0][0], b.ranges[0][1]]],
        load: 0,
      },
      pieceNodes: {},
      epochs: { [a.id]: a.epoch, [b.id]: b.epoch },
      nodes: { [a.id]: a.node, [b.id]: b.node },
    };
    const next = commitLayout(m, change, 70);
    expect(next.shards.some((s) => s.id === b.id)).toBe(false);
    expect(next.shards.find((s) => s.id === a.id)!.epoch).toBe(Math.max(a.epoch, b.epoch) + 1);
    expect(layoutCommitted(next, change)).toBe(true);
    expect(layoutCommitted(m, change)).toBe(false);
  });

  it("recovery of a layout change: forward iff the map shows it, else back", () => {
    const m = map();
    const change = splitChange(m);
    const base = {
      ...newJournal({ id: "l1", shard: m.shards[0], target: "n2", planVersion: 1, term: 0, now: 1 }),
      layout: change,
    };
    const prepared = { ...base, phase: "prepared" as const };
    expect(recoveryAction(prepared, m).kind).toBe("roll-back");
    expect(recoveryAction(prepared, commitLayout(m, change, 5)).kind).toBe("roll-forward");
    expect(recoveryAction({ ...base, phase: "done" as const }, m).kind).toBe("nothing");
  });

  it("a record is orphaned when its owner is known dead or silent past the lease, never when ended", () => {
    const m = map();
    const r = {
      ...newJournal({ id: "o1", shard: m.shards[0], target: "n2", planVersion: 1, term: 0, now: 1000 }),
      entriesCopied: 0,
      rounds: 0,
      heartbeatAt: 1000,
    };
    expect(isOrphaned(r, 2000, true)).toBe(false);
    expect(isOrphaned(r, 2000, undefined)).toBe(false);
    expect(isOrphaned(r, 2000, false)).toBe(true);
    expect(isOrphaned(r, 1000 + OWNER_LEASE_MS + 1, undefined)).toBe(true);
    expect(isOrphaned({ ...r, phase: "aborted" }, 1000 + OWNER_LEASE_MS + 1, false)).toBe(false);
  });

  it("refuses to store a record readers could not use", () => {
    expect(() => checkRecord({ id: "../x" } as never)).toThrow(/not a storable/);
    expect(looksLikeRecord({ id: "a" })).toBe(false);
  });

  it("reads a record written by someone else as a record only if status and migrations can print it", () => {
    const ok = {
      id: "m1",
      shard: "shard-1",
      source: "node-1",
      target: "node-2",
      fromEpoch: 1,
      planVersion: 3,
      phase: "copying",
      term: 0,
      startedAt: 1000,
      phaseAt: { journaled: 1000, copying: 1001 },
      bytesCopied: 0,
      entriesCopied: 0,
      rounds: 0,
    };
    expect(looksLikeRecord(ok)).toBe(true);
    for (const bad of [
      { startedAt: 1e20 }, // not a time a Date holds: status crashed with RangeError
      { startedAt: Number.NaN },
      { phase: "bogus" }, // was counted as in progress
      { bytesCopied: undefined }, // was printed "undefined B"
      { entriesCopied: "7" },
      { rounds: -1 },
      { fromEpoch: Number.POSITIVE_INFINITY },
      { phaseAt: { copying: 1e300 } },
      { phaseAt: { elsewhere: 5 } },
      { endedAt: "yesterday" },
      { heartbeatAt: -1e17 },
      { writePauseMs: -3 },
    ])
      expect(looksLikeRecord({ ...ok, ...bad }), JSON.stringify(bad)).toBe(false);
    expect(looksLikeRecord(null)).toBe(false);
    expect(looksLikeRecord("m1")).toBe(false);
  });
});
