/**
 * updateMap: one compare-and-set change to the location map that reads again
 * when another writer came between, and never overwrites a change it did not see.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { initialLayout, type LocationMap, type NodeInfo } from "../../../src/engine/location-map.js";
import type { LocationStore } from "../../../src/engine/ports.js";
import { MAP_UPDATE_ATTEMPTS, updateMap } from "../../../src/cluster/map-update.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";

const nodes: NodeInfo[] = [
  { id: "n1", address: "127.0.0.1:1", zone: "a" },
  { id: "n2", address: "127.0.0.1:2", zone: "b" },
];
let dir: string;
let store: EmbeddedStore;
beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-map-update-"));
  store = new EmbeddedStore(dir);
  expect((await store.compareAndSet(0, initialLayout(16, nodes, { now: 1 }))).ok).toBe(true);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** The map with `n` renamed to carry `zone` (a change another writer makes). */
function withZone(map: LocationMap, id: string, zone: string): LocationMap {
  return { ...map, nodes: map.nodes.map((n) => (n.id === id ? { ...n, zone } : n)) };
}

/** `store`, with `before` run before each of its first `times` compare-and-sets (another writer). */
function racing(times: number, before: () => Promise<void>): LocationStore {
  let left = times;
  return Object.assign(Object.create(store) as LocationStore, {
    async compareAndSet(...args: Parameters<LocationStore["compareAndSet"]>) {
      if (left-- > 0) await before();
      return store.compareAndSet(...args);
    },
  });
}

describe("updateMap", () => {
  it("reads again after losing to another writer, and keeps that writer's change", async () => {
    let seen = 0;
    const other = racing(1, async () => {
      const vm = (await store.load())!;
      expect((await store.compareAndSet(vm.version, withZone(vm.map, "n1", "c"))).ok).toBe(true);
    });
    const r = await updateMap(
      other,
      (vm) => {
        seen++;
        return { write: withZone(vm!.map, "n2", "d"), then: "written" };
      },
      () => "exhausted",
    );
    expect(r).toBe("written");
    expect(seen).toBe(2);
    const { map } = (await store.load())!;
    expect(map.nodes.map((n) => n.zone)).toEqual(["c", "d"]);
  });

  it("writes nothing when the change says done", async () => {
    const before = (await store.load())!.version;
    expect(
      await updateMap(
        store,
        () => ({ done: 7 }),
        () => 0,
      ),
    ).toBe(7);
    expect((await store.load())!.version).toBe(before);
  });

  it(`gives up after ${MAP_UPDATE_ATTEMPTS} lost compare-and-sets, as exhausted says`, async () => {
    let n = 0;
    const other = racing(Infinity, async () => {
      const vm = (await store.load())!;
      await store.compareAndSet(vm.version, withZone(vm.map, "n1", `z${n++}`));
    });
    let tries = 0;
    const r = await updateMap(
      other,
      (vm) => {
        tries++;
        return { write: withZone(vm!.map, "n2", "never"), then: "written" };
      },
      () => "exhausted",
    );
    expect(r).toBe("exhausted");
    expect(tries).toBe(MAP_UPDATE_ATTEMPTS);
    expect((await store.load())!.map.nodes[1].zone).toBe("b");
  });

  it("writes the first map when the store holds none (version 0), and a change that throws writes nothing", async () => {
    const empty = new EmbeddedStore(join(dir, "empty"));
    const map = initialLayout(8, nodes, { now: 2 });
    expect(
      await updateMap(
        empty,
        (vm) => ({ write: map, then: vm === null }),
        () => false,
      ),
    ).toBe(true);
    expect((await empty.load())!.map.segmentCount).toBe(8);
    const before = (await store.load())!.version;
    await expect(
      updateMap(
        store,
        () => {
          throw new Error("refused");
        },
        () => 0,
      ),
    ).rejects.toThrow("refused");
    expect((await store.load())!.version).toBe(before);
  });
});
