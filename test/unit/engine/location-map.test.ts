import { describe, expect, it } from "vitest";
import {
  RoutingTable,
  expandRanges,
  initialLayout,
  toRanges,
  validateMap,
  type LocationMap,
} from "../../../src/engine/location-map.js";

const nodes = [
  { id: "n1", address: "127.0.0.1:1", zone: "a" },
  { id: "n2", address: "127.0.0.1:2", zone: "b" },
];

describe("location map", () => {
  it("builds an initial layout of contiguous blocks per node", () => {
    const map = initialLayout(100, nodes, { shardsPerNode: 2, now: 5 });
    expect(map.shards.map((s) => [s.id, s.node, s.ranges])).toEqual([
      ["shard-1", "n1", [[0, 25]]],
      ["shard-2", "n1", [[25, 50]]],
      ["shard-3", "n2", [[50, 75]]],
      ["shard-4", "n2", [[75, 100]]],
    ]);
    expect(map.nextShardSeq).toBe(5);
  });

  it("routes segments to shards and nodes", () => {
    const map = initialLayout(100, nodes, { shardsPerNode: 2, now: 0 });
    const table = new RoutingTable({ map, version: 7 });
    expect(table.nodeOfSegment(0)).toBe("n1");
    expect(table.nodeOfSegment(99)).toBe("n2");
    expect(table.shardOf(30).id).toBe("shard-2");
    expect(table.shardById("shard-4")?.ranges).toEqual([[75, 100]]);
    expect(table.version).toBe(7);
  });

  it("converts between segment lists and ranges", () => {
    expect(toRanges([1, 2, 3, 7, 9, 10])).toEqual([
      [1, 4],
      [7, 8],
      [9, 11],
    ]);
    expect(expandRanges(toRanges([0, 5, 6]))).toEqual([0, 5, 6]);
  });

  describe("validation refuses broken maps", () => {
    const good = () => initialLayout(10, nodes, { shardsPerNode: 1, now: 0 });
    const cases: [string, (m: LocationMap) => void, RegExp][] = [
      ["a gap", (m) => (m.shards[0].ranges = [[0, 4]]), /gap/],
      ["an overlap", (m) => (m.shards[0].ranges = [[0, 6]]), /two shards/],
      ["an unknown node", (m) => (m.shards[0].node = "n9"), /unknown node/],
      ["a path-like shard id", (m) => (m.shards[0].id = "../etc"), /bad shard id/],
      ["a duplicate shard id", (m) => (m.shards[1].id = m.shards[0].id), /twice/],
      ["a zero epoch", (m) => (m.shards[0].epoch = 0), /epoch/],
      ["a range past the end", (m) => (m.shards[1].ranges = [[5, 11]]), /outside/],
      ["an empty shard", (m) => (m.shards[1].ranges = []), /no segments/],
      ["a foreign format", (m) => ((m as unknown as { format: number }).format = 2), /format/],
      // times status, shards and the dashboard print as dates: a Date must hold them
      ["no updatedAt", (m) => delete (m as Partial<LocationMap>).updatedAt, /updatedAt must be a time/],
      ["an updatedAt past what a Date holds", (m) => (m.updatedAt = 1e300), /updatedAt must be a time/],
      [
        "a migrationTimestamp past what a Date holds",
        (m) => (m.shards[0].migrationTimestamp = 1e300),
        /bad migrationTimestamp/,
      ],
      ["a negative changedAt", (m) => (m.shards[0].changedAt = -5), /bad changedAt/],
    ];
    it.each(cases)("%s", (_name, breakIt, message) => {
      const m = good();
      breakIt(m);
      expect(() => validateMap(m)).toThrow(message);
    });
    it("non-objects", () => {
      expect(() => validateMap(null)).toThrow(/not an object/);
      expect(() => validateMap("map")).toThrow(/not an object/);
    });
  });
});
