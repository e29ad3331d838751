/**
 * The autopilot's reshard stage with a change held back by its back-off:
 * a change of the same diff that touches one of its shards (a merge of the
 * pieces a held split makes) is held with it, instead of fencing and copying
 * only to be refused at its commit (the layout would have a gap).
 */
import { describe, expect, it } from "vitest";
import { MoveBackoffs, runLayoutChanges } from "../../../src/cluster/autopilot-migrate.js";
import type { LayoutDiff } from "../../../src/engine/assigner.js";
import type { MigrateDeps } from "../../../src/cluster/migrate.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { newJournal } from "../../../src/engine/migration.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const NOW = Date.UTC(2026, 10, 29, 12);

const diff: LayoutDiff = {
  ops: [
    {
      kind: "split",
      shard: "shard-1",
      node: "node-1",
      reason: "hot-segment",
      pieces: [
        { id: "shard-1", ranges: [[1, 4]], load: 1 },
        { id: "shard-61", ranges: [[0, 1]], load: 90 },
      ],
    },
    { kind: "merge", shards: ["shard-1", "shard-2"], node: "node-1", ranges: [[0, 8]], load: 2 },
  ],
  shardsBefore: 12,
  shardsAfter: 12,
  dedicatedAfter: 1,
  heldByDwell: [],
};

describe("layout changes held by their back-off", () => {
  it("a merge touching the shard of a held split is held with it, and nothing is started", async () => {
    const backoff = new MoveBackoffs({ initialMs: 60_000, maxMs: 600_000 });
    backoff.failed({ shard: "shard-1", target: "split", error: "target down" }, NOW - 1000);
    // nothing may be asked of the store or the agents: every change is held
    const untouchable = new Proxy(
      {},
      {
        get: (_t, p) => {
          throw new Error(`the held changes touched deps.${String(p)}`);
        },
      },
    );
    const deps = { clock: { now: () => NOW }, log: () => undefined, store: untouchable, rpc: untouchable };
    const r = await runLayoutChanges(diff, deps as unknown as MigrateDeps, backoff);
    expect(r.appliedVersion).toBeUndefined();
    expect(r.notApplied).toMatch(
      /^backing off: split of shard-1 until .*; held with them: merge of shard-1\+shard-2$/,
    );
    // held back is not failed: `autopilot --once` exits 0 for it
    expect(r.failed).toBeUndefined();
  });
});

describe("layout changes whose shards another migration holds", () => {
  const tmp = tempDirs("shardctl-layout-busy-");

  it("are skipped for this cycle, not failed: no back-off, and `autopilot --once` exits 0 for it", async () => {
    const store = new EmbeddedStore(tmp());
    const nodes = [{ id: "node-1", address: "127.0.0.1:1", zone: "a" }];
    const map = initialLayout(64, nodes, { shardsPerNode: 8, now: NOW });
    expect((await store.compareAndSet(0, map)).ok).toBe(true);
    // a `migrate --apply` of shard-1 in flight elsewhere (its record open, its coordinator alive)
    const shard1 = map.shards.find((s) => s.id === "shard-1")!;
    const record = {
      ...newJournal({ id: "m-other", shard: shard1, target: "node-2", planVersion: 1, term: 0, now: NOW }),
      owner: { host: "elsewhere", pid: 1, term: 0 },
      heartbeatAt: NOW,
      bytesCopied: 0,
      entriesCopied: 0,
      rounds: 0,
    };
    expect((await store.putMigration({ record, expectRev: 0 })).ok).toBe(true);
    // no agent may be asked anything: the change is refused before it starts
    const untouchable = new Proxy(
      {},
      {
        get: (_t, p) => {
          throw new Error(`the busy change touched rpc.${String(p)}`);
        },
      },
    );
    const backoff = new MoveBackoffs({ initialMs: 60_000, maxMs: 600_000 });
    const split = { ...diff, ops: [diff.ops[0]] };
    const deps = { clock: { now: () => NOW }, log: () => undefined, store, rpc: untouchable };
    const r = await runLayoutChanges(split, deps as unknown as MigrateDeps, backoff, undefined, 1);
    expect(r.notApplied).toMatch(/shard-1 is being migrated by another coordinator \(migration m-other, /);
    expect(r.failed).toBeUndefined();
    expect(backoff.active(NOW)).toEqual([]);
    await store.close();
  });
});
