/**
 * Directories made on paths the user gave (the data directory, the directory of --known-hosts,
 * the agent bundle's under the data directory): one level at a time, and a path that cannot hold
 * one (a file in the way, a name too long, a symbolic link loop) is an error naming it, not a raw
 * ENOTDIR or a stack.
 */
import { mkdirSync, rmdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { UsageError, UserError } from "./errors.js";

const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * mkdir -p, one level at a time. Not mkdirSync's `recursive`: Node 20's never returns when a
 * directory cannot be made in a parent that exists (`/proc/self/x`: ENOENT, and it retries the
 * parent forever). Here that ENOENT is thrown. A failure removes the parents it made (when still
 * empty): a refused path leaves nothing behind.
 */
export function makeDirs(dir: string, mode?: number): void {
  const made: string[] = [];
  try {
    makeDirsInto(dir, mode, made);
  } catch (err) {
    for (const d of made.reverse()) {
      try {
        rmdirSync(d);
      } catch {
        // not empty (another process uses it) or gone: the original error is the one to report
      }
    }
    throw err;
  }
}

function makeDirsInto(dir: string, mode: number | undefined, made: string[]): void {
  try {
    mkdirSync(dir, { mode });
    made.push(dir);
    return;
  } catch (err) {
    const code = errnoOf(err);
    if (code === "EEXIST") {
      // a directory, or a link to one, is what we want; a link that leads nowhere or loops says why
      if (statSync(dir).isDirectory()) return;
      throw err;
    }
    const parent = dirname(dir);
    if (code !== "ENOENT" || parent === dir) throw err;
    makeDirsInto(parent, mode, made);
  }
  try {
    mkdirSync(dir, { mode });
    made.push(dir);
  } catch (err) {
    // made meanwhile by another process
    if (errnoOf(err) !== "EEXIST" || !isDirectory(dir)) throw err;
  }
}

/** errno codes that mean the path given cannot be a directory, and why in words. */
export const PATH_REASONS: Readonly<Record<string, string>> = {
  ENAMETOOLONG: "the path, or a name in it, is too long",
  ELOOP: "a symbolic link in the path leads to itself (a loop) or the chain of links is too long",
  ENOENT: "no directory can be made there",
  EISDIR: "no directory can be made there",
  EINVAL: "the name is not allowed there",
};

/**
 * makeDirs for `what` (e.g. "the directory of the known_hosts file"), every way the path can be
 * wrong a UsageError (exit 2) naming it with `hint`: a file in the way, no permission, a name too
 * long, a link loop, a place where no directory can be made. Other I/O errors are UserErrors.
 */
export function makeDirsFor(dir: string, what: string, hint: string, mode?: number): void {
  try {
    makeDirs(dir, mode);
  } catch (err) {
    const code = errnoOf(err);
    if (code === undefined) throw err;
    const head = `cannot create ${what} ${dir}`;
    if (code === "EEXIST" || code === "ENOTDIR") {
      const file = firstNonDirectory(dir) ?? dir;
      throw new UsageError(`${head}: ${file} exists and is not a directory`, { hint, cause: err });
    }
    if (code === "EACCES" || code === "EPERM" || code === "EROFS")
      throw new UsageError(`${head}: ${(err as Error).message}`, { hint, cause: err });
    const why = PATH_REASONS[code];
    if (why) throw new UsageError(`${head}: ${why} (${code})`, { hint, cause: err });
    throw new UserError(`${head}: ${(err as Error).message}`, { cause: err });
  }
}

/** The path itself or its nearest ancestor that exists but is not a directory, for the message. */
export function firstNonDirectory(path: string): string | undefined {
  for (let p = path; ; p = dirname(p)) {
    try {
      if (!statSync(p).isDirectory()) return p;
    } catch {
      // missing, or below a file: look further up
    }
    if (dirname(p) === p) return undefined;
  }
}

/**
 * Whether two paths name the same file or directory however they are spelled (a symbolic link, a
 * relative path): the same device and inode. False when either does not exist.
 */
export function sameFile(a: string, b: string): boolean {
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}
