/**
 * The embedded location store: the map in one file under the data directory,
 * so the whole tool works on one machine without Consul.
 *
 * - Written atomically: a temporary file is written and fsynced, renamed over
 *   the old one, and the directory fsynced; a crash leaves the old or the new
 *   map, never a mix.
 * - Checksummed: a truncated or altered file is refused with a clear error.
 * - Single writer: a compare-and-set holds `location-map.lock` (created
 *   exclusively, holding the writer's pid); a lock whose pid is gone is stale
 *   and taken over.
 */
import {
  accessSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  fstatSync,
  fsyncSync,
  linkSync,
  lstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { randomBytes } from "node:crypto";
import { basename, dirname, isAbsolute, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  CorruptLocationMapError,
  errorMessage,
  PreconditionError,
  UserError,
  UsageError,
} from "../errors.js";
import { firstNonDirectory, makeDirs, PATH_REASONS } from "../fs-paths.js";
import { readAtMost } from "../input-file.js";
import { fnv1a64Bytes } from "../engine/hash.js";
import { validateMap, type LocationMap, type VersionedMap } from "../engine/location-map.js";
import { checkRecord, endedBeyondHistory, looksLikeRecord } from "../engine/migration.js";
import type {
  CasResult,
  LocationStore,
  MigrationPutResult,
  MigrationWrite,
  StoredMigration,
} from "../engine/ports.js";

const FILE = "location-map.json";
const LOCK = "location-map.lock";
const MEMORY = "autopilot-memory.json";
/** The autopilot's memory is kept to what one Consul value holds (512 KiB), in either store. */
const MAX_MEMORY_BYTES = 512 * 1024;

interface StoredFile {
  format: "shardctl-location-map";
  version: number;
  checksum: string;
  map: LocationMap;
  /**
   * The migration journal, in the same file as the map so that the commit
   * point (map + record) is one atomic rename. Its own checksum: journal
   * writes do not change the map version.
   */
  journal?: { checksum: string; records: StoredMigration[] };
}

/** The embedded store's map file exists but is damaged: what `init --force` may replace. */
export class CorruptMapError extends CorruptLocationMapError {
  constructor(
    readonly file: string,
    why: string,
  ) {
    super(`the location map ${file} is corrupt (${why}); nothing was read or written`, why, {
      hint: "restore the file from a backup, or re-create the layout with `shardctl init --force` (it keeps a copy of the damaged file)",
    });
    this.name = "CorruptMapError";
  }
}

/** The version a damaged map file still states (0 when it states none), so that versions keep rising. */
function salvagedVersion(file: string): number {
  try {
    const v = (JSON.parse(readFileSync(file, "utf8")) as { version?: unknown } | null)?.version;
    return Number.isSafeInteger(v) && (v as number) > 0 ? (v as number) : 0;
  } catch {
    return 0;
  }
}

export function checksumOf(version: number, map: LocationMap): string {
  return fnv1a64Bytes(new TextEncoder().encode(JSON.stringify({ version, map })));
}

function journalChecksum(records: StoredMigration[]): string {
  return fnv1a64Bytes(new TextEncoder().encode(JSON.stringify(records)));
}

export class EmbeddedStore implements LocationStore {
  readonly kind = "embedded" as const;
  readonly file: string;
  private readonly lockFile: string;

  constructor(readonly dataDir: string) {
    this.file = join(dataDir, FILE);
    this.lockFile = join(dataDir, LOCK);
  }

  async load(): Promise<VersionedMap | null> {
    const f = this.readFile();
    return f && { version: f.version, map: f.map };
  }

  private readFile(): StoredFile | null {
    if (!existsSync(this.file)) {
      // no map, unless the data directory cannot hold one: a file there (or above it) is not an
      // empty store (status said "no map yet", predict forecast from nothing)
      if (firstNonDirectory(this.dataDir) !== undefined)
        throw dataDirError(this.dataDir, Object.assign(new Error("not a directory"), { code: "ENOTDIR" }));
      return null;
    }
    let text: string;
    try {
      text = readFileSync(this.file, "utf8");
    } catch (err) {
      throw new UserError(`cannot read the location map ${this.file}: ${(err as Error).message}`);
    }
    const corrupt = (why: string) => new CorruptMapError(this.file, why);
    let parsed: StoredFile;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw corrupt("not JSON: truncated or overwritten");
    }
    if (!parsed || parsed.format !== "shardctl-location-map" || !Number.isInteger(parsed.version)) {
      throw corrupt("not a shardctl location map file");
    }
    // versions start at 1 and grow by one per write: another one (0, negative, past 2^53, where
    // version + 1 is version again and a compare-and-set could not tell two writes apart) is damage
    if (!Number.isSafeInteger(parsed.version) || parsed.version < 1)
      throw corrupt(`version ${parsed.version} is not a whole number from 1 to 2^53 − 1`);
    if (parsed.checksum !== checksumOf(parsed.version, parsed.map)) throw corrupt("checksum mismatch");
    try {
      validateMap(parsed.map);
    } catch (err) {
      throw corrupt((err as Error).message);
    }
    if (parsed.journal !== undefined) {
      const j = parsed.journal;
      if (!j || !Array.isArray(j.records)) throw corrupt("the migration journal is not a list");
      if (j.checksum !== journalChecksum(j.records)) throw corrupt("migration journal checksum mismatch");
    }
    return parsed;
  }

  private writeFile(version: number, map: LocationMap, records: StoredMigration[]): void {
    const body: StoredFile = {
      format: "shardctl-location-map",
      version,
      checksum: checksumOf(version, map),
      map,
    };
    if (records.length) body.journal = { checksum: journalChecksum(records), records };
    writeAtomic(this.file, JSON.stringify(body));
  }

  /** The journal with `write` applied, or the revision that refused it. */
  private static applyWrite(
    records: StoredMigration[],
    write: MigrationWrite,
  ): { ok: true; records: StoredMigration[]; rev: number } | { ok: false; rev: number } {
    checkRecord(write.record);
    const i = records.findIndex((r) => r.record.id === write.record.id);
    const currentRev = i < 0 ? 0 : records[i].rev;
    if (currentRev !== write.expectRev) return { ok: false, rev: currentRev };
    const rev = currentRev + 1;
    const next = records.slice();
    if (i < 0) next.push({ record: write.record, rev });
    else next[i] = { record: write.record, rev };
    return { ok: true, records: trimHistory(next), rev };
  }

  async compareAndSet(
    expectedVersion: number,
    next: LocationMap,
    opts: { migration?: MigrationWrite } = {},
  ): Promise<CasResult> {
    validateMap(next);
    ensureDataDir(this.dataDir);
    const release = await acquireFileLock(this.lockFile, "the location map");
    try {
      const current = this.readFile();
      const currentVersion = current?.version ?? 0;
      if (currentVersion !== expectedVersion) return { ok: false, currentVersion };
      let records = current?.journal?.records ?? [];
      let migrationRev: number | undefined;
      if (opts.migration) {
        const w = EmbeddedStore.applyWrite(records, opts.migration);
        // the journal record moved on (another coordinator took the migration over): nothing is written
        if (!w.ok) return { ok: false, currentVersion };
        records = w.records;
        migrationRev = w.rev;
      }
      const version = currentVersion + 1;
      try {
        this.writeFile(version, next, records);
      } catch (err) {
        // before the rename nothing took effect; after it (NotDurableError) the map may be the new one
        if (err instanceof NotDurableError) throw err;
        throw writeRefusedError(this.dataDir, err);
      }
      return migrationRev === undefined ? { ok: true, version } : { ok: true, version, migrationRev };
    } finally {
      release();
    }
  }

  /**
   * `init --force` on a map that cannot be read: the damaged file is kept beside it as
   * `location-map.json.corrupt-<time>` and `next` written in its place, under the writers' lock.
   * Only damage is replaced (not JSON, not a map, a checksum mismatch, an invalid map): a file
   * that cannot be read at all (a directory in its place, no permission) is refused as before,
   * and a map that reads well again by the time the lock is held is a PreconditionError (use
   * compareAndSet). The version goes on from the damaged file's when it still says one.
   */
  async replaceCorruptMap(
    next: LocationMap,
    now: number,
  ): Promise<{ version: number; keptAs: string; why: string }> {
    validateMap(next);
    ensureDataDir(this.dataDir);
    const release = await acquireFileLock(this.lockFile, "the location map");
    try {
      let why: string;
      try {
        this.readFile();
        throw new PreconditionError(
          `the location map ${this.file} is no longer corrupt; nothing was changed`,
          {
            hint: "run the command again",
          },
        );
      } catch (err) {
        if (!(err instanceof CorruptMapError)) throw err;
        why = err.why;
      }
      const keptAs = `${this.file}.corrupt-${new Date(now).toISOString().replace(/[:.]/g, "-")}`;
      // a copy, not a rename: until the new map is in place the damaged one stays where it was
      copyFileSync(this.file, keptAs, constants.COPYFILE_EXCL);
      fsyncDirSync(this.dataDir);
      const version = salvagedVersion(this.file) + 1;
      this.writeFile(version, next, []);
      return { version, keptAs, why };
    } finally {
      release();
    }
  }

  async putMigration(write: MigrationWrite): Promise<MigrationPutResult> {
    ensureDataDir(this.dataDir);
    const release = await acquireFileLock(this.lockFile, "the location map");
    try {
      const current = this.readFile();
      if (!current) {
        throw new PreconditionError(`there is no location map in ${this.dataDir} to journal a migration in`, {
          hint: "create one with `shardctl init` or `shardctl up --local`",
        });
      }
      const w = EmbeddedStore.applyWrite(current.journal?.records ?? [], write);
      if (!w.ok) return w;
      this.writeFile(current.version, current.map, w.records);
      return { ok: true, rev: w.rev };
    } finally {
      release();
    }
  }

  async getMigration(id: string): Promise<StoredMigration | null> {
    return this.readFile()?.journal?.records.find((r) => r.record.id === id) ?? null;
  }

  async listMigrations(): Promise<{ records: StoredMigration[]; unreadable: string[] }> {
    const records: StoredMigration[] = [];
    const unreadable: string[] = [];
    for (const r of this.readFile()?.journal?.records ?? []) {
      if (looksLikeRecord(r.record)) records.push(r);
      else unreadable.push(String((r.record as { id?: unknown } | undefined)?.id ?? "(no id)"));
    }
    records.sort((a, b) => a.record.startedAt - b.record.startedAt);
    return { records, unreadable };
  }

  async watch(onChange: (map: VersionedMap) => void, signal: AbortSignal): Promise<void> {
    let last = -1;
    while (!signal.aborted) {
      const cur = this.readFile();
      if (cur && cur.version !== last) {
        last = cur.version;
        onChange({ version: cur.version, map: cur.map });
      }
      try {
        await sleep(200, undefined, { signal });
      } catch {
        return;
      }
    }
  }

  async close(): Promise<void> {}

  /** The autopilot's memory of failed moves: `autopilot-memory.json` beside the map. */
  async loadAutopilotMemory(): Promise<string | undefined> {
    const file = join(this.dataDir, MEMORY);
    let st;
    try {
      st = statSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new UserError(`cannot read ${file}: ${errorMessage(err)}`);
    }
    if (!st.isFile() || st.size > MAX_MEMORY_BYTES)
      throw new UserError(
        `${file} is not the autopilot's memory (not a file of at most ${MAX_MEMORY_BYTES} bytes)`,
      );
    return readFileSync(file, "utf8");
  }

  async saveAutopilotMemory(text: string): Promise<void> {
    if (Buffer.byteLength(text) > MAX_MEMORY_BYTES)
      throw new UsageError(`the autopilot's memory is over ${MAX_MEMORY_BYTES} bytes`);
    writeAtomic(join(this.dataDir, MEMORY), text);
  }
}

/** Keeps every record in flight and the newest JOURNAL_HISTORY ended ones. */
function trimHistory(records: StoredMigration[]): StoredMigration[] {
  const drop = new Set(endedBeyondHistory(records).map((r) => r.record.id));
  return drop.size ? records.filter((r) => !drop.has(r.record.id)) : records;
}

export interface FileLockOptions {
  /** What the lock file holds (default: our pid); `holderPid` must find our pid in it. */
  content?: string;
  /**
   * The holder's pid, read from the lock file's text, when its liveness can be told from here;
   * undefined (unreadable, or taken on another host) means never stale. Default: the text is a pid.
   */
  holderPid?: (text: string) => number | undefined;
  /** The error once a live holder still has the lock after waitMs (text: the lock file's, if readable). */
  refusal?: (text: string | undefined) => Error;
}

/**
 * Takes an exclusive lock file (holding our pid, or `opts.content`), waiting
 * up to waitMs for a live holder; a lock whose pid is gone is stale and taken
 * over.
 */
export async function acquireFileLock(
  lockFile: string,
  what: string,
  waitMs = 5000,
  opts: FileLockOptions = {},
): Promise<() => void> {
  const holderPid = opts.holderPid ?? pidInLockText;
  // a plain lock also names when its process started: a pid the kernel gave to another process
  // since is not its holder (the lock is stale, and taken over)
  const alive = opts.holderPid
    ? (_text: string, pid: number) => processAlive(pid)
    : (text: string, pid: number) => processAlive(pid) && sameStart(text, pid);
  const content = opts.content ?? `${process.pid} ${processStartTime(process.pid) ?? ""}`.trim();
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const ino = createLockFile(lockFile, content);
      // only our own lock is removed: one taken over meanwhile (we were taken for dead) is another's
      // (the same file, and what we wrote in it: an inode number may be given to a new file again)
      return () => {
        try {
          if (statSync(lockFile).ino === ino && readLockText(lockFile) === content)
            rmSync(lockFile, { force: true });
        } catch {
          // gone already
        }
      };
    } catch (err) {
      if (err instanceof UserError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EACCES" || code === "EPERM" || code === "EROFS")
        throw new UsageError(
          `cannot write in the data directory ${dirname(lockFile)} (${code}); nothing was changed`,
          { hint: "give a data directory this user can write to with -d/--data-dir", cause: err },
        );
      if (code !== "EEXIST") throw lockFileError(lockFile, err);
    }
    const text = readLockText(lockFile);
    const holder = text === undefined ? undefined : holderPid(text);
    // stale: its writer died. Taken over under a guard, so that two writers that both saw it stale
    // cannot both take it (the second would remove the first's new lock)
    if (holder !== undefined && !alive(text!, holder) && takeOverStaleLock(lockFile, holder, holderPid))
      continue;
    // empty for seconds: its writer died between making it and writing its pid (or the disk was full)
    if (
      text === "" &&
      emptyLockStale(lockFile) &&
      takeOverLockIf(lockFile, (t) => t === "" && emptyLockStale(lockFile))
    )
      continue;
    if (Date.now() > deadline) {
      if (opts.refusal) throw opts.refusal(text);
      throw new PreconditionError(`${what} is locked by another writer (pid ${holder ?? "unknown"})`, {
        hint: `wait for it to finish; if no shardctl is running, remove ${lockFile}`,
      });
    }
    await sleep(20);
  }
}

/**
 * Creates `lockFile` holding `content`, atomically: the content is written to a file of its own,
 * which is then linked at the lock's name (EEXIST if a lock is there). A lock is never seen empty,
 * so none is taken for one whose writer died before writing its pid while that writer, only
 * stalled, goes on as if it held the lock. Returns the lock's inode. Where links cannot be made,
 * the lock is created in place and then written.
 */
function createLockFile(lockFile: string, content: string): number {
  const tmp = `${lockFile}.${process.pid}-${randomBytes(4).toString("hex")}`;
  const fd = openSync(tmp, "wx", 0o600);
  let ino: number;
  try {
    try {
      writeSync(fd, content);
      ino = fstatSync(fd).ino;
    } catch (err) {
      throw writeRefusedError(dirname(lockFile), err);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, lockFile);
      return ino;
    } catch (err) {
      const code = errnoOf(err);
      if (code === "EEXIST") throw err;
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw err;
    }
  } finally {
    rmSync(tmp, { force: true });
  }
  // no links here: made in place, then written (an empty lock is then taken over after EMPTY_LOCK_STALE_MS)
  const direct = openSync(lockFile, "wx", 0o600);
  try {
    writeSync(direct, content);
    return fstatSync(direct).ino;
  } catch (err) {
    // an empty lock names no holder: left behind, it would refuse every later writer
    rmSync(lockFile, { force: true });
    throw writeRefusedError(dirname(lockFile), err);
  } finally {
    closeSync(direct);
  }
}

/** When process `pid` started, in clock ticks since boot (/proc/PID/stat field 22); undefined where unknown. */
export function processStartTime(pid: number): string | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8")
      .replace(/^.*\) /s, "")
      .split(" ");
    // fields from the third (state) on: the start time is the 22nd field, 20th here
    return fields[19];
  } catch {
    return undefined;
  }
}

/** Whether the process `pid` is the one a plain lock's text names (its start time, when recorded). */
function sameStart(text: string, pid: number): boolean {
  const recorded = text.trim().split(/\s+/)[1];
  if (recorded === undefined) return true; // written before start times were
  const now = processStartTime(pid);
  return now === undefined || now === recorded;
}

/** A takeover guard older than this was left by a process that died inside takeOverStaleLock. */
const TAKEOVER_GUARD_STALE_MS = 5000;

/**
 * Removes `lockFile` if it still names `deadPid`, under an exclusive guard file: whoever saw the
 * lock stale may act on an old view (another writer may have taken the lock over and created its
 * own since), so the holder is read again under the guard and only the dead writer's lock is
 * removed. Returns false when another process holds the guard (the caller waits and tries again).
 */
export function takeOverStaleLock(
  lockFile: string,
  deadPid: number,
  holderPid: (text: string) => number | undefined = pidInLockText,
): boolean {
  return takeOverLockIf(lockFile, (text) => holderPid(text) === deadPid);
}

/** A lock file without a pid is a writer's for the moment between its creation and its write; not for this long. */
const EMPTY_LOCK_STALE_MS = 5000;

function emptyLockStale(lockFile: string): boolean {
  try {
    return Date.now() - statSync(lockFile).mtimeMs > EMPTY_LOCK_STALE_MS;
  } catch {
    return false; // gone meanwhile
  }
}

/**
 * Removes `lockFile` if `stale(its text)` still holds when read again under an exclusive guard (see
 * takeOverStaleLock). Returns false when another process holds the guard.
 */
function takeOverLockIf(lockFile: string, stale: (text: string) => boolean): boolean {
  const guard = `${lockFile}.takeover`;
  let fd: number;
  try {
    fd = openSync(guard, "wx", 0o600);
  } catch (err) {
    if (errnoOf(err) !== "EEXIST") throw err;
    try {
      if (Date.now() - statSync(guard).mtimeMs > TAKEOVER_GUARD_STALE_MS) rmSync(guard, { force: true });
    } catch {
      // gone meanwhile: the other process finished
    }
    return false;
  }
  try {
    closeSync(fd);
    const text = readLockText(lockFile);
    if (text !== undefined && stale(text)) rmSync(lockFile, { force: true });
  } finally {
    rmSync(guard, { force: true });
  }
  return true;
}

/**
 * The most of a lock file that is read. A lock holds a pid or a one-line JSON record; a lock file
 * replaced by a device (/dev/zero) or a huge file must cost no more than this (it then holds no
 * record, and the lock is refused as held by an unknown writer, naming the file to remove).
 */
const MAX_LOCK_BYTES = 1024 * 1024;

/** A lock file's text (its first MAX_LOCK_BYTES); undefined when it is gone (or cannot be read). */
export function readLockText(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return undefined;
  }
  try {
    // in small pieces: a lock is polled while another writer holds it
    return readAtMost(fd, MAX_LOCK_BYTES, 64 * 1024).toString("utf8");
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** The pid a plain lock file holds (its first word; the second is when that process started). */
function pidInLockText(text: string): number | undefined {
  const pid = Number(text.trim().split(/\s+/)[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Whether a process with this pid runs (EPERM: it does, another user's). A
 * zombie — ended, not yet reaped by its parent or by an init that reaps
 * orphans late — answers signal 0 but holds nothing and never runs again: not
 * alive (read from /proc where there is one).
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    const state = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "")[0];
    return state !== "Z" && state !== "X";
  } catch (err) {
    // gone in between, or no /proc (not Linux): signal 0 decides
    return (err as NodeJS.ErrnoException).code !== "ENOENT" || !existsSync("/proc/self");
  }
}

/**
 * writeAtomic renamed the new content into place but could not fsync the
 * directory: readers see the new content now, and a crash may bring the old
 * one back. Not the same as a failed write, after which the old content stays.
 */
export class NotDurableError extends Error {
  readonly code?: string;
  constructor(
    readonly file: string,
    override readonly cause: unknown,
  ) {
    super(
      `${file} was replaced but could not be made durable (${(cause as Error)?.message ?? String(cause)})`,
    );
    this.code = (cause as NodeJS.ErrnoException)?.code;
  }
}

/** O_CREAT | O_EXCL never follows a link at the path, nor writes into a file already there. */
const EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;

/**
 * Creates `tmp` afresh for writing. Its name is predictable (the file's, and the pid): whatever is at
 * it already — a temporary file a crashed process of the same pid left, or a link another user
 * planted in a shared directory to have the content written where it points — is removed (the
 * link, not what it names) and the file made anew, never opened through it.
 */
function openExclusive(tmp: string, mode: number): number {
  try {
    return openSync(tmp, EXCLUSIVE, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    rmSync(tmp, { force: true });
    return openSync(tmp, EXCLUSIVE, mode);
  }
}

/**
 * Writes a file so that a crash leaves the old or the new content: tmp + fsync + rename + fsync(dir).
 * The content may come in pieces (a generator that lays out a large file as it is written). A failed
 * write or rename removes the temporary file: the old file stays, and nothing else. A failed
 * fsync of the directory after the rename is a NotDurableError.
 */
export function writeAtomic(
  file: string,
  content: string | Uint8Array | Iterable<Uint8Array | undefined>,
  mode = 0o600,
): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openExclusive(tmp, mode);
  try {
    try {
      if (typeof content === "string") writeAll(fd, Buffer.from(content));
      else if (content instanceof Uint8Array) writeAll(fd, content);
      // pieces written as they come (undefined between them: nothing to write yet)
      else for (const piece of content) if (piece) writeAll(fd, piece);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    removeQuietly(tmp);
    throw err;
  }
  try {
    fsyncDirSync(dirname(file));
  } catch (err) {
    throw new NotDurableError(file, err);
  }
}

/** writeSync may write less than asked (a full disk reports it on the next call): loop until done. */
function writeAll(fd: number, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off, bytes.length - off);
}

/** fsyncs a directory, so that an entry created, renamed or removed in it is durable. */
export function fsyncDirSync(dir: string): void {
  const dfd = openSync(dir, "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Clean-up after a failure: its own error must not hide the one that made us clean up. */
function removeQuietly(file: string): void {
  try {
    rmSync(file, { force: true });
  } catch {
    // the original error is the one to report
  }
}

const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** errno codes that mean "this path cannot be written": the user's to fix, so a usage error. */
const BAD_PATH_CODES = new Set([
  "EISDIR",
  "ENOENT",
  "ENOTDIR",
  "EACCES",
  "EPERM",
  "EROFS",
  "ENAMETOOLONG",
  "ELOOP",
]);

/**
 * Checks that `file`, an output the user named with `flag`, can be written, so that a
 * mistyped path is refused before any work is done (and before a result is lost). A symbolic
 * link is checked where it leads (outputTarget), since that is what is written.
 */
export function checkOutputPath(file: string, flag = "--out"): void {
  // '' is no path: the write would rename its temporary file to '' (ENOENT, naming the temporary file)
  if (file === "")
    throw new UsageError(`${flag} is empty; nothing was written`, {
      hint: `give the path of a file, e.g. ${flag} out.csv`,
    });
  const target = outputTarget(file, flag);
  const refuse = (why: string, hint: string) =>
    new UsageError(`${flag} ${outputName(file, target)}: ${why}; nothing was written`, { hint });
  const fileHint = `give a file name, e.g. ${flag} ${join(file, "out")}`;
  if (isDirectory(target)) throw refuse("is a directory", fileHint);
  if (file.endsWith("/") || target.endsWith("/")) throw refuse("names a directory (it ends in /)", fileHint);
  // the write is atomic (a temporary file renamed over the path), so a device, pipe or socket
  // there (/dev/null, /dev/stdout) would not be written to but replaced by a regular file
  const kind = nonRegularKind(target);
  // the path itself too: /dev/stdout on a pipe is a link to "pipe:[N]", which only the kernel follows
  const magic = kind ? undefined : nonRegularKind(file);
  if (magic)
    throw new UsageError(
      `${flag} ${file}: is ${magic}, not a regular file (the file written would replace it); nothing was written`,
      { hint: "give the path of a regular file; to see the output, write it to a file and print that" },
    );
  if (kind)
    throw refuse(
      `is ${kind}, not a regular file (the file written would replace it)`,
      "give the path of a regular file; to see the output, write it to a file and print that",
    );
  const dir = dirname(target);
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    if (errnoOf(err) === "ENOENT")
      throw refuse(
        `the directory ${dir} does not exist`,
        `create it first (mkdir -p ${dir}) or choose another path`,
      );
    if (errnoOf(err) === "ENOTDIR")
      throw refuse(`a part of ${dir} is a file, not a directory`, "choose another path");
    throw refuse(
      `cannot reach the directory ${dir} (${errnoOf(err) ?? (err as Error).message})`,
      "choose another path",
    );
  }
  if (!st.isDirectory()) throw refuse(`${dir} is not a directory`, "choose another path");
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    throw refuse(`the directory ${dir} is not writable`, "choose a directory you can write to");
  }
}

/** Symbolic links followed before a chain of them counts as a loop: Linux's own limit (MAXSYMLINKS). */
const MAX_LINK_HOPS = 40;

/**
 * The path an output named `file` is written to: `file` itself, or, when it is a symbolic link,
 * the path the chain of links ends at (which need not exist yet: a dangling link names the file
 * to create). The write renames a temporary file over the path, and a rename over the link would
 * replace the link by a regular file and leave the file it points to as it was; a user who gives
 * a link means that file, as a shell redirection does. A loop is a UsageError: nothing to write.
 */
export function outputTarget(file: string, flag = "--out"): string {
  let path = file;
  for (let hops = 0; ; hops++) {
    let isLink: boolean;
    try {
      isLink = lstatSync(path).isSymbolicLink();
    } catch (err) {
      if (errnoOf(err) === "ELOOP") throw linkLoopError(file, flag, err);
      break; // missing (a new file, or where a dangling link points) or unreachable: the checks name it
    }
    if (!isLink) break;
    if (hops === MAX_LINK_HOPS) throw linkLoopError(file, flag);
    let to: string;
    try {
      to = readlinkSync(path);
    } catch {
      break; // replaced since lstat: the checks and the write see what is there now
    }
    // not path.resolve: it would take "dir/.." lexically, where the kernel follows dir if it is a link
    path = isAbsolute(to) ? to : `${dirname(path)}/${to}`;
  }
  if (path === file) return file;
  // spelled canonically for the messages (the file itself, or for a new one its directory)
  try {
    return realpathSync(path);
  } catch {
    try {
      return path.endsWith("/") ? path : join(realpathSync(dirname(path)), basename(path));
    } catch {
      return path;
    }
  }
}

function linkLoopError(file: string, flag: string, cause?: unknown): UsageError {
  return new UsageError(
    `${flag} ${file}: is a symbolic link loop (or a chain of more than ${MAX_LINK_HOPS} links) that never reaches a file; nothing was written`,
    { hint: "point the link at a file (ls -l shows where it points), or give another path", cause },
  );
}

/** How messages name an output: the path given, and where it leads when that is a link. */
function outputName(file: string, target: string): string {
  return target === file ? file : `${file} (a symbolic link to ${target})`;
}

/** What an existing path is when it is neither a regular file nor a directory; undefined otherwise. */
function nonRegularKind(path: string): string | undefined {
  let st;
  try {
    st = statSync(path);
  } catch {
    return undefined; // missing (the usual case) or unreachable: the directory checks name it
  }
  if (st.isFile() || st.isDirectory()) return undefined;
  if (st.isCharacterDevice() || st.isBlockDevice()) return "a device";
  if (st.isFIFO()) return "a pipe";
  if (st.isSocket()) return "a socket";
  return "a special file";
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * writeAtomic for an output the user named with `flag` (`--out FILE`; through a symbolic link,
 * the file it points to): a path that cannot be written becomes a usage error naming it, any
 * other I/O failure a plain error; either way the temporary file is gone and an existing file
 * is as it was.
 */
export function writeOutputFile(
  file: string,
  content: string | Uint8Array,
  opts: { flag?: string; mode?: number } = {},
): void {
  const flag = opts.flag ?? "--out";
  if (file === "") checkOutputPath(file, flag);
  // through a link, the file it points to is written (and the link left as it is)
  const target = outputTarget(file, flag);
  // never rename over a device or a pipe, even for a caller that skipped checkOutputPath
  if (nonRegularKind(target) ?? nonRegularKind(file)) checkOutputPath(file, flag);
  try {
    writeAtomic(target, content, opts.mode);
  } catch (err) {
    if (err instanceof NotDurableError) {
      throw new UserError(
        `${flag} ${outputName(file, target)} was written, but the disk could not make it durable (${errorMessage(err.cause)}): a crash may lose it`,
        { hint: "check the disk (the kernel log says why), then write it again", cause: err },
      );
    }
    const code = errnoOf(err);
    if (code === undefined) throw err;
    // the checks name the problem better than errno does (the path may have changed since they ran)
    checkOutputPath(file, flag);
    const message = `cannot write ${flag} ${outputName(file, target)}: ${(err as Error).message}; nothing was written`;
    if (BAD_PATH_CODES.has(code)) throw new UsageError(message, { hint: "choose another path", cause: err });
    throw new UserError(message, { cause: err });
  }
}

/**
 * Creates the data directory (and its parents); a path that cannot be one (a file in the way, a
 * name too long, a symbolic link loop, a place where no directory can be made) is a usage error
 * naming it, not a crash.
 */
export function ensureDataDir(dir: string): void {
  try {
    // 0700: the store holds the map every client routes by, and the local token; another user who
    // could write here (umask 000 or 002) could put a map of their own and collect the token
    makeDirs(dir, 0o700);
  } catch (err) {
    throw dataDirError(dir, err);
  }
}

const DATA_DIR_HINT =
  "give a directory with -d/--data-dir (or dataDir in the config, SHARDCTL_DATA_DIR), or move the file out of the way";

/** The error for a data directory (or `what`, a directory in it) that could not be created. */
export function dataDirError(dir: string, err: unknown, what = "the data directory"): unknown {
  const code = errnoOf(err);
  if (code === "EEXIST" || code === "ENOTDIR") {
    const file = firstNonDirectory(dir);
    const where = file && file !== dir ? ` (${file} is a file)` : "";
    return new UsageError(`the data directory ${dir} is not a directory${where}; nothing was changed`, {
      hint: DATA_DIR_HINT,
      cause: err,
    });
  }
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
    return new UsageError(`cannot create the data directory ${dir}: ${(err as Error).message}`, {
      hint: "give a directory you can write to with -d/--data-dir",
      cause: err,
    });
  }
  const why = code === undefined ? undefined : PATH_REASONS[code];
  if (why) {
    return new UsageError(`cannot create ${what} ${dir}: ${why} (${code}); nothing was changed`, {
      hint: "give another directory with -d/--data-dir (or dataDir in the config, SHARDCTL_DATA_DIR)",
      cause: err,
    });
  }
  if (code !== undefined) {
    return new UserError(`cannot create ${what} ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return err;
}

/**
 * The error for a lock file that cannot be created in a data directory that exists: a usage error
 * naming the directory when the path is at fault (a place like /proc/self where no file can be made).
 */
/**
 * A write into the data directory that failed before anything took effect (the lock's pid, or the
 * map's new file before its rename) because the disk is full or failing: a refusal (nothing was
 * changed: a migration's commit that meets it rolls back), not an internal error. Other errors
 * are returned as they are.
 */
function writeRefusedError(dir: string, err: unknown): unknown {
  const code = errnoOf(err);
  if (code !== "ENOSPC" && code !== "EDQUOT" && code !== "EIO") return err;
  return new PreconditionError(
    `cannot write in the data directory ${dir}: ${code === "EIO" ? "an I/O error" : "its disk is full"} (${code}); nothing was changed`,
    { hint: "make room on that disk (or fix it), then run the command again", cause: err },
  );
}

function lockFileError(lockFile: string, err: unknown): unknown {
  const code = errnoOf(err);
  const why = code === undefined ? undefined : PATH_REASONS[code];
  if (why === undefined && code !== "ENOTDIR") return err;
  return new UsageError(
    `cannot write in the data directory ${dirname(lockFile)}: ${code === "ENOENT" ? "no file can be made there" : (why ?? "it is not a directory")} (${code}); nothing was changed`,
    { hint: "give a directory this user can write to with -d/--data-dir", cause: err },
  );
}
