/**
 * Moving segments between shards (issue 8: splits and merges carried out by
 * the migration machinery; the coordinator is src/cluster/reshape.ts).
 *
 * Source side (the shard that gives segments away):
 *   GET /v1/shards/:id/export?from=LSN&max=N&ranges=a-b,c-d
 *       the log entries from `from` on whose key falls in the ranges, and
 *       every write id records entry (ops 5 and 6: no key), raw (original shard id
 *       and LSN); headers x-last-lsn (the source's durable LSN),
 *       x-scanned-through (the last LSN looked at), x-entries. When the log
 *       no longer starts at 1 (compacted), `from=1` pages through the
 *       snapshot instead (&snapSkip=N; headers x-snapshot-lsn,
 *       x-snapshot-next): first its write id records, as op 6 entries of at
 *       most WRITE_IDS_PER_ENTRY records, then its records in the ranges, as
 *       puts, all at the snapshot's LSN.
 *   GET /v1/shards/:id/export-checksum?upto=LSN&ranges=...
 *       {checksum}: the content checksum of those entries 1..LSN.
 * Target side (the shard that takes them; a new shard created with
 * `receive`, or a live shard for a merge):
 *   Each step below refuses (409, nothing changed; checkImportTarget) a shard
 *   that is neither owned here nor a new piece receiving for this migration
 *   (a released copy must never become an owner again), and an epoch older
 *   than the highest this agent has seen for it (a stale location map).
 *   POST /v1/admin/shards/:id/import-begin  {epoch, source, migration, ranges}
 *   POST /v1/admin/shards/:id/import        raw entries from `export`;
 *       headers x-source-shard, x-migration, x-from, x-scanned-through.
 *       Each entry is written to this shard as a new entry (its own LSN, the
 *       original write id; write id records as write id records), in source
 *       order; keys outside the import's ranges, foreign shards, malformed
 *       entries and gaps are refused with nothing written.
 *   POST /v1/admin/shards/:id/import-prepare {epoch, source, migration, through, checksum}
 *   POST /v1/admin/shards/:id/import-commit  {migration, epoch, ranges}
 *       after the map commit: serve the new ranges at the new epoch.
 *   POST /v1/admin/shards/:id/import-abort   {migration}
 *       writes deletes for every imported key (they were never served: the
 *       ranges did not include them), then forgets the import.
 *   POST /v1/admin/shards/:id/reshape        {migration, epoch, ranges}
 *       the source of a split after the commit: unfenced with fewer ranges.
 *
 * The content checksum is a running CRC-32 over, per entry, the op byte, the
 * key length (u16) and key, the value length (u32) and value: both sides
 * compute it, the source from its log, the target as it imports (kept in the
 * shard's metadata with the import's progress, so an import survives a
 * restart and resumes where it stopped). It covers the keys and values only:
 * write id records entries are neither checksummed nor counted, on either side.
 *
 * Write ids (write-ids.ts) go with the data, so that a client's retry of a
 * write the source applied is answered as a duplicate by the new owner, not
 * applied again. A put or delete carries its id; a compacted source's
 * snapshot holds the ids of the writes before it, which name an id, an LSN,
 * an outcome and a hash of the key but not the key (so not its segment), so
 * ALL of them are sent, whatever the ranges (a retry for a key outside the
 * target's ranges is refused there before its id is looked at; the key hash
 * lets the target refuse the id's reuse for another key, 409
 * write-id-reused). The target writes them into its own log as op 6 entries
 * (log-format.ts): durable like the imported entries, replayed after a
 * restart, kept by its snapshots and moves, sent on by its own later
 * exports, and bounded in memory by its table's capacity (the oldest ids go
 * first). Such an id is remembered at the LSN of the entry that brought it.
 * The target appends what it imports whether or not it knows the ids
 * (Shard.appendImported): the import replays the source's history. So the
 * ids an aborted import left behind change no later import, and answer only
 * retries of writes that were applied (in the source); they are not purged.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { crc32 } from "node:zlib";
import type { SegmentRange } from "../engine/location-map.js";
import type { Agent } from "./agent.js";
import { describeShard, requireShard } from "./data-plane.js";
import {
  ApiError,
  badRequest,
  intField,
  optionalMigrationId,
  readBody,
  readJson,
  sendJson,
} from "./http-util.js";
import { join } from "node:path";
import { decodeEntry, encodeEntry, WRITE_ID_RECORD_BYTES, type LogEntry } from "./log-format.js";
import { snapshotFileName, snapshotRecords, type SnapshotRecord } from "./snapshot.js";
import { checkRanges, copiedKeyError, MAX_CHUNK_BYTES, scanEntries } from "./replication.js";
import { opOfEntry, type Shard, type ShardOp, type WriteOp } from "./shard.js";
import type { ImportState, ShardMeta } from "./shard-meta.js";

const MAX_EXPORT_ENTRIES = 100_000;
/** A snapshot's write id records are exported this many to an entry (100 KiB). */
export const WRITE_IDS_PER_ENTRY = 4096;

/** Adds one entry's content to a running checksum. */
export function contentCrc(crc: number, e: Pick<LogEntry, "op" | "key" | "value">): number {
  const key = Buffer.from(e.key, "utf8");
  const head = Buffer.allocUnsafe(7);
  head.writeUInt8(e.op === "put" ? 1 : 2, 0);
  head.writeUInt16LE(key.length, 1);
  head.writeUInt32LE(e.op === "put" ? e.value.length : 0, 3);
  let c = crc32(head, crc);
  c = crc32(key, c);
  if (e.op === "put" && e.value.length) c = crc32(e.value, c);
  return c;
}

export function formatContentChecksum(crc: number, entries: number): string {
  return `${(crc >>> 0).toString(16).padStart(8, "0")}-${entries}`;
}

function parseRangesParam(v: string | null, segments: number): SegmentRange[] {
  if (!v) throw badRequest("ranges=a-b,c-d (half-open segment ranges) is required");
  const parts = v.split(",").map((p) => {
    const m = /^(\d{1,9})-(\d{1,9})$/.exec(p);
    if (!m) throw badRequest(`ranges: ${JSON.stringify(p)} is not a-b`);
    return [Number(m[1]), Number(m[2])];
  });
  return checkRanges(parts, segments);
}

function inRanges(ranges: SegmentRange[], segment: number): boolean {
  for (const [a, b] of ranges) if (segment >= a && segment < b) return true;
  return false;
}

function exportable(agent: Agent, id: string | undefined) {
  const shard = requireShard(agent, id);
  if (shard.meta.state !== "owned" && shard.meta.state !== "fenced")
    throw new ApiError(409, "not-owner", `shard ${shard.id} is ${shard.meta.state} here; nothing to export`);
  return shard;
}

/** GET /v1/shards/:id/export */
export async function exportRequest(
  agent: Agent,
  res: ServerResponse,
  id: string | undefined,
  query: URLSearchParams,
): Promise<void> {
  const shard = exportable(agent, id);
  const from = intField(Number(query.get("from") ?? "1"), "from", 1);
  const max = Math.min(intField(Number(query.get("max") ?? "5000"), "max", 1), MAX_EXPORT_ENTRIES);
  const ranges = parseRangesParam(query.get("ranges"), agent.opts.segments);
  shard.holdCompaction(COMPACTION_HOLD_MS);
  if (from === 1 && logCompacted(shard)) {
    // the log no longer starts at 1: the state as of the snapshot first, a page at a time
    const skip = intField(Number(query.get("snapSkip") ?? "0"), "snapSkip", 0);
    const page = await snapshotPage(agent, shard, ranges, skip, max);
    res.writeHead(200, {
      "content-type": "application/octet-stream",
      "x-last-lsn": String(shard.lsn),
      "x-snapshot-lsn": String(page.lsn),
      "x-snapshot-next": String(skip + page.entries),
      "x-scanned-through": String(page.done ? page.lsn : 0),
      "x-entries": String(page.entries),
    });
    res.end(Buffer.concat(page.chunks));
    return;
  }
  const last = shard.lsn;
  const chunks: Buffer[] = [];
  let bytes = 0;
  let n = 0;
  const through = await scanEntries(shard, from, last, (_lsn, raw) => {
    const d = decodeEntry(raw, 0);
    if (d.kind !== "entry")
      throw new ApiError(500, "log-corrupt", `shard ${shard.id}: a bad entry in the log`);
    if (exported(agent, ranges, d.entry)) {
      chunks.push(Buffer.from(raw));
      bytes += raw.length;
      n++;
    }
    return n < max && bytes < MAX_CHUNK_BYTES;
  });
  res.writeHead(200, {
    "content-type": "application/octet-stream",
    "x-last-lsn": String(last),
    "x-scanned-through": String(Math.max(through, from - 1)),
    "x-entries": String(n),
  });
  res.end(Buffer.concat(chunks, bytes));
}

/** GET /v1/shards/:id/export-checksum */
export async function exportChecksumRequest(
  agent: Agent,
  res: ServerResponse,
  id: string | undefined,
  query: URLSearchParams,
): Promise<void> {
  const shard = exportable(agent, id);
  const upto = intField(Number(query.get("upto")), "upto", 0);
  if (upto > shard.lsn) throw badRequest(`upto ${upto} is past the durable LSN ${shard.lsn}`);
  const ranges = parseRangesParam(query.get("ranges"), agent.opts.segments);
  let crc = 0;
  let n = 0;
  let from = 1;
  const add = (e: LogEntry) => {
    if (e.op === "write-ids") return; // not content: see the module comment
    crc = contentCrc(crc, e);
    n++;
  };
  if (logCompacted(shard)) {
    // the same stream the export sent: the snapshot's records in the ranges, then the log after it
    from = (await readSnapshotForExport(agent, shard, ranges, add)) + 1;
  }
  await scanEntries(shard, from, upto, (_lsn, raw) => {
    const d = decodeEntry(raw, 0);
    if (d.kind !== "entry")
      throw new ApiError(500, "log-corrupt", `shard ${shard.id}: a bad entry in the log`);
    if (exported(agent, ranges, d.entry)) add(d.entry);
  });
  sendJson(res, 200, { checksum: formatContentChecksum(crc, n), upto });
}

function header(req: IncomingMessage, name: string): string {
  const v = req.headers[name];
  if (typeof v !== "string" || !v) throw badRequest(`header ${name} is required`);
  return v;
}

function headerInt(req: IncomingMessage, name: string, min: number): number {
  const v = header(req, name);
  if (!/^\d{1,16}$/.test(v)) throw badRequest(`header ${name} must be an integer`);
  return intField(Number(v), name, min);
}

function importOf(shardImports: Record<string, ImportState> | undefined, source: string, migration?: string) {
  const st = shardImports?.[source];
  if (!st) throw new ApiError(409, "no-import", `no import from ${source} was begun here`);
  if (migration && st.migration !== migration)
    throw new ApiError(
      409,
      "another-migration",
      `the import from ${source} belongs to migration ${st.migration}`,
      {
        migration: st.migration,
      },
    );
  return st;
}

/**
 * Whether a shard may take (import-begin, import, import-prepare) or activate
 * (import-commit) imported segments: the rule of the plain migrate path
 * (fence, assign) applied to imports. Throws, with nothing changed:
 *   - 409 `stale-epoch` when the coordinator presents an epoch older than the
 *     highest this agent has durably seen for the shard (a location map older
 *     than the agents: one restored from a backup);
 *   - 409 `not-owner` when the shard is neither owned here (a merge's kept
 *     shard) nor a new piece `receiving` for this migration (a split): a
 *     released copy (not-owned) holds data the shard's new owner has moved
 *     past, and turning it back into an owner would lose the writes
 *     acknowledged there; a fenced shard or a plain migration's copy is
 *     another migration's;
 *   - 409 `another-migration` when the receiving piece was received by
 *     another migration.
 * `epoch` is absent for the import pages (they carry none). Pure.
 */
export function checkImportTarget(
  meta: Pick<ShardMeta, "shardId" | "epoch" | "state" | "redirect" | "migration">,
  migration: string,
  epoch?: number,
): void {
  const where = () =>
    `shard ${meta.shardId} is ${meta.state} here at epoch ${meta.epoch}` +
    (meta.redirect ? ` (released to ${meta.redirect.node} at epoch ${meta.redirect.epoch})` : "");
  const details = {
    state: meta.state,
    epoch: meta.epoch,
    ...(meta.redirect ? { redirect: meta.redirect } : {}),
  };
  if (epoch !== undefined && epoch < meta.epoch)
    throw new ApiError(
      409,
      "stale-epoch",
      `epoch ${epoch} is stale: ${where()}; the location map is older than this agent's; nothing was changed`,
      details,
    );
  if (meta.state !== "owned" && meta.state !== "receiving")
    throw new ApiError(
      409,
      "not-owner",
      `${where()}; it takes no import (only an owned shard or a new piece receiving does); nothing was changed`,
      details,
    );
  if (meta.state === "receiving" && meta.migration && meta.migration !== migration)
    throw new ApiError(
      409,
      "another-migration",
      `shard ${meta.shardId} is receiving for migration ${meta.migration}, not ${migration}; nothing was changed`,
      { migration: meta.migration },
    );
}

export const IMPORT_ACTIONS = new Set([
  "import-begin",
  "import",
  "import-prepare",
  "import-commit",
  "import-abort",
  "reshape",
]);

/** POST /v1/admin/shards/:id/<action> for the import actions. */
export async function importAdmin(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  id: string | undefined,
  action: string,
): Promise<void> {
  const shard = requireShard(agent, id);
  if (shard.failed) throw new ApiError(500, "shard-failed", `shard ${shard.id} is refused: ${shard.failed}`);
  if (action === "import") {
    const source = header(req, "x-source-shard");
    const migration = optionalMigrationId(header(req, "x-migration"));
    const from = headerInt(req, "x-from", 1);
    const through = headerInt(req, "x-scanned-through", 0);
    const st = importOf(shard.meta.imports, source, migration);
    checkImportTarget(shard.meta, st.migration);
    if (st.prepared)
      throw new ApiError(409, "prepared", `the import from ${source} is prepared: nothing more`);
    // a page of a compacted source's snapshot (x-snapshot-lsn), or log entries after it
    const snapLsn =
      req.headers["x-snapshot-lsn"] === undefined ? undefined : headerInt(req, "x-snapshot-lsn", 1);
    const snapSkip = snapLsn === undefined ? undefined : headerInt(req, "x-snapshot-skip", 0);
    if (snapLsn !== undefined && (st.through !== 0 || snapSkip !== (st.snapSkip ?? 0)))
      throw new ApiError(
        409,
        "import-gap",
        `the import from ${source} continues at snapshot record ${st.snapSkip ?? 0}`,
        { through: st.through, snapSkip: st.snapSkip ?? 0 },
      );
    if (snapLsn !== undefined && st.snapLsn !== undefined && st.snapLsn !== snapLsn)
      throw new ApiError(
        409,
        "snapshot-changed",
        `the source's snapshot changed (${st.snapLsn} → ${snapLsn})`,
      );
    if (snapLsn === undefined && from !== st.through + 1)
      throw new ApiError(
        409,
        "import-gap",
        `the import from ${source} continues at LSN ${st.through + 1}, not ${from}`,
        {
          through: st.through,
        },
      );
    if (through < from - 1) throw badRequest("x-scanned-through is before x-from");
    const body = await readBody(req, MAX_CHUNK_BYTES + agent.opts.maxValueBytes + 1024 * 1024, "entries");
    const ops: ShardOp[] = [];
    let crc = st.crc;
    let content = 0;
    let off = 0;
    let prevLsn = from - 1;
    while (off < body.length) {
      const d = decodeEntry(body, off);
      if (d.kind !== "entry")
        throw badRequest(
          `entry ${ops.length} is ${d.kind === "short" ? "cut short" : `invalid (${d.why})`}; nothing was imported`,
        );
      const e = d.entry;
      if (e.shardId !== source)
        throw badRequest(`an entry belongs to shard ${e.shardId}, not ${source}; nothing was imported`);
      if (snapLsn !== undefined ? e.lsn !== snapLsn : e.lsn <= prevLsn || e.lsn > through)
        throw badRequest(
          `entry LSN ${e.lsn} is out of order or past x-scanned-through; nothing was imported`,
        );
      if (e.op !== "write-ids") {
        const bad = copiedKeyError(agent, e.key);
        if (bad)
          throw badRequest(
            `entry LSN ${e.lsn} has a key this agent would refuse (${bad}); nothing was imported`,
          );
        if (!inRanges(st.ranges, agent.segmenter.segmentOf(e.key)))
          throw badRequest(
            `key ${JSON.stringify(e.key)} is outside the imported ranges; nothing was imported`,
          );
        crc = contentCrc(crc, e);
        content++;
      }
      prevLsn = e.lsn;
      ops.push(opOfEntry(e));
      off += d.length;
    }
    // re-check after the body arrived: an abort, a second import or a release may have come in meanwhile
    const now = importOf(shard.meta.imports, source, migration);
    checkImportTarget(shard.meta, now.migration);
    if (now.through !== st.through || now.prepared || now.snapSkip !== st.snapSkip)
      throw new ApiError(409, "import-gap", `the import from ${source} moved on meanwhile`, {
        through: now.through,
      });
    if (ops.length) await shard.appendImported(ops);
    const next: ImportState =
      snapLsn !== undefined
        ? {
            ...now,
            through,
            crc,
            entries: now.entries + content,
            snapLsn,
            // the snapshot is paged by entries sent, id records entries included
            snapSkip: snapSkip! + ops.length,
          }
        : { ...now, through, crc, entries: now.entries + content };
    shard.setMeta({ imports: { ...shard.meta.imports, [source]: next } });
    return sendJson(res, 200, {
      through,
      imported: content,
      writeIdRecords: ops.length - content,
      lsn: shard.lsn,
    });
  }
  const body = (await readJson(req, 1024 * 1024)) as Record<string, unknown>;
  if (!body || typeof body !== "object" || Array.isArray(body))
    throw badRequest("the body must be a JSON object");
  const migration = optionalMigrationId(body.migration);
  if (!migration) throw badRequest("migration (the migration id) is required");
  switch (action) {
    case "import-begin": {
      const source = typeof body.source === "string" ? body.source : "";
      if (!/^[A-Za-z0-9_.-]{1,128}$/.test(source)) throw badRequest("source must be a shard id");
      const ranges = checkRanges(body.ranges, agent.opts.segments);
      checkImportTarget(shard.meta, migration, intField(body.epoch, "epoch", 1));
      const own = shard.meta.ranges ?? [];
      if (ranges.some(([a, b]) => own.some(([c, d]) => a < d && c < b)))
        throw badRequest(`the imported ranges overlap shard ${shard.id}'s own`);
      const cur = shard.meta.imports?.[source];
      if (cur && cur.migration === migration)
        return sendJson(res, 200, { ...describeShard(shard), import: cur });
      if (cur)
        throw new ApiError(
          409,
          "another-migration",
          `an import from ${source} by migration ${cur.migration} is open here`,
          {
            migration: cur.migration,
          },
        );
      // Keys of those ranges this shard still holds are stale copies (it does not own the ranges:
      // a purge after a split that did not finish): deleted first, so that the import, which only
      // brings what the source holds now, cannot leave a key the source deleted meanwhile alive here
      if (shard.meta.ranges !== undefined)
        await purgeWhere(shard, (key) => inRanges(ranges, agent.segmenter.segmentOf(key)));
      const st: ImportState = { migration, ranges, through: 0, crc: 0, entries: 0 };
      shard.setMeta({ imports: { ...shard.meta.imports, [source]: st } });
      return sendJson(res, 201, { ...describeShard(shard), import: st });
    }
    case "import-prepare": {
      const source = typeof body.source === "string" ? body.source : "";
      const st = importOf(shard.meta.imports, source, migration);
      const through = intField(body.through, "through", 0);
      checkImportTarget(shard.meta, migration, intField(body.epoch, "epoch", 1));
      await shard.drain();
      const mine = formatContentChecksum(st.crc, st.entries);
      if (st.through !== through || mine !== body.checksum) {
        throw new ApiError(
          409,
          "checksum-mismatch",
          `the import from ${source} holds LSNs up to ${st.through} with checksum ${mine}; the source reported ${through} and ${String(body.checksum)}; voting abort`,
          { vote: "abort", through: st.through, checksum: mine },
        );
      }
      if (!st.prepared)
        shard.setMeta({ imports: { ...shard.meta.imports, [source]: { ...st, prepared: true } } });
      return sendJson(res, 200, { vote: "commit", checksum: mine });
    }
    case "import-commit": {
      const epoch = intField(body.epoch, "epoch", 1);
      const ranges = checkRanges(body.ranges, agent.opts.segments);
      const mine = Object.entries(shard.meta.imports ?? {}).filter(([, s]) => s.migration === migration);
      if (mine.length === 0) {
        // a retried commit: already serving the new ranges at the new epoch
        if (shard.meta.epoch === epoch && shard.meta.state === "owned")
          return sendJson(res, 200, describeShard(shard));
        throw new ApiError(409, "no-import", `no import by migration ${migration} is open here`);
      }
      if (mine.some(([, s]) => !s.prepared))
        throw new ApiError(409, "not-prepared", "the import is not prepared");
      checkImportTarget(shard.meta, migration, epoch);
      const rest = Object.fromEntries(
        Object.entries(shard.meta.imports ?? {}).filter(([, s]) => s.migration !== migration),
      );
      shard.setMeta({ epoch, ranges, state: "owned", imports: rest, migration: undefined });
      return sendJson(res, 200, describeShard(shard));
    }
    case "import-abort": {
      const mine = Object.entries(shard.meta.imports ?? {}).filter(([, s]) => s.migration === migration);
      if (mine.length === 0) return sendJson(res, 200, { ...describeShard(shard), purged: 0 });
      // the imported keys were never served here (outside the ranges): deleting them leaves no trace
      const ranges = mine.flatMap(([, s]) => s.ranges);
      const own = shard.meta.ranges ?? [];
      const doomed: WriteOp[] = [];
      for (const key of shard.state.keys()) {
        const seg = agent.segmenter.segmentOf(key);
        if (inRanges(ranges, seg) && !inRanges(own, seg)) doomed.push({ op: "delete", key });
      }
      await shard.track(
        (async () => {
          for (let i = 0; i < doomed.length; i += 5000) await shard.write(doomed.slice(i, i + 5000));
        })(),
      );
      const rest = Object.fromEntries(
        Object.entries(shard.meta.imports ?? {}).filter(([, s]) => s.migration !== migration),
      );
      shard.setMeta({ imports: rest });
      return sendJson(res, 200, { ...describeShard(shard), purged: doomed.length });
    }
    case "reshape": {
      const epoch = intField(body.epoch, "epoch", 1);
      const ranges = checkRanges(body.ranges, agent.opts.segments);
      if (shard.meta.state === "owned" && shard.meta.epoch === epoch)
        return sendJson(res, 200, describeShard(shard));
      if (shard.meta.state !== "fenced")
        throw new ApiError(
          409,
          "not-fenced",
          `shard ${shard.id} is ${shard.meta.state}; only a fenced shard is reshaped`,
        );
      if (shard.meta.migration && shard.meta.migration !== migration)
        throw new ApiError(
          409,
          "another-migration",
          `shard ${shard.id} is held by migration ${shard.meta.migration}`,
          {
            migration: shard.meta.migration,
          },
        );
      if (epoch <= shard.meta.epoch)
        throw new ApiError(409, "stale-epoch", `epoch ${epoch} is stale`, { epoch: shard.meta.epoch });
      shard.setMeta({ epoch, ranges, state: "owned", migration: undefined });
      sendJson(res, 200, describeShard(shard));
      // the keys that moved away are never served here again: delete them (after answering,
      // so the write pause does not include it), so no stale copy outlives the split
      void shard
        .track(purgeOutside(agent, shard, ranges))
        .catch((err) =>
          agent.log(`shard ${shard.id}: purging the keys that moved away failed: ${(err as Error).message}`),
        );
      return;
    }
    default:
      throw new ApiError(404, "no-route", `no such admin action: ${action}`);
  }
}

/** Writes deletes for every key of the shard whose segment is outside `ranges`; returns how many. */
async function purgeOutside(agent: Agent, shard: Shard, ranges: SegmentRange[]): Promise<number> {
  return purgeWhere(shard, (key) => !inRanges(ranges, agent.segmenter.segmentOf(key)));
}

/** Writes deletes for every key of the shard that `doomed` picks; returns how many. */
async function purgeWhere(shard: Shard, doomed: (key: string) => boolean): Promise<number> {
  const ops: WriteOp[] = [];
  for (const key of shard.state.keys()) if (doomed(key)) ops.push({ op: "delete", key });
  for (let i = 0; i < ops.length; i += 5000) await shard.write(ops.slice(i, i + 5000));
  return ops.length;
}

/**
 * After a restart: deletes the keys an owned shard holds outside its ranges and the ranges of its
 * open imports. Such keys are never served, but they are stale: the purge after a split (reshape)
 * runs after its answer and may not have finished, and a split's source the restart found fenced
 * is given the map's smaller ranges without one (in-doubt.ts). Left in place, a later merge of the
 * piece back into this shard brought them back to life wherever the piece had deleted a key and
 * compacted its log (its snapshot carries no deletes). Returns how many keys were deleted.
 */
export async function purgeStrays(agent: Agent, shard: Shard): Promise<number> {
  // (a shard created without ranges serves every key: nothing of it is outside)
  if (shard.failed || shard.meta.state !== "owned" || shard.meta.ranges === undefined) return 0;
  const keep = [...shard.meta.ranges, ...Object.values(shard.meta.imports ?? {}).flatMap((i) => i.ranges)];
  // (a shard over every segment has nothing outside: its keys are not scanned, the start not slowed)
  if (coversAll(keep, agent.opts.segments)) return 0;
  return shard.track(purgeOutside(agent, shard, keep));
}

/** Whether the ranges cover every segment in [0, segments). */
function coversAll(ranges: SegmentRange[], segments: number): boolean {
  let upTo = 0;
  for (const [a, b] of [...ranges].sort((x, y) => x[0] - y[0])) {
    if (a > upTo) return false;
    upTo = Math.max(upTo, b);
  }
  return upTo >= segments;
}

/** How long an export keeps the source from compacting (the snapshot and the log after it stay). */
const COMPACTION_HOLD_MS = 60_000;

/** Whether the shard's log no longer starts at LSN 1 (entries before it live only in a snapshot). */
function logCompacted(shard: Shard): boolean {
  const files = shard.logFileList;
  return shard.snapshotLsn > 0 && (files.length === 0 || files[0].firstLsn > 1);
}

/** Whether an export of `ranges` sends this log entry: its key is in them, or it is write id records. */
function exported(agent: Agent, ranges: SegmentRange[], e: LogEntry): boolean {
  return e.op === "write-ids" || inRanges(ranges, agent.segmenter.segmentOf(e.key));
}

/**
 * Calls onEntry with what an export sends of the newest snapshot, in this
 * order, all at the snapshot's LSN: all its write id records, as write id
 * records entries of WRITE_IDS_PER_ENTRY records (the last may hold fewer),
 * then its records whose key is in the ranges, as puts, in the snapshot's
 * order. Returns the snapshot's LSN.
 */
async function readSnapshotForExport(
  agent: Agent,
  shard: Shard,
  ranges: SegmentRange[],
  onEntry: (e: LogEntry) => void,
): Promise<number> {
  const lsn = shard.snapshotLsn;
  for await (const e of exportSnapshotEntries(agent, shard, ranges, lsn)) onEntry(e);
  return lsn;
}

/**
 * Cuts a stream of bytes (whole records, in pieces of any size) into pieces
 * of exactly `size` bytes, the last one shorter: the same pieces however the
 * stream arrived, so that a page of the export means the same thing each time.
 */
class RecordBatcher {
  private pending: Buffer[] = [];
  private bytes = 0;

  constructor(
    private readonly size: number,
    private readonly emit: (piece: Buffer) => void,
  ) {}

  push(b: Buffer): void {
    this.pending.push(b);
    this.bytes += b.length;
    if (this.bytes < this.size) return;
    let all = Buffer.concat(this.pending, this.bytes);
    for (; all.length >= this.size; all = all.subarray(this.size)) this.emit(all.subarray(0, this.size));
    this.pending = all.length ? [all] : [];
    this.bytes = all.length;
  }

  /** Emits what is left, if anything. */
  flush(): void {
    if (this.bytes === 0) return;
    const rest = Buffer.concat(this.pending, this.bytes);
    this.pending = [];
    this.bytes = 0;
    this.emit(rest);
  }
}

/**
 * What an export sends of the snapshot (readSnapshotForExport says what), one
 * entry at a time as it is asked for (snapshotRecords: the file's checksum is
 * checked before the first one). A newer snapshot that replaced the file
 * before it was opened is 409 `snapshot-changed`.
 */
async function* exportSnapshotEntries(
  agent: Agent,
  shard: Shard,
  ranges: SegmentRange[],
  lsn: number,
): AsyncGenerator<LogEntry, void> {
  const entry = (op: "put" | "write-ids", key: string, value: Buffer, timestamp: number): LogEntry => ({
    lsn,
    timestamp,
    migrationTimestamp: shard.meta.migrationTimestamp,
    op,
    shardId: shard.id,
    key,
    value,
  });
  const ready: LogEntry[] = [];
  const ids = new RecordBatcher(WRITE_IDS_PER_ENTRY * WRITE_ID_RECORD_BYTES, (records) =>
    ready.push(entry("write-ids", "", records, Date.now())),
  );
  const records: AsyncGenerator<SnapshotRecord, unknown> = snapshotRecords(
    join(shard.dir, snapshotFileName(lsn)),
  );
  try {
    for (;;) {
      let r: IteratorResult<SnapshotRecord, unknown>;
      try {
        r = await records.next();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT")
          throw new ApiError(
            409,
            "snapshot-changed",
            `shard ${shard.id}: a newer snapshot replaced ${lsn}; start again`,
          );
        throw err;
      }
      if (r.done) break;
      const rec = r.value;
      if ("writeIds" in rec) ids.push(rec.writeIds);
      else {
        ids.flush(); // the id records come first in the file: the last of them is here
        if (inRanges(ranges, agent.segmenter.segmentOf(rec.key)))
          ready.push(entry("put", rec.key, rec.value.value, rec.value.timestamp));
      }
      for (const e of ready) yield e;
      ready.length = 0;
    }
    ids.flush();
    for (const e of ready) yield e;
  } finally {
    await records.return(undefined);
  }
}

/**
 * Where the previous page of a snapshot's export stopped: the next page,
 * asked for with `snapSkip` = `next`, goes on from there instead of reading
 * the snapshot again from the start and skipping what was sent (a shard of a
 * million keys is sent in hundreds of pages: each page read the whole file).
 */
interface ExportCursor {
  lsn: number;
  ranges: string;
  /** The snapSkip of the page that continues this one. */
  next: number;
  entries: AsyncGenerator<LogEntry, void>;
  /** An entry read and not sent (the page it was read for was full). */
  held?: LogEntry;
  idle?: NodeJS.Timeout;
}

/** Cursors of exports in progress, per shard: a few, each closed after a minute without a page. */
const EXPORT_CURSORS = new WeakMap<Shard, ExportCursor[]>();
const MAX_CURSORS_PER_SHARD = 4;
/**
 * As long as each page holds off the shard's next snapshot: a newer snapshot cannot replace the
 * file while a cursor on it is open.
 */
const CURSOR_IDLE_MS = COMPACTION_HOLD_MS;

function closeCursor(shard: Shard, cur: ExportCursor): void {
  clearTimeout(cur.idle);
  const list = EXPORT_CURSORS.get(shard);
  const i = list?.indexOf(cur) ?? -1;
  if (i >= 0) list!.splice(i, 1);
  // (closes the snapshot file; an error closing a file only read is of no consequence)
  cur.entries.return(undefined).catch(() => {});
}

/**
 * One page of what an export sends of the snapshot: the entries after the
 * first `skip`, at most `max` or about a chunk. Goes on from the cursor the
 * previous page left when there is one for this snapshot, these ranges and
 * this `skip`; else reads from the start, skipping `skip` entries (a first
 * page, a retried page, an agent restarted since). The same entries either way.
 */
async function snapshotPage(
  agent: Agent,
  shard: Shard,
  ranges: SegmentRange[],
  skip: number,
  max: number,
): Promise<{ lsn: number; chunks: Buffer[]; entries: number; done: boolean }> {
  const lsn = shard.snapshotLsn;
  const rangesKey = JSON.stringify(ranges);
  const list = EXPORT_CURSORS.get(shard) ?? [];
  EXPORT_CURSORS.set(shard, list);
  const at = list.findIndex((c) => c.lsn === lsn && c.ranges === rangesKey && c.next === skip);
  // taken out while in use: a concurrent page for the same place reads its own
  let cur: ExportCursor;
  if (at >= 0) cur = list.splice(at, 1)[0];
  else {
    cur = { lsn, ranges: rangesKey, next: 0, entries: exportSnapshotEntries(agent, shard, ranges, lsn) };
    agent.metrics.exportSnapshotReads.inc();
  }
  clearTimeout(cur.idle);
  const chunks: Buffer[] = [];
  let more = false;
  try {
    while (cur.next < skip) {
      if ((await cur.entries.next()).done) break;
      cur.next++;
    }
    let bytes = 0;
    let full = false;
    for (;;) {
      let e = cur.held;
      cur.held = undefined;
      if (!e) {
        const r = await cur.entries.next();
        if (r.done) break;
        e = r.value;
      }
      if (full) {
        more = true;
        cur.held = e;
        break;
      }
      const b = encodeEntry(e);
      chunks.push(b);
      bytes += b.length;
      if (chunks.length >= max || bytes >= MAX_CHUNK_BYTES) full = true;
    }
  } catch (err) {
    closeCursor(shard, cur);
    throw err;
  }
  cur.next = skip + chunks.length;
  if (!more) closeCursor(shard, cur);
  else {
    list.push(cur);
    while (list.length > MAX_CURSORS_PER_SHARD) closeCursor(shard, list[0]);
    cur.idle = setTimeout(() => closeCursor(shard, cur), CURSOR_IDLE_MS);
    cur.idle.unref();
  }
  return { lsn, chunks, entries: chunks.length, done: !more };
}
