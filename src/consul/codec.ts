/**
 * How a location map is laid out in Consul KV, and back. Pure: no I/O.
 *
 *   <prefix>map/meta              the pointer: segment count, nodes, term, the
 *                                 list of chunk keys with their checksums, and
 *                                 the checksum of the whole map. Its
 *                                 ModifyIndex is the store's version.
 *   <prefix>map/chunks/<w>-<i>    immutable chunks of shards, written once by
 *                                 write <w> and never changed; deleted when no
 *                                 meta refers to them any more.
 *
 * A shard is a compact tuple [id, node, epoch, migrationTimestamp, changedAt,
 * [a0, b0, a1, b1, ...]] (about 75 bytes with one range). Chunk boundaries are
 * Checksums are SHA-256 (first 64 bits, hex): each chunk's in the meta, and
 * the meta's own over its fields and the ordered chunk checksums, so the
 * whole map is covered without hashing it twice on every commit.
 *
 * Chunk boundaries are
 * content-defined (after a shard whose id hashes to 0 mod 16, once a chunk
 * holds CHUNK_MIN_BYTES) so a change to a few shards rewrites a few small
 * chunks, not the whole map. No chunk exceeds CHUNK_MAX_BYTES: a shard whose
 * ranges alone are larger is split into consecutive pieces with the same id.
 */
import { createHash } from "node:crypto";
import { UserError } from "../errors.js";
import {
  validateMap,
  type LocationMap,
  type NodeInfo,
  type SegmentRange,
  type ShardInfo,
} from "../engine/location-map.js";

export const META_FORMAT = "shardctl-consul-map/1";
export const CHUNK_FORMAT = "shardctl-consul-chunk/1";
/** A chunk is closed at a content-defined boundary once it holds this much. */
export const CHUNK_MIN_BYTES = 4 * 1024;
/** Hard cap per chunk: a quarter of Consul's 512 KiB value limit. */
export const CHUNK_MAX_BYTES = 128 * 1024;
/** The meta value must stay well under 512 KiB (it carries the node list). */
export const META_MAX_BYTES = 256 * 1024;

type ShardTuple = [string, string, number, number, number, number[]];

export interface ChunkRef {
  key: string;
  /** SHA-256 (64 bits, hex) of the chunk's value. */
  sum: string;
  /** Shard tuples (pieces) in the chunk. */
  n: number;
}

export interface MetaDoc {
  format: typeof META_FORMAT;
  segmentCount: number;
  nodes: NodeInfo[];
  nextShardSeq: number;
  term: number;
  updatedAt: number;
  shardCount: number;
  chunks: ChunkRef[];
  /** SHA-256 (64 bits) over the meta's fields and the ordered chunk checksums (see metaChecksum). */
  checksum: string;
}

export interface EncodedChunk {
  /** Chunk body; its key is assigned by the writer (reused when the same body is already stored). */
  value: string;
  sum: string;
  n: number;
}

export interface EncodedMap {
  /** Everything of the meta except the chunk keys (the checksum covers the chunk sums, not their keys). */
  meta: Omit<MetaDoc, "chunks">;
  chunks: EncodedChunk[];
}

const encoder = new TextEncoder();

export function sumOf(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex").slice(0, 16);
}

type MetaFields = Pick<
  MetaDoc,
  "segmentCount" | "nodes" | "nextShardSeq" | "term" | "updatedAt" | "shardCount"
>;

/** The checksum a meta carries: its map fields plus the ordered chunk checksums (which cover the shards). */
export function metaChecksum(m: MetaFields, chunkSums: readonly string[]): string {
  return sumOf(
    JSON.stringify([
      m.segmentCount,
      m.nodes.map((n) => [n.id, n.address, n.zone]),
      m.nextShardSeq,
      m.term,
      m.updatedAt,
      m.shardCount,
      chunkSums,
    ]),
  );
}

/** The map with exactly the fields shardctl knows, in a fixed order: what checksums cover. */
export function canonicalMap(map: LocationMap): LocationMap {
  return {
    format: 1,
    segmentCount: map.segmentCount,
    nodes: map.nodes.map((n) => ({ id: n.id, address: n.address, zone: n.zone })),
    shards: map.shards.map((s) => ({
      id: s.id,
      node: s.node,
      epoch: s.epoch,
      migrationTimestamp: s.migrationTimestamp,
      changedAt: s.changedAt,
      ranges: s.ranges.map(([a, b]) => [a, b] as SegmentRange),
    })),
    nextShardSeq: map.nextShardSeq,
    term: map.term,
    updatedAt: map.updatedAt,
  };
}

/** Splits a (validated) map into the meta fields and content-defined chunks. */
export function encodeMap(map: LocationMap): EncodedMap {
  const canon = canonicalMap(map);
  const chunks: EncodedChunk[] = [];
  let parts: string[] = [];
  let bytes = 0;
  const close = () => {
    if (parts.length === 0) return;
    const value = `{"format":"${CHUNK_FORMAT}","shards":[${parts.join(",")}]}`;
    chunks.push({ value, sum: sumOf(value), n: parts.length });
    parts = [];
    bytes = 0;
  };
  const budget = CHUNK_MAX_BYTES - 64;
  for (const shard of canon.shards) {
    for (const piece of shardPieces(shard, budget)) {
      if (bytes + piece.length + 1 > budget) close();
      parts.push(piece);
      bytes += piece.length + 1;
    }
    if (bytes >= CHUNK_MIN_BYTES && boundaryAfter(shard.id)) close();
  }
  close();
  const fields: MetaFields = {
    segmentCount: canon.segmentCount,
    nodes: canon.nodes,
    nextShardSeq: canon.nextShardSeq,
    term: canon.term,
    updatedAt: canon.updatedAt,
    shardCount: canon.shards.length,
  };
  const meta: Omit<MetaDoc, "chunks"> = {
    format: META_FORMAT,
    ...fields,
    checksum: metaChecksum(
      fields,
      chunks.map((c) => c.sum),
    ),
  };
  return { meta, chunks };
}

/** A content-defined chunk boundary: 32-bit FNV-1a of the shard id ≡ 0 (mod 16). Stable across processes. */
function boundaryAfter(shardId: string): boolean {
  let h = 0x811c9dc5;
  for (let i = 0; i < shardId.length; i++) {
    h ^= shardId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return ((h >>> 0) & 15) === 0;
}

/** A shard as one tuple, or as several consecutive tuples when its ranges do not fit one chunk. */
function shardPieces(shard: ShardInfo, budget: number): string[] {
  const head = (flat: number[]) =>
    JSON.stringify([shard.id, shard.node, shard.epoch, shard.migrationTimestamp, shard.changedAt, flat]);
  const flat: number[] = [];
  for (const [a, b] of shard.ranges) flat.push(a, b);
  const whole = head(flat);
  if (whole.length <= budget) return [whole];
  const out: string[] = [];
  const base = head([]).length;
  let cur: number[] = [];
  let len = base;
  for (let i = 0; i < flat.length; i += 2) {
    const add = String(flat[i]).length + String(flat[i + 1]).length + 2;
    if (len + add > budget && cur.length) {
      out.push(head(cur));
      cur = [];
      len = base;
    }
    cur.push(flat[i], flat[i + 1]);
    len += add;
  }
  if (cur.length) out.push(head(cur));
  return out;
}

export function renderMeta(meta: Omit<MetaDoc, "chunks">, chunks: ChunkRef[]): string {
  const text = JSON.stringify({ ...meta, chunks } satisfies MetaDoc);
  if (encoder.encode(text).length > META_MAX_BYTES) {
    throw new UserError(
      `the location map's node list is too large for one Consul value (${meta.nodes.length} nodes; the meta key holds up to ${META_MAX_BYTES} bytes)`,
      { hint: "shorten node ids and addresses, or split the cluster; nothing was written" },
    );
  }
  return text;
}

/** Why a stored value is not a map shardctl can use. */
export class CorruptMapError extends Error {
  constructor(
    readonly why: string,
    /** True when a chunk the meta names is missing: a concurrent writer may have just collected it; re-read. */
    readonly missingChunk = false,
  ) {
    super(why);
    this.name = "CorruptMapError";
  }
}

export function parseMeta(text: string): MetaDoc {
  let doc: MetaDoc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CorruptMapError("the meta key is not JSON (truncated, or written by something else)");
  }
  if (!doc || typeof doc !== "object" || doc.format !== META_FORMAT) {
    throw new CorruptMapError(
      `the meta key is not a shardctl map (format ${JSON.stringify((doc as { format?: unknown })?.format)})`,
    );
  }
  if (
    !Array.isArray(doc.chunks) ||
    !doc.chunks.every(
      (c) => c && typeof c.key === "string" && typeof c.sum === "string" && Number.isInteger(c.n),
    ) ||
    typeof doc.checksum !== "string" ||
    !Array.isArray(doc.nodes) ||
    !Number.isInteger(doc.shardCount)
  ) {
    throw new CorruptMapError("the meta key's chunk list or checksum is malformed");
  }
  return doc;
}

/** Rebuilds and fully checks a map from its meta and the chunk values (by key). */
export function decodeMap(meta: MetaDoc, chunkValues: ReadonlyMap<string, string>): LocationMap {
  if (
    metaChecksum(
      meta,
      meta.chunks.map((c) => c.sum),
    ) !== meta.checksum
  ) {
    throw new CorruptMapError("the meta key fails its checksum");
  }
  const shards: ShardInfo[] = [];
  for (const ref of meta.chunks) {
    const value = chunkValues.get(ref.key);
    if (value === undefined) throw new CorruptMapError(`chunk ${ref.key} is missing`, true);
    if (sumOf(value) !== ref.sum) throw new CorruptMapError(`chunk ${ref.key} fails its checksum`);
    let doc: { format?: unknown; shards?: unknown };
    try {
      doc = JSON.parse(value);
    } catch {
      throw new CorruptMapError(`chunk ${ref.key} is not JSON`);
    }
    if (doc?.format !== CHUNK_FORMAT || !Array.isArray(doc.shards) || doc.shards.length !== ref.n) {
      throw new CorruptMapError(`chunk ${ref.key} is not a shardctl chunk`);
    }
    for (const t of doc.shards as unknown[]) {
      if (!isTuple(t)) throw new CorruptMapError(`chunk ${ref.key} holds a malformed shard`);
      const [id, node, epoch, migrationTimestamp, changedAt, flat] = t;
      const ranges: SegmentRange[] = [];
      for (let i = 0; i < flat.length; i += 2) ranges.push([flat[i], flat[i + 1]]);
      const last = shards[shards.length - 1];
      if (last && last.id === id) {
        last.ranges.push(...ranges); // a continued piece of a large shard
        continue;
      }
      shards.push({ id, node, epoch, migrationTimestamp, changedAt, ranges });
    }
  }
  const map: LocationMap = {
    format: 1,
    segmentCount: meta.segmentCount,
    nodes: meta.nodes,
    shards,
    nextShardSeq: meta.nextShardSeq,
    term: meta.term,
    updatedAt: meta.updatedAt,
  };
  if (shards.length !== meta.shardCount)
    throw new CorruptMapError(`the meta names ${meta.shardCount} shards, the chunks hold ${shards.length}`);
  try {
    validateMap(map);
  } catch (err) {
    throw new CorruptMapError((err as Error).message);
  }
  return map;
}

function isTuple(t: unknown): t is ShardTuple {
  return (
    Array.isArray(t) &&
    t.length === 6 &&
    typeof t[0] === "string" &&
    typeof t[1] === "string" &&
    typeof t[2] === "number" &&
    typeof t[3] === "number" &&
    typeof t[4] === "number" &&
    Array.isArray(t[5]) &&
    t[5].length % 2 === 0 &&
    t[5].every((x: unknown) => Number.isInteger(x))
  );
}
