/**
 * The embedded store on a full disk (a 1 MiB tmpfs, mounted by the test: root): a write that
 * cannot be made is a refusal that changed nothing (PreconditionError, which a migration's commit
 * rolls back on), not an internal error, and it leaves no empty lock file behind. Before, the lock
 * was created, its pid not written, and the empty file refused every later writer ("locked by
 * another writer (pid unknown)") after the disk had room again; a migration committing then stayed
 * fenced until someone removed the file.
 */
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initialLayout } from "../../../src/engine/location-map.js";
import { PreconditionError } from "../../../src/errors.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";

let root: string;
let mnt: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "shardctl-full-disk-"));
  mnt = join(root, "mnt");
  mkdirSync(mnt);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
});

afterAll(() => {
  execFileSync("umount", ["-l", mnt]);
  rmSync(root, { recursive: true, force: true });
});

/** Writes a file until the filesystem has no room left. */
function fill(file: string): void {
  const fd = openSync(file, "w");
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe("ENOSPC");
  } finally {
    closeSync(fd);
  }
}

describe("the embedded store on a full disk", () => {
  it("refuses a write with a PreconditionError, leaves no lock, and writes again once there is room", async () => {
    const dir = join(mnt, "data");
    const store = new EmbeddedStore(dir);
    const nodes = [{ id: "n1", address: "127.0.0.1:1", zone: "a" }];
    expect(await store.compareAndSet(0, initialLayout(16, nodes, { now: 0 }))).toEqual({
      ok: true,
      version: 1,
    });
    const next = { ...(await store.load())!.map, updatedAt: 1 };
    fill(join(mnt, "filler"));
    const refused = await store.compareAndSet(1, next).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PreconditionError);
    expect((refused as Error).message).toMatch(
      /cannot write in the data directory .*: its disk is full \(ENOSPC\); nothing was changed/,
    );
    expect(existsSync(join(dir, "location-map.lock"))).toBe(false);
    expect((await store.load())!.version).toBe(1);
    rmSync(join(mnt, "filler"));
    expect(await store.compareAndSet(1, next)).toEqual({ ok: true, version: 2 });
    await store.close();
  });
});
