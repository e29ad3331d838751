import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runProcess } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-proc-"));
  env = { SHARDCTL_DATA_DIR: join(dir, "data"), SHARDCTL_SEGMENTS: "512" };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("shardctl as a process", () => {
  it("starts, prints help and version, and exits with meaningful codes", () => {
    const help = runProcess(["--help"], { cwd: dir, env });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/Usage: shardctl/);
    expect(runProcess(["--version"], { cwd: dir, env }).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(runProcess(["nope"], { cwd: dir, env }).status).toBe(2);
    expect(runProcess(["locate", "k"], { cwd: dir, env }).status).toBe(3);
  });

  it("refuses a key that is not UTF-8 on the command line", () => {
    expect(runProcess(["init"], { cwd: dir, env }).status).toBe(0);
    // argv bytes 0xff 0xfe are not UTF-8; Node turns them into U+FFFD, which keys may not hold
    const r = runProcess([Buffer.from([0x6b, 0xff, 0xfe]) as unknown as string], { cwd: dir, env });
    expect(r.status).toBe(2); // unknown command, but a usage error all the same
    const loc = runProcess(["locate", Buffer.from([0x6b, 0xff, 0xfe]) as unknown as string], {
      cwd: dir,
      env,
    });
    expect(loc.status).toBe(2);
    expect(loc.stderr).toMatch(/not valid UTF-8/);
  });
});
