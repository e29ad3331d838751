/**
 * A shard's metadata file (`meta.json`): the highest epoch this agent has
 * seen for the shard and what it may do with it. Written atomically (tmp,
 * fsync, rename, fsync dir) and checksummed, so a crash leaves the old or the
 * new state and an altered file is refused.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fnv1a64Bytes } from "../engine/hash.js";
import type { SegmentRange } from "../engine/location-map.js";
import { writeAtomic } from "../store/embedded.js";

/**
 * owned: serves reads and writes at `epoch`.
 * fenced: serves reads, refuses writes (a migration is cutting over).
 * not-owned: serves nothing; answers with `redirect`, the owner it was told of.
 * receiving: a migration target copying the log at the source's epoch; serves nothing.
 * prepared: a migration target that holds the source's log up to the fenced LSN,
 *   verified by checksum, and voted to commit; serves nothing until activated.
 */
export type OwnerState = "owned" | "fenced" | "not-owned" | "receiving" | "prepared";

export const OWNER_STATES: readonly OwnerState[] = ["owned", "fenced", "not-owned", "receiving", "prepared"];

export interface RedirectHint {
  node: string;
  address: string;
  epoch: number;
}

export interface ShardMeta {
  shardId: string;
  epoch: number;
  state: OwnerState;
  redirect?: RedirectHint;
  /** Segments the shard holds; keys outside them are refused. Absent: not checked. */
  ranges?: SegmentRange[];
  migrationTimestamp: number;
  /**
   * The migration that fenced this shard (source) or is copying it (target).
   * Undo requests naming another migration are refused, so a coordinator that
   * wakes up late cannot unfence or drop what a newer migration holds.
   */
  migration?: string;
  /** Segments being imported from other shards (a split or merge in progress), by source shard. */
  imports?: Record<string, ImportState>;
}

/** An import of segments from another shard (src/agent/import.ts). */
export interface ImportState {
  migration: string;
  ranges: SegmentRange[];
  /** The source LSN up to which the source's log was scanned and imported. */
  through: number;
  /** Running content checksum and count of the imported entries. */
  crc: number;
  entries: number;
  /** Verified against the source's checksum; waits for the commit. */
  prepared?: boolean;
  /** A compacted source sends its snapshot's records first: its LSN, and how many were imported. */
  snapLsn?: number;
  snapSkip?: number;
}

const FILE = "meta.json";

export function metaPath(dir: string): string {
  return join(dir, FILE);
}

export function writeMeta(dir: string, meta: ShardMeta): void {
  const body = JSON.stringify(meta);
  writeAtomic(
    metaPath(dir),
    JSON.stringify({ format: "shardctl-shard-meta", checksum: fnv1a64Bytes(Buffer.from(body)), meta: body }),
  );
}

/** Reads meta.json; throws an Error saying why when it is missing, altered or malformed. */
export function readMeta(dir: string): ShardMeta {
  const file = metaPath(dir);
  if (!existsSync(file)) throw new Error(`${file} is missing`);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    // an I/O error is not a damaged file: say which it is
    const e = err as NodeJS.ErrnoException;
    throw new Error(`${file} could not be read (${e.code ?? e.message})`);
  }
  let outer: { format?: string; checksum?: string; meta?: string };
  try {
    outer = JSON.parse(text);
  } catch {
    throw new Error(`${file} is not JSON (truncated or overwritten)`);
  }
  if (outer.format !== "shardctl-shard-meta" || typeof outer.meta !== "string")
    throw new Error(`${file} is not a shard metadata file`);
  if (outer.checksum !== fnv1a64Bytes(Buffer.from(outer.meta))) throw new Error(`${file}: checksum mismatch`);
  const meta = JSON.parse(outer.meta) as ShardMeta;
  if (!Number.isInteger(meta.epoch) || meta.epoch < 0 || !OWNER_STATES.includes(meta.state)) {
    throw new Error(`${file}: bad epoch or state`);
  }
  return meta;
}
