/** What the agent and migration benchmarks share: free ports, stopping agents, writing a shard's log directly. */
import type { ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { encodeEntry } from "../src/agent/log-format.js";
import { logFileName } from "../src/agent/shard-log.js";
import { writeMeta } from "../src/agent/shard-meta.js";
import { freePort } from "../test/helpers/ports.js";

export { freePort };

/** SIGTERM, then waits for the exit (nothing when it already ended). */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

/**
 * Writes an owned shard whose log holds `bytes` of entries in 64 MiB files:
 * values of `valueBytes` over 100,000 keys, straight to disk (not through an
 * agent), for an agent to recover or serve.
 */
export function writeShardLog(
  shardDir: string,
  bytes: number,
  o: { shardId: string; segments: number; valueBytes: number; timestamp?: () => number },
): { entries: number; bytes: number } {
  mkdirSync(shardDir, { recursive: true });
  writeMeta(shardDir, {
    shardId: o.shardId,
    epoch: 1,
    state: "owned",
    ranges: [[0, o.segments]],
    migrationTimestamp: 0,
  });
  const value = Buffer.alloc(o.valueBytes, "v");
  const fileLimit = 64 * 1024 * 1024;
  const timestamp = o.timestamp ?? Date.now;
  let lsn = 0;
  let total = 0;
  let fd = -1;
  let fileBytes = fileLimit;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = () => {
    if (pendingBytes) writeSync(fd, Buffer.concat(pending));
    pending = [];
    pendingBytes = 0;
  };
  while (total < bytes) {
    const e = encodeEntry({
      lsn: lsn + 1,
      timestamp: timestamp(),
      migrationTimestamp: 0,
      op: "put",
      shardId: o.shardId,
      key: `key:${lsn % 100_000}`,
      value,
    });
    if (fileBytes + e.length > fileLimit) {
      if (fd >= 0) {
        flush();
        closeSync(fd);
      }
      fd = openSync(join(shardDir, logFileName(lsn + 1)), "w");
      fileBytes = 0;
    }
    lsn++;
    pending.push(e);
    pendingBytes += e.length;
    fileBytes += e.length;
    total += e.length;
    if (pendingBytes > 4 << 20) flush();
  }
  flush();
  closeSync(fd);
  return { entries: lsn, bytes: total };
}
