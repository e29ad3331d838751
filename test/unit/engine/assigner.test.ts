import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { applyLayoutDiff, planLayout, type AssignerOptions } from "../../../src/engine/assigner.js";
import { initialLayout, validateMap, type LocationMap } from "../../../src/engine/location-map.js";
import { ClusterBuilder } from "./builders.js";

const opts: AssignerOptions = {
  splitRate: 50,
  mergeRate: 5,
  shardLoadCap: 200,
  hysteresis: 0.2,
  minDwellMs: 0,
};

function loadOf(map: LocationMap, loads: Float64Array, id: string): number {
  const sh = map.shards.find((s) => s.id === id)!;
  let l = 0;
  for (const [a, b] of sh.ranges) for (let s = a; s < b; s++) l += loads[s];
  return l;
}

describe("planLayout", () => {
  it("gives a hot segment its own shard, on its shard's node", () => {
    // Given a 64-segment layout on one node with segment 10 hot
    const b = new ClusterBuilder().withNodes("n1").withSegments(64, 2).hot(10, 120);
    const map = b.map();
    // When the assigner runs
    const diff = planLayout(map, b.loadArray(1), opts, 1000);
    // Then segment 10 is split out of shard-1 into a new shard
    const split = diff.ops.find((o) => o.kind === "split");
    expect(split).toMatchObject({ kind: "split", shard: "shard-1", reason: "hot-segment", node: "n1" });
    const next = applyLayoutDiff(map, diff, 1000);
    validateMap(next);
    const own = next.shards.find(
      (s) => s.ranges.length === 1 && s.ranges[0][0] === 10 && s.ranges[0][1] === 11,
    );
    expect(own).toBeDefined();
    expect(own!.epoch).toBe(1);
    expect(next.shards.find((s) => s.id === "shard-1")!.epoch).toBe(2);
  });

  it("a new shard numbered past 2^53 does not stop the numbering of the next ones", () => {
    const b = new ClusterBuilder().withNodes("n1").withSegments(64, 2).hot(10, 120);
    const map = b.map();
    const diff = planLayout(map, b.loadArray(1), opts, 1000);
    const split = diff.ops.find((o) => o.kind === "split")!;
    if (split.kind !== "split") throw new Error("no split");
    split.pieces[split.pieces.length - 1].id = "shard-99999999999999999999";
    const next = applyLayoutDiff(map, diff, 1000);
    expect(Number.isSafeInteger(next.nextShardSeq)).toBe(true);
    expect(next.nextShardSeq).toBe(map.nextShardSeq + split.pieces.length - 2);
  });

  it("cuts an over-cap shared shard into contiguous pieces under the cap", () => {
    const b = new ClusterBuilder().withNodes("n1").withSegments(40, 1);
    const loads = b.loadArray(20); // 800/s on one shard, cap 200
    const map = b.map();
    const diff = planLayout(map, loads, opts, 0);
    const next = applyLayoutDiff(map, diff, 0);
    validateMap(next);
    for (const sh of next.shards) {
      expect(loadOf(next, loads, sh.id)).toBeLessThanOrEqual(opts.shardLoadCap);
      expect(sh.ranges.length).toBe(1); // contiguous
    }
    expect(next.shards.length).toBeGreaterThanOrEqual(5);
  });

  it("merges cold neighbours on the same node, never across nodes", () => {
    const b = new ClusterBuilder().withNodes("n1", "n2").withSegments(64, 4);
    const map = b.map();
    const diff = planLayout(map, b.loadArray(0), opts, 0);
    const next = applyLayoutDiff(map, diff, 0);
    expect(next.shards.map((s) => s.node)).toEqual(["n1", "n2"]);
    for (const op of diff.ops) expect(op.kind).toBe("merge");
  });

  it("keeps a cooling segment on its own shard until it falls below splitRate·(1−hysteresis)", () => {
    const b = new ClusterBuilder().withNodes("n1").withSegments(16, 1).hot(3, 100);
    let map = b.map();
    map = applyLayoutDiff(map, planLayout(map, b.loadArray(1), opts, 0), 0);
    const ownId = map.shards.find((s) => s.ranges[0][0] === 3 && s.ranges[0][1] === 4)!.id;
    // 45/s is under splitRate (50) but above 50·0.8 = 40: stays
    const warm = b.hot(3, 45).loadArray(1);
    expect(planLayout(map, warm, opts, 1).ops).toEqual([]);
    // 2/s: merges back with a cold neighbour
    const cold = b.hot(3, 2).loadArray(1);
    const diff = planLayout(map, cold, opts, 2);
    expect(diff.ops.some((o) => o.kind === "merge" && o.shards.includes(ownId))).toBe(true);
  });

  it("leaves shards alone within the minimum dwell time and says so", () => {
    const b = new ClusterBuilder().withNodes("n1").withSegments(16, 1).hot(3, 100);
    const map = b.map();
    map.shards[0].changedAt = 10_000;
    const diff = planLayout(map, b.loadArray(1), { ...opts, minDwellMs: 60_000 }, 20_000);
    expect(diff.ops).toEqual([]);
    expect(diff.heldByDwell).toEqual(["shard-1"]);
    expect(planLayout(map, b.loadArray(1), { ...opts, minDwellMs: 60_000 }, 80_000).ops.length).toBe(1);
  });

  it("refuses bad loads and thresholds", () => {
    const map = new ClusterBuilder().withSegments(8, 1).map();
    expect(() => planLayout(map, new Float64Array(7), opts, 0)).toThrow(/cover 7 segments/);
    expect(() => planLayout(map, Float64Array.from([1, 1, 1, NaN, 1, 1, 1, 1]), opts, 0)).toThrow(
      /segment 3/,
    );
    expect(() => planLayout(map, Float64Array.from([1, 1, 1, -1, 1, 1, 1, 1]), opts, 0)).toThrow(/segment 3/);
    expect(() => planLayout(map, new Float64Array(8), { ...opts, mergeRate: 60 }, 0)).toThrow(/mergeRate/);
    expect(() => planLayout(map, new Float64Array(8), { ...opts, shardLoadCap: 10 }, 0)).toThrow(
      /shardLoadCap/,
    );
  });

  it("reshards 100,000 segments in one pass with a stable result", () => {
    const n = 100_000;
    const nodes = ["n1", "n2", "n3"].map((id, i) => ({ id, address: "", zone: "abc"[i] }));
    const map = initialLayout(n, nodes, { shardsPerNode: 100, now: 0 });
    const loads = new Float64Array(n);
    for (let s = 0; s < n; s++) loads[s] = (s * 7919) % 1000 === 0 ? 80 : ((s * 31) % 17) / 10;
    const diff = planLayout(map, loads, opts, 0);
    const next = applyLayoutDiff(map, diff, 0);
    validateMap(next);
    expect(planLayout(next, loads, opts, 0).ops).toEqual([]);
  });
});

describe("planLayout properties", () => {
  const arbitraryCase = fc.record({
    segments: fc.integer({ min: 1, max: 300 }),
    nodes: fc.integer({ min: 1, max: 4 }),
    shardsPerNode: fc.integer({ min: 1, max: 6 }),
    seed: fc.array(
      fc.oneof(
        fc.constant(0),
        fc.double({ min: 0, max: 10, noNaN: true }),
        fc.double({ min: 0, max: 400, noNaN: true }),
      ),
      {
        minLength: 1,
        maxLength: 300,
      },
    ),
    hysteresis: fc.double({ min: 0, max: 0.5, noNaN: true }),
  });

  function setup(c: { segments: number; nodes: number; shardsPerNode: number; seed: number[] }) {
    const nodes = Array.from({ length: c.nodes }, (_, i) => ({ id: `n${i}`, address: "", zone: "a" }));
    const map = initialLayout(c.segments, nodes, { shardsPerNode: c.shardsPerNode, now: 0 });
    const loads = new Float64Array(c.segments);
    for (let s = 0; s < c.segments; s++) loads[s] = c.seed[s % c.seed.length];
    return { map, loads };
  }

  it("puts every segment in exactly one shard, keeps multi-segment shards under the cap, and is stationary", () => {
    fc.assert(
      fc.property(arbitraryCase, (c) => {
        const o = { ...opts, hysteresis: c.hysteresis };
        const { map, loads } = setup(c);
        const next = applyLayoutDiff(map, planLayout(map, loads, o, 0), 0);
        validateMap(next); // exactly one shard per segment, no gaps, no overlaps
        for (const sh of next.shards) {
          const size = sh.ranges.reduce((acc, [a, b]) => acc + b - a, 0);
          if (size > 1) expect(loadOf(next, loads, sh.id)).toBeLessThanOrEqual(o.shardLoadCap + 1e-9);
        }
        // a stationary load produces no changes on re-run
        expect(planLayout(next, loads, o, 1).ops).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it("never touches a shard that needs no change", () => {
    fc.assert(
      fc.property(arbitraryCase, (c) => {
        const { map, loads } = setup(c);
        const diff = planLayout(map, loads, opts, 0);
        const touched = new Set(diff.ops.flatMap((o) => (o.kind === "split" ? [o.shard] : o.shards)));
        const next = applyLayoutDiff(map, diff, 0);
        for (const before of map.shards) {
          if (touched.has(before.id)) continue;
          expect(next.shards.find((s) => s.id === before.id)).toEqual(before);
        }
      }),
      { numRuns: 200 },
    );
  });
});
