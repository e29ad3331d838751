/**
 * One shard's append-only log on disk: files `log-<first LSN, 20 digits>.seg`
 * of bounded size, appended through a group commit (one O_DSYNC write, i.e.
 * write + fdatasync, per batch), recovered on open.
 *
 * Recovery (see scan.ts): every file is scanned in LSN order; the LSNs must run
 * without a gap from the snapshot (or 1) to the end. A torn tail of the LAST
 * file is truncated at the last valid entry and reported through `warn`;
 * anything else that does not decode — a bad entry followed by valid ones, a
 * short or bad entry at the end of an older file, a missing file — throws
 * LogCorrupt and the shard is refused: nothing past it is served and nothing
 * is deleted.
 */
import {
  closeSync,
  constants,
  fsyncSync,
  ftruncateSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writev,
} from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { fsyncDir } from "./fs-util.js";
import { GroupCommit } from "./group-commit.js";
import type { LogEntry } from "./log-format.js";
import { scanLog } from "./scan.js";

/**
 * Log files are opened with O_DSYNC: a write returns only once its data (and
 * the file size) are on stable storage — write + fdatasync in one system call,
 * so a group commit costs one trip through the thread pool instead of two.
 * On a loaded machine each trip is a scheduling delay, so this halves them.
 */
const APPEND_FLAGS = constants.O_RDWR | constants.O_DSYNC;
const CREATE_FLAGS = APPEND_FLAGS | constants.O_CREAT | constants.O_EXCL;

function writevAsync(fd: number, buffers: Buffer[], position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    writev(fd, buffers, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

export class LogCorrupt extends Error {}

export interface LogFile {
  firstLsn: number;
  path: string;
  size: number;
}

export interface LogBatch {
  /** Encoded entries, LSNs firstLsn, firstLsn+1, … */
  buffers: Buffer[];
  bytes: number;
  firstLsn: number;
}

export interface ShardLogOptions {
  /** A file is sealed and a new one started when a batch would take it past this. */
  maxFileBytes: number;
  warn: (msg: string) => void;
  /** Called after each fsync, in LSN order, before the batch's writers are acknowledged. */
  applyDurable: (batch: LogBatch) => void;
  onFlush?: (entries: number, bytes: number, fsyncMs: number) => void;
}

export function logFileName(firstLsn: number): string {
  return `log-${String(firstLsn).padStart(20, "0")}.seg`;
}

export function parseLogFileName(name: string): number | undefined {
  const m = /^log-(\d{20})\.seg$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

export function listLogFiles(dir: string): LogFile[] {
  const out: LogFile[] = [];
  for (const name of readdirSync(dir)) {
    const first = parseLogFileName(name);
    if (first === undefined) continue;
    const path = join(dir, name);
    out.push({ firstLsn: first, path, size: statSync(path).size });
  }
  return out.sort((a, b) => a.firstLsn - b.firstLsn);
}

/**
 * Joins neighbouring buffers that are consecutive views of the same memory
 * into one view (no copy): the entries of one received chunk become one buffer.
 */
export function coalesceBuffers(buffers: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < buffers.length) {
    const first = buffers[i];
    let end = first.byteOffset + first.length;
    let j = i + 1;
    while (j < buffers.length && buffers[j].buffer === first.buffer && buffers[j].byteOffset === end) {
      end += buffers[j].length;
      j++;
    }
    out.push(j === i + 1 ? first : Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset));
    i = j;
  }
  return out;
}

export class ShardLog {
  readonly files: LogFile[];
  /** LSN of the last durable entry. */
  durableLsn: number;
  /** LSN given to the last entry submitted. */
  assignedLsn: number;
  private fd: number;
  private rotateNext = false;
  private readonly commit: GroupCommit<LogBatch>;

  private constructor(
    readonly dir: string,
    files: LogFile[],
    fd: number,
    lastLsn: number,
    private readonly opts: ShardLogOptions,
  ) {
    this.files = files;
    this.fd = fd;
    this.durableLsn = lastLsn;
    this.assignedLsn = lastLsn;
    this.commit = new GroupCommit<LogBatch>((batches) => this.flush(batches));
  }

  /**
   * Recovers the log of `dir`: replays every entry above `afterLsn` (the
   * snapshot's LSN, 0 without one) through onEntry, truncates a torn tail.
   */
  static recover(
    dir: string,
    afterLsn: number,
    onEntry: (e: LogEntry) => void,
    opts: ShardLogOptions,
  ): ShardLog {
    const files = listLogFiles(dir);
    let last = afterLsn;
    if (files.length > 0) {
      if (files[0].firstLsn > afterLsn + 1) {
        throw new LogCorrupt(
          `${files[0].path} starts at LSN ${files[0].firstLsn} but the snapshot ends at ${afterLsn}: entries are missing`,
        );
      }
      last = files[0].firstLsn - 1;
    }
    for (let i = 0; i < files.length; i++) {
      const f = files[i];
      if (f.firstLsn !== last + 1) {
        throw new LogCorrupt(
          `${f.path} starts at LSN ${f.firstLsn}, expected ${last + 1}: a log file is missing or damaged`,
        );
      }
      const buf = readFileSync(f.path);
      const r = scanLog(buf, last, (e) => {
        if (e.lsn > afterLsn) onEntry(e);
      });
      const isLast = i === files.length - 1;
      if (r.problem?.kind === "corrupt") {
        throw new LogCorrupt(
          `${f.path}: corrupt entry at offset ${r.problem.offset} (${r.problem.why}) followed by a valid entry at offset ${r.problem.validEntryAt}; refusing to serve past it`,
        );
      }
      if (r.problem?.kind === "torn-tail") {
        if (!isLast) {
          throw new LogCorrupt(
            `${f.path}: bad entry at offset ${r.problem.offset} (${r.problem.why}) in a sealed file followed by newer files`,
          );
        }
        opts.warn(
          `recovery: ${f.path}: torn tail at offset ${r.problem.offset} (${r.problem.why}); truncating, ${r.problem.droppedBytes} bytes dropped; last valid LSN ${r.lastLsn}`,
        );
        const tfd = openSync(f.path, "r+");
        try {
          ftruncateSync(tfd, r.validEnd);
          fsyncSync(tfd);
        } finally {
          closeSync(tfd);
        }
        f.size = r.validEnd;
      }
      last = r.lastLsn;
    }
    if (last < afterLsn)
      throw new LogCorrupt(`the log ends at LSN ${last}, below the snapshot's ${afterLsn}`);
    let fd: number;
    if (files.length === 0) {
      const path = join(dir, logFileName(last + 1));
      fd = openSync(path, CREATE_FLAGS, 0o600);
      fsyncSync(fd);
      files.push({ firstLsn: last + 1, path, size: 0 });
    } else {
      fd = openSync(files[files.length - 1].path, APPEND_FLAGS);
    }
    return new ShardLog(dir, files, fd, last, opts);
  }

  /** Gives the next `n` LSNs (the caller encodes its entries with them, then calls append). */
  reserve(n: number): number {
    const first = this.assignedLsn + 1;
    this.assignedLsn += n;
    return first;
  }

  /** Appends a batch; resolves after its fsync and after applyDurable ran for it. */
  append(batch: LogBatch): Promise<void> {
    return this.commit.submit(batch);
  }

  /** Starts a new file with the next batch (so that a snapshot lets the current one be deleted). */
  requestRotation(): void {
    this.rotateNext = true;
  }

  get totalBytes(): number {
    let n = 0;
    for (const f of this.files) n += f.size;
    return n;
  }

  get inFlight(): number {
    return this.commit.pending;
  }

  idle(): Promise<void> {
    return this.commit.idle();
  }

  private async flush(batches: LogBatch[]): Promise<void> {
    const buffers: Buffer[] = [];
    let bytes = 0;
    let entries = 0;
    for (const b of batches) {
      for (const x of b.buffers) buffers.push(x);
      bytes += b.bytes;
      entries += b.buffers.length;
    }
    let active = this.files[this.files.length - 1];
    let newFile = false;
    if (active.size > 0 && (this.rotateNext || active.size + bytes > this.opts.maxFileBytes)) {
      // the active file's content is already durable (every batch is fsynced before the next)
      closeSync(this.fd);
      const firstLsn = batches[0].firstLsn;
      const path = join(this.dir, logFileName(firstLsn));
      this.fd = openSync(path, CREATE_FLAGS, 0o600);
      active = { firstLsn, path, size: 0 };
      this.files.push(active);
      this.rotateNext = false;
      newFile = true;
    }
    const t0 = performance.now();
    // every O_DSYNC writev is a trip to the disk: entries that lie side by side in memory (a
    // replicated chunk) go as one piece, and more pieces than one writev takes (IOV_MAX) as one copy
    const pieces = coalesceBuffers(buffers);
    const iov = pieces.length > 1024 ? [Buffer.concat(pieces, bytes)] : pieces;
    let pos = active.size;
    for (let i = 0; i < iov.length; i += 1024) {
      const part = iov.slice(i, i + 1024);
      let want = 0;
      for (const p of part) want += p.length;
      let written = await writevAsync(this.fd, part, pos);
      while (written < want) {
        // short write: write the rest
        const rest = Buffer.concat(part).subarray(written);
        written += await writevAsync(this.fd, [rest], pos + written);
      }
      pos += want;
    }
    // (O_DSYNC: the writes above are durable when they return)
    if (newFile) await fsyncDir(this.dir);
    active.size = pos;
    this.opts.onFlush?.(entries, bytes, performance.now() - t0);
    for (const b of batches) {
      this.durableLsn = b.firstLsn + b.buffers.length - 1;
      this.opts.applyDurable(b);
    }
  }

  /** Deletes the files whose entries are all at or below `lsn` (covered by a snapshot). Never the active file. */
  async compact(lsn: number): Promise<number> {
    let removed = 0;
    while (this.files.length > 1 && this.files[1].firstLsn <= lsn + 1) {
      const f = this.files.shift()!;
      await rm(f.path, { force: true });
      removed++;
    }
    if (removed) await fsyncDir(this.dir);
    return removed;
  }

  async close(): Promise<void> {
    await this.idle();
    closeSync(this.fd);
  }
}
