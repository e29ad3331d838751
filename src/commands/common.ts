/** Building blocks shared by commands: the engine wired to the configured store. */
import { closeSync, openSync, readSync, statSync } from "node:fs";
import type { Config } from "../config.js";
import { AccessWindows } from "../engine/access-windows.js";
import type { AssignerOptions } from "../engine/assigner.js";
import { Lsmm } from "../engine/lsmm.js";
import { systemClock, type Clock, type LocationStore } from "../engine/ports.js";
import { Segmenter } from "../engine/segmenter.js";
import { UsageError } from "../errors.js";
import { formatBytes } from "../output.js";

export function assignerOptions(config: Config): AssignerOptions {
  const r = config.reshard;
  return {
    splitRate: r.splitRate,
    mergeRate: r.mergeRate,
    shardLoadCap: r.shardLoadCap,
    hysteresis: r.hysteresis,
    minDwellMs: r.minDwellSeconds * 1000,
  };
}

export function segmenterFor(config: Config): Segmenter {
  return new Segmenter(config.segments, config.limits.maxKeyBytes);
}

export function lsmmFor(
  config: Config,
  store: LocationStore,
  windows: AccessWindows,
  clock: Clock = systemClock,
): Lsmm {
  return new Lsmm({
    store,
    windows,
    segmenter: segmenterFor(config),
    clock,
    assigner: assignerOptions(config),
    rateWindowSeconds: config.reshard.rateWindowSeconds,
  });
}

export function parsePositiveInt(value: string, what: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new UsageError(`${what} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** Runs fn with a store and closes the store afterwards. */
export async function withStore<T>(
  open: () => Promise<LocationStore>,
  fn: (store: LocationStore) => Promise<T>,
): Promise<T> {
  const store = await open();
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Largest input file read whole (a CSV, trace, matrix or plan file): far above any real one. */
export const MAX_INPUT_BYTES = 256 * 1024 * 1024;

/**
 * Reads an input file the user named as UTF-8 text, at most `maxBytes`.
 * readFileSync alone would read /dev/zero or a never-ending pipe until memory
 * runs out, and report a directory as an internal error; here each is a
 * UsageError (exit 2) naming the file.
 */
export function readInputText(file: string, what: string, maxBytes = MAX_INPUT_BYTES): string {
  let fd: number;
  try {
    if (statSync(file).isDirectory())
      throw new UsageError(`${what} ${file} is a directory`, { hint: "give the file in it" });
    fd = openSync(file, "r");
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT")
      throw new UsageError(`cannot read ${what} ${file}: it does not exist`, { cause: err });
    throw new UsageError(`cannot read ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(1 << 20, maxBytes + 1 - total));
      let n: number;
      try {
        n = readSync(fd, chunk, 0, chunk.length, null);
      } catch (err) {
        throw new UsageError(`cannot read ${what} ${file}: ${(err as Error).message}`, { cause: err });
      }
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
      total += n;
      if (total > maxBytes) {
        throw new UsageError(`${what} ${file} is larger than ${formatBytes(maxBytes)}`, {
          hint: "split it, or check that it is the file you meant (a device or a pipe that never ends?)",
        });
      }
    }
    return Buffer.concat(chunks, total).toString("utf8");
  } finally {
    closeSync(fd);
  }
}
