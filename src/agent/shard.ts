/**
 * A log shard hosted by this agent: its log, the key/value state derived from
 * it (latest value per key, in memory), its metadata (epoch, owner state) and
 * its snapshots.
 *
 * The state is updated only after an entry's fsync, in LSN order, so a read
 * never sees a write that could still be lost.
 *
 * Writes are idempotent by write id (write-ids.ts): a write whose id is in the
 * shard's table of recent ids is answered with the outcome it had and is not
 * appended again; one whose id is still on its way to the disk waits for that
 * write and gets its outcome (or its failure). The table is updated with the
 * state, after the fsync, and rebuilt with it on recovery and on a migration
 * target; snapshots carry it, so compaction does not forget it. An import (a
 * split or merge) appends the source's entries with their ids, and the ids of
 * a compacted source's snapshot as write id records entries (op 6), without
 * the duplicate check (appendImported): so every id this shard knows is in
 * its snapshot or its log.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fsyncDir, NO_ROOM } from "./fs-util.js";
import { ApiError } from "./http-util.js";
import { encodeEntry, NO_VALUE, type LogEntry, type LogOp } from "./log-format.js";
import { DEFAULT_WRITE_ID_CAPACITY, keyHash32, WriteIdTable, type RememberedWrite } from "./write-ids.js";
import { metaPath, readMeta, writeMeta, type RedirectHint, type ShardMeta } from "./shard-meta.js";
import { NotDurableError } from "../store/embedded.js";
import {
  LogCorrupt,
  parseLogFileName,
  ShardLog,
  type LogBatch,
  type LogFile,
  type ShardLogOptions,
} from "./shard-log.js";
import {
  parseSnapshotFileName,
  readSnapshot,
  readSnapshotWriteIds,
  snapshotFileName,
  SnapshotCorrupt,
  writeSnapshot,
  type StateValue,
} from "./snapshot.js";
import type { SegmentRange } from "../engine/location-map.js";

export interface WriteOp {
  op: LogOp;
  key: string;
  /** For a put. */
  value?: Buffer;
  /** The client's id of this logical write (16 bytes), the same on every retry. */
  writeId?: Buffer;
}

/**
 * Write id records another shard had (its snapshot's, brought by an import):
 * a log entry of their own (op 6) that adds them to this shard's table.
 */
export interface WriteIdsOp {
  op: "write-ids";
  /** Whole WRITE_ID_RECORD_BYTES records. */
  records: Buffer;
}

/** What one log entry of this shard does. */
export type ShardOp = WriteOp | WriteIdsOp;

/** The op a decoded log entry replays as (with its write id, or its write id records). */
export function opOfEntry(e: LogEntry): ShardOp {
  if (e.op === "write-ids") return { op: "write-ids", records: e.value };
  return e.op === "put"
    ? { op: "put", key: e.key, value: e.value, writeId: e.writeId }
    : { op: "delete", key: e.key, writeId: e.writeId };
}

export interface WriteResult {
  lsn: number;
  /** For a delete: whether the key existed. */
  existed?: boolean;
  /** The write id was known: this is the outcome of the write that carried it first; nothing was appended. */
  duplicate?: true;
}

interface ShardBatch extends LogBatch {
  ops: ShardOp[];
  results: WriteResult[];
  /** Replicated entries keep the timestamps the source gave them. */
  timestamps?: number[];
}

/** A replicated entry: its encoded bytes (as in the source's log) and what they decode to. */
export interface ReplicatedEntry {
  bytes: Buffer;
  lsn: number;
  timestamp: number;
  op: ShardOp;
}

export interface ShardOptions {
  maxFileBytes: number;
  /** A snapshot is taken once this many log bytes were written since the last one. */
  snapshotBytes: number;
  warn: (msg: string) => void;
  onFlush?: (entries: number, bytes: number, fsyncMs: number) => void;
  /** Write ids remembered (default DEFAULT_WRITE_ID_CAPACITY, 2^20). */
  writeIdCapacity?: number;
}

/** An error's message, with its errno code when the message does not carry it. */
function errorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const msg = e instanceof Error ? e.message : String(err);
  return e?.code && !msg.includes(e.code) ? `${e.code}: ${msg}` : msg;
}

/** Whether `dir` holds a log file or a snapshot (data a shard with a lost meta.json still has). */
function holdsData(dir: string): boolean {
  try {
    return readdirSync(dir).some(
      (n) => parseLogFileName(n) !== undefined || parseSnapshotFileName(n) !== undefined,
    );
  } catch {
    return true; // unreadable: assume it holds data, and refuse rather than forget it
  }
}

/**
 * What a request whose metadata change could not be recorded gets: 507 when the disk is full, 503 for
 * another I/O error (both retryable once fixed), saying that nothing changed.
 */
function metaWriteFailed(shard: Shard, next: ShardMeta, err: unknown): ApiError {
  const code = (err as NodeJS.ErrnoException)?.code;
  const room = code !== undefined && NO_ROOM.has(code);
  const was = shard.meta;
  const change =
    next.epoch !== was.epoch && next.state === was.state
      ? `epoch ${next.epoch}`
      : `epoch ${next.epoch} (${next.state})`;
  return new ApiError(
    room ? 507 : 503,
    "meta-write-failed",
    `shard ${shard.id}: recording ${change} in meta.json failed (${errorText(err)}); nothing was changed: ` +
      `the shard stays at epoch ${was.epoch} (${was.state}). ` +
      (room ? "Make room on the disk, then retry" : "Fix the disk (see the agent's log), then retry"),
    { epoch: was.epoch, state: was.state, ...(code ? { code } : {}) },
    { "retry-after": "1" },
  );
}

/**
 * Throws 409 write-id-reused unless `o` repeats the write its id already names: `earlier` (in this
 * batch or on its way to the disk) or `known` (the id table; a key hash of 0 there is not known).
 */
function sameWrite(
  hex: string,
  o: WriteOp,
  earlier: WriteOp | undefined,
  known: RememberedWrite | undefined,
): void {
  const op = earlier?.op ?? known!.op;
  const keyKnown = earlier !== undefined || known!.keyHash !== 0;
  const sameKey = earlier ? earlier.key === o.key : !keyKnown || known!.keyHash === keyHash32(o.key);
  if (op === o.op && sameKey) return;
  const whose = !keyKnown ? "" : sameKey ? " of this key" : " of another key";
  const what = `a ${op}${whose}${op === o.op ? "" : `, not a ${o.op}`}`;
  const where = known ? ` (applied at LSN ${known.lsn})` : " (not durable yet)";
  throw new ApiError(
    409,
    "write-id-reused",
    `write id ${hex} already names ${what}${where}: a retry must repeat the same write; give a new write a new id. Nothing was written`,
    { op, ...(known ? { lsn: known.lsn } : {}) },
  );
}

/** The answer a retry of a remembered write gets. */
function duplicateOf(w: RememberedWrite): WriteResult {
  return w.op === "put"
    ? { lsn: w.lsn, duplicate: true }
    : { lsn: w.lsn, existed: w.existed, duplicate: true };
}

/** What a write() does with one op: append it, or answer it from an earlier write with the same id. */
type Plan =
  | { kind: "append"; at: number; duplicate: boolean }
  | { kind: "known"; result: WriteResult }
  | { kind: "in-flight"; result: Promise<WriteResult> };

/** A snapshot that could not be written (nothing was deleted for it), or whose clean-up failed. */
export class SnapshotFailed extends Error {
  /** The errno code of the failure (ENOSPC, EFBIG, EIO, …), if it had one. */
  readonly code?: string;

  constructor(
    readonly lsn: number,
    /** The snapshot is durable; deleting the older snapshots or the log files it covers failed. */
    readonly written: boolean,
    cause: NodeJS.ErrnoException,
  ) {
    super(
      written
        ? `snapshot at LSN ${lsn} written, but deleting what it covers failed (the rest is kept; the next snapshot deletes it): ${cause.message}`
        : `snapshot failed (the log is kept: nothing was deleted): ${cause.message}`,
    );
    this.code = cause.code;
  }
}

/**
 * A state entry made by a write (applyDurable), which later writes to its key
 * update in place while nobody else holds it: a put then leaves no object
 * behind for the garbage collector (docs/AGENT.md, "State entries updated in
 * place"). `gen` is the shard's stateGen when the entry was made; a snapshot
 * (which holds every entry while it writes) moves stateGen on, and a reader
 * that keeps an entry (Shard.get) sets it to -1, so such an entry is never
 * changed again: the next write to its key replaces it. `owned`: `value` is
 * a copy the shard made, which nothing else refers to, so it may be written
 * over (a caller's buffer is not: it may be held elsewhere; see keepValue).
 */
class LiveEntry implements StateValue {
  constructor(
    public value: Buffer,
    public lsn: number,
    public timestamp: number,
    public gen: number,
    public owned: boolean,
  ) {}
}

/**
 * Gives an entry its value. A value that is a piece of a larger buffer (Node's shared pool, a
 * request's, a replicated chunk) would keep all of that alive as long as the key lives: it is
 * copied into a buffer of its own, which the shard owns, so that later writes of the same length
 * copy their bytes into it. A buffer that is a whole one is kept as it is, and not owned: the
 * caller may hold it too (or have given it for two keys).
 */
function keepValue(entry: LiveEntry, value: Buffer): void {
  if (value.length > 0 && (value.byteOffset !== 0 || value.buffer.byteLength !== value.length)) {
    entry.value = Buffer.allocUnsafeSlow(value.length);
    value.copy(entry.value);
    entry.owned = true;
  } else {
    entry.value = value;
    entry.owned = false;
  }
}

export class Shard {
  /**
   * Replaced as a whole only when a migration target installs a snapshot. Entries may be updated
   * in place by later writes: read one through `get` to keep it (or `peek`, to use it at once).
   */
  state = new Map<string, StateValue>();
  /** Entries made before this generation are never updated in place (LiveEntry). */
  private stateGen = 0;
  meta: ShardMeta;
  /** Why the shard is refused (corrupt log), if it is. */
  failed?: string;
  private log?: ShardLog;
  private bytesSinceSnapshot = 0;
  private snapshotting = false;
  /** Settles when the snapshot being written (if any) is done: a discard waits for it (its file and compaction). */
  private snapshotDone: Promise<void> = Promise.resolve();
  /** LSN of the last snapshot, 0 if none. */
  snapshotLsn = 0;
  valueBytes = 0;
  /** Recent write ids → LSN, as of the last durable LSN. */
  writeIds: WriteIdTable;
  /** Write ids whose write is appended but not durable yet (hex → the write and its result). */
  private readonly writesInFlight = new Map<string, { op: WriteOp; result: Promise<WriteResult> }>();
  /**
   * No snapshot (hence no compaction) before this time (ms): a migration is
   * reading the log and the snapshot it started from (holdCompaction).
   */
  private compactionHeldUntil = 0;

  /** The shard id in UTF-8, as every log entry carries it. */
  private readonly idBytes: Buffer;

  private constructor(
    readonly id: string,
    readonly dir: string,
    meta: ShardMeta,
    private readonly opts: ShardOptions,
  ) {
    this.meta = meta;
    this.idBytes = Buffer.from(id, "utf8");
    this.writeIds = new WriteIdTable(opts.writeIdCapacity ?? DEFAULT_WRITE_ID_CAPACITY);
  }

  /** Creates a new, empty shard owned at `epoch`. */
  static async create(
    dir: string,
    id: string,
    meta: Omit<ShardMeta, "shardId">,
    opts: ShardOptions,
  ): Promise<Shard> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // the shard's directory entry, so that a crash cannot forget a shard that acknowledged writes
    await fsyncDir(dirname(dir));
    const full: ShardMeta = { shardId: id, ...meta };
    writeMeta(dir, full);
    return Shard.open(dir, id, opts);
  }

  /**
   * Opens an existing shard and recovers its state. A shard that cannot be loaded — a corrupt log, a
   * meta.json that is altered or unreadable, an I/O error, a log file too large to read — is kept
   * `failed` with the reason, never half-served and never forgotten: it stays listed (state "failed")
   * and every request names it, rather than answering "unknown shard" while its data sits on disk.
   * Nothing is deleted or rewritten for it.
   */
  static async open(dir: string, id: string, opts: ShardOptions): Promise<Shard> {
    let meta: ShardMeta;
    try {
      meta = readMeta(dir);
    } catch (err) {
      // an empty directory a crash left in the middle of create(): nothing to keep (createShard reuses it)
      if (!existsSync(metaPath(dir)) && !holdsData(dir)) throw err;
      // a placeholder only: setMeta refuses to write over the file while the shard is failed
      const shard = new Shard(
        id,
        dir,
        { shardId: id, epoch: 0, state: "not-owned", migrationTimestamp: 0 },
        opts,
      );
      shard.refuse(`its metadata could not be read: ${errorText(err)}`);
      return shard;
    }
    const shard = new Shard(id, dir, meta, opts);
    try {
      await shard.recover();
    } catch (err) {
      shard.refuse(err instanceof LogCorrupt ? err.message : `recovery failed: ${errorText(err)}`);
    }
    return shard;
  }

  private refuse(why: string): void {
    this.failed =
      `${why}. Nothing was deleted; fix or restore the files in ${this.dir} and restart the agent ` +
      "(or drop the shard once another node holds its data)";
    this.state.clear();
    this.writeIds.clear();
    this.opts.warn(`recovery: shard ${this.id} REFUSED: ${this.failed}`);
  }

  private async recover(): Promise<void> {
    for (const name of readdirSync(this.dir))
      if (name.includes(".tmp")) rmSync(join(this.dir, name), { force: true });
    const snaps = readdirSync(this.dir)
      .map((n) => ({ n, lsn: parseSnapshotFileName(n) }))
      .filter((s): s is { n: string; lsn: number } => s.lsn !== undefined)
      .sort((a, b) => b.lsn - a.lsn);
    for (const s of snaps) {
      this.state.clear();
      this.writeIds.clear();
      try {
        await readSnapshot(
          join(this.dir, s.n),
          (k, v) => this.state.set(k, v),
          (records) => this.addWriteIdRecords(records),
        );
        this.snapshotLsn = s.lsn;
        break;
      } catch (err) {
        if (!(err instanceof SnapshotCorrupt)) throw err;
        this.opts.warn(
          `recovery: shard ${this.id}: snapshot ${s.n} is corrupt (${err.message}); trying an older one`,
        );
        this.state.clear();
        this.writeIds.clear();
      }
    }
    this.log = ShardLog.recover(
      this.dir,
      this.snapshotLsn,
      (e) => {
        if (e.op === "write-ids") {
          // (decodeEntry checked the records)
          this.writeIds.addEncoded(e.value, e.lsn);
        } else if (e.op === "put") {
          this.state.set(e.key, { value: e.value, lsn: e.lsn, timestamp: e.timestamp });
          if (e.writeId) this.writeIds.add(e.writeId, e.lsn, "put", false, e.key);
        } else {
          const existed = this.state.delete(e.key);
          if (e.writeId) this.writeIds.add(e.writeId, e.lsn, "delete", existed, e.key);
        }
      },
      this.logOptions(),
    );
    this.bytesSinceSnapshot = this.log.totalBytes;
    let bytes = 0;
    for (const v of this.state.values()) bytes += v.value.length;
    this.valueBytes = bytes;
  }

  private logOptions(): ShardLogOptions {
    return {
      maxFileBytes: this.opts.maxFileBytes,
      warn: this.opts.warn,
      onFlush: this.opts.onFlush,
      applyDurable: (b) => this.applyDurable(b as ShardBatch),
    };
  }

  get lsn(): number {
    return this.log?.durableLsn ?? 0;
  }

  get logBytes(): number {
    return this.log?.totalBytes ?? 0;
  }

  /** The log files, oldest first (a copy of the list; a snapshot may delete the oldest). */
  get logFileList(): LogFile[] {
    return this.log ? this.log.files.map((f) => ({ ...f })) : [];
  }

  get logFiles(): number {
    return this.log?.files.length ?? 0;
  }

  /** The key's entry, which stays as it is: later writes to the key replace it rather than update it. */
  get(key: string): StateValue | undefined {
    const v = this.state.get(key);
    if (v instanceof LiveEntry) v.gen = -1;
    return v;
  }

  /**
   * The key's entry, to be used at once (before the next write is applied, i.e. before the caller
   * awaits anything): a later write to the key may update this very entry and its value's bytes.
   */
  peek(key: string): StateValue | undefined {
    return this.state.get(key);
  }

  /**
   * Appends the ops as one batch (one group commit) and resolves once durable
   * and applied. An op whose write id is known, or on its way to the disk, or
   * earlier in `ops`, is not appended: it gets that write's outcome, marked
   * `duplicate`.
   */
  write(ops: WriteOp[]): Promise<WriteResult[]> {
    if (!this.log || this.failed)
      return Promise.reject(new Error(`shard ${this.id} is not available: ${this.failed ?? "closed"}`));
    // the common case, on every write's path, without an async wrapper: no write ids
    for (const o of ops) if (o.writeId !== undefined) return this.writeWithIds(ops);
    return this.append(ops);
  }

  private async writeWithIds(ops: WriteOp[]): Promise<WriteResult[]> {
    // (synchronous up to append(): no other write can slip in between the lookups and the registration)
    const plan: Plan[] = [];
    const fresh: WriteOp[] = [];
    const seenHere = new Map<string, number>();
    for (const o of ops) {
      if (!o.writeId) {
        plan.push({ kind: "append", at: fresh.push(o) - 1, duplicate: false });
        continue;
      }
      const hex = o.writeId.toString("hex");
      const here = seenHere.get(hex);
      const known = here === undefined ? this.writeIds.get(o.writeId) : undefined;
      const inFlight = here === undefined && !known ? this.writesInFlight.get(hex) : undefined;
      // a retry repeats its write: the same id for another key or operation is a client's mistake,
      // refused before anything is appended (answered as a duplicate, that write would be lost)
      if (here !== undefined) sameWrite(hex, o, fresh[here], undefined);
      else if (known) sameWrite(hex, o, undefined, known);
      else if (inFlight) sameWrite(hex, o, inFlight.op, undefined);
      if (here !== undefined) plan.push({ kind: "append", at: here, duplicate: true });
      else if (known) plan.push({ kind: "known", result: duplicateOf(known) });
      else if (inFlight) {
        const result = inFlight.result.then((r): WriteResult => ({ ...r, duplicate: true }));
        result.catch(() => {}); // awaited below, unless this write's own append fails first
        plan.push({ kind: "in-flight", result });
      } else {
        const at = fresh.push(o) - 1;
        seenHere.set(hex, at);
        plan.push({ kind: "append", at, duplicate: false });
      }
    }
    const appended = fresh.length > 0 ? this.append(fresh) : Promise.resolve([]);
    if (seenHere.size > 0) {
      for (const [hex, at] of seenHere) {
        const one = appended.then((rs) => rs[at]);
        one.catch(() => {}); // a waiting retry sees the failure; nobody else must
        this.writesInFlight.set(hex, { op: fresh[at], result: one });
      }
      const done = () => {
        // by now the ids are in the table (applyDurable ran before the batch resolved) or the write failed
        for (const hex of seenHere.keys()) this.writesInFlight.delete(hex);
      };
      appended.then(done, done);
    }
    const results = await appended;
    const out: WriteResult[] = [];
    for (const p of plan) {
      if (p.kind === "append") out.push(p.duplicate ? { ...results[p.at], duplicate: true } : results[p.at]);
      else if (p.kind === "known") out.push(p.result);
      else out.push(await p.result);
    }
    return out;
  }

  /**
   * Appends entries imported from another shard (a split or merge) as one
   * batch, each as a new entry of this shard, with its write id. Unlike
   * write(), a write id this shard already knows does not stop an entry: the
   * import replays the source's history, in which each entry was applied
   * once, and must end with the source's content (a shard split and merged
   * back knows the ids of the entries it gets back; skipping them would lose
   * their values). The ids are remembered as the entries become durable.
   */
  appendImported(ops: ShardOp[]): Promise<WriteResult[]> {
    return this.append(ops);
  }

  /** The write id table's answer for `id`, if it is known (for tests and diagnostics). */
  rememberedWrite(id: Buffer): RememberedWrite | undefined {
    return this.writeIds.get(id);
  }

  private append(ops: ShardOp[]): Promise<WriteResult[]> {
    const log = this.log;
    if (!log || this.failed)
      return Promise.reject(new Error(`shard ${this.id} is not available: ${this.failed ?? "closed"}`));
    const first = log.reserve(ops.length);
    const now = Date.now();
    const migrationTimestamp = this.meta.migrationTimestamp;
    const buffers: Buffer[] = [];
    let bytes = 0;
    try {
      for (let i = 0; i < ops.length; i++) {
        const o = ops[i];
        const b = encodeEntry(
          o.op === "write-ids"
            ? {
                lsn: first + i,
                timestamp: now,
                migrationTimestamp,
                op: o.op,
                shardId: this.id,
                key: "",
                value: o.records,
              }
            : {
                lsn: first + i,
                timestamp: now,
                migrationTimestamp,
                op: o.op,
                shardId: this.id,
                key: o.key,
                value: o.value ?? NO_VALUE,
                writeId: o.writeId,
              },
          this.idBytes,
        );
        buffers.push(b);
        bytes += b.length;
      }
    } catch (err) {
      // an entry the log format cannot hold: nothing written, and the LSNs given back
      log.unreserve(first, ops.length);
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const batch: ShardBatch = { buffers, bytes, firstLsn: first, ops, results: [] };
    return log.append(batch).then(
      () => batch.results,
      (err: unknown) => {
        this.logFailed(log, err);
        throw err;
      },
    );
  }

  /**
   * Appends entries copied from another agent's log, byte for byte, keeping
   * their LSNs: the first must follow this log's last LSN and the rest must
   * run without a gap (the caller decoded and checked them).
   */
  async appendReplicated(entries: ReplicatedEntry[]): Promise<number> {
    const log = this.log;
    if (!log || this.failed) throw new Error(`shard ${this.id} is not available: ${this.failed ?? "closed"}`);
    if (entries.length === 0) return log.assignedLsn;
    entries.forEach((e, i) => {
      if (e.lsn !== log.assignedLsn + 1 + i)
        throw new RangeError(`entry ${i} has LSN ${e.lsn}, expected ${log.assignedLsn + 1 + i}`);
    });
    const first = log.reserve(entries.length);
    let bytes = 0;
    for (const e of entries) bytes += e.bytes.length;
    const batch: ShardBatch = {
      buffers: entries.map((e) => e.bytes),
      bytes,
      firstLsn: first,
      ops: entries.map((e) => e.op),
      results: [],
      timestamps: entries.map((e) => e.timestamp),
    };
    try {
      await log.append(batch);
    } catch (err) {
      this.logFailed(log, err);
      throw err;
    }
    return first + entries.length - 1;
  }

  /**
   * A failed write or fsync: the file's content past the last acknowledged entry is unknown (after a
   * failed fsync the kernel may have dropped the pages), so the shard stops serving until a restart
   * recovers it from what is on disk. Said in words an operator can act on.
   */
  private logFailed(log: ShardLog, err: unknown): void {
    if (this.failed) return;
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const fix =
      code === "EMFILE" || code === "ENFILE"
        ? "Raise the agent's open-file limit (ulimit -n, or LimitNOFILE= in a systemd unit)"
        : code === "ENOSPC" || code === "EDQUOT"
          ? "Make room on the disk"
          : "Fix the disk";
    this.failed =
      `log write failed (${(err as Error).message}); nothing after LSN ${log.durableLsn} was acknowledged ` +
      "(writes not acknowledged may still be found after the restart, if their entries reached the disk). " +
      `${fix}, then restart the agent: its recovery keeps every acknowledged write`;
    this.opts.warn(`shard ${this.id}: ${this.failed}`);
  }

  private applyDurable(b: ShardBatch): void {
    for (let i = 0; i < b.ops.length; i++) {
      const o = b.ops[i];
      const lsn = b.firstLsn + i;
      if (o.op === "write-ids") {
        this.writeIds.addEncoded(o.records, lsn);
        b.results.push({ lsn });
        continue;
      }
      const prev = this.state.get(o.key);
      if (prev) this.valueBytes -= prev.value.length;
      if (o.op === "put") {
        const value = o.value ?? NO_VALUE;
        const timestamp = b.timestamps?.[i] ?? Date.now();
        if (prev instanceof LiveEntry && prev.gen === this.stateGen) {
          // nobody else holds this entry: updated in place (no new objects for a put to a known key)
          if (prev.owned && value.length === prev.value.length) prev.value.set(value);
          else keepValue(prev, value);
          prev.lsn = lsn;
          prev.timestamp = timestamp;
        } else {
          const entry = new LiveEntry(NO_VALUE, lsn, timestamp, this.stateGen, false);
          keepValue(entry, value);
          this.state.set(o.key, entry);
        }
        this.valueBytes += value.length;
        if (o.writeId) this.writeIds.add(o.writeId, lsn, "put", false, o.key);
        b.results.push({ lsn });
      } else {
        this.state.delete(o.key);
        if (o.writeId) this.writeIds.add(o.writeId, lsn, "delete", prev !== undefined, o.key);
        b.results.push({ lsn, existed: prev !== undefined });
      }
    }
    this.bytesSinceSnapshot += b.bytes;
    // a migration target keeps its whole copied log until it is activated (the prepare checksum reads it)
    const copying = this.meta.state === "receiving" || this.meta.state === "prepared";
    if (this.bytesSinceSnapshot >= this.opts.snapshotBytes && !this.snapshotting && !copying)
      void this.snapshot();
  }

  /**
   * Defers snapshots (and so the deletion of log files and older snapshots)
   * for `ms` from now: a migration copying this shard needs the snapshot it
   * started from and every log entry after it until the cutover. Each
   * replication read renews the hold; a coordinator that died lets it lapse.
   */
  holdCompaction(ms: number): void {
    // (on the monotonic clock: a wall clock stepped back would hold compaction for as long)
    this.compactionHeldUntil = Math.max(this.compactionHeldUntil, performance.now() + ms);
  }

  get compactionHeld(): boolean {
    return performance.now() < this.compactionHeldUntil;
  }

  /** How much longer compaction is held (0 when it is not). */
  get compactionHeldForMs(): number {
    return Math.max(0, this.compactionHeldUntil - performance.now());
  }

  /** Whether a snapshot is being written now. */
  get snapshotRunning(): boolean {
    return this.snapshotting;
  }

  /** Resolves when the snapshot being written (if any) has finished. */
  snapshotFinished(): Promise<void> {
    return this.snapshotDone;
  }

  /**
   * Replaces a migration target's copy with a snapshot received from the
   * source: `tmpFile` (in this directory, verified by the caller) holds the
   * state as of `lsn`, `state` is what it decodes to. The copied log is
   * deleted, the snapshot renamed into place, and the log restarts empty at
   * lsn + 1. Only a "receiving" copy may be replaced: it serves nothing.
   */
  async installSnapshot(tmpFile: string, lsn: number, state: Map<string, StateValue>): Promise<void> {
    if (this.meta.state !== "receiving")
      throw new Error(`shard ${this.id} is ${this.meta.state}, not receiving`);
    if (this.failed || !this.log)
      throw new Error(`shard ${this.id} is not available: ${this.failed ?? "closed"}`);
    await this.log.close();
    this.log = undefined;
    try {
      // the old copy goes first: a crash then leaves no log below the new snapshot to contradict it
      for (const name of readdirSync(this.dir)) {
        if (parseLogFileName(name) !== undefined || parseSnapshotFileName(name) !== undefined)
          await rm(join(this.dir, name), { force: true });
      }
      await rename(tmpFile, join(this.dir, snapshotFileName(lsn)));
      await fsyncDir(this.dir);
      // the ids the source knew as of the snapshot: its log entries before it are not copied
      this.writeIds.clear();
      await readSnapshotWriteIds(join(this.dir, snapshotFileName(lsn)), (r) => this.addWriteIdRecords(r));
      this.state = state;
      this.snapshotLsn = lsn;
      let bytes = 0;
      for (const v of state.values()) bytes += v.value.length;
      this.valueBytes = bytes;
      this.log = ShardLog.recover(this.dir, lsn, () => {}, this.logOptions());
      this.bytesSinceSnapshot = 0;
    } catch (err) {
      this.failed = `installing a snapshot failed: ${(err as Error).message}`;
      this.state = new Map();
      this.opts.warn(`shard ${this.id}: ${this.failed}`);
      throw err;
    }
  }

  /**
   * Writes a snapshot of the state as of the last durable LSN, then deletes the log files it covers.
   * Undefined when none was taken (one is being written, compaction is held, the shard failed). A
   * failure is warned about; with `rethrow` (an operator asked for this snapshot) it is also thrown,
   * as a SnapshotFailed, so that the answer says so.
   */
  async snapshot(rethrow = false): Promise<number | undefined> {
    const log = this.log;
    if (!log || this.failed || this.snapshotting || this.compactionHeld) return undefined;
    this.snapshotting = true;
    let finished!: () => void;
    this.snapshotDone = new Promise<void>((resolve) => (finished = resolve));
    this.bytesSinceSnapshot = 0;
    const lsn = log.durableLsn;
    let written = false;
    try {
      // a copy of the references, taken synchronously: the state at exactly `lsn`; as two arrays, not
      // an array per key (StateColumns). A new generation: later writes replace these entries
      // instead of updating them in place (LiveEntry), so they hold the state at `lsn` until written.
      const state = { keys: Array.from(this.state.keys()), values: Array.from(this.state.values()) };
      this.stateGen++;
      const writeIds = this.writeIds.freeze(); // the ids as of `lsn` too
      log.requestRotation();
      await writeSnapshot(this.dir, this.id, lsn, state, writeIds);
      // durable: recovery starts from it now, whatever of the clean-up below is done
      written = true;
      this.snapshotLsn = lsn;
      for (const name of readdirSync(this.dir)) {
        const s = parseSnapshotFileName(name);
        if (s !== undefined && s < lsn) await rm(join(this.dir, name), { force: true });
      }
      await log.compact(lsn);
      return lsn;
    } catch (err) {
      const failure = new SnapshotFailed(lsn, written, err as NodeJS.ErrnoException);
      this.opts.warn(`shard ${this.id}: ${failure.message}`);
      if (rethrow) throw failure;
      return undefined;
    } finally {
      this.snapshotting = false;
      finished();
    }
  }

  private addWriteIdRecords(records: Buffer): void {
    try {
      this.writeIds.addEncoded(records);
    } catch (err) {
      // the snapshot's checksum held, so this is a bug or a foreign writer, not a torn file
      throw new SnapshotCorrupt(`write id records: ${(err as Error).message}`);
    }
  }

  /** Durably records a new metadata state (epoch, owner state, redirect). */
  setMeta(next: Partial<Omit<ShardMeta, "shardId">>): void {
    // a refused shard's meta.json may be the only copy of its epoch: never written over from here
    if (this.failed) throw new ApiError(500, "shard-failed", `shard ${this.id} is refused: ${this.failed}`);
    const meta: ShardMeta = { ...this.meta, ...next };
    if (meta.state !== "not-owned") delete meta.redirect;
    try {
      writeMeta(this.dir, meta);
    } catch (err) {
      if (err instanceof NotDurableError) {
        // the new meta.json is in place but a crash may undo it: memory follows the file, and the
        // shard stops serving until a restart reads what the disk kept (never a state in between)
        const was = this.meta;
        this.meta = meta;
        this.failed =
          `recording epoch ${meta.epoch} (${meta.state}) in meta.json could not be made durable ` +
          `(${errorText(err.cause)}); it was at epoch ${was.epoch} (${was.state}), and the disk may hold either. ` +
          "Fix the disk (see the kernel log), then restart the agent: it serves what the disk kept";
        this.opts.warn(`shard ${this.id}: ${this.failed}`);
        throw new ApiError(500, "shard-failed", `shard ${this.id} is refused: ${this.failed}`);
      }
      // this.meta is left as it was: memory never runs ahead of the file (writeMeta replaces the file
      // atomically, so it still holds the old state too)
      throw metaWriteFailed(this, meta, err);
    }
    this.meta = meta;
  }

  /**
   * Records a higher epoch a data request carried before serving it. Not while the shard is fenced:
   * its epoch is then the one its migration fenced it at, and the next one is the migration's to
   * give (the commit's activate, release or reshape, each refused at an epoch not above the shard's).
   * A read at a higher epoch is a client that already read the committed map (a split's source
   * keeps its shard id on this node): were its epoch taken, the roll-forward would be refused as
   * stale, and the shard would stay fenced for good.
   */
  raiseEpoch(epoch: number): void {
    if (epoch > this.meta.epoch && this.meta.state !== "fenced") this.setMeta({ epoch });
  }

  fence(epoch: number, migration?: string): void {
    this.setMeta({ epoch: Math.max(epoch, this.meta.epoch), state: "fenced", migration });
  }

  unfence(epoch: number): void {
    this.setMeta({ epoch: Math.max(epoch, this.meta.epoch), state: "owned", migration: undefined });
  }

  release(epoch: number, redirect: RedirectHint): void {
    this.setMeta({
      epoch: Math.max(epoch, this.meta.epoch, redirect.epoch),
      state: "not-owned",
      redirect,
      migration: undefined,
    });
  }

  /**
   * Deletes the data of a released copy (state not-owned: a migration's commit gave the shard to
   * another node, which holds it all): its log files and snapshots, and its state in memory. Its
   * meta.json stays, so that a client with an older map is still redirected. Kept, every move left a
   * whole copy of the shard on its source, on disk and (after each restart) in memory, until the
   * shard came back. Crash-safe in any order of what is done: log files go newest first, then the
   * snapshots (what a crash leaves is a snapshot and a prefix of its log, which recovers; the agent
   * finishes the job at its next start). Returns the files deleted.
   */
  async discardData(): Promise<number> {
    if (this.meta.state !== "not-owned")
      throw new Error(`shard ${this.id} is ${this.meta.state}: only a released copy's data is discarded`);
    // a snapshot still being written would put its file back, and compact the log after the discard
    await this.snapshotDone;
    if (this.failed) return 0;
    // the copy serves nothing and never writes again (a migration back drops it and makes a new
    // one): its log is closed for good, not reopened afresh (an open file and an empty log file per
    // released copy, kept for ever)
    await this.log?.close();
    this.log = undefined;
    const names = readdirSync(this.dir);
    const logs = names
      .filter((n) => parseLogFileName(n) !== undefined)
      .sort()
      .reverse();
    const snaps = names.filter((n) => parseSnapshotFileName(n) !== undefined);
    // (what is counted: files that held something; an empty log file is an earlier agent's fresh start)
    const counted = logs.filter((n) => statSync(join(this.dir, n)).size > 0).length + snaps.length;
    try {
      for (const name of [...logs, ...snaps]) await rm(join(this.dir, name), { force: true });
      if (logs.length + snaps.length > 0) await fsyncDir(this.dir);
    } finally {
      // whatever is left on disk, the copy serves nothing: an empty state
      this.state = new Map();
      this.writeIds.clear();
      this.writesInFlight.clear();
      this.snapshotLsn = 0;
      this.valueBytes = 0;
      this.bytesSinceSnapshot = 0;
    }
    return counted;
  }

  assign(epoch: number, ranges: SegmentRange[] | undefined, migrationTimestamp: number | undefined): void {
    this.setMeta({
      epoch,
      state: "owned",
      ranges: ranges ?? this.meta.ranges,
      migrationTimestamp: migrationTimestamp ?? this.meta.migrationTimestamp,
    });
  }

  /** Work that writes to the shard on its own (a purge after a reshape); a fence waits for it. */
  private readonly background = new Set<Promise<unknown>>();

  /** Registers `work` as background writes of this shard (see settle) and returns it. */
  track<T>(work: Promise<T>): Promise<T> {
    const done: Promise<unknown> = work.catch(() => undefined).finally(() => this.background.delete(done));
    this.background.add(done);
    return work;
  }

  /**
   * Waits until no tracked background work is left. A fence calls it before drain, so that writes
   * the agent makes by itself land before the fenced LSN (else the new owner would never get them).
   */
  async settle(): Promise<void> {
    while (this.background.size > 0) await Promise.all(this.background);
  }

  /** Waits for every write in flight to be durable. */
  async drain(): Promise<void> {
    await this.log?.idle();
  }

  async close(): Promise<void> {
    await this.log?.close();
    this.log = undefined;
  }
}
