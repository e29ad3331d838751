/**
 * Access windows kept in a file under the data directory, for the CLI on the
 * embedded default (a short-lived process has no memory between runs). Agents
 * keep their own windows in memory and serve them over their API.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config.js";
import { AccessWindows } from "../engine/access-windows.js";
import { PreconditionError, UserError } from "../errors.js";
import { acquireFileLock, ensureDataDir, processAlive, writeAtomic } from "./embedded.js";

export const WINDOWS_FILE = "access-windows.bin";

export function windowsPath(dataDir: string): string {
  return join(dataDir, WINDOWS_FILE);
}

export function newWindows(config: Config): AccessWindows {
  return new AccessWindows({
    segmentCount: config.segments,
    zones: config.zones,
    levels: config.windows.levels,
  });
}

/** The stored windows, or empty ones shaped by the config. A corrupt file is refused. */
export function loadWindows(config: Config): AccessWindows {
  const file = windowsPath(config.dataDir);
  if (!existsSync(file)) return newWindows(config);
  // (a directory or a device there: named as such, not read — /dev/zero would never end)
  const st = statSync(file);
  if (!st.isFile())
    throw new PreconditionError(
      `${file} is ${st.isDirectory() ? "a directory" : "not a regular file"}, not an access-windows file; nothing was changed`,
      { hint: `remove it (the access history then starts afresh)` },
    );
  let w: AccessWindows;
  try {
    w = AccessWindows.deserialize(readFileSync(file));
  } catch (err) {
    throw new UserError(`${(err as Error).message} (${file}); nothing was changed`, {
      hint: `remove ${file} to start the access history afresh`,
    });
  }
  if (w.segmentCount !== config.segments || w.zones.join(",") !== config.zones.join(",")) {
    throw new PreconditionError(
      `${file} was recorded for ${w.segmentCount} segments and zones ${w.zones.join(",")}, but the config says ${config.segments} and ${config.zones.join(",")}`,
      { hint: `set segments/zones back, or remove ${file}` },
    );
  }
  const shape = (levels: readonly { resolutionSeconds: number; slots: number }[]) =>
    levels.map((l) => `${l.resolutionSeconds}s×${l.slots}`).join(", ");
  if (shape(w.levels) !== shape(config.windows.levels)) {
    throw new PreconditionError(
      `${file} was recorded with window levels ${shape(w.levels)}, but the config says ${shape(config.windows.levels)}`,
      { hint: `set windows.levels back, or remove ${file} to record afresh with the new levels` },
    );
  }
  return w;
}

/**
 * Temporary files of writes that never finished (a `record` interrupted by
 * Ctrl-C or killed mid-write: `<file>.tmp-<pid>` of a process that is gone).
 * Each is as large as the windows file (up to hundreds of MB), so they are
 * removed rather than left to pile up. One whose writer still runs (an agent
 * given this data directory) is left alone.
 */
function removeLeftoverTemporaries(dataDir: string): void {
  const prefix = `${WINDOWS_FILE}.tmp-`;
  let names: string[];
  try {
    names = readdirSync(dataDir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    try {
      rmSync(join(dataDir, name), { force: true });
    } catch {
      // not ours to remove (permissions): harmless, the write below uses its own name
    }
  }
}

/** Loads, lets `update` change the windows, and writes them back atomically under a lock. */
export async function updateWindows<T>(config: Config, update: (w: AccessWindows) => T): Promise<T> {
  ensureDataDir(config.dataDir);
  const release = await acquireFileLock(
    join(config.dataDir, "access-windows.lock"),
    "the access windows file",
  );
  try {
    removeLeftoverTemporaries(config.dataDir);
    const w = loadWindows(config);
    const result = update(w);
    writeAtomic(windowsPath(config.dataDir), w.serialize());
    return result;
  } finally {
    release();
  }
}
