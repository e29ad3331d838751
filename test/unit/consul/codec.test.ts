import { describe, expect, it } from "vitest";
import {
  CHUNK_MAX_BYTES,
  CorruptMapError,
  decodeMap,
  encodeMap,
  parseMeta,
  renderMeta,
  type ChunkRef,
  type EncodedMap,
} from "../../../src/consul/codec.js";
import type { LocationMap } from "../../../src/engine/location-map.js";
import { largeMap, smallMap } from "../../contract/maps.js";

function store(enc: EncodedMap): { meta: string; chunks: Map<string, string>; refs: ChunkRef[] } {
  const refs = enc.chunks.map((c, i) => ({ key: `p/map/chunks/w-${i}`, sum: c.sum, n: c.n }));
  return {
    meta: renderMeta(enc.meta, refs),
    chunks: new Map(enc.chunks.map((c, i) => [refs[i].key, c.value])),
    refs,
  };
}

function roundTrip(map: LocationMap): LocationMap {
  const s = store(encodeMap(map));
  return decodeMap(parseMeta(s.meta), s.chunks);
}

describe("the Consul map codec", () => {
  it("round-trips a small map in one chunk", () => {
    const enc = encodeMap(smallMap());
    expect(enc.chunks).toHaveLength(1);
    expect(roundTrip(smallMap())).toEqual(smallMap());
  });

  it("splits 100,000 segments / 5,000 shards into chunks under the cap, and round-trips", () => {
    const big = largeMap();
    const enc = encodeMap(big);
    expect(enc.chunks.length).toBeGreaterThan(10);
    for (const c of enc.chunks) expect(c.value.length).toBeLessThanOrEqual(CHUNK_MAX_BYTES);
    expect(roundTrip(big)).toEqual(big);
  });

  it("a change to one shard changes one chunk (content-defined boundaries)", () => {
    const big = largeMap();
    const before = encodeMap(big).chunks.map((c) => c.sum);
    const changed = structuredClone(big);
    changed.shards[1234].epoch += 1;
    changed.shards[1234].node = "node-5";
    const after = encodeMap(changed).chunks.map((c) => c.sum);
    const old = new Set(before);
    expect(after.filter((s) => !old.has(s))).toHaveLength(1);
  });

  it("splits one shard whose ranges exceed a chunk into consecutive pieces", () => {
    // 60,000 single-segment ranges in one shard (every other segment), the rest in another.
    const segmentCount = 120_000;
    const a: [number, number][] = [];
    const b: [number, number][] = [];
    for (let s = 0; s < segmentCount; s++) (s % 2 ? b : a).push([s, s + 1]);
    const map: LocationMap = {
      ...smallMap(),
      segmentCount,
      shards: [
        { id: "shard-1", node: "n1", epoch: 1, migrationTimestamp: 0, changedAt: 0, ranges: a },
        { id: "shard-2", node: "n2", epoch: 1, migrationTimestamp: 0, changedAt: 0, ranges: b },
      ],
      nextShardSeq: 3,
    };
    const enc = encodeMap(map);
    expect(enc.chunks.length).toBeGreaterThan(4);
    for (const c of enc.chunks) expect(c.value.length).toBeLessThanOrEqual(CHUNK_MAX_BYTES);
    expect(roundTrip(map)).toEqual(map);
  });

  describe("hostile stored values", () => {
    const s = store(encodeMap(largeMap()));
    const meta = parseMeta(s.meta);

    it("a flipped byte in a chunk fails its checksum", () => {
      const chunks = new Map(s.chunks);
      const k = s.refs[3].key;
      chunks.set(k, chunks.get(k)!.replace('"node-', '"nodf-'));
      expect(() => decodeMap(meta, chunks)).toThrow(/fails its checksum/);
    });

    it("a missing chunk is reported as missing (so a reader can re-read)", () => {
      const chunks = new Map(s.chunks);
      chunks.delete(s.refs[0].key);
      try {
        decodeMap(meta, chunks);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(CorruptMapError);
        expect((err as CorruptMapError).missingChunk).toBe(true);
      }
    });

    it("a meta whose fields or chunk list were altered fails its checksum", () => {
      expect(() => decodeMap({ ...meta, nextShardSeq: meta.nextShardSeq + 1 }, s.chunks)).toThrow(
        /meta key fails its checksum/,
      );
      const swapped = [...meta.chunks];
      [swapped[0], swapped[1]] = [swapped[1], swapped[0]];
      expect(() => decodeMap({ ...meta, chunks: swapped }, s.chunks)).toThrow(/meta key fails its checksum/);
    });

    it("a checksum-consistent map that fails validation (overlap) is refused", () => {
      const bad = smallMap();
      bad.shards[1].ranges = [[0, bad.shards[1].ranges[0][1]]];
      const enc = encodeMap(bad); // the codec itself does not validate; the store does before writing
      const st = store(enc);
      expect(() => decodeMap(parseMeta(st.meta), st.chunks)).toThrow(/two shards/);
    });

    it.each([
      ["not JSON", "{not json"],
      ["foreign JSON", JSON.stringify({ hello: "world" })],
      ["another format", JSON.stringify({ format: "shardctl-consul-map/999" })],
      ["no chunk list", JSON.stringify({ format: "shardctl-consul-map/1", checksum: "x" })],
      ["empty", ""],
    ])("a meta value that is %s is refused", (_, text) => {
      expect(() => parseMeta(text)).toThrow(CorruptMapError);
    });
  });
});
