/**
 * The access windows file `shardctl record` writes: a write interrupted
 * (Ctrl-C, kill) leaves a temporary file as large as the windows file; the
 * next write under the lock removes such leftovers instead of letting them
 * pile up, and never touches the windows file itself when it refuses.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cli } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-windows-"));
  env = { SHARDCTL_DATA_DIR: join(dir, "data"), SHARDCTL_CONFIG: join(dir, "shardctl.yaml") };
  writeFileSync(join(dir, "shardctl.yaml"), "segments: 1024\n");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const data = () => join(dir, "data");
const leftovers = () => readdirSync(data()).filter((n) => n.startsWith("access-windows.bin.tmp-"));

describe("the access windows file", () => {
  it("a record after an interrupted one removes the temporary files the interrupted writes left", async () => {
    expect((await cli(["record", "k", "--count", "3"], env)).code).toBe(0);
    const good = readFileSync(join(data(), "access-windows.bin"));
    // what a `record` killed between writing its temporary file and the rename leaves behind
    // (the pids are of processes that are gone; with the lock held no other write is under way)
    for (const pid of [999_991, 999_992]) writeFileSync(join(data(), `access-windows.bin.tmp-${pid}`), good);
    writeFileSync(join(data(), "access-windows.lock"), "999993"); // and its lock, taken over as stale
    const r = await cli(["record", "k", "--json"], env);
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ events: 1, segments: 1 });
    expect(leftovers()).toEqual([]);
    // a temporary file whose writer still runs (this process, standing for an agent given this
    // data directory) is not a leftover and stays
    const live = `access-windows.bin.tmp-${process.ppid}`;
    writeFileSync(join(data(), live), "in progress");
    expect((await cli(["record", "k"], env)).code).toBe(0);
    expect(leftovers()).toEqual([live]);
    expect(existsSync(join(data(), "access-windows.lock"))).toBe(false);
  });

  it("a corrupt windows file is refused with a hint and left as it was", async () => {
    mkdirSync(data(), { recursive: true });
    expect((await cli(["record", "k"], env)).code).toBe(0);
    const file = join(data(), "access-windows.bin");
    const cut = readFileSync(file).subarray(0, 4000);
    writeFileSync(file, cut);
    for (const args of [["record", "k"], ["reshard"]]) {
      const r = await cli(args, env);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.err).toMatch(/access windows file is corrupt: .*nothing was changed/);
      expect(r.err).toMatch(/hint: remove .*access-windows\.bin/);
    }
    expect(readFileSync(file).equals(cut)).toBe(true);
  });
});
