/**
 * Snapshots of a shard's state: every live key with its value, LSN and
 * timestamp as of one log LSN. With a snapshot at LSN x, recovery loads it and
 * replays only the entries above x, and the log files wholly at or below x can
 * be deleted — recovery time and disk use stay bounded by the live data plus
 * the log written since the last snapshot.
 *
 * File `snapshot-<lsn, 20 digits>.snap`, little-endian:
 *   "SCSNAP01", u32 headerLength, header JSON {shardId, lsn, count, createdAt},
 *   `count` records of [u32 keyLength][key][u32 valueLength][value][u64 lsn][f64 timestamp],
 *   u32 CRC-32 of everything before it.
 * Written to a temporary file, fsynced, renamed, directory fsynced: a crash
 * leaves the previous snapshot in place.
 */
import { open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { fsyncDir } from "./fs-util.js";

const MAGIC = Buffer.from("SCSNAP01");
const CHUNK_BYTES = 1 << 20;

export interface StateValue {
  value: Buffer;
  lsn: number;
  timestamp: number;
}

export interface SnapshotHeader {
  shardId: string;
  lsn: number;
  count: number;
  createdAt: number;
}

export function snapshotFileName(lsn: number): string {
  return `snapshot-${String(lsn).padStart(20, "0")}.snap`;
}

export function parseSnapshotFileName(name: string): number | undefined {
  const m = /^snapshot-(\d{20})\.snap$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Writes a snapshot of `entries` (a copy taken at `lsn`); yields to the event loop between chunks. */
export async function writeSnapshot(
  dir: string,
  shardId: string,
  lsn: number,
  entries: [string, StateValue][],
): Promise<string> {
  const file = join(dir, snapshotFileName(lsn));
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, "w", 0o600);
  try {
    let crc = 0;
    let pos = 0;
    const write = async (b: Buffer) => {
      crc = crc32(b, crc);
      await fh.write(b, 0, b.length, pos);
      pos += b.length;
    };
    const header = Buffer.from(
      JSON.stringify({ shardId, lsn, count: entries.length, createdAt: Date.now() } satisfies SnapshotHeader),
    );
    const head = Buffer.alloc(12);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(header.length, 8);
    await write(Buffer.concat([head, header]));
    let parts: Buffer[] = [];
    let bytes = 0;
    for (const [key, v] of entries) {
      const k = Buffer.from(key, "utf8");
      const rec = Buffer.allocUnsafe(4 + k.length + 4);
      rec.writeUInt32LE(k.length, 0);
      k.copy(rec, 4);
      rec.writeUInt32LE(v.value.length, 4 + k.length);
      const tail = Buffer.allocUnsafe(16);
      tail.writeBigUInt64LE(BigInt(v.lsn), 0);
      tail.writeDoubleLE(v.timestamp, 8);
      parts.push(rec, v.value, tail);
      bytes += rec.length + v.value.length + 16;
      if (bytes >= CHUNK_BYTES) {
        await write(Buffer.concat(parts));
        parts = [];
        bytes = 0;
      }
    }
    if (parts.length) await write(Buffer.concat(parts));
    const trailer = Buffer.alloc(4);
    trailer.writeUInt32LE(crc >>> 0, 0);
    await fh.write(trailer, 0, 4, pos);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, file);
  await fsyncDir(dir);
  return file;
}

export class SnapshotCorrupt extends Error {}

/** Reads and verifies a snapshot; a truncated or altered file throws SnapshotCorrupt. */
export async function readSnapshot(
  file: string,
  onEntry: (key: string, v: StateValue) => void,
): Promise<SnapshotHeader> {
  const buf = await readFile(file);
  return decodeSnapshot(buf, onEntry);
}

export function decodeSnapshot(buf: Buffer, onEntry: (key: string, v: StateValue) => void): SnapshotHeader {
  const bad = (why: string) => new SnapshotCorrupt(why);
  if (buf.length < 16 || !buf.subarray(0, 8).equals(MAGIC)) throw bad("bad magic or too short");
  const body = buf.subarray(0, buf.length - 4);
  if (crc32(body) >>> 0 !== buf.readUInt32LE(buf.length - 4)) throw bad("checksum mismatch");
  const hlen = buf.readUInt32LE(8);
  if (12 + hlen > body.length) throw bad("header length out of range");
  let header: SnapshotHeader;
  try {
    header = JSON.parse(body.subarray(12, 12 + hlen).toString("utf8"));
  } catch {
    throw bad("header is not JSON");
  }
  let off = 12 + hlen;
  for (let i = 0; i < header.count; i++) {
    if (off + 4 > body.length) throw bad("record cut short");
    const klen = body.readUInt32LE(off);
    off += 4;
    if (off + klen + 4 > body.length) throw bad("record cut short");
    const key = body.toString("utf8", off, off + klen);
    off += klen;
    const vlen = body.readUInt32LE(off);
    off += 4;
    if (off + vlen + 16 > body.length) throw bad("record cut short");
    const value = Buffer.from(body.subarray(off, off + vlen));
    off += vlen;
    const lsn = Number(body.readBigUInt64LE(off));
    const timestamp = body.readDoubleLE(off + 8);
    off += 16;
    onEntry(key, { value, lsn, timestamp });
  }
  if (off !== body.length) throw bad("trailing bytes");
  return header;
}
