/**
 * Log replication for live migration (issue 8; the protocol is in
 * src/cluster/migrate.ts, the states in shard-meta.ts).
 *
 * Source side:
 *   GET /v1/shards/:id/log?from=LSN&max=N   raw encoded log entries, LSN order,
 *       from `from` on, at most N entries (and about MAX_CHUNK_BYTES); headers
 *       x-last-lsn (the shard's last durable LSN), x-first-lsn, x-entries.
 *   GET /v1/shards/:id/checksum?upto=LSN    the copy checksum of entries 1..LSN.
 * Target side (admin):
 *   POST /v1/admin/shards/:id/receive  {epoch, ranges?, migrationTimestamp?}
 *       creates the shard "receiving" at the SOURCE epoch (serves nothing).
 *   POST /v1/admin/shards/:id/append   raw entries (x-shard-epoch: the source epoch),
 *       appended byte for byte with their LSNs; a gap, a foreign shard id or a
 *       bad entry checksum is refused and nothing is appended.
 *   POST /v1/admin/shards/:id/prepare  {epoch, lastLsn, checksum}: verifies the
 *       copy ends exactly at lastLsn and its checksum matches, persists
 *       "prepared" and votes commit; otherwise 409 and votes abort.
 *   POST /v1/admin/shards/:id/activate {epoch, migrationTimestamp?}: prepared at
 *       `epoch` → owned at epoch + 1.
 *   Abort is the existing DELETE /v1/admin/shards/:id.
 *
 * The copy checksum is a running CRC-32 (zlib) over the encoded bytes of the
 * entries 1..LSN in LSN order, with the byte count: "<crc hex>-<bytes>". Both
 * sides compute it from their own log files with the same function. It needs
 * the whole log from LSN 1: a source that has compacted its log behind a
 * snapshot answers 409 "compacted" (moving snapshots is not implemented yet).
 */
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { crc32 } from "node:zlib";
import type { Agent } from "./agent.js";
import { requireShard, requireShardId, describeShard } from "./data-plane.js";
import { ApiError, badRequest, intField, readBody, readJson, sendJson } from "./http-util.js";
import { decodeEntry, ENTRY_HEADER_BYTES } from "./log-format.js";
import type { ReplicatedEntry, Shard } from "./shard.js";
import type { SegmentRange } from "../engine/location-map.js";

/** A log response carries about this many bytes at most (always at least one entry). */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;
const MAX_CHUNK_ENTRIES = 100_000;

function compacted(shard: Shard, from: number): ApiError {
  return new ApiError(
    409,
    "compacted",
    `shard ${shard.id}: the log entries from LSN ${from} were compacted into a snapshot; copying snapshots is not supported yet`,
    { lsn: shard.lsn, snapshotLsn: shard.snapshotLsn },
  );
}

/**
 * Calls onEntry(lsn, bytes) for each entry from..upto of the shard's log, in
 * LSN order. Reads only the durable part (upto ≤ shard.lsn).
 */
export async function scanEntries(
  shard: Shard,
  from: number,
  upto: number,
  onEntry: (lsn: number, bytes: Buffer) => boolean | void,
): Promise<number> {
  if (from > upto) return from - 1;
  const files = shard.logFileList;
  if (files.length === 0 || files[0].firstLsn > from) throw compacted(shard, from);
  let i = 0;
  while (i + 1 < files.length && files[i + 1].firstLsn <= from) i++;
  let last = from - 1;
  for (; i < files.length && last < upto; i++) {
    let buf: Buffer;
    try {
      buf = await readFile(files[i].path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw compacted(shard, from);
      throw err;
    }
    let off = 0;
    while (off + ENTRY_HEADER_BYTES + 8 <= buf.length && last < upto) {
      const len = ENTRY_HEADER_BYTES + buf.readUInt32LE(off);
      if (off + len > buf.length) break; // a write in flight past the durable end
      const lsn = buf.readUInt32LE(off + 8) + buf.readUInt32LE(off + 12) * 4294967296;
      if (lsn >= from) {
        if (lsn !== last + 1)
          throw new ApiError(500, "log-gap", `shard ${shard.id}: LSN ${lsn} follows ${last} in the log`);
        last = lsn;
        if (onEntry(lsn, buf.subarray(off, off + len)) === false) return last;
      }
      off += len;
    }
  }
  if (last < upto)
    throw new ApiError(500, "log-short", `shard ${shard.id}: the log ends at LSN ${last}, not ${upto}`);
  return last;
}

/** The copy checksum of entries 1..upto ("<crc32 hex>-<bytes>"). */
export async function copyChecksum(shard: Shard, upto: number): Promise<string> {
  let crc = 0;
  let bytes = 0;
  await scanEntries(shard, 1, upto, (_lsn, b) => {
    crc = crc32(b, crc);
    bytes += b.length;
  });
  return `${(crc >>> 0).toString(16).padStart(8, "0")}-${bytes}`;
}

function queryInt(query: URLSearchParams, name: string, dflt: number | undefined, min: number): number {
  const raw = query.get(name);
  if (raw === null) {
    if (dflt === undefined) throw badRequest(`the query parameter ${name} is required`);
    return dflt;
  }
  if (!/^\d{1,15}$/.test(raw) || Number(raw) < min)
    throw badRequest(`${name} must be an integer ≥ ${min}, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

function usableSource(shard: Shard): void {
  if (shard.failed) throw new ApiError(500, "shard-failed", `shard ${shard.id} is refused: ${shard.failed}`);
}

/** GET /v1/shards/:id/log?from=&max= */
export async function logRequest(
  agent: Agent,
  res: ServerResponse,
  id: string | undefined,
  query: URLSearchParams,
): Promise<void> {
  const shard = requireShard(agent, id);
  usableSource(shard);
  const from = queryInt(query, "from", undefined, 1);
  const max = Math.min(queryInt(query, "max", 10_000, 1), MAX_CHUNK_ENTRIES);
  const lastLsn = shard.lsn;
  const parts: Buffer[] = [];
  let bytes = 0;
  await scanEntries(shard, from, Math.min(lastLsn, from + max - 1), (_lsn, b) => {
    parts.push(b);
    bytes += b.length;
    return bytes < MAX_CHUNK_BYTES;
  });
  res.writeHead(200, {
    "content-type": "application/octet-stream",
    "content-length": bytes,
    "x-last-lsn": String(lastLsn),
    "x-first-lsn": String(from),
    "x-entries": String(parts.length),
    "x-shard-epoch": String(shard.meta.epoch),
    "x-shard-state": shard.meta.state,
  });
  for (const p of parts) res.write(p);
  res.end();
}

/** GET /v1/shards/:id/checksum?upto= */
export async function checksumRequest(
  agent: Agent,
  res: ServerResponse,
  id: string | undefined,
  query: URLSearchParams,
): Promise<void> {
  const shard = requireShard(agent, id);
  usableSource(shard);
  const upto = queryInt(query, "upto", shard.lsn, 0);
  if (upto > shard.lsn)
    throw new ApiError(409, "beyond-log", `shard ${shard.id} ends at LSN ${shard.lsn}, not ${upto}`, {
      lsn: shard.lsn,
    });
  sendJson(res, 200, { id: shard.id, upto, lsn: shard.lsn, checksum: await copyChecksum(shard, upto) });
}

function targetShard(agent: Agent, id: string, epoch: number, states: string[]): Shard {
  const shard = requireShard(agent, id);
  if (shard.failed) throw new ApiError(500, "shard-failed", `shard ${id} is refused: ${shard.failed}`);
  if (!states.includes(shard.meta.state)) {
    throw new ApiError(
      409,
      "not-receiving",
      `shard ${id} is ${shard.meta.state} here, not a migration target (${states.join(" or ")})`,
      { state: shard.meta.state, epoch: shard.meta.epoch },
    );
  }
  if (epoch !== shard.meta.epoch) {
    throw new ApiError(
      409,
      "stale-epoch",
      `epoch ${epoch} does not match the copy of shard ${id}, which is at epoch ${shard.meta.epoch}`,
      { epoch: shard.meta.epoch },
    );
  }
  return shard;
}

/** The replication admin actions (receive, append, prepare, activate); false when `action` is not one. */
export async function replicationAdmin(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  shardId: string | undefined,
  action: string,
): Promise<void> {
  const id = requireShardId(shardId);
  if (action === "append") {
    const raw = req.headers["x-shard-epoch"];
    const epoch = typeof raw === "string" && /^\d{1,15}$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(epoch) || epoch < 1)
      throw badRequest("x-shard-epoch (the source epoch) is required");
    const body = await readBody(req, MAX_CHUNK_BYTES + agent.opts.maxValueBytes + 1024 * 1024, "entries");
    const shard = targetShard(agent, id, epoch, ["receiving"]);
    const entries: ReplicatedEntry[] = [];
    let off = 0;
    let expect = shard.lsn + 1;
    while (off < body.length) {
      const d = decodeEntry(body, off);
      if (d.kind !== "entry") {
        throw badRequest(
          `entry ${entries.length} at offset ${off} is ${d.kind === "short" ? "cut short" : `invalid (${d.why})`}; nothing was appended`,
        );
      }
      const e = d.entry;
      if (e.shardId !== id) throw badRequest(`entry LSN ${e.lsn} belongs to shard ${e.shardId}, not ${id}`);
      if (e.lsn !== expect) {
        throw new ApiError(409, "lsn-gap", `entry has LSN ${e.lsn}; the copy expects ${expect}`, {
          lsn: expect - 1,
        });
      }
      entries.push({
        bytes: body.subarray(off, off + d.length),
        lsn: e.lsn,
        timestamp: e.timestamp,
        op: e.op === "put" ? { op: "put", key: e.key, value: e.value } : { op: "delete", key: e.key },
      });
      off += d.length;
      expect++;
    }
    let last: number;
    try {
      last = await shard.appendReplicated(entries);
    } catch (err) {
      if (err instanceof RangeError)
        throw new ApiError(409, "lsn-gap", `${err.message} (a concurrent append?)`, { lsn: shard.lsn });
      throw err;
    }
    return sendJson(res, 200, { lsn: last, appended: entries.length });
  }
  const body = (await readJson(req, 1024 * 1024)) as Record<string, unknown>;
  if (!body || typeof body !== "object" || Array.isArray(body))
    throw badRequest("the body must be a JSON object");
  const epoch = intField(body.epoch, "epoch", 1);
  switch (action) {
    case "receive": {
      const mts =
        body.migrationTimestamp === undefined
          ? 0
          : intField(body.migrationTimestamp, "migrationTimestamp", 0);
      const ranges = body.ranges === undefined ? undefined : checkRanges(body.ranges, agent.opts.segments);
      const existing = agent.shards.get(id);
      if (existing) {
        if (existing.meta.state === "receiving" && existing.meta.epoch === epoch && !existing.failed) {
          return sendJson(res, 200, describeShard(existing)); // a retried receive
        }
        throw new ApiError(
          409,
          "shard-exists",
          `this agent (${agent.opts.nodeId}) already holds shard ${id} (${existing.meta.state}, epoch ${existing.meta.epoch}); drop it first`,
          { state: existing.meta.state, epoch: existing.meta.epoch },
        );
      }
      const shard = await agent.createShard(id, epoch, ranges, mts, "receiving");
      return sendJson(res, 201, describeShard(shard));
    }
    case "prepare": {
      const lastLsn = intField(body.lastLsn, "lastLsn", 0);
      if (typeof body.checksum !== "string" || !/^[0-9a-f]{8}-\d{1,15}$/.test(body.checksum))
        throw badRequest('checksum must be "<crc32 hex>-<bytes>"');
      const shard = targetShard(agent, id, epoch, ["receiving", "prepared"]);
      await shard.drain();
      if (shard.lsn !== lastLsn) {
        throw new ApiError(
          409,
          "lsn-mismatch",
          `the copy of shard ${id} ends at LSN ${shard.lsn}, not at the fenced LSN ${lastLsn}; voting abort`,
          { vote: "abort", lsn: shard.lsn },
        );
      }
      const mine = await copyChecksum(shard, lastLsn);
      if (mine !== body.checksum) {
        throw new ApiError(
          409,
          "checksum-mismatch",
          `the copy of shard ${id} has checksum ${mine}, the source reported ${body.checksum}; voting abort`,
          { vote: "abort", checksum: mine },
        );
      }
      if (shard.meta.state !== "prepared") shard.setMeta({ state: "prepared" });
      return sendJson(res, 200, { ...describeShard(shard), vote: "commit", checksum: mine });
    }
    case "activate": {
      const mts =
        body.migrationTimestamp === undefined
          ? undefined
          : intField(body.migrationTimestamp, "migrationTimestamp", 0);
      const shard = requireShard(agent, id);
      if (shard.meta.state === "owned" && shard.meta.epoch === epoch + 1 && !shard.failed) {
        return sendJson(res, 200, describeShard(shard)); // a retried activate
      }
      targetShard(agent, id, epoch, ["prepared"]);
      shard.setMeta({
        epoch: epoch + 1,
        state: "owned",
        migrationTimestamp: mts ?? shard.meta.migrationTimestamp,
      });
      return sendJson(res, 200, describeShard(shard));
    }
    default:
      throw new ApiError(404, "no-route", `no such admin action: ${action}`);
  }
}

export const REPLICATION_ACTIONS = new Set(["receive", "append", "prepare", "activate"]);

export function checkRanges(v: unknown, segmentCount: number): SegmentRange[] {
  if (!Array.isArray(v) || v.length === 0)
    throw badRequest("ranges must be a non-empty array of [start, end]");
  let prev = -1;
  return v.map((r, i) => {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isInteger(r[0]) || !Number.isInteger(r[1]))
      throw badRequest(`ranges[${i}] must be [start, end]`);
    const [a, b] = r as [number, number];
    if (a < 0 || b > segmentCount || a >= b || a < prev)
      throw badRequest(`ranges[${i}] = [${a}, ${b}) is out of 0..${segmentCount}, empty or unsorted`);
    prev = b;
    return [a, b];
  });
}
