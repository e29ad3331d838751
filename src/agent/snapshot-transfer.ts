/**
 * Moving a snapshot from a migration source to its target (issue 8): a source
 * whose log was compacted behind a snapshot can only be copied as "its newest
 * snapshot, then the log after it". See replication.ts for the protocol and
 * for how the copy checksum covers the snapshot.
 *
 *   GET /v1/shards/:id/snapshot (source)
 *       200: the bytes of the newest snapshot file, streamed; headers
 *       x-snapshot-lsn (the LSN it holds the state of), x-snapshot-checksum
 *       ("<CRC-32 hex>-<bytes>": the file's trailer and size), x-last-lsn.
 *       404 "no-snapshot" when the shard has none (copy the log from LSN 1).
 *   PUT /v1/admin/shards/:id/snapshot (target; the shard must be "receiving")
 *       headers x-shard-epoch (the source epoch), x-snapshot-lsn,
 *       x-snapshot-checksum, content-length; body: the file. Streamed to a
 *       temporary file while it is decoded and checksummed; only a body of
 *       exactly the announced size whose CRC matches both its own trailer and
 *       the announced checksum, and whose header names this shard and LSN,
 *       is fsynced and renamed into place, replacing the copy (the copied log
 *       is deleted; the log continues at LSN + 1). Anything else — a short or
 *       cut upload, a flipped byte, a wrong checksum, another shard's
 *       snapshot, not enough disk — is refused and nothing is installed.
 *
 * Memory: one chunk plus one record at a time beyond the decoded state (which
 * the shard keeps in memory anyway); never the whole file.
 */
import { open, rm, statfs } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { Agent } from "./agent.js";
import { describeShard, requireShard, requireShardId } from "./data-plane.js";
import { NO_ROOM, writeFully } from "./fs-util.js";
import { ApiError, badRequest, sendJson } from "./http-util.js";
import {
  copiedKeyError,
  installing,
  migrationHeader,
  resetCursors,
  targetShard,
  usableSource,
} from "./replication.js";
import {
  snapshotChecksum,
  SnapshotCorrupt,
  SnapshotDecoder,
  snapshotFileName,
  type StateValue,
} from "./snapshot.js";

export const INCOMING_SNAPSHOT = "incoming-snapshot.tmp";
/** Free space a target keeps beyond the snapshot it receives (its log grows during the copy). */
const SPACE_MARGIN_BYTES = 64 * 1024 * 1024;
const SNAPSHOT_CHECKSUM = /^([0-9a-f]{8})-(\d{1,15})$/;

/** GET /v1/shards/:id/snapshot */
export async function snapshotRequest(
  agent: Agent,
  res: ServerResponse,
  id: string | undefined,
): Promise<void> {
  const shard = requireShard(agent, id);
  usableSource(shard); // also holds compaction: this snapshot and the log after it stay
  let fh;
  let lsn = 0;
  for (let attempt = 0; !fh; attempt++) {
    lsn = shard.snapshotLsn;
    if (lsn === 0)
      throw new ApiError(404, "no-snapshot", `shard ${shard.id} has no snapshot; copy its log from LSN 1`, {
        lsn: shard.lsn,
      });
    try {
      fh = await open(join(shard.dir, snapshotFileName(lsn)), "r");
    } catch (err) {
      // a snapshot that finished meanwhile replaced it: take the new one
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 3) throw err;
    }
  }
  try {
    const { size } = await fh.stat();
    if (size < 16) throw new ApiError(500, "snapshot-corrupt", `the snapshot of ${shard.id} is too short`);
    const trailer = Buffer.alloc(4);
    await fh.read(trailer, 0, 4, size - 4);
    res.writeHead(200, {
      "content-type": "application/octet-stream",
      "content-length": size,
      "x-snapshot-lsn": String(lsn),
      "x-snapshot-checksum": snapshotChecksum(trailer.readUInt32LE(0), size),
      "x-last-lsn": String(shard.lsn),
      "x-shard-epoch": String(shard.meta.epoch),
    });
    try {
      // the open descriptor keeps the file readable even if a later snapshot deletes its name
      await pipeline(
        fh.createReadStream({ start: 0, end: size - 1, highWaterMark: 1 << 20, autoClose: false }),
        res,
      );
    } catch {
      res.destroy(); // the reader went away: nothing to answer
    }
  } finally {
    await fh.close();
  }
}

/**
 * The target's own disk refused the copy (full, a file size limit, an I/O error): the upload itself was
 * fine, so the answer must not blame it. 507 when there was no room, 500 otherwise; the partial file is
 * deleted (the caller's finally), so nothing is kept.
 */
function diskRefused(agent: Agent, id: string, pos: number, size: number, err: unknown): ApiError {
  const e = err as NodeJS.ErrnoException;
  const room = e.code !== undefined && NO_ROOM.has(e.code);
  agent.log(`shard ${id}: writing a received snapshot failed after ${pos} of ${size} bytes: ${e.message}`);
  return new ApiError(
    room ? 507 : 500,
    room ? "no-space" : "disk-error",
    `this agent's disk (${agent.opts.nodeId}) refused the snapshot of ${id} after ${pos} of ${size} bytes (${e.code ?? e.message}); ` +
      `the partial copy was not kept and nothing was installed. ${room ? "Make room on the disk" : "Fix the disk (see the agent's log)"}, then retry the migration`,
    { written: pos, size, ...(e.code ? { code: e.code } : {}) },
  );
}

function headerInt(req: IncomingMessage, name: string): number {
  const raw = req.headers[name];
  if (
    typeof raw !== "string" ||
    !/^\d{1,16}$/.test(raw) ||
    !Number.isSafeInteger(Number(raw)) ||
    Number(raw) < 1
  )
    throw badRequest(`the header ${name} (a positive integer) is required`);
  return Number(raw);
}

/** PUT /v1/admin/shards/:id/snapshot */
export async function installSnapshotRequest(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  shardId: string | undefined,
): Promise<void> {
  const id = requireShardId(shardId);
  const epoch = headerInt(req, "x-shard-epoch");
  const lsn = headerInt(req, "x-snapshot-lsn");
  const sum = req.headers["x-snapshot-checksum"];
  const m = typeof sum === "string" ? SNAPSHOT_CHECKSUM.exec(sum) : null;
  if (!m) throw badRequest('the header x-snapshot-checksum ("<crc32 hex>-<bytes>") is required');
  const size = Number(m[2]);
  const declared = req.headers["content-length"];
  if (declared === undefined || Number(declared) !== size)
    throw badRequest(
      `content-length (${declared ?? "none"}) must equal the snapshot's size in x-snapshot-checksum (${size})`,
    );
  const shard = targetShard(agent, id, epoch, ["receiving"], migrationHeader(req));
  if (installing.has(shard))
    throw new ApiError(409, "installing", `a snapshot is already being installed into shard ${id}`);
  // marked before the first await: two uploads at once (an old and a new coordinator) cannot both pass
  installing.add(shard);
  const tmp = join(shard.dir, INCOMING_SNAPSHOT);
  try {
    const fs = await statfs(shard.dir);
    const free = fs.bavail * fs.bsize;
    if (free < size + SPACE_MARGIN_BYTES) {
      throw new ApiError(
        507,
        "no-space",
        `this agent (${agent.opts.nodeId}) has ${free} bytes free; the snapshot of ${id} needs ${size} plus a ${SPACE_MARGIN_BYTES}-byte margin`,
        { free, needed: size + SPACE_MARGIN_BYTES },
      );
    }
    const state = new Map<string, StateValue>();
    const decoder = new SnapshotDecoder((k, v) => {
      const bad = copiedKeyError(agent, k);
      if (bad)
        throw badRequest(`the snapshot holds a key this agent would refuse (${bad}); nothing was installed`);
      state.set(k, v);
    });
    const fh = await open(tmp, "w", 0o600);
    let verified = false;
    try {
      let pos = 0;
      /** Why the copy is refused (a full disk, a corrupt snapshot): answered once the body is read. */
      let refused: unknown;
      try {
        for await (const chunk of req as AsyncIterable<Buffer>) {
          // the rest of the body is read and dropped: leaving the loop would destroy the request,
          // and the answer would meet a closed connection (the sender's write EPIPE), not the sender
          if (refused !== undefined) continue;
          try {
            if (pos + chunk.length > size)
              throw badRequest(`the body is longer than the announced ${size} bytes`);
            decoder.push(chunk);
            // every byte, or an error: the decoder checked the bytes received, not the bytes written
            try {
              await writeFully(fh, chunk, pos);
            } catch (err) {
              throw diskRefused(agent, id, pos, size, err);
            }
            pos += chunk.length;
          } catch (err) {
            refused = err;
          }
        }
      } catch (err) {
        throw new ApiError(
          400,
          "snapshot-truncated",
          `the upload broke off after ${pos} of ${size} bytes (${(err as Error).message}); nothing was installed`,
        );
      }
      if (refused !== undefined) {
        if (refused instanceof ApiError) throw refused;
        if (refused instanceof SnapshotCorrupt)
          throw new ApiError(
            400,
            "snapshot-corrupt",
            `the snapshot is corrupt (${refused.message}); nothing was installed`,
          );
        throw refused;
      }
      if (pos !== size || !req.complete)
        throw new ApiError(
          400,
          "snapshot-truncated",
          `received ${pos} of ${size} bytes; nothing was installed`,
        );
      let header;
      try {
        header = decoder.end();
      } catch (err) {
        throw new ApiError(
          400,
          "snapshot-corrupt",
          `the snapshot is corrupt (${(err as Error).message}); nothing was installed`,
        );
      }
      const mine = snapshotChecksum(decoder.bodyCrc, pos);
      if (mine !== sum)
        throw new ApiError(
          400,
          "checksum-mismatch",
          `the snapshot received has checksum ${mine}, the source announced ${String(sum)}; nothing was installed`,
          { checksum: mine },
        );
      if (header.shardId !== id || header.lsn !== lsn)
        throw badRequest(
          `the snapshot is of shard ${header.shardId} at LSN ${header.lsn}, not of ${id} at ${lsn}; nothing was installed`,
        );
      try {
        await fh.sync();
      } catch (err) {
        throw diskRefused(agent, id, pos, size, err);
      }
      verified = true;
    } finally {
      await fh.close();
      if (!verified) await rm(tmp, { force: true });
    }
    await shard.drain();
    try {
      await shard.installSnapshot(tmp, lsn, state);
    } finally {
      resetCursors(shard);
    }
    sendJson(res, 200, { ...describeShard(shard), installed: lsn });
  } finally {
    installing.delete(shard);
  }
}
