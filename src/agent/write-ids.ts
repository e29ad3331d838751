/**
 * Idempotent writes: the recent write ids of one shard and the LSN each was
 * written at.
 *
 * A client names every logical put or delete with a 16-byte write id and sends
 * the same id on every retry of it (a lost answer, a cut connection, a fenced
 * shard, an agent killed after the fsync but before it answered). The entry
 * carries the id into the log (log-format.ts, ops 3 and 4); this table
 * remembers the last `capacity` ids, so that a retry is answered with the
 * original outcome (its LSN; for a delete, whether the key existed) and
 * nothing is appended twice. It is rebuilt from what the shard replays on
 * recovery (its snapshot's id records, then the log after the snapshot) and
 * what a migration target receives (the snapshot file, then the entries
 * appended, byte for byte), so an acknowledged write stays recognised across
 * restarts and moves. A split or merge target gets the ids too (import.ts):
 * each imported entry's, and a compacted source's snapshot id records, which
 * it writes into its log as entries of their own (op 6, addEncoded with the
 * entry's LSN), so they are replayed like any other.
 *
 * Memory: typed arrays, no object per id. Per id 16 bytes of id, 8 of LSN, 1
 * of outcome, 4 of key hash and 8 of open-addressing index (load factor at
 * most 1/2): 37 bytes, so the default capacity of 2^20 ids costs 37 MiB per
 * shard once full.
 * The arrays start small and double as ids arrive, so a shard that takes few
 * writes holds little. A snapshot in progress holds a frozen copy (freeze:
 * 29 bytes per id). The oldest id is forgotten when the table is full: a
 * retry must come within the last `capacity` writes of its shard (the routing
 * client retries for at most its deadline, 10 s by default).
 *
 * An id names one write, and a retry repeats it: so the table also keeps a
 * 32-bit hash of the key each id wrote (`keyHash32`: computed from the
 * entries as they are replayed, and kept in the id records of snapshots and
 * op 6 entries), and the shard refuses a write whose id is known for another
 * key or operation (409 write-id-reused) rather than answer it as a duplicate
 * and write nothing. Ids from the records of agents before key hashes (op 5,
 * SCSNAP01 snapshots) have the hash 0, "not known": for those the table
 * cannot tell, and a reuse is answered as a duplicate, as are two keys whose
 * hashes collide (ids are random, or a random 64-bit client prefix and a
 * counter; a collision of two clients' prefixes is not guarded against).
 */
import { WRITE_ID_BYTES, WRITE_ID_RECORD_BYTES, writeIdRecordsProblem, type LogOp } from "./log-format.js";

export { WRITE_ID_BYTES, WRITE_ID_RECORD_BYTES };
/** The default number of ids remembered per shard. */
export const DEFAULT_WRITE_ID_CAPACITY = 1 << 20;

const OUTCOME_PUT = 0;
const OUTCOME_DELETE_MISSING = 1;
const OUTCOME_DELETE_EXISTED = 2;
const INITIAL_SLOTS = 1024;

/** What a remembered write was: the answer a retry of it gets. */
export interface RememberedWrite {
  lsn: number;
  op: LogOp;
  /** For a delete: whether the key existed when it was applied. */
  existed?: boolean;
  /** keyHash32 of the key it wrote; 0 when not known (an id from the records of an older agent). */
  keyHash: number;
}

/**
 * FNV-1a over a key's UTF-16 code units, never 0 (0 means "not known"). It is
 * stored in id records and compared by other agents after a restart or a
 * move, so it is part of the format: pinned by golden vectors in the tests.
 */
export function keyHash32(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0 || 1;
}

/** The 32 hex digits of a write id (the header form), or undefined when it is not one. */
export function parseWriteIdHex(s: string): Buffer | undefined {
  return /^[0-9a-fA-F]{32}$/.test(s) ? Buffer.from(s, "hex") : undefined;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** A hash of all 16 bytes: ids that share a client prefix and differ in a counter still spread. */
function hashWords(a: number, b: number, c: number, d: number): number {
  return fmix(fmix(fmix(fmix(a) ^ b) ^ c) ^ d) >>> 0;
}

export class WriteIdTable {
  /** Ring of ids, oldest at `head`: 4 words per id. */
  private ids!: Uint32Array;
  private lsns!: Float64Array;
  private outcomes!: Uint8Array;
  /** keyHash32 of each id's key, 0 when not known. */
  private keyHashes!: Uint32Array;
  /** Allocated ring size (≤ capacity; doubles as ids arrive). */
  private ring = 0;
  private head = 0;
  private count = 0;
  /** Open addressing, linear probing: ring position + 1, or 0 for an empty slot. */
  private index!: Int32Array;
  private mask = 0;

  constructor(readonly capacity = DEFAULT_WRITE_ID_CAPACITY) {
    if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > 1 << 28)
      throw new RangeError(`a write id table holds 1 to 2^28 ids, not ${capacity}`);
    this.allocate(Math.min(capacity, INITIAL_SLOTS));
  }

  get size(): number {
    return this.count;
  }

  /** Bytes held by the table's arrays. */
  get bytes(): number {
    return (
      this.ids.byteLength +
      this.lsns.byteLength +
      this.outcomes.byteLength +
      this.keyHashes.byteLength +
      this.index.byteLength
    );
  }

  get(id: Buffer): RememberedWrite | undefined {
    const pos = this.find(id);
    if (pos < 0) return undefined;
    const o = this.outcomes[pos];
    const lsn = this.lsns[pos];
    const keyHash = this.keyHashes[pos];
    return o === OUTCOME_PUT
      ? { lsn, op: "put", keyHash }
      : { lsn, op: "delete", existed: o === OUTCOME_DELETE_EXISTED, keyHash };
  }

  has(id: Buffer): boolean {
    return this.find(id) >= 0;
  }

  /**
   * Remembers that `id` was applied at `lsn`, writing the key `key` (when
   * known). An id already known keeps its first LSN (that is when it was
   * applied). When full, the oldest id goes.
   */
  add(id: Buffer, lsn: number, op: LogOp, existed = false, key?: string): void {
    if (id.length !== WRITE_ID_BYTES)
      throw new RangeError(`a write id is ${WRITE_ID_BYTES} bytes, not ${id.length}`);
    this.insert(
      id.readUInt32LE(0),
      id.readUInt32LE(4),
      id.readUInt32LE(8),
      id.readUInt32LE(12),
      lsn,
      op === "put" ? OUTCOME_PUT : existed ? OUTCOME_DELETE_EXISTED : OUTCOME_DELETE_MISSING,
      key === undefined ? 0 : keyHash32(key),
    );
  }

  /**
   * A copy of every id, oldest first, that later adds do not change: what a
   * snapshot stores as of its LSN. Taken with four array copies (a few ms
   * for 2^20 ids); the records are encoded later, a piece at a time.
   */
  freeze(): FrozenWriteIds {
    const { head, count, ring } = this;
    const first = Math.min(count, ring - head); // the ring wraps after this many
    const ids = new Uint32Array(count * 4);
    ids.set(this.ids.subarray(head * 4, (head + first) * 4));
    ids.set(this.ids.subarray(0, (count - first) * 4), first * 4);
    const lsns = new Float64Array(count);
    lsns.set(this.lsns.subarray(head, head + first));
    lsns.set(this.lsns.subarray(0, count - first), first);
    const outcomes = new Uint8Array(count);
    outcomes.set(this.outcomes.subarray(head, head + first));
    outcomes.set(this.outcomes.subarray(0, count - first), first);
    const keyHashes = new Uint32Array(count);
    keyHashes.set(this.keyHashes.subarray(head, head + first));
    keyHashes.set(this.keyHashes.subarray(0, count - first), first);
    return new FrozenWriteIds(ids, lsns, outcomes, keyHashes);
  }

  /** Every id, oldest first, as WRITE_ID_RECORD_BYTES records. */
  encode(): Buffer {
    const f = this.freeze();
    return f.encode(0, f.count);
  }

  /**
   * Adds records made by encode(), in their order. `atLsn`, when given,
   * replaces the records' LSNs: ids another shard applied, remembered at the
   * LSN of the entry that brought them into this shard (op 6), so that a
   * retry is answered with an LSN of this shard's log. The records keep
   * their key hashes. Malformed records throw RangeError and add nothing.
   */
  addEncoded(records: Buffer, atLsn?: number): void {
    if (records.length === 0) return;
    const problem = writeIdRecordsProblem(records);
    if (problem) throw new RangeError(problem);
    if (atLsn !== undefined && (!Number.isSafeInteger(atLsn) || atLsn < 1))
      throw new RangeError(`an LSN is a positive integer, not ${atLsn}`);
    for (let off = 0; off < records.length; off += WRITE_ID_RECORD_BYTES) {
      const lsn = atLsn ?? records.readUInt32LE(off + 16) + records.readUInt32LE(off + 20) * 4294967296;
      this.insert(
        records.readUInt32LE(off),
        records.readUInt32LE(off + 4),
        records.readUInt32LE(off + 8),
        records.readUInt32LE(off + 12),
        lsn,
        records[off + 24],
        records.readUInt32LE(off + 25),
      );
    }
  }

  clear(): void {
    this.allocate(Math.min(this.capacity, INITIAL_SLOTS));
  }

  private allocate(ring: number): void {
    this.ring = ring;
    this.ids = new Uint32Array(ring * 4);
    this.lsns = new Float64Array(ring);
    this.outcomes = new Uint8Array(ring);
    this.keyHashes = new Uint32Array(ring);
    this.head = 0;
    this.count = 0;
    let slots = 1;
    while (slots < ring * 2) slots *= 2;
    this.index = new Int32Array(slots);
    this.mask = slots - 1;
  }

  private find(id: Buffer): number {
    if (id.length !== WRITE_ID_BYTES) return -1;
    const a = id.readUInt32LE(0);
    const b = id.readUInt32LE(4);
    const c = id.readUInt32LE(8);
    const d = id.readUInt32LE(12);
    const ids = this.ids;
    for (let s = hashWords(a, b, c, d) & this.mask; ; s = (s + 1) & this.mask) {
      const e = this.index[s];
      if (e === 0) return -1;
      const w = (e - 1) * 4;
      if (ids[w] === a && ids[w + 1] === b && ids[w + 2] === c && ids[w + 3] === d) return e - 1;
    }
  }

  private slotOf(pos: number): number {
    const w = pos * 4;
    return hashWords(this.ids[w], this.ids[w + 1], this.ids[w + 2], this.ids[w + 3]) & this.mask;
  }

  private insert(
    a: number,
    b: number,
    c: number,
    d: number,
    lsn: number,
    outcome: number,
    keyHash: number,
  ): void {
    const ids = this.ids;
    let s = hashWords(a, b, c, d) & this.mask;
    for (; this.index[s] !== 0; s = (s + 1) & this.mask) {
      const w = (this.index[s] - 1) * 4;
      if (ids[w] === a && ids[w + 1] === b && ids[w + 2] === c && ids[w + 3] === d) return;
    }
    if (this.count === this.ring) {
      if (this.ring < this.capacity) {
        this.grow(Math.min(this.capacity, this.ring * 2));
        return this.insert(a, b, c, d, lsn, outcome, keyHash);
      }
      // full: the oldest id makes room (its slot may be the one found above, so probe again)
      this.unindex(this.head);
      this.head = (this.head + 1) % this.ring;
      this.count--;
      return this.insert(a, b, c, d, lsn, outcome, keyHash);
    }
    const pos = (this.head + this.count) % this.ring;
    const w = pos * 4;
    ids[w] = a;
    ids[w + 1] = b;
    ids[w + 2] = c;
    ids[w + 3] = d;
    this.lsns[pos] = lsn;
    this.outcomes[pos] = outcome;
    this.keyHashes[pos] = keyHash;
    this.index[s] = pos + 1;
    this.count++;
  }

  /** Removes ring position `pos` from the index (backward-shift deletion keeps every probe chain whole). */
  private unindex(pos: number): void {
    const mask = this.mask;
    let i = this.slotOf(pos);
    while (this.index[i] !== pos + 1) i = (i + 1) & mask;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const e = this.index[j];
      if (e === 0) break;
      const k = this.slotOf(e - 1);
      // the entry at j may move to i only if its home slot k is not cyclically in (i, j]
      const stays = i <= j ? i < k && k <= j : i < k || k <= j;
      if (stays) continue;
      this.index[i] = e;
      i = j;
    }
    this.index[i] = 0;
  }

  private grow(ring: number): void {
    const ids = this.ids;
    const lsns = this.lsns;
    const outcomes = this.outcomes;
    const keyHashes = this.keyHashes;
    const oldRing = this.ring;
    const head = this.head;
    const count = this.count;
    this.allocate(ring);
    for (let i = 0; i < count; i++) {
      const p = (head + i) % oldRing;
      const w = p * 4;
      this.insert(ids[w], ids[w + 1], ids[w + 2], ids[w + 3], lsns[p], outcomes[p], keyHashes[p]);
    }
  }
}

/** A table's ids at one moment, oldest first (WriteIdTable.freeze). */
export class FrozenWriteIds {
  constructor(
    private readonly ids: Uint32Array,
    private readonly lsns: Float64Array,
    private readonly outcomes: Uint8Array,
    private readonly keyHashes: Uint32Array,
  ) {}

  get count(): number {
    return this.lsns.length;
  }

  /** Records from..from+n-1 as WRITE_ID_RECORD_BYTES each: [id][u64 lsn][u8 outcome][u32 key hash]. */
  encode(from: number, n: number): Buffer {
    const out = Buffer.allocUnsafe(n * WRITE_ID_RECORD_BYTES);
    const dv = new DataView(out.buffer, out.byteOffset, out.length);
    for (let i = 0, off = 0; i < n; i++, off += WRITE_ID_RECORD_BYTES) {
      const w = (from + i) * 4;
      dv.setUint32(off, this.ids[w], true);
      dv.setUint32(off + 4, this.ids[w + 1], true);
      dv.setUint32(off + 8, this.ids[w + 2], true);
      dv.setUint32(off + 12, this.ids[w + 3], true);
      const lsn = this.lsns[from + i];
      dv.setUint32(off + 16, lsn % 4294967296, true);
      dv.setUint32(off + 20, Math.floor(lsn / 4294967296), true);
      out[off + 24] = this.outcomes[from + i];
      dv.setUint32(off + 25, this.keyHashes[from + i], true);
    }
    return out;
  }
}
