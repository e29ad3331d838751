/**
 * Snapshots of a shard's state: every live key with its value, LSN and
 * timestamp as of one log LSN. With a snapshot at LSN x, recovery loads it and
 * replays only the entries above x, and the log files wholly at or below x can
 * be deleted — recovery time and disk use stay bounded by the live data plus
 * the log written since the last snapshot.
 *
 * File `snapshot-<lsn, 20 digits>.snap`, little-endian:
 *   "SCSNAP02", u32 headerLength, header JSON {shardId, lsn, count, createdAt, writeIds},
 *   `writeIds` records of [16-byte write id][u64 lsn][u8 outcome][u32 key hash], oldest first:
 *     the shard's recent write ids as of `lsn` (write-ids.ts), so that a retried write stays
 *     recognised after recovery, on a migration target and on a split or merge target
 *     (import.ts exports all of them), though its log entry is compacted;
 *   `count` records of [u32 keyLength][key][u32 valueLength][value][u64 lsn][f64 timestamp],
 *   u32 CRC-32 of everything before it.
 * The id records come before the state so that readSnapshotWriteIds reads them without the rest.
 * A snapshot without write ids is written as "SCSNAP01" with no `writeIds`: the format from
 * before write ids, which any agent reads. "SCSNAP01" files with `writeIds` (agents from before
 * key hashes) hold records without the key hash; they are read, each record widened with the key
 * hash 0 ("not known"), so that every reader hands on today's records.
 * Written to a temporary file, fsynced, renamed, directory fsynced: a crash
 * leaves the previous snapshot in place.
 *
 * Snapshots are read as a stream (SnapshotDecoder, 1 MiB at a time): a
 * snapshot as large as the shard's live data is never held in one buffer,
 * whether it is recovered from disk or received from a migration source
 * (snapshot-transfer.ts). The file's own trailer is its checksum: the
 * "snapshot checksum" of a file is "<trailer CRC-32, hex>-<file bytes>".
 */
import { open } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { writeFileAtomic, writeFully } from "./fs-util.js";
import { LEGACY_WRITE_ID_RECORD_BYTES, widenWriteIdRecords } from "./log-format.js";
import { WRITE_ID_RECORD_BYTES, type FrozenWriteIds } from "./write-ids.js";

/** Id records with key hashes. */
const MAGIC = Buffer.from("SCSNAP02");
/** No id records, or id records without key hashes. */
const MAGIC_LEGACY = Buffer.from("SCSNAP01");
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
  /** Write id records before the state records (absent: none). */
  writeIds?: number;
}

/** More write id records than this is corruption (the table's capacity is at most 2^28). */
const MAX_WRITE_IDS = 1 << 28;
/** Write id records are handed on in pieces of whole records, about a chunk each. */
const idChunkBytes = (recordBytes: number) => Math.floor(CHUNK_BYTES / recordBytes) * recordBytes;

/** The bytes of one id record in a file that begins with `magic`, or undefined for no snapshot. */
function idRecordBytesOf(magic: Buffer): number | undefined {
  if (magic.equals(MAGIC)) return WRITE_ID_RECORD_BYTES;
  if (magic.equals(MAGIC_LEGACY)) return LEGACY_WRITE_ID_RECORD_BYTES;
  return undefined;
}

/** Records as read from a file with `recordBytes` each, as today's records. */
function asRecords(records: Buffer, recordBytes: number): Buffer {
  return recordBytes === WRITE_ID_RECORD_BYTES ? records : widenWriteIdRecords(records);
}

export function snapshotFileName(lsn: number): string {
  return `snapshot-${String(lsn).padStart(20, "0")}.snap`;
}

export function parseSnapshotFileName(name: string): number | undefined {
  const m = /^snapshot-(\d{20})\.snap$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * Writes a snapshot of `entries` (a copy taken at `lsn`) and of the write ids
 * `writeIds` (WriteIdTable.freeze at the same moment); yields to the event
 * loop between chunks.
 */
/**
 * A shard's state as two arrays in the same order: what `Array.from(state.keys())` and
 * `Array.from(state.values())` give, taken at once in ~20 ms for a million keys where the
 * [key, value] pairs of `Array.from(state)` take ~250 ms (an array per key), all of it on the
 * event loop.
 */
export interface StateColumns {
  keys: readonly string[];
  values: readonly StateValue[];
}

function isPairs(s: StateColumns | readonly [string, StateValue][]): s is readonly [string, StateValue][] {
  return Array.isArray(s);
}

export async function writeSnapshot(
  dir: string,
  shardId: string,
  lsn: number,
  state: StateColumns | readonly [string, StateValue][],
  writeIds?: FrozenWriteIds,
): Promise<string> {
  const { keys, values }: StateColumns = isPairs(state)
    ? { keys: state.map((e) => e[0]), values: state.map((e) => e[1]) }
    : state;
  if (keys.length !== values.length)
    throw new Error(`a snapshot of ${keys.length} keys was given ${values.length} values`);
  const idCount = writeIds?.count ?? 0;
  const file = join(dir, snapshotFileName(lsn));
  await writeFileAtomic(
    file,
    async (fh) => {
      let crc = 0;
      let pos = 0;
      const write = async (b: Buffer) => {
        crc = crc32(b, crc);
        // every byte, or an error: a short write here would be fsynced and renamed into place,
        // and the log files it covers deleted
        await writeFully(fh, b, pos);
        pos += b.length;
      };
      const h: SnapshotHeader = { shardId, lsn, count: keys.length, createdAt: Date.now() };
      // without ids the file is exactly the format before write ids existed
      if (idCount > 0) h.writeIds = idCount;
      const header = Buffer.from(JSON.stringify(h));
      const head = Buffer.alloc(12);
      (idCount > 0 ? MAGIC : MAGIC_LEGACY).copy(head, 0);
      head.writeUInt32LE(header.length, 8);
      await write(Buffer.concat([head, header]));
      const perChunk = idChunkBytes(WRITE_ID_RECORD_BYTES) / WRITE_ID_RECORD_BYTES;
      for (let i = 0; writeIds && i < idCount; i += perChunk)
        await write(writeIds.encode(i, Math.min(perChunk, idCount - i)));
      let parts: Buffer[] = [];
      let bytes = 0;
      for (let i = 0; i < keys.length; i++) {
        const v = values[i];
        const k = Buffer.from(keys[i], "utf8");
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
      await writeFully(fh, trailer, pos);
    },
    ".tmp",
  );
  return file;
}

export class SnapshotCorrupt extends Error {}

/**
 * Reads and verifies a snapshot, streaming; a truncated or altered file throws
 * SnapshotCorrupt. onEntry sees records before the trailing checksum is
 * checked: on a throw the caller discards what it was given.
 */
export async function readSnapshot(
  file: string,
  onEntry: (key: string, v: StateValue) => void,
  onWriteIds?: (records: Buffer) => void,
): Promise<SnapshotHeader> {
  const fh = await open(file, "r");
  try {
    const decoder = new SnapshotDecoder(onEntry, onWriteIds);
    let pos = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(CHUNK_BYTES);
      const { bytesRead } = await fh.read(buf, 0, CHUNK_BYTES, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      decoder.push(buf.subarray(0, bytesRead));
    }
    return decoder.end();
  } finally {
    await fh.close();
  }
}

/** One record of a snapshot file: a piece of its write id records, or a key's state. */
export type SnapshotRecord = { writeIds: Buffer } | { key: string; value: StateValue };

/**
 * The records of a snapshot file in order, decoded 1 MiB at a time as they
 * are asked for, so that a reader can stop and go on later (an export sends
 * a compacted shard page by page, each page where the previous one stopped).
 * The whole file's CRC-32 is checked against its trailer first, in one pass
 * without decoding: nothing is handed on from a file that turns out corrupt.
 * Returns the header. The file stays open until the generator ends or is
 * closed (return()).
 */
export async function* snapshotRecords(file: string): AsyncGenerator<SnapshotRecord, SnapshotHeader> {
  const fh = await open(file, "r");
  try {
    const { size } = await fh.stat();
    if (size < 16) throw new SnapshotCorrupt("bad magic or too short");
    let crc = 0;
    const buf = Buffer.allocUnsafe(CHUNK_BYTES);
    for (let pos = 0; pos < size - 4;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK_BYTES, size - 4 - pos), pos);
      if (bytesRead === 0) throw new SnapshotCorrupt("record cut short");
      crc = crc32(buf.subarray(0, bytesRead), crc);
      pos += bytesRead;
    }
    const trailer = Buffer.alloc(4);
    await fh.read(trailer, 0, 4, size - 4);
    if (crc >>> 0 !== trailer.readUInt32LE(0)) throw new SnapshotCorrupt("checksum mismatch");
    const decoded: SnapshotRecord[] = [];
    const decoder = new SnapshotDecoder(
      (key, value) => decoded.push({ key, value }),
      (writeIds) => decoded.push({ writeIds }),
      true, // checked above: the open file's bytes do not change (a newer snapshot is a new file)
    );
    for (let pos = 0; ;) {
      // a buffer per chunk: the records' values are views of it
      const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
      const { bytesRead } = await fh.read(chunk, 0, CHUNK_BYTES, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      decoder.push(chunk.subarray(0, bytesRead));
      for (const r of decoded) yield r;
      decoded.length = 0;
    }
    return decoder.end();
  } finally {
    await fh.close();
  }
}

/** "<trailer CRC-32 hex>-<bytes>" of a snapshot file, read from its last 4 bytes (no full read). */
export async function snapshotFileChecksum(file: string): Promise<string> {
  const fh = await open(file, "r");
  try {
    const { size } = await fh.stat();
    if (size < 16) throw new SnapshotCorrupt(`${file} is too short to be a snapshot`);
    const t = Buffer.alloc(4);
    await fh.read(t, 0, 4, size - 4);
    return snapshotChecksum(t.readUInt32LE(0), size);
  } finally {
    await fh.close();
  }
}

export function snapshotChecksum(crc: number, bytes: number): string {
  return `${(crc >>> 0).toString(16).padStart(8, "0")}-${bytes}`;
}

/** Keys are at most 64 KiB and values at most MAX_VALUE_BYTES: larger lengths are corruption, not data. */
const MAX_KEY_BYTES = 65_535;
const MAX_VALUE_BYTES = 300 * 1024 * 1024;

/**
 * Decodes a snapshot pushed in chunks of any size. push() calls onEntry for
 * each complete record; end() checks that the stream held exactly the
 * records the header announced plus the trailer, and that the trailer is
 * the CRC-32 of everything before it. Memory: the bytes of one record at most
 * beyond the chunk being decoded.
 */
export class SnapshotDecoder {
  private readonly chunks: Buffer[] = [];
  private avail = 0;
  /** CRC-32 of every byte pushed except the last 4 (the trailer, once the stream ends). */
  private crc = 0;
  private tail: Buffer = Buffer.alloc(0);
  private total = 0;
  private header?: SnapshotHeader;
  private left = -1;
  /** Bytes of write id records still to come. */
  private idBytesLeft = 0;
  /** Bytes of one id record in this file (by its magic). */
  private idRecordBytes = WRITE_ID_RECORD_BYTES;

  /**
   * `onWriteIds` gets the write id records (whole records of today's format, copied), in order,
   * before any entry. `checksumVerified`: the caller has checked the trailer against the bytes
   * already (snapshotRecords), so they are not summed again; everything else is still checked.
   */
  constructor(
    private readonly onEntry: (key: string, v: StateValue) => void,
    private readonly onWriteIds?: (records: Buffer) => void,
    private readonly checksumVerified = false,
  ) {}

  /** Bytes pushed so far. */
  get bytes(): number {
    return this.total;
  }

  /** The CRC-32 of the bytes before the trailer (valid after end(); not computed when checksumVerified). */
  get bodyCrc(): number {
    return this.crc >>> 0;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.total += chunk.length;
    this.feedCrc(chunk);
    this.chunks.push(chunk);
    this.avail += chunk.length;
    this.decode();
  }

  end(): SnapshotHeader {
    const bad = (why: string) => new SnapshotCorrupt(why);
    if (this.total < 16 || this.tail.length !== 4) throw bad("bad magic or too short");
    if (!this.checksumVerified && this.crc >>> 0 !== this.tail.readUInt32LE(0))
      throw bad("checksum mismatch");
    if (!this.header || this.left !== 0) throw bad("record cut short");
    if (this.avail !== 4) throw bad("trailing bytes");
    return this.header;
  }

  private feedCrc(chunk: Buffer): void {
    const total = this.tail.length + chunk.length;
    if (total <= 4) {
      this.tail = Buffer.concat([this.tail, chunk]);
      return;
    }
    const crcLen = total - 4;
    const fromTail = Math.min(this.tail.length, crcLen);
    const fromChunk = crcLen - fromTail;
    if (!this.checksumVerified) {
      if (fromTail) this.crc = crc32(this.tail.subarray(0, fromTail), this.crc);
      if (fromChunk) this.crc = crc32(chunk.subarray(0, fromChunk), this.crc);
    }
    this.tail = Buffer.concat([this.tail.subarray(fromTail), chunk.subarray(fromChunk)]);
  }

  /** The first n buffered bytes, without consuming them (n ≤ avail). */
  private peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= n) return first.subarray(0, n);
    const parts: Buffer[] = [];
    let got = 0;
    for (const c of this.chunks) {
      parts.push(c);
      got += c.length;
      if (got >= n) break;
    }
    const joined = Buffer.concat(parts, got);
    // keep the joined buffer so that the next peek does not join again
    this.chunks.splice(0, parts.length, joined);
    return joined.subarray(0, n);
  }

  private consume(n: number): void {
    this.avail -= n;
    while (n > 0) {
      const c = this.chunks[0];
      if (c.length <= n) {
        this.chunks.shift();
        n -= c.length;
      } else {
        this.chunks[0] = c.subarray(n);
        n = 0;
      }
    }
  }

  private decode(): void {
    const bad = (why: string) => new SnapshotCorrupt(why);
    if (!this.header) {
      if (this.avail < 12) return;
      const head = this.peek(12);
      const recordBytes = idRecordBytesOf(head.subarray(0, 8));
      if (recordBytes === undefined) throw bad("bad magic or too short");
      this.idRecordBytes = recordBytes;
      const hlen = head.readUInt32LE(8);
      if (hlen > 1 << 20) throw bad("header length out of range");
      if (this.avail < 12 + hlen) return;
      let header: SnapshotHeader;
      try {
        header = JSON.parse(this.peek(12 + hlen).toString("utf8", 12));
      } catch {
        throw bad("header is not JSON");
      }
      if (
        !header ||
        !Number.isSafeInteger(header.count) ||
        header.count < 0 ||
        !Number.isSafeInteger(header.lsn)
      )
        throw bad("header fields out of range");
      const ids = header.writeIds ?? 0;
      if (!Number.isSafeInteger(ids) || ids < 0 || ids > MAX_WRITE_IDS)
        throw bad("header fields out of range");
      this.consume(12 + hlen);
      this.header = header;
      this.left = header.count;
      this.idBytesLeft = ids * recordBytes;
    }
    while (this.idBytesLeft > 0) {
      // whole records only, up to a chunk at a time
      const size = this.idRecordBytes;
      const n = Math.min(this.idBytesLeft, this.avail - (this.avail % size), idChunkBytes(size));
      if (n === 0) return;
      const records = Buffer.from(this.peek(n));
      this.consume(n);
      this.idBytesLeft -= n;
      this.onWriteIds?.(asRecords(records, size));
    }
    while (this.left > 0) {
      if (this.avail < 4) return;
      const klen = this.peek(4).readUInt32LE(0);
      if (klen > MAX_KEY_BYTES) throw bad("key length out of range");
      if (this.avail < 8 + klen) return;
      const vlen = this.peek(8 + klen).readUInt32LE(4 + klen);
      if (vlen > MAX_VALUE_BYTES) throw bad("value length out of range");
      const len = 8 + klen + vlen + 16;
      if (this.avail < len) return;
      const rec = this.peek(len);
      const key = rec.toString("utf8", 4, 4 + klen);
      // a copy, so that the state does not pin the chunk it arrived in
      const value = Buffer.from(rec.subarray(8 + klen, 8 + klen + vlen));
      const lsn = Number(rec.readBigUInt64LE(8 + klen + vlen));
      const timestamp = rec.readDoubleLE(8 + klen + vlen + 8);
      this.consume(len);
      this.left--;
      this.onEntry(key, { value, lsn, timestamp });
    }
  }
}

export function decodeSnapshot(
  buf: Buffer,
  onEntry: (key: string, v: StateValue) => void,
  onWriteIds?: (records: Buffer) => void,
): SnapshotHeader {
  const bad = (why: string) => new SnapshotCorrupt(why);
  const recordBytes = buf.length < 16 ? undefined : idRecordBytesOf(buf.subarray(0, 8));
  if (recordBytes === undefined) throw bad("bad magic or too short");
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
  const ids = header?.writeIds ?? 0;
  if (!Number.isSafeInteger(ids) || ids < 0 || ids > MAX_WRITE_IDS) throw bad("header fields out of range");
  if (off + ids * recordBytes > body.length) throw bad("record cut short");
  if (ids > 0) onWriteIds?.(asRecords(Buffer.from(body.subarray(off, off + ids * recordBytes)), recordBytes));
  off += ids * recordBytes;
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

/**
 * Reads only the write id records of a snapshot file (they come right after
 * its header), for a caller that already verified the whole file — a
 * migration target that installs a snapshot it received.
 */
export async function readSnapshotWriteIds(
  file: string,
  onWriteIds: (records: Buffer) => void,
): Promise<number> {
  const fh = await open(file, "r");
  try {
    const head = Buffer.alloc(12);
    await fh.read(head, 0, 12, 0);
    const recordBytes = idRecordBytesOf(head.subarray(0, 8));
    if (recordBytes === undefined) throw new SnapshotCorrupt("bad magic or too short");
    const hlen = head.readUInt32LE(8);
    if (hlen > 1 << 20) throw new SnapshotCorrupt("header length out of range");
    const hb = Buffer.alloc(hlen);
    await fh.read(hb, 0, hlen, 12);
    let header: SnapshotHeader;
    try {
      header = JSON.parse(hb.toString("utf8")) as SnapshotHeader;
    } catch {
      throw new SnapshotCorrupt("header is not JSON");
    }
    const ids = header?.writeIds ?? 0;
    if (!Number.isSafeInteger(ids) || ids < 0 || ids > MAX_WRITE_IDS)
      throw new SnapshotCorrupt("header fields out of range");
    let pos = 12 + hlen;
    for (let left = ids * recordBytes; left > 0;) {
      const n = Math.min(left, idChunkBytes(recordBytes));
      const buf = Buffer.allocUnsafe(n);
      const { bytesRead } = await fh.read(buf, 0, n, pos);
      if (bytesRead !== n) throw new SnapshotCorrupt("record cut short");
      onWriteIds(asRecords(buf, recordBytes));
      pos += n;
      left -= n;
    }
    return ids;
  } finally {
    await fh.close();
  }
}
