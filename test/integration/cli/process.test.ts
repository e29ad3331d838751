import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { runProcess, shardctlCommand } from "../../helpers/cli.js";

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
    expect(loc.stderr).toMatch(
      /the key holds U\+FFFD, the replacement character: bytes that are not UTF-8 turn into it/,
    );
  });

  it("stops quietly when its reader closes the pipe early (| head)", async () => {
    const big = { SHARDCTL_DATA_DIR: join(dir, "big"), SHARDCTL_SEGMENTS: "4096" };
    expect(runProcess(["init", "--shards-per-node", "1024"], { cwd: dir, env: big }).stderr).toBe("");
    const { command, args } = shardctlCommand();
    // every shard of the map as JSON: far more than one pipe buffer
    const child = spawn(command, [...args, "shards", "--json"], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...big },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.stdout.once("data", () => child.stdout.destroy());
    const code = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
    expect(stderr).not.toMatch(/EPIPE|internal error/);
    expect(code).toBe(0);
  });

  it("a standard output that cannot be written (a full disk: /dev/full) is an error, exit 1, no stack", async () => {
    const own = { ...env, SHARDCTL_DATA_DIR: join(dir, "full") };
    expect(runProcess(["init"], { cwd: dir, env: own }).status).toBe(0);
    const { command, args } = shardctlCommand();
    const full = openSync("/dev/full", "w");
    try {
      for (const cmd of [["locate", "foo", "--json"], ["shards"]]) {
        const r = spawnSync(command, [...args, ...cmd], {
          cwd: dir,
          env: { PATH: process.env.PATH, HOME: process.env.HOME, ...own },
          stdio: ["ignore", full, "pipe"],
          encoding: "utf8",
          timeout: 60_000,
        });
        expect(r.stderr).toMatch(/^error: cannot write standard output: ENOSPC: no space left on device/m);
        expect(r.stderr).not.toMatch(/internal error|at .*\.js:\d+|throw err/);
        expect(r.status).toBe(1);
      }
    } finally {
      closeSync(full);
    }
  });

  it("an agent whose port is taken says so and exits 1 (no internal error)", async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    const port = (blocker.address() as AddressInfo).port;
    try {
      writeFileSync(join(dir, "agent-token"), "t0k3n-for-the-test\n", { mode: 0o600 });
      const r = runProcess(
        [
          "--data-dir",
          join(dir, "agent-data"),
          "agent",
          "--listen",
          `127.0.0.1:${port}`,
          "--zone",
          "a",
        ].concat(["--node-id", "n1", "--token-file", join(dir, "agent-token")]),
        { cwd: dir, env },
      );
      expect(r.stderr).toMatch(new RegExp(`cannot listen on 127.0.0.1:${port}: the port is in use`));
      expect(r.stderr).not.toMatch(/internal error/);
      expect(r.status).toBe(1);
    } finally {
      blocker.close();
    }
  });
});
