/**
 * Scanning one log file's bytes during recovery (pure: bytes in, verdict out).
 *
 * A file is read entry by entry. At the first position that is not a valid
 * entry (short, bad lengths, bad checksum, or an LSN that does not follow the
 * previous one) the scanner decides which of two things it is:
 *
 * - a torn tail: no valid entry follows anywhere after it. A write that was
 *   never acknowledged (its fsync did not complete) was cut short; the file is
 *   truncated there. A tail of zeros only is marked `allZero`: the space the
 *   log writes ahead of its end (shard-log.ts), or a write whose size landed
 *   and whose data did not.
 * - corruption in the middle: some valid later entry exists after it. Bytes
 *   that were once durable have changed; truncating would silently drop valid
 *   entries, so the shard is refused instead.
 */
import {
  decodeEntry,
  ENTRY_FIXED_BODY_BYTES,
  ENTRY_HEADER_BYTES,
  fixedBodyBytes,
  knownOp,
  MAX_BODY_BYTES,
  type LogEntry,
} from "./log-format.js";

export type ScanProblem =
  /** allZero: every dropped byte is zero (space written ahead of the log, or a write that never landed). */
  | { kind: "torn-tail"; offset: number; droppedBytes: number; why: string; allZero: boolean }
  | { kind: "corrupt"; offset: number; why: string; validEntryAt: number };

export interface ScanResult {
  /** Bytes of valid entries from the start of the file. */
  validEnd: number;
  /** LSN of the last valid entry (the given previous LSN when there is none). */
  lastLsn: number;
  entries: number;
  problem?: ScanProblem;
}

/**
 * Scans `buf`, calling onEntry for each valid entry in order. `prevLsn` is the
 * LSN just before the file's first entry: each entry must be prevLsn + 1, +2, ….
 */
export function scanLog(buf: Buffer, prevLsn: number, onEntry: (e: LogEntry) => void): ScanResult {
  let off = 0;
  let last = prevLsn;
  let entries = 0;
  while (off < buf.length) {
    const r = decodeEntry(buf, off);
    let why: string;
    if (r.kind === "entry") {
      if (r.entry.lsn === last + 1) {
        onEntry(r.entry);
        last = r.entry.lsn;
        entries++;
        off += r.length;
        continue;
      }
      why = `lsn ${r.entry.lsn} does not follow ${last}`;
    } else {
      why = r.kind === "short" ? "entry cut short" : r.why;
    }
    // an entry that decodes with a later LSN than the next is itself the valid entry after the
    // problem: a gap (entries missing) is corruption, never a tail to cut
    const next = r.kind === "entry" && r.entry.lsn > last ? off : findValidEntry(buf, off + 1, last);
    if (next >= 0)
      return {
        validEnd: off,
        lastLsn: last,
        entries,
        problem: { kind: "corrupt", offset: off, why, validEntryAt: next },
      };
    return {
      validEnd: off,
      lastLsn: last,
      entries,
      problem: {
        kind: "torn-tail",
        offset: off,
        droppedBytes: buf.length - off,
        why,
        allZero: isZero(buf, off),
      },
    };
  }
  return { validEnd: off, lastLsn: last, entries };
}

function isZero(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** The offset of the first entry at or after `from` that decodes and has an LSN above `afterLsn`; -1 if none. */
export function findValidEntry(buf: Buffer, from: number, afterLsn: number): number {
  const minBytes = ENTRY_HEADER_BYTES + ENTRY_FIXED_BODY_BYTES;
  for (let p = from; p + minBytes <= buf.length; p++) {
    // cheap filters first: most positions fail on the lengths or the op byte
    const bodyLen = buf.readUInt32LE(p);
    if (
      bodyLen < ENTRY_FIXED_BODY_BYTES ||
      bodyLen > MAX_BODY_BYTES ||
      p + ENTRY_HEADER_BYTES + bodyLen > buf.length
    )
      continue;
    const op = buf[p + 32];
    if (!knownOp(op)) continue;
    if (fixedBodyBytes(op) + buf[p + 33] + buf.readUInt16LE(p + 34) + buf.readUInt32LE(p + 36) !== bodyLen)
      continue;
    const r = decodeEntry(buf, p);
    if (r.kind === "entry" && r.entry.lsn > afterLsn) return p;
  }
  return -1;
}
