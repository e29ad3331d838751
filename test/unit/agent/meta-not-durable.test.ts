/**
 * A metadata change whose file was renamed into place but whose directory
 * could not be fsynced (EIO from a failing disk): meta.json already holds the
 * new epoch and state, which a crash may undo. The shard must not go on
 * serving from memory that disagrees with its file, nor answer that nothing
 * changed: it is refused until a restart reads what the disk kept.
 *
 * Only directory fsyncs fail here (node:fs is wrapped for this file): a real
 * disk that fails them cannot be made on demand without a device mapper.
 */
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { tempDirs } from "../../helpers/temp-dirs.js";

const failDirFsync = { on: false };
vi.mock("node:fs", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs")>();
  return {
    ...real,
    fsyncSync: (fd: number) => {
      if (failDirFsync.on && real.fstatSync(fd).isDirectory()) {
        throw Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO", errno: -5, syscall: "fsync" });
      }
      return real.fsyncSync(fd);
    },
  };
});

const { Shard } = await import("../../../src/agent/shard.js");
const { readMeta } = await import("../../../src/agent/shard-meta.js");
const tempDir = tempDirs("shardctl-meta-");

describe("a metadata change the disk did not make durable", () => {
  it("refuses the shard, says what the file now holds, and a reopen serves what the disk kept", async () => {
    const warnings: string[] = [];
    const o = { maxFileBytes: 4096, snapshotBytes: 1 << 30, warn: (m: string) => warnings.push(m) };
    const dir = join(tempDir(), "s");
    const shard = await Shard.create(dir, "shard-1", { epoch: 1, state: "owned", migrationTimestamp: 5 }, o);
    await shard.write([{ op: "put", key: "a", value: Buffer.from("1") }]);
    failDirFsync.on = true;
    let err: unknown;
    try {
      shard.fence(4);
    } catch (e) {
      err = e;
    } finally {
      failDirFsync.on = false;
    }
    expect(err).toMatchObject({ status: 500, code: "shard-failed" });
    expect((err as Error).message).toMatch(/epoch 4 \(fenced\)/);
    expect((err as Error).message).not.toMatch(/nothing was changed/);
    // memory follows the file: the renamed meta.json holds the fence
    expect(readMeta(dir)).toMatchObject({ epoch: 4, state: "fenced" });
    expect(shard.meta).toMatchObject({ epoch: 4, state: "fenced" });
    expect(shard.failed).toMatch(/restart/);
    // nothing more is served or written from a shard in this state
    await expect(shard.write([{ op: "put", key: "b", value: Buffer.from("2") }])).rejects.toThrow(
      /not available/,
    );
    await shard.close();
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toBeUndefined();
    expect(again.meta).toMatchObject({ epoch: 4, state: "fenced" });
    expect(again.get("a")!.value.toString()).toBe("1");
    await again.close();
  });
});
