import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { Lsmm } from "../../../src/engine/lsmm.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "shardctl-lsmm-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const nodes = ["n1", "n2", "n3"].map((id, i) => ({ id, address: `127.0.0.1:${7000 + i}`, zone: "abc"[i] }));

function build(nowRef: { t: number }) {
  const store = new EmbeddedStore(dir);
  const windows = new AccessWindows({ segmentCount: 256, zones: ["a", "b", "c"] });
  const lsmm = new Lsmm({
    store,
    windows,
    segmenter: new Segmenter(256),
    clock: { now: () => nowRef.t },
    assigner: { splitRate: 10, mergeRate: 1, shardLoadCap: 100, hysteresis: 0.2, minDwellMs: 0 },
    rateWindowSeconds: 60,
  });
  return { store, windows, lsmm };
}

describe("Lsmm (the specified API)", () => {
  it("getShardLocation answers the node of the key's shard", async () => {
    const clock = { t: 1_000_000 };
    const { store, lsmm } = build(clock);
    await store.compareAndSet(0, initialLayout(256, nodes, { shardsPerNode: 2, now: 0 }));
    await lsmm.refresh();
    const seg = new Segmenter(256).segmentOf("user:42");
    expect(lsmm.getShardLocation("user:42")).toBe(nodes[Math.floor((seg * 3) / 256)].id);
    expect(lsmm.locate("user:42")).toMatchObject({ segment: seg, mapVersion: 1 });
  });

  it("refuses to answer before a layout exists", async () => {
    const { lsmm } = build({ t: 0 });
    await expect(lsmm.refresh()).rejects.toThrow(/no layout yet/);
    expect(() => lsmm.getShardLocation("k")).toThrow(/not been loaded/);
  });

  it("updateAccessPattern feeds triggerResharding, which splits the hot segment out and commits by CAS", async () => {
    const clock = { t: 10_000_000 };
    const { store, lsmm } = build(clock);
    await store.compareAndSet(0, initialLayout(256, nodes, { shardsPerNode: 1, now: 0 }));
    for (let i = 0; i < 60; i++) {
      clock.t += 1000;
      lsmm.updateAccessPattern("hot-key", "write", "b", 30);
      lsmm.updateAccessPattern(`cold-${i}`, "read");
    }
    const dry = await lsmm.triggerResharding();
    expect(dry.appliedVersion).toBeUndefined();
    expect((await store.load())!.version).toBe(1);
    const applied = await lsmm.triggerResharding({ apply: true });
    expect(applied.appliedVersion).toBe(2);
    const loc = lsmm.locate("hot-key");
    const shard = (await store.load())!.map.shards.find((s) => s.id === loc.shard)!;
    expect(shard.ranges).toEqual([[loc.segment, loc.segment + 1]]);
    // stationary: nothing more to do
    expect((await lsmm.triggerResharding({ apply: true })).diff.ops).toEqual([]);
  });

  it("reports a lost race instead of overwriting", async () => {
    const clock = { t: 10_000_000 };
    const { store, lsmm } = build(clock);
    await store.compareAndSet(0, initialLayout(256, nodes, { shardsPerNode: 1, now: 0 }));
    lsmm.updateAccessPattern("hot-key", "read", undefined, 10_000);
    // another writer moves the map on between our read and our write
    const original = store.compareAndSet.bind(store);
    store.compareAndSet = async (v, m) => {
      const cur = (await store.load())!;
      await original(cur.version, { ...cur.map, term: 9 });
      store.compareAndSet = original;
      return original(v, m);
    };
    await expect(lsmm.triggerResharding({ apply: true })).rejects.toThrow(/changed while resharding/);
    expect((await store.load())!.map.term).toBe(9);
  });

  it("refuses hostile input without recording anything", async () => {
    const { lsmm, windows } = build({ t: 1000 });
    expect(() => lsmm.updateAccessPattern("", "read")).toThrow(/empty/);
    expect(() => lsmm.updateAccessPattern("k", "scan")).toThrow(/unknown access type/);
    expect(() => lsmm.updateAccessPattern("k", "read", "mars")).toThrow(/unknown origin zone/);
    expect(() => lsmm.updateAccessPattern("x".repeat(1 << 20), "read")).toThrow(/longer than/);
    expect([...windows.activeSegments()]).toEqual([]);
  });
});
