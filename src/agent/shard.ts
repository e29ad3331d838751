/**
 * A log shard hosted by this agent: its log, the key/value state derived from
 * it (latest value per key, in memory), its metadata (epoch, owner state) and
 * its snapshots.
 *
 * The state is updated only after an entry's fsync, in LSN order, so a read
 * never sees a write that could still be lost.
 */
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { encodeEntry, type LogOp } from "./log-format.js";
import { readMeta, writeMeta, type RedirectHint, type ShardMeta } from "./shard-meta.js";
import { LogCorrupt, ShardLog, type LogBatch, type LogFile } from "./shard-log.js";
import {
  parseSnapshotFileName,
  readSnapshot,
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
}

export interface WriteResult {
  lsn: number;
  /** For a delete: whether the key existed. */
  existed?: boolean;
}

interface ShardBatch extends LogBatch {
  ops: WriteOp[];
  results: WriteResult[];
  /** Replicated entries keep the timestamps the source gave them. */
  timestamps?: number[];
}

/** A replicated entry: its encoded bytes (as in the source's log) and what they decode to. */
export interface ReplicatedEntry {
  bytes: Buffer;
  lsn: number;
  timestamp: number;
  op: WriteOp;
}

export interface ShardOptions {
  maxFileBytes: number;
  /** A snapshot is taken once this many log bytes were written since the last one. */
  snapshotBytes: number;
  warn: (msg: string) => void;
  onFlush?: (entries: number, bytes: number, fsyncMs: number) => void;
}

export class Shard {
  readonly state = new Map<string, StateValue>();
  meta: ShardMeta;
  /** Why the shard is refused (corrupt log), if it is. */
  failed?: string;
  private log?: ShardLog;
  private bytesSinceSnapshot = 0;
  private snapshotting = false;
  /** LSN of the last snapshot, 0 if none. */
  snapshotLsn = 0;
  valueBytes = 0;

  private constructor(
    readonly id: string,
    readonly dir: string,
    meta: ShardMeta,
    private readonly opts: ShardOptions,
  ) {
    this.meta = meta;
  }

  /** Creates a new, empty shard owned at `epoch`. */
  static async create(
    dir: string,
    id: string,
    meta: Omit<ShardMeta, "shardId">,
    opts: ShardOptions,
  ): Promise<Shard> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const full: ShardMeta = { shardId: id, ...meta };
    writeMeta(dir, full);
    return Shard.open(dir, id, opts);
  }

  /** Opens an existing shard and recovers its state; a corrupt log leaves it `failed`, never half-served. */
  static async open(dir: string, id: string, opts: ShardOptions): Promise<Shard> {
    const meta = readMeta(dir);
    const shard = new Shard(id, dir, meta, opts);
    try {
      await shard.recover();
    } catch (err) {
      if (!(err instanceof LogCorrupt)) throw err;
      shard.failed = err.message;
      shard.state.clear();
      opts.warn(`recovery: shard ${id} REFUSED: ${err.message}`);
    }
    return shard;
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
      try {
        await readSnapshot(join(this.dir, s.n), (k, v) => this.state.set(k, v));
        this.snapshotLsn = s.lsn;
        break;
      } catch (err) {
        if (!(err instanceof SnapshotCorrupt)) throw err;
        this.opts.warn(
          `recovery: shard ${this.id}: snapshot ${s.n} is corrupt (${err.message}); trying an older one`,
        );
        this.state.clear();
      }
    }
    this.log = ShardLog.recover(
      this.dir,
      this.snapshotLsn,
      (e) => {
        if (e.op === "put") this.state.set(e.key, { value: e.value, lsn: e.lsn, timestamp: e.timestamp });
        else this.state.delete(e.key);
      },
      {
        maxFileBytes: this.opts.maxFileBytes,
        warn: this.opts.warn,
        onFlush: this.opts.onFlush,
        applyDurable: (b) => this.applyDurable(b as ShardBatch),
      },
    );
    this.bytesSinceSnapshot = this.log.totalBytes;
    let bytes = 0;
    for (const v of this.state.values()) bytes += v.value.length;
    this.valueBytes = bytes;
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

  get(key: string): StateValue | undefined {
    return this.state.get(key);
  }

  /** Appends the ops as one batch (one group commit) and resolves once durable and applied. */
  async write(ops: WriteOp[]): Promise<WriteResult[]> {
    const log = this.log;
    if (!log || this.failed) throw new Error(`shard ${this.id} is not available: ${this.failed ?? "closed"}`);
    const first = log.reserve(ops.length);
    const now = Date.now();
    const buffers: Buffer[] = [];
    let bytes = 0;
    ops.forEach((o, i) => {
      const b = encodeEntry({
        lsn: first + i,
        timestamp: now,
        migrationTimestamp: this.meta.migrationTimestamp,
        op: o.op,
        shardId: this.id,
        key: o.key,
        value: o.value ?? Buffer.alloc(0),
      });
      buffers.push(b);
      bytes += b.length;
    });
    const batch: ShardBatch = { buffers, bytes, firstLsn: first, ops, results: [] };
    try {
      await log.append(batch);
    } catch (err) {
      // a failed write or fsync: the file's content is unknown; stop serving the shard
      if (!this.failed) {
        this.failed = `log write failed: ${(err as Error).message}`;
        this.opts.warn(`shard ${this.id}: ${this.failed}`);
      }
      throw err;
    }
    return batch.results;
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
      if (!this.failed) {
        this.failed = `log write failed: ${(err as Error).message}`;
        this.opts.warn(`shard ${this.id}: ${this.failed}`);
      }
      throw err;
    }
    return first + entries.length - 1;
  }

  private applyDurable(b: ShardBatch): void {
    b.ops.forEach((o, i) => {
      const lsn = b.firstLsn + i;
      const prev = this.state.get(o.key);
      if (prev) this.valueBytes -= prev.value.length;
      if (o.op === "put") {
        const value = o.value ?? Buffer.alloc(0);
        this.state.set(o.key, { value, lsn, timestamp: b.timestamps?.[i] ?? Date.now() });
        this.valueBytes += value.length;
        b.results.push({ lsn });
      } else {
        this.state.delete(o.key);
        b.results.push({ lsn, existed: prev !== undefined });
      }
    });
    this.bytesSinceSnapshot += b.bytes;
    // a migration target keeps its whole copied log until it is activated (the prepare checksum reads it)
    const copying = this.meta.state === "receiving" || this.meta.state === "prepared";
    if (this.bytesSinceSnapshot >= this.opts.snapshotBytes && !this.snapshotting && !copying)
      void this.snapshot();
  }

  /** Writes a snapshot of the state as of the last durable LSN, then deletes the log files it covers. */
  async snapshot(): Promise<number | undefined> {
    const log = this.log;
    if (!log || this.failed || this.snapshotting) return undefined;
    this.snapshotting = true;
    this.bytesSinceSnapshot = 0;
    try {
      const lsn = log.durableLsn;
      // a copy of the references, taken synchronously: the state at exactly `lsn` (values are never mutated)
      const entries = Array.from(this.state);
      log.requestRotation();
      await writeSnapshot(this.dir, this.id, lsn, entries);
      for (const name of readdirSync(this.dir)) {
        const s = parseSnapshotFileName(name);
        if (s !== undefined && s < lsn) await rm(join(this.dir, name), { force: true });
      }
      this.snapshotLsn = lsn;
      await log.compact(lsn);
      return lsn;
    } catch (err) {
      this.opts.warn(`shard ${this.id}: snapshot failed (the log is kept): ${(err as Error).message}`);
      return undefined;
    } finally {
      this.snapshotting = false;
    }
  }

  /** Durably records a new metadata state (epoch, owner state, redirect). */
  setMeta(next: Partial<Omit<ShardMeta, "shardId">>): void {
    const meta: ShardMeta = { ...this.meta, ...next };
    if (meta.state !== "not-owned") delete meta.redirect;
    writeMeta(this.dir, meta);
    this.meta = meta;
  }

  /** Records a higher epoch before serving it. */
  raiseEpoch(epoch: number): void {
    if (epoch > this.meta.epoch) this.setMeta({ epoch });
  }

  fence(epoch: number): void {
    this.setMeta({ epoch: Math.max(epoch, this.meta.epoch), state: "fenced" });
  }

  unfence(epoch: number): void {
    this.setMeta({ epoch: Math.max(epoch, this.meta.epoch), state: "owned" });
  }

  release(epoch: number, redirect: RedirectHint): void {
    this.setMeta({ epoch: Math.max(epoch, this.meta.epoch, redirect.epoch), state: "not-owned", redirect });
  }

  assign(epoch: number, ranges: SegmentRange[] | undefined, migrationTimestamp: number | undefined): void {
    this.setMeta({
      epoch,
      state: "owned",
      ranges: ranges ?? this.meta.ranges,
      migrationTimestamp: migrationTimestamp ?? this.meta.migrationTimestamp,
    });
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
