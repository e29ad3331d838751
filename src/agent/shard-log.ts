/**
 * One shard's append-only log on disk: files `log-<first LSN, 20 digits>.seg`
 * of bounded size, appended through a group commit (one O_DSYNC write, i.e.
 * write + fdatasync, per batch), recovered on open.
 *
 * Recovery (see scan.ts): every file is scanned in LSN order; the LSNs must run
 * without a gap from the snapshot (or 1) to the end. Files wholly at or below
 * the snapshot (a compaction that did not finish) are not read, and deleted.
 * A torn tail of the LAST file is truncated at the last valid entry and
 * reported through `warn`; a tail of zeros only (the space written ahead,
 * below) is trimmed from any file, and said so. Anything else that does not decode — a bad entry followed
 * by valid ones, a short or bad entry at the end of an older file, a missing
 * file — throws LogCorrupt and the shard is refused: nothing past it is served
 * and nothing is deleted. (A sealed file whose zero tail hid real entries
 * would leave a gap before the next file's first LSN: that is refused too.)
 *
 * Space written ahead. An O_DSYNC write that extends a file must also make
 * its new size durable (a journal commit on ext4): measured here, 0.35 ms at
 * the median against 0.18–0.22 ms for the same write into blocks already
 * written. So when a group commit of a log written fast has to extend its
 * file, the same write carries zeros after the entries — a twentieth of a
 * second of the log's recent write volume, 64–512 KiB, never past
 * maxFileBytes — and the next group commits overwrite them instead of
 * extending the file. (Writing the zeros in the background instead, beside
 * the group commits, made their tail latency worse: the two writes queue for
 * the same disk.) A log written slower than 128 KiB/s writes no zeros. They
 * are trimmed when the file is sealed and when the log is closed; after a
 * crash, recovery trims them.
 */
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writev,
} from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { fsyncDirSync } from "../store/embedded.js";
import { fsyncDir, NO_ROOM } from "./fs-util.js";
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
/** Space written ahead (see the file comment): the write volume that earns it, its bounds, the zeros. */
const AHEAD_MIN_RATE = 128 * 1024;
const AHEAD_MIN = 64 * 1024;
const AHEAD_MAX = 512 * 1024;
const AHEAD_SECONDS = 0.05;
const AHEAD_ALIGN = 4096;
const ZEROS = Buffer.alloc(AHEAD_MAX + AHEAD_ALIGN);
/** The most buffers one writev takes (Linux's IOV_MAX). */
const IOV_MAX = 1024;
const CREATE_FLAGS = APPEND_FLAGS | constants.O_CREAT | constants.O_EXCL;

function truncateDurably(path: string, size: number): void {
  const fd = openSync(path, "r+");
  try {
    ftruncateSync(fd, size);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fs.writev as a promise of the bytes written. */
export function writevAsync(fd: number, buffers: Buffer[], position: number): Promise<number> {
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
  /** Milliseconds, for the write volume that sets the space written ahead (tests); performance.now by default. */
  clock?: () => number;
  /** fs.writev as a promise of the bytes written (tests stand in a failing disk); the real one by default. */
  writev?: (fd: number, buffers: Buffer[], position: number) => Promise<number>;
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
  /** Bytes of the active file written so far, the zeros written ahead included (≥ its size). */
  private written: number;
  /** Bytes appended since `rateSince` (ms), for the amount to write ahead. */
  private rateBytes = 0;
  private rateSince: number;
  /** Zeros to write after the entries when a group commit extends the file (0: none). */
  private aheadBytes = 0;

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
    this.written = files[files.length - 1].size;
    this.rateSince = this.now();
  }

  private now(): number {
    return this.opts.clock ? this.opts.clock() : performance.now();
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
    const all = listLogFiles(dir);
    // files whose every entry is at or below the snapshot (the next file starts at or below
    // afterLsn + 1) are not needed: a compaction deletes them, oldest first, and one a crash or an
    // error cut short can leave some, even with a gap (deletions reach the disk in any order until
    // the directory is fsynced). They are not read, and are deleted below with the trims.
    let start = 0;
    while (start + 1 < all.length && all[start + 1].firstLsn <= afterLsn + 1) start++;
    const covered = all.slice(0, start);
    const files = all.slice(start);
    // tails to cut, cut only once every file has been read: a refused log is left as it was
    const trims: { file: LogFile; size: number; why: string }[] = [];
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
      if (r.problem?.kind === "torn-tail" && r.problem.allZero) {
        trims.push({
          file: f,
          size: r.validEnd,
          why: `recovery: ${f.path}: ${r.problem.droppedBytes} bytes of zeros after the last entry (LSN ${r.lastLsn}): space written ahead of the log, or a write that never completed; trimmed`,
        });
      } else if (r.problem?.kind === "torn-tail") {
        if (!isLast) {
          throw new LogCorrupt(
            `${f.path}: bad entry at offset ${r.problem.offset} (${r.problem.why}) in a sealed file followed by newer files`,
          );
        }
        trims.push({
          file: f,
          size: r.validEnd,
          why: `recovery: ${f.path}: torn tail at offset ${r.problem.offset} (${r.problem.why}); truncating, ${r.problem.droppedBytes} bytes dropped; last valid LSN ${r.lastLsn}`,
        });
      }
      last = r.lastLsn;
    }
    if (last < afterLsn)
      throw new LogCorrupt(`the log ends at LSN ${last}, below the snapshot's ${afterLsn}`);
    for (const t of trims) {
      opts.warn(t.why);
      truncateDurably(t.file.path, t.size);
      t.file.size = t.size;
    }
    for (const f of covered) {
      opts.warn(
        `recovery: ${f.path}: every entry is at or below the snapshot's LSN ${afterLsn} (left by a compaction that did not finish); deleted`,
      );
      rmSync(f.path, { force: true });
    }
    if (covered.length > 0) fsyncDirSync(dir);
    let fd: number;
    if (files.length === 0) {
      const path = join(dir, logFileName(last + 1));
      fd = openSync(path, CREATE_FLAGS, 0o600);
      fsyncSync(fd);
      // the file's directory entry too: acknowledged writes go into it
      fsyncDirSync(dir);
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

  /**
   * Gives back the last `n` LSNs reserve handed out, when the caller could not encode its entries
   * (nothing may have been reserved since: the caller encodes synchronously right after reserve).
   * Without this, a refused batch would leave a gap that recovery reads as a torn tail.
   */
  unreserve(first: number, n: number): void {
    if (this.assignedLsn !== first + n - 1)
      throw new Error(
        `cannot give back LSNs ${first}..${first + n - 1}: ${this.assignedLsn} was reserved since`,
      );
    this.assignedLsn = first - 1;
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
      // the active file's content is already durable (every batch is fsynced before the next);
      // the zeros written ahead are trimmed before the file is sealed
      this.trimAhead();
      const firstLsn = batches[0].firstLsn;
      const path = join(this.dir, logFileName(firstLsn));
      // the new file is opened before the old one is closed: if the open fails, this.fd still
      // names the old file, never a closed number that another file may be given next
      const fd = openSync(path, CREATE_FLAGS, 0o600);
      closeSync(this.fd);
      this.fd = fd;
      active = { firstLsn, path, size: 0 };
      this.files.push(active);
      this.rotateNext = false;
      this.written = 0;
      newFile = true;
    }
    const t0 = performance.now();
    // every O_DSYNC writev is a trip to the disk: entries that lie side by side in memory (a
    // replicated chunk) go as one piece, and more pieces than one writev takes (IOV_MAX) as one copy
    const pieces = coalesceBuffers(buffers);
    const iov = pieces.length > IOV_MAX ? [Buffer.concat(pieces, bytes)] : pieces;
    const pos = active.size;
    const end = pos + bytes;
    // extending the file anyway: zeros after the entries, for the next group commits to land in
    let zeros: Buffer | undefined;
    if (end > this.written && this.aheadBytes > 0) {
      const upTo = Math.min(
        Math.ceil((end + this.aheadBytes) / AHEAD_ALIGN) * AHEAD_ALIGN,
        this.opts.maxFileBytes,
      );
      if (upTo > end) zeros = ZEROS.subarray(0, upTo - end);
    }
    let zerosWritten = 0;
    const writevFn = this.opts.writev ?? writevAsync;
    let written: number;
    if (zeros && iov.length < IOV_MAX) {
      // the zeros ride with the entries, and only as far as the disk takes them: a disk with
      // room for the entries and not for the zeros still takes the entries
      try {
        written = await writevFn(this.fd, [...iov, zeros], pos);
        zerosWritten = Math.max(0, written - bytes);
        written = Math.min(written, bytes);
      } catch (err) {
        // no room for the zeros (nothing written): once more without them; any other failure fails the log
        if (!NO_ROOM.has((err as NodeJS.ErrnoException).code ?? "")) throw err;
        written = await writevFn(this.fd, iov, pos);
      }
    } else {
      written = await writevFn(this.fd, iov, pos);
    }
    while (written < bytes) {
      // short write: write the rest
      const rest = Buffer.concat(iov).subarray(written);
      written += await writevFn(this.fd, [rest], pos + written);
    }
    // (O_DSYNC: the writes above are durable when they return)
    if (newFile) await fsyncDir(this.dir);
    active.size = end;
    if (end + zerosWritten > this.written) this.written = end + zerosWritten;
    this.measureRate(bytes);
    this.opts.onFlush?.(entries, bytes, performance.now() - t0);
    for (const b of batches) {
      this.durableLsn = b.firstLsn + b.buffers.length - 1;
      this.opts.applyDurable(b);
    }
  }

  /**
   * Deletes the files whose entries are all at or below `lsn` (covered by a snapshot), oldest first.
   * Never the active file. A file leaves the list only once it is deleted: one that cannot be (an
   * error) stays first in it, for the next compaction to delete before any newer file, so the files
   * left never have a gap.
   */
  async compact(lsn: number): Promise<number> {
    let removed = 0;
    try {
      while (this.files.length > 1 && this.files[1].firstLsn <= lsn + 1) {
        await rm(this.files[0].path, { force: true });
        this.files.shift();
        removed++;
      }
    } finally {
      if (removed) await fsyncDir(this.dir);
    }
    return removed;
  }

  async close(): Promise<void> {
    await this.idle();
    if (this.fd < 0) return;
    try {
      this.trimAhead();
    } catch (err) {
      // the zeros stay: recovery trims them
      this.opts.warn(
        `log ${this.dir}: cannot trim the zeros after the last entry: ${(err as Error).message}`,
      );
    }
    closeSync(this.fd);
    this.fd = -1;
  }

  /** Bytes of zeros written after the active file's entries (for tests). */
  get zerosAhead(): number {
    return this.written - this.files[this.files.length - 1].size;
  }

  /** After a flush of `bytes`: every second, sets the zeros to write ahead from the write volume. */
  private measureRate(bytes: number): void {
    this.rateBytes += bytes;
    const now = this.now();
    if (now - this.rateSince < 1000) return;
    const rate = (this.rateBytes * 1000) / (now - this.rateSince);
    this.aheadBytes =
      rate < AHEAD_MIN_RATE ? 0 : Math.min(AHEAD_MAX, Math.max(AHEAD_MIN, rate * AHEAD_SECONDS));
    this.rateBytes = 0;
    this.rateSince = now;
  }

  /** Cuts the active file back to its entries, durably (before it is sealed or closed). */
  private trimAhead(): void {
    const size = this.files[this.files.length - 1].size;
    // the file's own size too: a failed write may have left part of its zeros
    if (this.written > size || fstatSync(this.fd).size > size) {
      ftruncateSync(this.fd, size);
      fsyncSync(this.fd);
      this.written = size;
    }
  }
}
