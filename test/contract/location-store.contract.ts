/**
 * The LocationStore contract: what every store (embedded file, Consul KV) must
 * do. A store's test file calls locationStoreContract with a factory that
 * gives a fresh, empty store (and a second client on the same backend).
 */
import { describe, expect, it } from "vitest";
import type { VersionedMap } from "../../src/engine/location-map.js";
import { JOURNAL_HISTORY, type MigrationRecord } from "../../src/engine/migration.js";
import type { LocationStore } from "../../src/engine/ports.js";
import { largeMap, smallMap } from "./maps.js";

export { largeMap, smallMap };

export interface StoreFixture {
  store: LocationStore;
  /** Another client on the same backend (another process would see the same). */
  second(): LocationStore;
  cleanup(): Promise<void>;
}

export type StoreFactory = () => Promise<StoreFixture>;

export function locationStoreContract(name: string, factory: StoreFactory): void {
  describe(`LocationStore contract: ${name}`, () => {
    const withStore = async (fn: (f: StoreFixture) => Promise<void>) => {
      const f = await factory();
      try {
        await fn(f);
      } finally {
        await f.cleanup();
      }
    };

    it("an empty store loads as null", () =>
      withStore(async ({ store }) => {
        expect(await store.load()).toBeNull();
        expect(await store.load({ consistent: true })).toBeNull();
      }));

    it("CAS from 0 creates the map and a load returns it with the new version", () =>
      withStore(async ({ store }) => {
        const res = await store.compareAndSet(0, smallMap());
        expect(res.ok).toBe(true);
        const vm = await store.load({ consistent: true });
        expect(vm).not.toBeNull();
        expect(vm!.map).toEqual(smallMap());
        expect(vm!.version).toBe(res.ok ? res.version : -1);
        expect(vm!.version).toBeGreaterThan(0);
      }));

    it("CAS with a wrong version is refused and writes nothing", () =>
      withStore(async ({ store }) => {
        const first = await store.compareAndSet(0, smallMap(0));
        if (!first.ok) throw new Error("setup write failed");
        // Given a stored map, when a writer CASes against 0 or a made-up version
        const fromZero = await store.compareAndSet(0, smallMap(1));
        const made = await store.compareAndSet(first.version + 1000, smallMap(2));
        // then both are refused with the current version, and the map is unchanged
        expect(fromZero).toEqual({ ok: false, currentVersion: first.version });
        expect(made).toEqual({ ok: false, currentVersion: first.version });
        const vm = await store.load({ consistent: true });
        expect(vm!.version).toBe(first.version);
        expect(vm!.map).toEqual(smallMap(0));
      }));

    it("successive CASes each move the version forward", () =>
      withStore(async ({ store }) => {
        let version = 0;
        for (let i = 0; i < 5; i++) {
          const r = await store.compareAndSet(version, smallMap(i));
          expect(r.ok).toBe(true);
          if (!r.ok) return;
          expect(r.version).toBeGreaterThan(version);
          version = r.version;
        }
        expect((await store.load())!.map.nextShardSeq).toBe(smallMap(4).nextShardSeq);
      }));

    it("concurrent CASes from the same version: exactly one wins", () =>
      withStore(async ({ store, second }) => {
        const base = await store.compareAndSet(0, smallMap(0));
        if (!base.ok) throw new Error("setup write failed");
        const others = [second(), second(), second()];
        try {
          const writers = [store, ...others];
          const results = await Promise.all(
            writers.map((w, i) => w.compareAndSet(base.version, smallMap(10 + i))),
          );
          const winners = results.filter((r) => r.ok);
          expect(winners).toHaveLength(1);
          const winnerIdx = results.findIndex((r) => r.ok);
          for (const r of results) if (!r.ok) expect(r.currentVersion).toBeGreaterThanOrEqual(base.version);
          const vm = await store.load({ consistent: true });
          expect(vm!.map).toEqual(smallMap(10 + winnerIdx));
        } finally {
          for (const o of others) await o.close();
        }
      }));

    it("watch delivers the current map, then each change, and stops on abort", () =>
      withStore(async ({ store, second }) => {
        const first = await store.compareAndSet(0, smallMap(0));
        if (!first.ok) throw new Error("setup write failed");
        const seen: VersionedMap[] = [];
        const ac = new AbortController();
        const watcher = second();
        const done = watcher.watch((vm) => seen.push(vm), ac.signal);
        try {
          await until(() => seen.length >= 1, 5000);
          expect(seen[0].version).toBe(first.version);
          const r = await store.compareAndSet(first.version, smallMap(1));
          if (!r.ok) throw new Error("write failed");
          await until(() => seen.some((v) => v.version === r.version), 5000);
          expect(seen[seen.length - 1].map).toEqual(smallMap(1));
          // No duplicate deliveries of a version.
          expect(new Set(seen.map((s) => s.version)).size).toBe(seen.length);
        } finally {
          ac.abort();
          await done;
          await watcher.close();
        }
      }));

    it("a map that fails validation (overlap, gap) is refused and nothing is written", () =>
      withStore(async ({ store }) => {
        const good = await store.compareAndSet(0, smallMap(0));
        if (!good.ok) throw new Error("setup write failed");
        const overlap = smallMap(1);
        overlap.shards[1].ranges = [[overlap.shards[0].ranges[0][0], overlap.shards[1].ranges[0][1]]];
        const gap = smallMap(2);
        gap.shards[0].ranges = [[gap.shards[0].ranges[0][0] + 1, gap.shards[0].ranges[0][1]]];
        const unknownNode = smallMap(3);
        unknownNode.shards[0].node = "nowhere";
        for (const bad of [overlap, gap, unknownNode]) {
          await expect(store.compareAndSet(good.version, bad)).rejects.toThrow(/location map is invalid/);
        }
        const vm = await store.load({ consistent: true });
        expect(vm!.version).toBe(good.version);
        expect(vm!.map).toEqual(smallMap(0));
      }));

    it("a large map (100,000 segments, 5,000 shards) round-trips, and a small change to it commits", () =>
      withStore(async ({ store }) => {
        const big = largeMap();
        const r = await store.compareAndSet(0, big);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const vm = await store.load({ consistent: true });
        expect(vm!.map).toEqual(big);
        const changed = structuredClone(big);
        changed.shards[2500].node = "node-3";
        changed.shards[2500].epoch += 1;
        const r2 = await store.compareAndSet(r.version, changed);
        expect(r2.ok).toBe(true);
        expect((await store.load({ consistent: true }))!.map).toEqual(changed);
      }));

    it("journal records are created once, updated only at their revision, and listed oldest first", () =>
      withStore(async ({ store, second }) => {
        const map = await store.compareAndSet(0, smallMap());
        if (!map.ok) throw new Error("setup write failed");
        const a = journalRecord("m-b", 2000);
        const b = journalRecord("m-a", 1000);
        const ca = await store.putMigration({ record: a, expectRev: 0 });
        const cb = await store.putMigration({ record: b, expectRev: 0 });
        expect(ca.ok && cb.ok).toBe(true);
        if (!ca.ok) return;
        // a second create of the same id, and an update at a made-up revision, are refused
        expect(await store.putMigration({ record: a, expectRev: 0 })).toEqual({ ok: false, rev: ca.rev });
        expect((await store.putMigration({ record: a, expectRev: ca.rev + 999 })).ok).toBe(false);
        // another client updates at the right revision; the first client's stale write then loses
        const other = second();
        const moved = await other.putMigration({ record: { ...a, phase: "copying" }, expectRev: ca.rev });
        expect(moved.ok).toBe(true);
        const stale = await store.putMigration({ record: { ...a, phase: "aborted" }, expectRev: ca.rev });
        expect(stale.ok).toBe(false);
        const got = await store.getMigration("m-b");
        expect(got?.record.phase).toBe("copying");
        expect(got?.rev).toBe(moved.ok ? moved.rev : -1);
        const list = await store.listMigrations();
        expect(list.records.map((r) => r.record.id)).toEqual(["m-a", "m-b"]);
        expect(list.unreadable).toEqual([]);
        expect(await store.getMigration("nope")).toBeNull();
        // journal writes do not change the map version
        expect((await store.load({ consistent: true }))!.version).toBe(map.version);
        await other.close();
      }));

    it("a CAS with a journal record writes the map and the record together, or neither", () =>
      withStore(async ({ store }) => {
        const first = await store.compareAndSet(0, smallMap(0));
        if (!first.ok) throw new Error("setup write failed");
        const rec = journalRecord("m-commit", 1000);
        const put = await store.putMigration({ record: rec, expectRev: 0 });
        if (!put.ok) throw new Error("setup journal write failed");
        // a stale journal revision: nothing is written, neither map nor record
        const refused = await store.compareAndSet(first.version, smallMap(1), {
          migration: { record: { ...rec, phase: "committed" }, expectRev: put.rev + 999 },
        });
        expect(refused.ok).toBe(false);
        expect((await store.load({ consistent: true }))!.map).toEqual(smallMap(0));
        expect((await store.getMigration("m-commit"))?.record.phase).toBe("journaled");
        // a stale map version: neither either
        const stale = await store.compareAndSet(first.version + 999, smallMap(1), {
          migration: { record: { ...rec, phase: "committed" }, expectRev: put.rev },
        });
        expect(stale.ok).toBe(false);
        expect((await store.getMigration("m-commit"))?.record.phase).toBe("journaled");
        // both current: both written, and the record's new revision is returned
        const ok = await store.compareAndSet(first.version, smallMap(1), {
          migration: { record: { ...rec, phase: "committed" }, expectRev: put.rev },
        });
        expect(ok.ok).toBe(true);
        if (!ok.ok) return;
        expect((await store.load({ consistent: true }))!.map).toEqual(smallMap(1));
        const after = await store.getMigration("m-commit");
        expect(after?.record.phase).toBe("committed");
        expect(after?.rev).toBe(ok.migrationRev);
      }));

    it(
      "keeps every migration in flight and only the newest JOURNAL_HISTORY ended ones",
      () =>
        withStore(async ({ store }) => {
          await store.compareAndSet(0, smallMap());
          // in flight, and older than every ended record: never dropped
          for (let i = 0; i < 3; i++) {
            const r = await store.putMigration({ record: journalRecord(`open-${i}`, i), expectRev: 0 });
            expect(r.ok).toBe(true);
          }
          const ended = JOURNAL_HISTORY + 25;
          for (let i = 0; i < ended; i++) {
            const phase = i % 2 ? "done" : "aborted";
            const at = 1000 + i;
            const rec: MigrationRecord = {
              ...journalRecord(`ended-${String(i).padStart(4, "0")}`, at),
              phase,
              endedAt: at + 1,
            };
            const r = await store.putMigration({ record: rec, expectRev: 0 });
            expect(r.ok).toBe(true);
          }
          const list = await store.listMigrations();
          const ids = list.records.map((r) => r.record.id);
          expect(ids.filter((id) => id.startsWith("open-"))).toEqual(["open-0", "open-1", "open-2"]);
          const kept = ids.filter((id) => id.startsWith("ended-"));
          expect(kept.length).toBe(JOURNAL_HISTORY);
          // the oldest 25 went
          expect(kept[0]).toBe(`ended-${String(25).padStart(4, "0")}`);
          expect(kept.at(-1)).toBe(`ended-${String(ended - 1).padStart(4, "0")}`);
          expect(list.unreadable).toEqual([]);
          // a record still in flight is readable and can still move on
          const open = await store.getMigration("open-1");
          expect(open?.record.phase).toBe("journaled");
          expect(
            (
              await store.putMigration({
                record: { ...open!.record, phase: "copying" },
                expectRev: open!.rev,
              })
            ).ok,
          ).toBe(true);
        }),
      120_000,
    );

    it("refuses to store a record readers could not use", () =>
      withStore(async ({ store }) => {
        await store.compareAndSet(0, smallMap());
        const bad = { ...journalRecord("bad id/../x", 1) };
        await expect(store.putMigration({ record: bad, expectRev: 0 })).rejects.toThrow(/not a storable/);
        const noShard = { ...journalRecord("ok-id", 1), shard: 7 } as unknown as MigrationRecord;
        await expect(store.putMigration({ record: noShard, expectRev: 0 })).rejects.toThrow(/not a storable/);
        expect((await store.listMigrations()).records).toEqual([]);
      }));
  });
}

/** A journal record at its first phase (the stores' tests build theirs from it). */
export function journalRecord(id: string, startedAt: number): MigrationRecord {
  return {
    id,
    shard: "shard-1",
    source: "node-1",
    target: "node-2",
    fromEpoch: 1,
    planVersion: 1,
    phase: "journaled",
    term: 0,
    startedAt,
    phaseAt: { journaled: startedAt },
    bytesCopied: 0,
    entriesCopied: 0,
    rounds: 0,
  };
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
