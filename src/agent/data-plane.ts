/**
 * The checks and operations every data request goes through, whatever the
 * protocol (HTTP in server.ts, binary frames in binary.ts). Each throws an
 * ApiError before anything changes.
 */
import { SHARD_ID_PATTERN, type SegmentRange } from "../engine/location-map.js";
import { utf8Length, validateKey } from "../engine/segmenter.js";
import type { Agent } from "./agent.js";
import { ApiError, badRequest } from "./http-util.js";
import type { Shard } from "./shard.js";
import { parseWriteIdHex } from "./write-ids.js";

/** Seconds a client should wait before retrying a write to a fenced shard. */
export const FENCED_RETRY_AFTER_S = 1;

export function requireShardId(id: string | undefined): string {
  if (id === undefined || !SHARD_ID_PATTERN.test(id)) {
    throw badRequest(`bad shard id ${JSON.stringify(id)}: expected ${SHARD_ID_PATTERN.source}`);
  }
  return id;
}

export function requireShard(agent: Agent, id: string | undefined): Shard {
  const sid = requireShardId(id);
  const shard = agent.shards.get(sid);
  if (!shard)
    throw new ApiError(404, "unknown-shard", `this agent (${agent.opts.nodeId}) holds no shard ${sid}`);
  return shard;
}

export function describeShard(s: Shard) {
  return {
    id: s.id,
    epoch: s.meta.epoch,
    state: s.failed ? "failed" : s.meta.state,
    failed: s.failed,
    redirect: s.meta.redirect,
    ranges: s.meta.ranges,
    migrationTimestamp: s.meta.migrationTimestamp,
    lsn: s.lsn,
    snapshotLsn: s.snapshotLsn,
    keys: s.state.size,
    valueBytes: s.valueBytes,
    logBytes: s.logBytes,
    logFiles: s.logFiles,
    writeIds: s.writeIds.size,
  };
}

/**
 * A write id as a client sends it (`x-write-id`, a batch op's `writeId`): 32
 * hex digits, given once. Absent → undefined; anything else → 400 before
 * anything is written.
 */
export function parseWriteId(raw: unknown, name: string): Buffer | undefined {
  if (raw === undefined) return undefined;
  const id = typeof raw === "string" ? parseWriteIdHex(raw) : undefined;
  if (!id) throw badRequest(`${name} must be a write id: 32 hex digits (16 bytes), given once`);
  return id;
}

/**
 * Checks shard, epoch, ownership and fencing for a data request. Returns the
 * shard and the epoch the request carries; raises nothing durable.
 */
export function checkShardAccess(
  agent: Agent,
  shardId: string | undefined,
  epoch: number,
  write: boolean,
): { shard: Shard; epoch: number } {
  const shard = requireShard(agent, shardId);
  if (shard.failed) {
    throw new ApiError(500, "shard-failed", `shard ${shard.id} is refused: ${shard.failed}`);
  }
  if (!Number.isSafeInteger(epoch) || epoch < 1) {
    throw badRequest("the shard epoch (x-shard-epoch, a positive integer) is required");
  }
  const meta = shard.meta;
  if (meta.state === "not-owned") {
    throw new ApiError(421, "not-owner", `this agent no longer owns shard ${shard.id}`, {
      epoch: meta.epoch,
      redirect: meta.redirect ?? null,
    });
  }
  if (meta.state === "receiving" || meta.state === "prepared") {
    throw new ApiError(
      503,
      "not-serving",
      `shard ${shard.id} is a migration target here (${meta.state}); it serves nothing until the migration commits`,
      { epoch: meta.epoch },
      { "retry-after": String(FENCED_RETRY_AFTER_S) },
    );
  }
  if (epoch < meta.epoch) {
    throw new ApiError(
      409,
      "stale-epoch",
      `epoch ${epoch} is stale: shard ${shard.id} is at epoch ${meta.epoch}`,
      { epoch: meta.epoch },
    );
  }
  if (write && meta.state === "fenced") {
    throw new ApiError(
      503,
      "fenced",
      `shard ${shard.id} is fenced (a migration is cutting over); retry shortly`,
      { epoch: meta.epoch },
      { "retry-after": String(FENCED_RETRY_AFTER_S) },
    );
  }
  return { shard, epoch };
}

/**
 * What to answer for a write that `shard.write` refused: when the shard's log failed under it (a full
 * disk, an I/O error), 500 `shard-failed` saying the write was not acknowledged and what to do, as
 * every later request gets; anything else is returned as it is (an internal error).
 */
export function writeFailed(shard: Shard, err: unknown): unknown {
  if (err instanceof ApiError || !shard.failed) return err;
  return new ApiError(
    500,
    "shard-failed",
    `this write was not acknowledged: shard ${shard.id} is refused: ${shard.failed}`,
  );
}

/** Validates a key (UTF-8, limits) and checks it belongs to the shard; returns its segment. */
/** validateKey's refusal of a key that is not UTF-8 (it holds a lone surrogate or U+FFFD). */
function notUtf8(key: string): string {
  try {
    validateKey(key, Number.MAX_SAFE_INTEGER);
  } catch (err) {
    return (err as Error).message;
  }
  return "the key is not valid UTF-8";
}

export function checkKey(agent: Agent, shard: Shard, key: unknown): number {
  if (typeof key === "string" && utf8Length(key) > agent.opts.maxKeyBytes) {
    // bytes that were not UTF-8 on the wire decode to 3-byte U+FFFDs: say that, not a size they never had
    if (!key.isWellFormed() || key.includes("\ufffd")) throw badRequest(notUtf8(key));
    throw new ApiError(
      413,
      "too-large",
      `the key is ${utf8Length(key)} bytes; the limit is ${agent.opts.maxKeyBytes} bytes`,
      {
        limit: agent.opts.maxKeyBytes,
      },
    );
  }
  try {
    validateKey(key, agent.opts.maxKeyBytes);
  } catch (err) {
    throw badRequest((err as Error).message);
  }
  const segment = agent.segmenter.segmentOf(key);
  const ranges = shard.meta.ranges;
  if (ranges && !inRanges(ranges, segment)) {
    throw new ApiError(
      409,
      "wrong-shard",
      `key segment ${segment} is not in shard ${shard.id}; refresh the location map`,
      {
        epoch: shard.meta.epoch,
      },
    );
  }
  return segment;
}

export function inRanges(ranges: SegmentRange[], s: number): boolean {
  for (const [a, b] of ranges) if (s >= a && s < b) return true;
  return false;
}

export function zoneIndex(agent: Agent, z: string | undefined): number {
  if (z === undefined || z === "") return -1;
  try {
    return agent.windows.zoneIndexOf(z);
  } catch (err) {
    throw badRequest((err as Error).message);
  }
}
