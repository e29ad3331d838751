/**
 * The copy part of a live migration (issue 8; the protocol is in migrate.ts,
 * the agent endpoints in src/agent/replication.ts and snapshot-transfer.ts).
 *
 * The target gets the source's shard as "a base, then the log after it":
 * the base is nothing (the log from LSN 1) or, when the source's log was
 * compacted behind a snapshot, that snapshot, streamed from the source to the
 * target through this process without being held in memory. If the source
 * compacts again during the copy (it holds compaction while it is read, so
 * only after a restart or a long stall), the newer snapshot replaces the copy.
 *
 * Pre-copy loops until the lag is small enough that the catch-up after the
 * fence — which the writers wait for — takes about PAUSE_BUDGET_MS at the copy
 * rate measured so far (the adaptive threshold), or until the lag stops
 * shrinking for maxRounds rounds (a writer faster than the copy: fence anyway).
 * While the target appends one chunk, the next is already being read from the
 * source.
 */
import type { NodeInfo } from "../engine/location-map.js";
import type { MigrationPhase } from "../engine/migration.js";
import { failText, readAll, tryJson, type AgentResponse, type AgentRpc } from "./agent-rpc.js";

/** What a progress display gets after each step of the copy. */
export interface CopyProgress {
  phase: MigrationPhase;
  /** Bytes sent to the target so far (snapshot and log). */
  bytes: number;
  /** An estimate of the bytes the copy moves in all (the source's log and snapshot when the copy began). */
  bytesTotal?: number;
  /** Entries the target is behind the source (as of the last answer from the source). */
  lag: number;
  entries: number;
  /** "snapshot" while a snapshot streams, "log" otherwise. */
  step: "snapshot" | "log";
}

/** The catch-up after the fence should take about this long at the measured copy rate (ms). */
export const PAUSE_BUDGET_MS = 10;
const MIN_ADAPTIVE_THRESHOLD = 32;
const MAX_ADAPTIVE_THRESHOLD = 5000;
/** The floor of MIN_ADAPTIVE_THRESHOLD entries holds while they carry no more than this. */
const MIN_THRESHOLD_BYTES = 1024 * 1024;

/**
 * The lag (entries) below which pre-copy stops and the source is fenced: what the copy does in
 * PAUSE_BUDGET_MS at `rate` entries/ms, at least MIN_ADAPTIVE_THRESHOLD entries (a rate measured
 * on a few chunks may be low) — but no more entries than MIN_THRESHOLD_BYTES holds at the average
 * entry size copied so far: 31 entries of 16 MiB were left to the catch-up, a write pause of
 * seconds instead of milliseconds. At least 1 (0: stop only once nothing is left).
 */
export function preCopyThreshold(rate: number, avgEntryBytes: number): number {
  const floor =
    avgEntryBytes > 0
      ? Math.max(1, Math.min(MIN_ADAPTIVE_THRESHOLD, Math.floor(MIN_THRESHOLD_BYTES / avgEntryBytes)))
      : MIN_ADAPTIVE_THRESHOLD;
  return Math.min(MAX_ADAPTIVE_THRESHOLD, Math.max(floor, Math.floor(rate * PAUSE_BUDGET_MS)));
}
/** One catch-up append carries at most about this much (the target takes a log chunk plus a value). */
const MAX_APPEND_BYTES = 8 * 1024 * 1024;
/** A source that compacts its log this many times during one copy is given up on. */
const MAX_SNAPSHOT_INSTALLS = 3;

export interface ShardCopierOptions {
  rpc: AgentRpc;
  source: NodeInfo;
  target: NodeInfo;
  shardId: string;
  /** The source epoch (the target's copy is at this epoch until it is activated). */
  epoch: number;
  /** The migration's id: the target refuses a copy step for a copy another migration received. */
  migration: string;
  /** Entries per log request (default 5000; the source also caps a chunk at 8 MiB). */
  batchEntries?: number;
  /** The journal's phase, for progress reports. */
  phase: () => MigrationPhase;
  /** Every byte and entry copied is counted here too (the journal record). */
  onCopied: (bytes: number, entries: number) => void;
  onProgress?: (p: CopyProgress) => void;
  log: (msg: string) => void;
  /** The error to throw for a refused step (migrate.ts aborts with its message). */
  fail: (msg: string) => Error;
  /** Why the pre-copy should stop now (an interrupt), thrown through `fail`; asked after each chunk. */
  stop?: () => string | undefined;
}

type Fetched = { ok: true; res: AgentResponse } | { ok: false; err: Error };

export class ShardCopier {
  /** The next LSN the target needs. */
  next = 1;
  /** LSN of the snapshot the copy is based on (0: the log from LSN 1). */
  base = 0;
  /** The source's last durable LSN at its last answer. */
  lastSourceLsn = 0;
  bytes = 0;
  entries = 0;
  /** Log requests made before the fence. */
  rounds = 0;
  snapshotsInstalled = 0;
  bytesTotal?: number;
  /** Entries copied per ms, smoothed over the chunks (0 until measured). */
  rate = 0;
  /** Bytes and entries of the log copied (not the snapshot): the average entry's size. */
  private logBytes = 0;
  private logEntries = 0;
  private prefetched?: { from: number; res: Promise<Fetched> };
  private readonly enc: string;
  private lastProgress = 0;

  constructor(private readonly o: ShardCopierOptions) {
    this.enc = encodeURIComponent(o.shardId);
  }

  private get lag(): number {
    return Math.max(0, this.lastSourceLsn - (this.next - 1));
  }

  private progress(step: "snapshot" | "log", force = true): void {
    if (!this.o.onProgress) return;
    const now = Date.now();
    if (!force && now - this.lastProgress < 100) return;
    this.lastProgress = now;
    this.o.onProgress({
      phase: this.o.phase(),
      bytes: this.bytes,
      bytesTotal: this.bytesTotal,
      lag: this.lag,
      entries: this.entries,
      step,
    });
  }

  /** Reads the source's size for the progress estimate; a failure leaves it unknown. */
  async estimate(): Promise<void> {
    const r = await this.o.rpc
      .json<{ logBytes?: number; lsn?: number }>(this.o.source.address, "GET", `/v1/shards/${this.enc}`)
      .catch(() => undefined);
    if (r?.status === 200 && typeof r.body.logBytes === "number") {
      this.bytesTotal = r.body.logBytes;
      if (typeof r.body.lsn === "number") this.lastSourceLsn = r.body.lsn;
    }
  }

  private fetchLog(from: number): Promise<Fetched> {
    return this.o.rpc
      .request(
        this.o.source.address,
        "GET",
        `/v1/shards/${this.enc}/log?from=${from}&max=${this.o.batchEntries ?? 5000}`,
      )
      .then(
        (res): Fetched => ({ ok: true, res }),
        (err: Error): Fetched => ({ ok: false, err }),
      );
  }

  /** Copies one chunk of the log (or the snapshot first, when the log is compacted); returns the lag. */
  async copyChunk(): Promise<number> {
    const from = this.next;
    const pre = this.prefetched;
    this.prefetched = undefined;
    const got = pre && pre.from === from ? await pre.res : await this.fetchLog(from);
    if (!got.ok) throw got.err;
    const r = got.res;
    if (r.status === 409 && errorCode(r.body) === "compacted") {
      await this.copySnapshot();
      return this.lag;
    }
    if (r.status !== 200)
      throw this.o.fail(failText(`source ${this.o.source.id} (log)`, r.status, tryJson(r.body)));
    this.lastSourceLsn = Number(r.headers["x-last-lsn"]);
    const n = Number(r.headers["x-entries"]);
    if (n > 0) {
      // read the next chunk while the target writes this one
      if (this.lastSourceLsn > from - 1 + n)
        this.prefetched = { from: from + n, res: this.fetchLog(from + n) };
      await this.append(r.body, n);
    }
    this.progress("log");
    return this.lag;
  }

  /** Streams the source's newest snapshot into the target; the log copy continues after it. */
  private async copySnapshot(): Promise<void> {
    if (this.snapshotsInstalled >= MAX_SNAPSHOT_INSTALLS)
      throw this.o.fail(
        `the source ${this.o.source.id} compacted its log ${this.snapshotsInstalled} times during the copy; try again when it writes less`,
      );
    const { rpc, source, target } = this.o;
    const src = await rpc.stream(source.address, "GET", `/v1/shards/${this.enc}/snapshot`);
    if (src.status !== 200) {
      const body = await readAll(src.body);
      throw this.o.fail(failText(`source ${source.id} (snapshot)`, src.status, tryJson(body)));
    }
    const lsn = Number(src.headers["x-snapshot-lsn"]);
    const size = Number(src.headers["content-length"]);
    const sum = String(src.headers["x-snapshot-checksum"]);
    this.lastSourceLsn = Math.max(this.lastSourceLsn, Number(src.headers["x-last-lsn"] ?? 0));
    // the total: this snapshot plus the log after it (about the log the source held at the start)
    this.bytesTotal = this.bytes + size + (this.bytesTotal ?? 0);
    this.o.log(`the source's log is compacted: copying its snapshot at LSN ${lsn} (${size} bytes) first`);
    const putting = rpc.stream(target.address, "PUT", `/v1/admin/shards/${this.enc}/snapshot`, {
      headers: {
        "content-type": "application/octet-stream",
        "content-length": String(size),
        "x-shard-epoch": String(this.o.epoch),
        "x-migration": this.o.migration,
        "x-snapshot-lsn": String(lsn),
        "x-snapshot-checksum": sum,
      },
      body: src.body,
    });
    // (counted as it flows: the stream is already piped into the upload, so no byte is missed)
    src.body.on("data", (c: Buffer) => {
      this.bytes += c.length;
      this.o.onCopied(c.length, 0);
      this.progress("snapshot", false);
    });
    const put = await putting;
    const answer = await readAll(put.body);
    if (put.status !== 200) {
      src.body.destroy();
      throw this.o.fail(failText(`target ${target.id} (snapshot)`, put.status, tryJson(answer)));
    }
    this.snapshotsInstalled++;
    this.base = lsn;
    this.next = lsn + 1;
    this.progress("snapshot");
  }

  /**
   * Copies until the lag is below the threshold: `lagThreshold` entries when
   * given, else what the copy does in PAUSE_BUDGET_MS at the rate measured.
   * Gives up converging after `maxRounds` rounds without progress once the
   * copy has first reached the source's end.
   */
  async preCopy(opts: { lagThreshold?: number; maxRounds?: number }): Promise<void> {
    const maxRounds = opts.maxRounds ?? 50;
    let reachedEnd = false;
    let stalled = 0;
    let best = Infinity;
    for (;;) {
      this.rounds++;
      const lag = await this.copyChunk();
      const stop = this.o.stop?.();
      if (stop) throw this.o.fail(stop);
      const threshold =
        opts.lagThreshold ??
        preCopyThreshold(this.rate, this.logEntries > 0 ? this.logBytes / this.logEntries : 0);
      if (lag < threshold) return;
      if (lag <= (this.o.batchEntries ?? 5000)) reachedEnd = true;
      if (!reachedEnd) continue;
      if (lag < best) {
        best = lag;
        stalled = 0;
      } else if (++stalled >= maxRounds) {
        this.o.log(
          `the lag stays at ${lag} entries (the writers outpace the copy); fencing anyway after ${stalled} rounds without progress`,
        );
        return;
      }
    }
  }

  /**
   * After the fence: copies up to the fenced LSN with one append to the
   * target (the writers wait for this). A chunk read ahead before the fence is
   * still good — entries never change once durable — so only the entries
   * after it are read again; "the source moved" is judged from answers given
   * after the fence. Returns the entries caught up.
   */
  async catchUp(fencedLsn: number): Promise<number> {
    const t0 = performance.now();
    const bodies: Buffer[] = [];
    let bytes = 0;
    let from = this.next;
    const flush = async () => {
      if (bodies.length === 0) return;
      const body = bodies.length === 1 ? bodies[0] : Buffer.concat(bodies, bytes);
      await this.append(body, from - this.next);
      bodies.length = 0;
      bytes = 0;
    };
    const pre = this.prefetched;
    this.prefetched = undefined;
    if (pre && pre.from === from) {
      const got = await pre.res;
      if (got.ok && got.res.status === 200 && Number(got.res.headers["x-entries"]) > 0) {
        bodies.push(got.res.body);
        bytes += got.res.body.length;
        from += Number(got.res.headers["x-entries"]);
      }
    }
    while (from - 1 < fencedLsn) {
      const got = await this.fetchLog(from);
      if (!got.ok) throw got.err;
      const r = got.res;
      if (r.status !== 200)
        throw this.o.fail(failText(`source ${this.o.source.id} (log)`, r.status, tryJson(r.body)));
      this.lastSourceLsn = Number(r.headers["x-last-lsn"]);
      if (this.lastSourceLsn !== fencedLsn)
        throw this.o.fail(`the fenced source moved from LSN ${fencedLsn} to ${this.lastSourceLsn}`);
      const n = Number(r.headers["x-entries"]);
      if (n === 0)
        throw this.o.fail(`the source sent no entries from LSN ${from} though it is fenced at ${fencedLsn}`);
      if (bytes + r.body.length > MAX_APPEND_BYTES) await flush();
      bodies.push(r.body);
      bytes += r.body.length;
      from += n;
    }
    if (from - 1 > fencedLsn)
      throw this.o.fail(`the copy reached LSN ${from - 1}, beyond the fenced LSN ${fencedLsn}`);
    const entries = from - this.next;
    await flush();
    this.lastSourceLsn = fencedLsn;
    this.progress("log");
    this.o.log(`caught up ${entries} entries in ${Math.round(performance.now() - t0)} ms`);
    return entries;
  }

  /** Appends `n` entries (from this.next on) to the target's copy. */
  private async append(body: Buffer, n: number): Promise<void> {
    const t0 = performance.now();
    const a = await this.o.rpc.request(this.o.target.address, "POST", `/v1/admin/shards/${this.enc}/append`, {
      headers: {
        "content-type": "application/octet-stream",
        "x-shard-epoch": String(this.o.epoch),
        "x-migration": this.o.migration,
      },
      body,
    });
    if (a.status !== 200)
      throw this.o.fail(failText(`target ${this.o.target.id} (append)`, a.status, tryJson(a.body)));
    const ms = Math.max(0.05, performance.now() - t0);
    this.rate = this.rate === 0 ? n / ms : 0.7 * this.rate + 0.3 * (n / ms);
    this.next += n;
    this.bytes += body.length;
    this.entries += n;
    this.logBytes += body.length;
    this.logEntries += n;
    this.o.onCopied(body.length, n);
  }

  /** Drops a read still in flight (abort). */
  discard(): void {
    this.prefetched = undefined;
  }
}

function errorCode(body: Buffer): string | undefined {
  return (tryJson(body) as { error?: string } | undefined)?.error;
}
