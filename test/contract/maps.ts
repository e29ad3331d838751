/** Maps the contract and the Consul tests write: a small one and one at the scale the issue asks for. */
import {
  initialLayout,
  validateMap,
  type LocationMap,
  type NodeInfo,
} from "../../src/engine/location-map.js";

const nodes: NodeInfo[] = [
  { id: "n1", address: "127.0.0.1:7001", zone: "a" },
  { id: "n2", address: "127.0.0.1:7002", zone: "b" },
  { id: "n3", address: "127.0.0.1:7003", zone: "c" },
];

export function smallMap(seq = 0): LocationMap {
  const map = initialLayout(1024, nodes, { shardsPerNode: 2, now: 1_700_000_000_000 });
  map.nextShardSeq += seq;
  map.updatedAt += seq;
  return map;
}

/** smallMap whose nodes have no agent address: a layout the engine may change without moving data. */
export function agentlessMap(seq = 0): LocationMap {
  const map = smallMap(seq);
  map.nodes = map.nodes.map((n) => ({ ...n, address: "" }));
  return map;
}

/** 100,000 segments in 5,000 shards, each shard holding several scattered ranges. */
export function largeMap(): LocationMap {
  const segmentCount = 100_000;
  const shardCount = 5_000;
  const many: NodeInfo[] = Array.from({ length: 40 }, (_, i) => ({
    id: `node-${i}`,
    address: `10.0.${i}.1:7000`,
    zone: ["a", "b", "c"][i % 3],
  }));
  // Segment s goes to shard (s*7919) mod shardCount in runs of 4: scattered, fragmented ranges.
  const owner = (s: number) => (Math.floor(s / 4) * 7919) % shardCount;
  const ranges: [number, number][][] = Array.from({ length: shardCount }, () => []);
  for (let s = 0; s < segmentCount; s++) {
    const r = ranges[owner(s)];
    const last = r[r.length - 1];
    if (last && last[1] === s) last[1] = s + 1;
    else r.push([s, s + 1]);
  }
  const map: LocationMap = {
    format: 1,
    segmentCount,
    nodes: many,
    shards: ranges.map((r, i) => ({
      id: `shard-${i + 1}`,
      node: many[i % many.length].id,
      epoch: 1 + (i % 7),
      migrationTimestamp: i % 3 ? 0 : 1_700_000_000_000 + i,
      changedAt: 1_700_000_000_000 + i,
      ranges: r,
    })),
    nextShardSeq: shardCount + 1,
    term: 0,
    updatedAt: 1_700_000_000_000,
  };
  validateMap(map);
  return map;
}
