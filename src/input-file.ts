/**
 * Reading a file the user named (an input, a trace, the config file, a value to store) with a
 * bound: readFileSync alone would read /dev/zero or a never-ending pipe until memory runs out,
 * and report a directory as an internal error; here each is a UsageError (exit 2) naming the file.
 */
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { UsageError, type UserError } from "./errors.js";
import { formatBytes } from "./output.js";

/** Largest input file read whole (a CSV, trace, matrix or plan file): far above any real one. */
export const MAX_INPUT_BYTES = 256 * 1024 * 1024;

/** Traces may be large: up to what V8 holds as one string (~512 MiB), less headroom. */
export const MAX_TRACE_BYTES = 448 * 1024 * 1024;

export interface ReadInputOptions {
  /** The error once more than the limit has been read (default: "<what> <file> is larger than …"). */
  tooLarge?: () => UserError;
}

/**
 * The bytes of an input file, at most `maxBytes`: reading stops at `maxBytes + 1`, so a device or
 * pipe that never ends costs no more memory than the limit.
 */
export function readInputBytes(
  file: string,
  what: string,
  maxBytes = MAX_INPUT_BYTES,
  opts: ReadInputOptions = {},
): Buffer {
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
    let bytes: Buffer;
    try {
      bytes = readAtMost(fd, maxBytes + 1);
    } catch (err) {
      throw new UsageError(`cannot read ${what} ${file}: ${(err as Error).message}`, { cause: err });
    }
    if (bytes.length > maxBytes) {
      if (opts.tooLarge) throw opts.tooLarge();
      throw new UsageError(`${what} ${file} is larger than ${formatBytes(maxBytes)}`, {
        hint: "split it, or check that it is the file you meant (a device or a pipe that never ends?)",
      });
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/**
 * At most `maxBytes` from `fd`'s position on, read in pieces of at most `chunkBytes`: a device or
 * a pipe that never ends costs no more than the bound. readSync's errors are thrown as they are.
 */
export function readAtMost(fd: number, maxBytes: number, chunkBytes = 1 << 20): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < maxBytes) {
    const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, maxBytes - total));
    const n = readSync(fd, chunk, 0, chunk.length, null);
    if (n === 0) break;
    chunks.push(chunk.subarray(0, n));
    total += n;
  }
  return Buffer.concat(chunks, total);
}

/** readInputBytes decoded as UTF-8. */
export function readInputText(
  file: string,
  what: string,
  maxBytes = MAX_INPUT_BYTES,
  opts: ReadInputOptions = {},
): string {
  return readInputBytes(file, what, maxBytes, opts).toString("utf8");
}
