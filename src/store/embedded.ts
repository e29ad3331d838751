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
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PreconditionError, UserError, UsageError } from "../errors.js";
import { fnv1a64Bytes } from "../engine/hash.js";
import { validateMap, type LocationMap, type VersionedMap } from "../engine/location-map.js";
import type { CasResult, LocationStore } from "../engine/ports.js";

const FILE = "location-map.json";
const LOCK = "location-map.lock";

interface StoredFile {
  format: "shardctl-location-map";
  version: number;
  checksum: string;
  map: LocationMap;
}

export function checksumOf(version: number, map: LocationMap): string {
  return fnv1a64Bytes(new TextEncoder().encode(JSON.stringify({ version, map })));
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
    return this.readFile();
  }

  private readFile(): VersionedMap | null {
    if (!existsSync(this.file)) return null;
    let text: string;
    try {
      text = readFileSync(this.file, "utf8");
    } catch (err) {
      throw new UserError(`cannot read the location map ${this.file}: ${(err as Error).message}`);
    }
    const corrupt = (why: string) =>
      new UserError(`the location map ${this.file} is corrupt (${why}); nothing was read or written`, {
        hint: "restore the file from a backup, or re-create the layout with `shardctl init --force`",
      });
    let parsed: StoredFile;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw corrupt("not JSON: truncated or overwritten");
    }
    if (!parsed || parsed.format !== "shardctl-location-map" || !Number.isInteger(parsed.version)) {
      throw corrupt("not a shardctl location map file");
    }
    if (parsed.checksum !== checksumOf(parsed.version, parsed.map)) throw corrupt("checksum mismatch");
    try {
      validateMap(parsed.map);
    } catch (err) {
      throw corrupt((err as Error).message);
    }
    return { version: parsed.version, map: parsed.map };
  }

  async compareAndSet(expectedVersion: number, next: LocationMap): Promise<CasResult> {
    validateMap(next);
    mkdirSync(this.dataDir, { recursive: true });
    const release = await acquireFileLock(this.lockFile, "the location map");
    try {
      const current = this.readFile();
      const currentVersion = current?.version ?? 0;
      if (currentVersion !== expectedVersion) return { ok: false, currentVersion };
      const version = currentVersion + 1;
      const body: StoredFile = {
        format: "shardctl-location-map",
        version,
        checksum: checksumOf(version, next),
        map: next,
      };
      writeAtomic(this.file, JSON.stringify(body));
      return { ok: true, version };
    } finally {
      release();
    }
  }

  async watch(onChange: (map: VersionedMap) => void, signal: AbortSignal): Promise<void> {
    let last = -1;
    while (!signal.aborted) {
      const cur = this.readFile();
      if (cur && cur.version !== last) {
        last = cur.version;
        onChange(cur);
      }
      try {
        await sleep(200, undefined, { signal });
      } catch {
        return;
      }
    }
  }

  async close(): Promise<void> {}
}

/**
 * Takes an exclusive lock file (holding our pid), waiting up to waitMs for a
 * live holder; a lock whose pid is gone is stale and taken over.
 */
export async function acquireFileLock(lockFile: string, what: string, waitMs = 5000): Promise<() => void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fd = openSync(lockFile, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(lockFile, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = readLockHolder(lockFile);
    if (holder !== undefined && !processAlive(holder)) {
      rmSync(lockFile, { force: true }); // stale: its writer died
      continue;
    }
    if (Date.now() > deadline) {
      throw new PreconditionError(`${what} is locked by another writer (pid ${holder ?? "unknown"})`, {
        hint: `wait for it to finish; if no shardctl is running, remove ${lockFile}`,
      });
    }
    await sleep(20);
  }
}

function readLockHolder(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Writes a file so that a crash leaves the old or the new content: tmp + fsync + rename + fsync(dir). */
export function writeAtomic(file: string, content: string | Uint8Array): void {
  const dir = join(file, "..");
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, typeof content === "string" ? Buffer.from(content) : content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dfd = openSync(dir, "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

export function ensureDataDir(dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new UsageError(`data directory ${dir} exists and is not a directory`);
  }
  mkdirSync(dir, { recursive: true });
}
