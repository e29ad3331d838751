/** Small durable-file helpers for the agent. */
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";

/** errno codes of a disk without room for a write (answered 507, Insufficient Storage). */
export const NO_ROOM: ReadonlySet<string> = new Set(["ENOSPC", "EDQUOT", "EFBIG"]);

/** fsyncs a directory so that a created, renamed or deleted entry in it is durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `file` atomically without blocking the event loop: `fill` writes a
 * temporary file beside it (`<file><tmpSuffix>`), which is then fsynced,
 * closed, renamed over `file`, and the directory fsynced. A reader (or a
 * crash) sees the old file or the new one, never a part; on a failure the
 * temporary file is removed and the error thrown.
 */
export async function writeFileAtomic(
  file: string,
  fill: (fh: FileHandle) => Promise<void>,
  tmpSuffix = `.tmp-${process.pid}`,
): Promise<void> {
  const tmp = `${file}${tmpSuffix}`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fill(fh);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, file);
  await fsyncDir(dirname(file));
}

/**
 * Writes all of `buf` at `pos`. A write may take fewer bytes than asked (a
 * nearly full disk, a file size limit) without failing; the rest is written
 * again, so the disk's refusal, if any, comes as an error. Ignoring the short
 * count would leave a file that is fsynced and renamed into place with bytes
 * missing.
 */
export async function writeFully(fh: FileHandle, buf: Uint8Array, pos: number): Promise<void> {
  for (let off = 0; off < buf.length;) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    if (bytesWritten <= 0) throw new Error(`a write at offset ${pos + off} made no progress`);
    off += bytesWritten;
  }
}
