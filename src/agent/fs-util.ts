/** Small durable-file helpers for the agent. */
import { open } from "node:fs/promises";

/** fsyncs a directory so that a created, renamed or deleted entry in it is durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
