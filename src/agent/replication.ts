/**
 * Log replication for live migration (issue 8; the protocol is in
 * src/cluster/migrate.ts and migrate-copy.ts, the states in shard-meta.ts).
 *
 * Source side:
 *   GET /v1/shards/:id/log?from=LSN&max=N   raw encoded log entries, LSN order,
 *       from `from` on, at most N entries (and about MAX_CHUNK_BYTES); headers
 *       x-last-lsn (the shard's last durable LSN), x-first-lsn, x-entries.
 *       409 "compacted" when `from` is below the log's first entry: the
 *       entries before it live in a snapshot; copy that first.
 *   GET /v1/shards/:id/snapshot   the newest snapshot file, streamed
 *       (snapshot-transfer.ts); headers x-snapshot-lsn, x-snapshot-checksum.
 *   GET /v1/shards/:id/checksum?upto=LSN[&base=S]   the copy checksum (below).
 *   Every source read renews a hold on the shard's compaction
 *   (Shard.holdCompaction): while a migration copies, the source takes no
 *   snapshot, so the snapshot it started from and the log after it stay.
 * Target side (admin):
 *   POST /v1/admin/shards/:id/receive  {epoch, ranges?, migrationTimestamp?, migration?}
 *       creates the shard "receiving" at the SOURCE epoch (serves nothing).
 *   PUT /v1/admin/shards/:id/snapshot  a snapshot file, streamed to disk and
 *       verified, then it replaces the copy (snapshot-transfer.ts).
 *   POST /v1/admin/shards/:id/append   raw entries (x-shard-epoch: the source epoch),
 *       appended byte for byte with their LSNs; a gap, a foreign shard id or a
 *       bad entry checksum is refused and nothing is appended.
 *   POST /v1/admin/shards/:id/prepare  {epoch, lastLsn, checksum, migration?}: verifies
 *       the copy ends exactly at lastLsn and its checksum matches, persists
 *       "prepared" and votes commit; otherwise 409 and votes abort.
 *   POST /v1/admin/shards/:id/activate {epoch, migrationTimestamp?, migration?}:
 *       prepared at `epoch` → owned at epoch + 1.
 *   Each step after receive names its migration (the x-migration header on the
 *   snapshot and append, `migration` in the JSON bodies): a copy that another
 *   migration's receive replaced is refused (409 another-migration, nothing
 *   written), so two coordinators never interleave steps on one copy.
 *   Abort is the existing DELETE /v1/admin/shards/:id.
 *
 * The copy checksum of a shard up to LSN u, from base b (the LSN of the
 * snapshot the copy started from; 0: the log from LSN 1), is
 *
 *   b = 0:  "<L>"               b > 0:  "<S>@<b>+<L>"
 *
 * where L = "<crc hex>-<bytes>", the running CRC-32 (zlib) over the encoded
 * bytes of the log entries b+1..u in LSN order and their byte count, and
 * S = "<crc hex>-<bytes>" of the snapshot file snapshot-<b>.snap: the CRC-32
 * in its trailer (of every byte before it) and its size. Each side computes it
 * from its own data: the source from its snapshot file and its log files, the
 * target from the snapshot file it installed and the entries it appended. The
 * snapshot is copied byte for byte and verified on install (and again by any
 * recovery that loads it), so equal S means equal state at b; equal L means
 * the same entries after it. Together: the copy equals the source up to u.
 *
 * Cost: both sides keep running CRCs (CrcCursor) that advance as the log is
 * served (source) or appended (target); the checksum at prepare — inside the
 * write pause — only scans the entries since, not the whole log.
 */
import { open } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import type { Agent } from "./agent.js";
import { requireShard, requireShardId, describeShard } from "./data-plane.js";
import {
  ApiError,
  badRequest,
  intField,
  optionalMigrationId,
  readBody,
  readJson,
  sendJson,
} from "./http-util.js";
import { decodeEntry, ENTRY_HEADER_BYTES, MAX_BODY_BYTES } from "./log-format.js";
import { validateKey } from "../engine/segmenter.js";
import { opOfEntry, type ReplicatedEntry, type Shard } from "./shard.js";
import { coalesceBuffers } from "./shard-log.js";
import { snapshotFileChecksum, snapshotFileName } from "./snapshot.js";
import type { SegmentRange } from "../engine/location-map.js";

/** A log response carries about this many bytes at most (always at least one entry). */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;
const MAX_CHUNK_ENTRIES = 100_000;
/** Log files are read in blocks of this size (never a whole 64 MiB file per request). */
const READ_BLOCK_BYTES = 4 * 1024 * 1024;
/** How long one replication read holds the source's compaction off (ms). */
export const COMPACTION_HOLD_MS = 60_000;

/** The copy checksum's syntax (see the module comment). */
export const COPY_CHECKSUM_PATTERN = /^(?:[0-9a-f]{8}-\d{1,15}@\d{1,15}\+)?[0-9a-f]{8}-\d{1,15}$/;

/** Shards whose copy is being replaced by a snapshot right now: appends wait for nothing, they are refused. */
export const installing = new WeakSet<Shard>();

function compacted(shard: Shard, from: number): ApiError {
  return new ApiError(
    409,
    "compacted",
    `shard ${shard.id}: the log entries from LSN ${from} were compacted into a snapshot; copy the snapshot (GET /v1/shards/${shard.id}/snapshot) first`,
    { lsn: shard.lsn, snapshotLsn: shard.snapshotLsn },
  );
}

/**
 * Where entry `lsn` starts in `path`: a read that continues an earlier one
 * starts there instead of at the file's start. A few per shard: a copy and
 * its read-ahead, the checksum, a second copy.
 */
interface ReadHint {
  path: string;
  offset: number;
  lsn: number;
}
const MAX_HINTS = 8;
const readHints = new WeakMap<Shard, ReadHint[]>();

function rememberHint(shard: Shard, hint: ReadHint): void {
  let list = readHints.get(shard);
  if (!list) readHints.set(shard, (list = []));
  if (list.some((h) => h.lsn === hint.lsn && h.path === hint.path)) return;
  list.push(hint);
  if (list.length > MAX_HINTS) list.shift();
}

/**
 * Calls onEntry(lsn, bytes) for each entry from..upto of the shard's log, in
 * LSN order, reading the files in blocks (the bytes are valid during the
 * call; keep a reference, not a copy, only for as long as the block is
 * needed). Reads only the durable part (upto ≤ shard.lsn). onEntry returning
 * false stops the scan after that entry.
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
  const hint = readHints.get(shard)?.find((h) => h.lsn === from && h.path === files[i].path);
  let pos = hint ? hint.offset : 0;
  let last = from - 1;
  let stopped = false;
  for (; i < files.length && last < upto && !stopped; i++, pos = 0) {
    const file = files[i];
    let fh;
    try {
      fh = await open(file.path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw compacted(shard, from);
      throw err;
    }
    try {
      let want = READ_BLOCK_BYTES;
      while (pos < file.size && last < upto && !stopped) {
        const n = Math.min(want, file.size - pos);
        const buf = Buffer.allocUnsafe(n);
        const { bytesRead } = await fh.read(buf, 0, n, pos);
        if (bytesRead < n) break; // the file is shorter than listed: a write past the durable end
        let off = 0;
        while (off + ENTRY_HEADER_BYTES + 8 <= n && last < upto) {
          const body = buf.readUInt32LE(off);
          if (body > MAX_BODY_BYTES)
            throw new ApiError(
              500,
              "log-corrupt",
              `shard ${shard.id}: ${file.path}: bad entry at offset ${pos + off}`,
            );
          const len = ENTRY_HEADER_BYTES + body;
          if (off + len > n) break;
          const lsn = buf.readUInt32LE(off + 8) + buf.readUInt32LE(off + 12) * 4294967296;
          if (lsn >= from) {
            if (lsn !== last + 1)
              throw new ApiError(500, "log-gap", `shard ${shard.id}: LSN ${lsn} follows ${last} in the log`);
            last = lsn;
            if (onEntry(lsn, buf.subarray(off, off + len)) === false) stopped = true;
          }
          off += len;
          if (stopped) break;
        }
        if (off === 0) {
          // not one whole entry in the block: the rest of the file is an entry in flight, or one larger than a block
          if (pos + n >= file.size) break;
          want = Math.max(READ_BLOCK_BYTES, n >= 4 ? ENTRY_HEADER_BYTES + buf.readUInt32LE(0) : 0);
          continue;
        }
        want = READ_BLOCK_BYTES;
        pos += off;
      }
      rememberHint(shard, { path: file.path, offset: pos, lsn: last + 1 });
    } finally {
      await fh.close();
    }
  }
  if (!stopped && last < upto)
    throw new ApiError(500, "log-short", `shard ${shard.id}: the log ends at LSN ${last}, not ${upto}`);
  return last;
}

/** A running CRC-32 of the encoded entries start..last of one shard's log. */
interface CrcCursor {
  start: number;
  last: number;
  crc: number;
  bytes: number;
}
const MAX_CURSORS = 4;
const crcCursors = new WeakMap<Shard, CrcCursor[]>();

/**
 * Advances every running CRC of the shard that ends just before `lsn`; with
 * `start`, begins one at `lsn` if none does (a copy begins at LSN 1 or just
 * after a snapshot).
 */
function advanceCursors(shard: Shard, first: number, last: number, runs: Buffer[], start: boolean): void {
  let list = crcCursors.get(shard);
  let hit = false;
  const extend = (c: CrcCursor) => {
    for (const r of runs) {
      c.crc = crc32(r, c.crc);
      c.bytes += r.length;
    }
    c.last = last;
  };
  for (const c of list ?? []) {
    if (c.last !== first - 1) continue;
    extend(c);
    hit = true;
  }
  if (hit || !start) return;
  if (!list) crcCursors.set(shard, (list = []));
  const c: CrcCursor = { start: first, last: first - 1, crc: 0, bytes: 0 };
  extend(c);
  list.push(c);
  if (list.length > MAX_CURSORS) list.shift();
}

/** Whether a copy may begin at `lsn`: LSN 1, or the entry right after the shard's snapshot. */
function copyStart(shard: Shard, lsn: number): boolean {
  return lsn === 1 || lsn === shard.snapshotLsn + 1;
}

/** Forgets the running CRCs (a target whose copy was replaced by a snapshot). */
export function resetCursors(shard: Shard): void {
  crcCursors.delete(shard);
  readHints.delete(shard);
}

function hex(crc: number): string {
  return (crc >>> 0).toString(16).padStart(8, "0");
}

/** The copy checksum of entries base+1..upto after the snapshot at `base` (module comment). */
export async function copyChecksum(shard: Shard, upto: number, base = 0): Promise<string> {
  if (base > upto) throw badRequest(`base ${base} is above upto ${upto}`);
  let snap = "";
  if (base > 0) {
    try {
      snap = `${await snapshotFileChecksum(join(shard.dir, snapshotFileName(base)))}@${base}+`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      throw new ApiError(
        409,
        "snapshot-gone",
        `shard ${shard.id} holds no snapshot at LSN ${base} (it has ${shard.snapshotLsn || "none"})`,
        { snapshotLsn: shard.snapshotLsn },
      );
    }
  }
  const start = base + 1;
  const list = crcCursors.get(shard) ?? [];
  let best: CrcCursor | undefined;
  for (const c of list) if (c.start === start && c.last <= upto && (!best || c.last > best.last)) best = c;
  // a private copy: a concurrent log read may advance the stored one meanwhile
  const c: CrcCursor = best ? { ...best } : { start, last: base, crc: 0, bytes: 0 };
  await scanEntries(shard, c.last + 1, upto, (lsn, b) => {
    c.crc = crc32(b, c.crc);
    c.bytes += b.length;
    c.last = lsn;
  });
  if (best) {
    if (best.last < c.last) Object.assign(best, c);
  } else if (c.last > base) {
    if (!crcCursors.has(shard)) crcCursors.set(shard, []);
    const l = crcCursors.get(shard)!;
    l.push(c);
    if (l.length > MAX_CURSORS) l.shift();
  }
  return `${snap}${hex(c.crc)}-${c.bytes}`;
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

export function usableSource(shard: Shard): void {
  if (shard.failed) throw new ApiError(500, "shard-failed", `shard ${shard.id} is refused: ${shard.failed}`);
  shard.holdCompaction(COMPACTION_HOLD_MS);
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
  const last = await scanEntries(shard, from, Math.min(lastLsn, from + max - 1), (_lsn, b) => {
    parts.push(b);
    bytes += b.length;
    return bytes < MAX_CHUNK_BYTES;
  });
  // the entries are views of a few read blocks: a handful of writes, not one per entry
  const runs = coalesceBuffers(parts);
  if (parts.length > 0) advanceCursors(shard, from, last, runs, copyStart(shard, from));
  res.writeHead(200, {
    "content-type": "application/octet-stream",
    "content-length": bytes,
    "x-last-lsn": String(lastLsn),
    "x-first-lsn": String(from),
    "x-entries": String(parts.length),
    "x-shard-epoch": String(shard.meta.epoch),
    "x-shard-state": shard.meta.state,
  });
  for (const r of runs) res.write(r);
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
  const base = queryInt(query, "base", 0, 0);
  if (upto > shard.lsn)
    throw new ApiError(409, "beyond-log", `shard ${shard.id} ends at LSN ${shard.lsn}, not ${upto}`, {
      lsn: shard.lsn,
    });
  sendJson(res, 200, {
    id: shard.id,
    upto,
    base,
    lsn: shard.lsn,
    checksum: await copyChecksum(shard, upto, base),
  });
}

export function targetShard(
  agent: Agent,
  id: string,
  epoch: number,
  states: string[],
  migration?: string,
): Shard {
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
  // a copy that another migration received (it replaced this one's) is not this one's to write or
  // activate: the two coordinators would otherwise interleave their steps on one copy
  if (migration && shard.meta.migration && shard.meta.migration !== migration) {
    throw new ApiError(
      409,
      "another-migration",
      `the copy of shard ${id} belongs to migration ${shard.meta.migration}, not ${migration}`,
      { migration: shard.meta.migration },
    );
  }
  return shard;
}

/** The optional x-migration header: the id of the migration a copy step belongs to. */
export function migrationHeader(req: IncomingMessage): string | undefined {
  const raw = req.headers["x-migration"];
  try {
    return optionalMigrationId(raw);
  } catch {
    throw badRequest("x-migration must be a migration id (letters, digits, _ . -; at most 128)");
  }
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
    const epoch = typeof raw === "string" && /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(epoch) || epoch < 1)
      throw badRequest("x-shard-epoch (the source epoch) is required");
    const migration = migrationHeader(req);
    const body = await readBody(req, MAX_CHUNK_BYTES + agent.opts.maxValueBytes + 1024 * 1024, "entries");
    const shard = targetShard(agent, id, epoch, ["receiving"], migration);
    if (installing.has(shard))
      throw new ApiError(
        409,
        "installing",
        `a snapshot is being installed into shard ${id}; append after it`,
      );
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
      const bad = e.op === "write-ids" ? undefined : copiedKeyError(agent, e.key);
      if (bad)
        throw badRequest(
          `entry LSN ${e.lsn} has a key this agent would refuse (${bad}); nothing was appended`,
        );
      if (e.lsn !== expect) {
        throw new ApiError(409, "lsn-gap", `entry has LSN ${e.lsn}; the copy expects ${expect}`, {
          lsn: expect - 1,
        });
      }
      entries.push({
        bytes: body.subarray(off, off + d.length),
        lsn: e.lsn,
        timestamp: e.timestamp,
        // the write id (or id records) too: the copy recognises a retry of a write acknowledged by the source
        op: opOfEntry(e),
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
    // the body is exactly the entries, in LSN order
    if (entries.length > 0)
      advanceCursors(shard, entries[0].lsn, last, [body], copyStart(shard, entries[0].lsn));
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
      const migration = optionalMigrationId(body.migration);
      const existing = agent.shards.get(id);
      if (existing) {
        if (
          existing.meta.state === "receiving" &&
          existing.meta.epoch === epoch &&
          !existing.failed &&
          existing.meta.migration === migration
        ) {
          return sendJson(res, 200, describeShard(existing)); // a retried receive
        }
        // A copy this agent released (ownership moved on at a higher epoch) is stale by
        // definition, and so is a receiving copy of another, abandoned migration: both are
        // replaced. A prepared copy may be the only one of a committed move: never.
        const stale =
          existing.meta.epoch <= epoch &&
          (existing.meta.state === "not-owned" ||
            (existing.meta.state === "receiving" && existing.meta.migration !== migration));
        if (stale) {
          await agent.dropShard(id);
          const shard = await agent.createShard(id, epoch, ranges, mts, "receiving");
          if (migration) shard.setMeta({ migration });
          return sendJson(res, 201, describeShard(shard));
        }
        throw new ApiError(
          409,
          "shard-exists",
          `this agent (${agent.opts.nodeId}) already holds shard ${id} (${existing.meta.state}, epoch ${existing.meta.epoch}); drop it first`,
          { state: existing.meta.state, epoch: existing.meta.epoch },
        );
      }
      const shard = await agent.createShard(id, epoch, ranges, mts, "receiving");
      if (migration) shard.setMeta({ migration });
      return sendJson(res, 201, describeShard(shard));
    }
    case "prepare": {
      const lastLsn = intField(body.lastLsn, "lastLsn", 0);
      if (typeof body.checksum !== "string" || !COPY_CHECKSUM_PATTERN.test(body.checksum))
        throw badRequest(
          'checksum must be "<crc32 hex>-<bytes>" or "<crc32 hex>-<bytes>@<lsn>+<crc32 hex>-<bytes>"',
        );
      const shard = targetShard(agent, id, epoch, ["receiving", "prepared"]);
      // a copy another migration received (it replaced this one's) is not this migration's to commit:
      // that migration's roll-back may drop it
      const migration = optionalMigrationId(body.migration);
      if (migration && shard.meta.migration && shard.meta.migration !== migration)
        throw new ApiError(
          409,
          "another-migration",
          `the copy of shard ${id} belongs to migration ${shard.meta.migration}, not ${migration}; voting abort`,
          { vote: "abort", migration: shard.meta.migration },
        );
      await shard.drain();
      if (shard.lsn !== lastLsn) {
        throw new ApiError(
          409,
          "lsn-mismatch",
          `the copy of shard ${id} ends at LSN ${shard.lsn}, not at the fenced LSN ${lastLsn}; voting abort`,
          { vote: "abort", lsn: shard.lsn },
        );
      }
      const mine = await copyChecksum(shard, lastLsn, shard.snapshotLsn);
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
      targetShard(agent, id, epoch, ["prepared"], optionalMigrationId(body.migration));
      shard.setMeta({
        epoch: epoch + 1,
        state: "owned",
        migrationTimestamp: mts ?? shard.meta.migrationTimestamp,
        migration: undefined,
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

/**
 * Why a key copied in from another agent (a replicated entry, a snapshot record) is one this agent
 * would refuse from a client, or undefined: a copy must not carry in what the API keeps out (an empty
 * key would stop every later export and the agent's start-up check of its ranges).
 */
export function copiedKeyError(agent: Agent, key: string): string | undefined {
  try {
    validateKey(key, agent.opts.maxKeyBytes);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
