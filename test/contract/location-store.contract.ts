/**
 * The LocationStore contract: what every store (embedded file, Consul KV) must
 * do. A store's test file calls locationStoreContract with a factory that
 * gives a fresh, empty store (and a second client on the same backend).
 */
import { describe, expect, it } from "vitest";
import type { VersionedMap } from "../../src/engine/location-map.js";
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
  });
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
