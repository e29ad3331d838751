/**
 * The location map: segments → log shards → nodes, with per-shard epochs and
 * migration timestamps. Plain, serialisable data; `RoutingTable` is the
 * derived index used on the lookup path.
 */
import { PreconditionError, UsageError } from "../errors.js";
import { canonicalJson } from "./canonical-json.js";
import { fnv1a64Bytes } from "./hash.js";

export const SHARD_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,63}$/;
export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface NodeInfo {
  id: string;
  /** host:port of the node's agent. */
  address: string;
  zone: string;
}

/**
 * Refuses a layout whose segment count is not the one configured: every key would hash to another
 * segment, so reads would miss, and an agent would take its own keys for strays.
 */
export function checkSegmentCount(map: LocationMap, configured: number, what = "the config says"): void {
  if (map.segmentCount !== configured)
    throw new PreconditionError(`the layout has ${map.segmentCount} segments but ${what} ${configured}`, {
      hint: `set segments in the config (or SHARDCTL_SEGMENTS) to ${map.segmentCount}, the layout's; changing it needs a new layout`,
    });
}

/** Half-open range of segments [start, end). */
export type SegmentRange = [number, number];

export interface ShardInfo {
  id: string;
  node: string;
  /** Rises on every change of owner or membership; agents refuse lower ones. */
  epoch: number;
  /** When the shard last moved between nodes (ms since the Unix epoch); 0 if never. */
  migrationTimestamp: number;
  /** When the shard's membership or owner last changed (ms); drives the minimum dwell time. */
  changedAt: number;
  /** Sorted, non-overlapping, non-adjacent ranges. */
  ranges: SegmentRange[];
}

export interface LocationMap {
  format: 1;
  segmentCount: number;
  nodes: NodeInfo[];
  shards: ShardInfo[];
  /** Sequence for new shard ids (`shard-<n>`), so ids are never reused. */
  nextShardSeq: number;
  /** Leadership term of the writer (autopilot); 0 for a CLI writer without a term. */
  term: number;
  updatedAt: number;
}

/**
 * A digest of a map (FNV-1a 64 over its canonical JSON, 16 hex digits). A store never holds two
 * different maps at one version, so two maps at one version with different digests are two
 * clusters' (or two stores'): what tells a plan made for another cluster from this one's.
 */
export function mapDigest(map: LocationMap): string {
  return fnv1a64Bytes(new TextEncoder().encode(canonicalJson(map)));
}

/** A map as read from a store, with the store's version (Consul ModifyIndex or file counter). */
export interface VersionedMap {
  map: LocationMap;
  version: number;
}

export function shardIdFor(seq: number): string {
  return `shard-${seq}`;
}

export function segmentsOf(shard: ShardInfo): number {
  let n = 0;
  for (const [a, b] of shard.ranges) n += b - a;
  return n;
}

/** Turns a sorted list of segment ids into sorted half-open ranges. */
export function toRanges(sorted: ArrayLike<number>): SegmentRange[] {
  const out: SegmentRange[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const s = sorted[i];
    const last = out[out.length - 1];
    if (last && last[1] === s) last[1] = s + 1;
    else out.push([s, s + 1]);
  }
  return out;
}

export function expandRanges(ranges: readonly SegmentRange[]): number[] {
  const out: number[] = [];
  for (const [a, b] of ranges) for (let s = a; s < b; s++) out.push(s);
  return out;
}

/**
 * An initial layout: `shardsPerNode × nodes` shards of contiguous, equal
 * segment ranges; each node gets a contiguous block of them, so that cold
 * neighbours can later merge without moving data between nodes.
 */
export function initialLayout(
  segmentCount: number,
  nodes: NodeInfo[],
  opts: { shardsPerNode?: number; now: number },
): LocationMap {
  if (nodes.length === 0) throw new UsageError("an initial layout needs at least one node");
  const shardCount = Math.min(segmentCount, Math.max(1, (opts.shardsPerNode ?? 4) * nodes.length));
  const shards: ShardInfo[] = [];
  for (let i = 0; i < shardCount; i++) {
    const start = Math.floor((i * segmentCount) / shardCount);
    const end = Math.floor(((i + 1) * segmentCount) / shardCount);
    shards.push({
      id: shardIdFor(i + 1),
      node: nodes[Math.floor((i * nodes.length) / shardCount)].id,
      epoch: 1,
      migrationTimestamp: 0,
      // The first layout is not a reaction to load, so it does not hold shards back by the dwell time.
      changedAt: 0,
      ranges: [[start, end]],
    });
  }
  const map: LocationMap = {
    format: 1,
    segmentCount,
    nodes: nodes.map((n) => ({ ...n })),
    shards,
    nextShardSeq: shardCount + 1,
    term: 0,
    updatedAt: opts.now,
  };
  validateMap(map);
  return map;
}

/**
 * Checks a map fully: every segment in exactly one shard, ids well formed and
 * unique, owners known, epochs positive. Throws a UsageError listing the
 * first problems; a map that fails is never written nor used.
 */
/** A time in ms since the epoch that a Date can hold (and print): 0 to 8.64e15. */
function isTime(t: unknown): boolean {
  return typeof t === "number" && Number.isFinite(t) && t >= 0 && t <= 8.64e15;
}

export function validateMap(value: unknown): asserts value is LocationMap {
  const problems: string[] = [];
  const fail = (msg: string) => {
    throw new UsageError(`location map is invalid: ${msg}`, {
      hint: "the map was not used; restore it from a good copy or re-initialise with `shardctl init --force`",
    });
  };
  if (!value || typeof value !== "object") fail("not an object");
  const map = value as LocationMap;
  if (map.format !== 1) fail(`unknown format ${JSON.stringify(map.format)}`);
  if (!Number.isInteger(map.segmentCount) || map.segmentCount < 1 || map.segmentCount > 1 << 20) {
    fail("segmentCount must be an integer from 1 to 1048576");
  }
  if (!Array.isArray(map.nodes) || !Array.isArray(map.shards)) fail("nodes and shards must be arrays");
  if (!Number.isInteger(map.nextShardSeq) || map.nextShardSeq < 1)
    fail("nextShardSeq must be a positive integer");
  if (!Number.isInteger(map.term) || map.term < 0) fail("term must be a non-negative integer");
  if (!isTime(map.updatedAt)) fail("updatedAt must be a time in ms (0 to 8.64e15)");
  const nodeIds = new Set<string>();
  for (const n of map.nodes) {
    if (!n || typeof n.id !== "string" || !NODE_ID_PATTERN.test(n.id)) {
      problems.push(`bad node id ${JSON.stringify(n?.id)}`);
      continue;
    }
    if (nodeIds.has(n.id)) problems.push(`node ${n.id} appears twice`);
    if (typeof n.address !== "string" || typeof n.zone !== "string")
      problems.push(`node ${n.id}: address and zone must be strings`);
    nodeIds.add(n.id);
  }
  const owner = new Int32Array(map.segmentCount).fill(-1);
  const shardIds = new Set<string>();
  map.shards.forEach((sh, i) => {
    if (problems.length > 20) return;
    if (!sh || typeof sh.id !== "string" || !SHARD_ID_PATTERN.test(sh.id)) {
      problems.push(`bad shard id ${JSON.stringify(sh?.id)}`);
      return;
    }
    if (shardIds.has(sh.id)) problems.push(`shard ${sh.id} appears twice`);
    shardIds.add(sh.id);
    if (!nodeIds.has(sh.node)) problems.push(`shard ${sh.id} is on unknown node ${JSON.stringify(sh.node)}`);
    if (!Number.isInteger(sh.epoch) || sh.epoch < 1)
      problems.push(`shard ${sh.id}: epoch must be an integer ≥ 1`);
    if (!isTime(sh.migrationTimestamp)) problems.push(`shard ${sh.id}: bad migrationTimestamp`);
    if (!isTime(sh.changedAt)) problems.push(`shard ${sh.id}: bad changedAt`);
    if (!Array.isArray(sh.ranges) || sh.ranges.length === 0) {
      problems.push(`shard ${sh.id} holds no segments`);
      return;
    }
    let prevEnd = -1;
    for (const r of sh.ranges) {
      if (!Array.isArray(r) || r.length !== 2 || !Number.isInteger(r[0]) || !Number.isInteger(r[1])) {
        problems.push(`shard ${sh.id}: a range is not [start, end]`);
        return;
      }
      const [a, b] = r;
      if (a < 0 || b > map.segmentCount || a >= b) {
        problems.push(`shard ${sh.id}: range [${a}, ${b}) is outside 0..${map.segmentCount} or empty`);
        return;
      }
      if (a < prevEnd) problems.push(`shard ${sh.id}: ranges are not sorted`);
      prevEnd = b;
      for (let s = a; s < b; s++) {
        if (owner[s] !== -1) {
          problems.push(`segment ${s} is in two shards (${map.shards[owner[s]].id} and ${sh.id})`);
          return;
        }
        owner[s] = i;
      }
    }
  });
  if (problems.length === 0) {
    const gap = owner.indexOf(-1);
    if (gap !== -1) problems.push(`segment ${gap} is in no shard (a gap)`);
  }
  if (problems.length) fail(problems.slice(0, 5).join("; ") + (problems.length > 5 ? "; …" : ""));
}

/** The lookup index of a map: segment → shard → node, in typed arrays. */
export class RoutingTable {
  readonly map: LocationMap;
  readonly version: number;
  private readonly shardOfSegment: Int32Array;
  private readonly shardIndex = new Map<string, number>();
  /** Per shard index: node id. */
  private readonly nodeOfShard: string[];

  constructor(vm: VersionedMap) {
    this.map = vm.map;
    this.version = vm.version;
    this.shardOfSegment = new Int32Array(vm.map.segmentCount);
    this.nodeOfShard = vm.map.shards.map((s) => s.node);
    vm.map.shards.forEach((sh, i) => {
      this.shardIndex.set(sh.id, i);
      for (const [a, b] of sh.ranges) this.shardOfSegment.fill(i, a, b);
    });
  }

  nodeOfSegment(segment: number): string {
    return this.nodeOfShard[this.shardOfSegment[segment]];
  }

  shardOf(segment: number): ShardInfo {
    return this.map.shards[this.shardOfSegment[segment]];
  }

  shardById(id: string): ShardInfo | undefined {
    const i = this.shardIndex.get(id);
    return i === undefined ? undefined : this.map.shards[i];
  }

  node(id: string): NodeInfo | undefined {
    return this.map.nodes.find((n) => n.id === id);
  }
}
