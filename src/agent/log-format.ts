/**
 * The on-disk log entry. Little-endian, one entry:
 *
 *   0  u32  bodyLength      bytes after this 8-byte header
 *   4  u32  crc32           of the body (zlib's CRC-32)
 *   8  u64  lsn             1, 2, 3, … per shard, with no gaps
 *  16  f64  timestamp       ms since the Unix epoch, when the agent accepted it
 *  24  f64  migrationTs     the shard's migration timestamp when written
 *  32  u8   op              1 put, 2 delete, 3 put with a write id, 4 delete with a write id,
 *                           5 write id records without key hashes (read only), 6 write id records
 *  33  u8   shardIdLength
 *  34  u16  keyLength
 *  36  u32  valueLength
 *  40  ops 3 and 4 only: the write id (16 bytes)
 *   …  shard id, key (UTF-8), value (raw bytes)
 *
 * The body length is fixed by the op and the three lengths (32 + 16 for an id
 * + the lengths), so a length field or an op byte that was altered is caught
 * even before the checksum; a write id of any other length cannot be written.
 *
 * The write id is the client's name for one logical write, the same on every
 * retry of it (write-ids.ts): an entry that carries it lets the agent answer a
 * retried write without appending it twice, after a restart and on a migration
 * target too (a replicated entry is these bytes, unchanged). Ops 1 and 2 are
 * the entries written before write ids existed, and writes sent without one;
 * they still decode.
 *
 * Op 6 names no key and changes no value: its value is write id records
 * (WRITE_ID_RECORD_BYTES each, as in a snapshot: [id][u64 lsn][u8 outcome]
 * [u32 key hash]), the ids of writes another shard applied before its log
 * was compacted, brought in by a split or merge (import.ts). Replaying it
 * adds the ids to the shard's table, so they outlive a restart, a snapshot
 * and a move like the ids of ops 3 and 4. Its key length is 0 and its value
 * one or more whole, well-formed records; anything else is not an entry.
 * Op 5 is the same with the records of agents from before key hashes
 * (LEGACY_WRITE_ID_RECORD_BYTES, no key hash): it is still read, its records
 * widened with the key hash 0 ("not known"), and never written.
 */
import { crc32 } from "node:zlib";

export const ENTRY_HEADER_BYTES = 8;
/** The body bytes before the shard id of an entry without a write id (the smallest body). */
export const ENTRY_FIXED_BODY_BYTES = 32;
export const OP_PUT = 1;
export const OP_DELETE = 2;
export const OP_PUT_WITH_ID = 3;
export const OP_DELETE_WITH_ID = 4;
/** Write id records without key hashes, as agents wrote them before key hashes: read, never written. */
export const OP_LEGACY_WRITE_IDS = 5;
export const OP_WRITE_IDS = 6;
export const WRITE_ID_BYTES = 16;
/**
 * One write id record (snapshots and op 6): the id, u64 LSN, u8 outcome (0
 * put, 1 delete of a missing key, 2 delete of a present key), u32 keyHash32 of
 * the key it wrote (write-ids.ts; 0: not known).
 */
export const WRITE_ID_RECORD_BYTES = WRITE_ID_BYTES + 13;
/** A record of op 5 and of SCSNAP01 snapshots: the same without the key hash. */
export const LEGACY_WRITE_ID_RECORD_BYTES = WRITE_ID_BYTES + 9;
/** The highest outcome byte of a write id record. */
export const MAX_WRITE_ID_OUTCOME = 2;
/** A body longer than this is not an entry (the largest value limit is 256 MiB). */
export const MAX_BODY_BYTES = 300 * 1024 * 1024;

export type LogOp = "put" | "delete";
/** What a log entry is: a client's put or delete, or write id records (op 6) carried in by an import. */
export type EntryOp = LogOp | "write-ids";

export interface LogEntry {
  lsn: number;
  timestamp: number;
  migrationTimestamp: number;
  op: EntryOp;
  shardId: string;
  /** Empty for write id records. */
  key: string;
  /** Empty for a delete; the records for write id records. */
  value: Buffer;
  /** The client's write id (WRITE_ID_BYTES), when the write carried one. */
  writeId?: Buffer;
}

/** Whether `op` is an op byte this format knows. */
export function knownOp(op: number): boolean {
  return op >= OP_PUT && op <= OP_WRITE_IDS;
}

/**
 * Why `records` are not whole, well-formed write id records (at least one) of
 * `recordBytes` each (WRITE_ID_RECORD_BYTES, or LEGACY_WRITE_ID_RECORD_BYTES),
 * or undefined when they are. Any key hash is well-formed.
 */
export function writeIdRecordsProblem(
  records: Buffer,
  recordBytes = WRITE_ID_RECORD_BYTES,
): string | undefined {
  if (records.length === 0 || records.length % recordBytes !== 0)
    return `write id records are ${recordBytes} bytes each, not ${records.length} in all`;
  for (let off = 0; off < records.length; off += recordBytes) {
    const lsn = records.readUInt32LE(off + 16) + records.readUInt32LE(off + 20) * 4294967296;
    if (lsn < 1 || !Number.isSafeInteger(lsn) || records[off + 24] > MAX_WRITE_ID_OUTCOME)
      return `write id record ${off / recordBytes} is malformed`;
  }
  return undefined;
}

/** Legacy records (LEGACY_WRITE_ID_RECORD_BYTES each) as records of today, with the key hash 0 (not known). */
export function widenWriteIdRecords(legacy: Buffer): Buffer {
  const n = legacy.length / LEGACY_WRITE_ID_RECORD_BYTES;
  const out = Buffer.alloc(n * WRITE_ID_RECORD_BYTES);
  for (let i = 0; i < n; i++)
    legacy.copy(
      out,
      i * WRITE_ID_RECORD_BYTES,
      i * LEGACY_WRITE_ID_RECORD_BYTES,
      (i + 1) * LEGACY_WRITE_ID_RECORD_BYTES,
    );
  return out;
}

/** The fixed body bytes (before the shard id) of an entry with this op byte. */
export function fixedBodyBytes(op: number): number {
  return op === OP_PUT_WITH_ID || op === OP_DELETE_WITH_ID
    ? ENTRY_FIXED_BODY_BYTES + WRITE_ID_BYTES
    : ENTRY_FIXED_BODY_BYTES;
}

export function encodedLength(
  shardIdBytes: number,
  keyBytes: number,
  valueBytes: number,
  withWriteId = false,
): number {
  return (
    ENTRY_HEADER_BYTES +
    ENTRY_FIXED_BODY_BYTES +
    (withWriteId ? WRITE_ID_BYTES : 0) +
    shardIdBytes +
    keyBytes +
    valueBytes
  );
}

/** The value of a delete (and of a put without one): shared, never written to. */
export const NO_VALUE = Buffer.alloc(0);

/**
 * Encodes one entry into a fresh buffer. `shardIdBytes`, when given, is the
 * shard id already encoded (a shard appends many entries with the same id).
 */
export function encodeEntry(e: LogEntry, shardIdBytes?: Buffer): Buffer {
  const shard = shardIdBytes ?? Buffer.from(e.shardId, "utf8");
  const keyLength = Buffer.byteLength(e.key, "utf8");
  const value = e.op === "delete" ? NO_VALUE : e.value;
  if (shard.length > 255) throw new Error("shard id longer than 255 bytes");
  if (keyLength > 65535) throw new Error("key longer than 65535 bytes");
  const id = e.writeId;
  if (id !== undefined && id.length !== WRITE_ID_BYTES)
    throw new Error(`a write id is ${WRITE_ID_BYTES} bytes, not ${id.length}`);
  if (e.op === "write-ids") {
    if (keyLength !== 0 || id !== undefined) throw new Error("write id records name no key and no write id");
    const problem = writeIdRecordsProblem(value);
    if (problem) throw new Error(problem);
  }
  const total = encodedLength(shard.length, keyLength, value.length, id !== undefined);
  const buf = Buffer.allocUnsafe(total);
  const bodyLen = total - ENTRY_HEADER_BYTES;
  buf.writeUInt32LE(bodyLen, 0);
  // the LSN as two 32-bit halves (cheaper than a BigInt; LSNs stay below 2^53)
  buf.writeUInt32LE(e.lsn % 4294967296, 8);
  buf.writeUInt32LE(Math.floor(e.lsn / 4294967296), 12);
  buf.writeDoubleLE(e.timestamp, 16);
  buf.writeDoubleLE(e.migrationTimestamp, 24);
  const op =
    e.op === "write-ids"
      ? OP_WRITE_IDS
      : e.op === "put"
        ? id
          ? OP_PUT_WITH_ID
          : OP_PUT
        : id
          ? OP_DELETE_WITH_ID
          : OP_DELETE;
  buf.writeUInt8(op, 32);
  buf.writeUInt8(shard.length, 33);
  buf.writeUInt16LE(keyLength, 34);
  buf.writeUInt32LE(value.length, 36);
  let off = 40;
  if (id) off += id.copy(buf, off);
  off += shard.copy(buf, off);
  off += buf.write(e.key, off, keyLength, "utf8");
  value.copy(buf, off);
  buf.writeUInt32LE(crc32(buf.subarray(ENTRY_HEADER_BYTES)) >>> 0, 4);
  return buf;
}

export type DecodeResult =
  | { kind: "entry"; entry: LogEntry; length: number }
  /** Fewer bytes remain than the entry needs: a torn write at the end. */
  | { kind: "short" }
  /** The bytes are not a valid entry (bad lengths, op, checksum or UTF-8). */
  | { kind: "invalid"; why: string };

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decodes the entry starting at `offset`; never throws. */
export function decodeEntry(buf: Buffer, offset: number): DecodeResult {
  const avail = buf.length - offset;
  if (avail < ENTRY_HEADER_BYTES + ENTRY_FIXED_BODY_BYTES) {
    return { kind: "short" };
  }
  const bodyLen = buf.readUInt32LE(offset);
  if (bodyLen < ENTRY_FIXED_BODY_BYTES || bodyLen > MAX_BODY_BYTES) {
    return { kind: "invalid", why: `body length ${bodyLen} out of range` };
  }
  const op = buf.readUInt8(offset + 32);
  if (!knownOp(op)) return { kind: "invalid", why: `unknown op ${op}` };
  const fixed = fixedBodyBytes(op);
  const shardLen = buf.readUInt8(offset + 33);
  const keyLen = buf.readUInt16LE(offset + 34);
  const valueLen = buf.readUInt32LE(offset + 36);
  if (fixed + shardLen + keyLen + valueLen !== bodyLen) {
    return { kind: "invalid", why: "lengths do not add up" };
  }
  const isPut = op === OP_PUT || op === OP_PUT_WITH_ID;
  const isIds = op === OP_WRITE_IDS || op === OP_LEGACY_WRITE_IDS;
  if (isIds && keyLen !== 0) return { kind: "invalid", why: "write id records with a key" };
  if (avail < ENTRY_HEADER_BYTES + bodyLen) return { kind: "short" };
  const body = buf.subarray(offset + ENTRY_HEADER_BYTES, offset + ENTRY_HEADER_BYTES + bodyLen);
  if (crc32(body) >>> 0 !== buf.readUInt32LE(offset + 4))
    return { kind: "invalid", why: "checksum mismatch" };
  const lsnBig = buf.readBigUInt64LE(offset + 8);
  if (lsnBig < 1n || lsnBig > BigInt(Number.MAX_SAFE_INTEGER))
    return { kind: "invalid", why: "lsn out of range" };
  let p = offset + 40;
  let writeId: Buffer | undefined;
  if (fixed !== ENTRY_FIXED_BODY_BYTES) {
    // a copy: the id table outlives the buffer the entry was read from
    writeId = Buffer.from(buf.subarray(p, p + WRITE_ID_BYTES));
    p += WRITE_ID_BYTES;
  }
  let shardId: string;
  let key: string;
  try {
    shardId = utf8.decode(buf.subarray(p, p + shardLen));
    p += shardLen;
    key = utf8.decode(buf.subarray(p, p + keyLen));
    p += keyLen;
  } catch {
    return { kind: "invalid", why: "shard id or key is not UTF-8" };
  }
  // A copy, so that the state does not pin the whole file buffer it was read from.
  let value: Buffer = isPut || isIds ? Buffer.from(buf.subarray(p, p + valueLen)) : Buffer.alloc(0);
  if (isIds) {
    const legacy = op === OP_LEGACY_WRITE_IDS;
    const problem = writeIdRecordsProblem(
      value,
      legacy ? LEGACY_WRITE_ID_RECORD_BYTES : WRITE_ID_RECORD_BYTES,
    );
    if (problem) return { kind: "invalid", why: problem };
    if (legacy) value = widenWriteIdRecords(value);
  }
  const entry: LogEntry = {
    lsn: Number(lsnBig),
    timestamp: buf.readDoubleLE(offset + 16),
    migrationTimestamp: buf.readDoubleLE(offset + 24),
    op: isIds ? "write-ids" : isPut ? "put" : "delete",
    shardId,
    key,
    value,
  };
  if (writeId) entry.writeId = writeId;
  return { kind: "entry", length: ENTRY_HEADER_BYTES + bodyLen, entry };
}
