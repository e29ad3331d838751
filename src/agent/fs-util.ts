/** Small durable-file helpers for the agent. */
import { open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

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
 * Writes `content` to `file` atomically without blocking the event loop: a
 * temporary file beside it, fsync, rename, fsync of the directory. A reader
 * (or a crash) sees the old file or the new one, never a part.
 */
export async function writeAtomicAsync(file: string, content: Uint8Array): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(content);
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
