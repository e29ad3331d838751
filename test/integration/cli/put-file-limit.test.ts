/**
 * `put --file` against real agents (`up --local`): a file that never ends (/dev/zero) is read no
 * further than limits.maxValueBytes + 1 and refused with exit 2, like the same value on standard
 * input; nothing reaches the cluster. Before, the process read until it was killed.
 */
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runProcess, shardctlCommand } from "../../helpers/cli.js";
import { clusterCli, clusterEnv, downLocalCluster, upLocalCluster } from "../cluster/local-fixture.js";

let dir: string;
const env = clusterEnv(64);
const cli = clusterCli(() => dir, env);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-put-limit-"));
  await upLocalCluster(cli, dir);
});

afterAll(async () => {
  await downLocalCluster(cli, dir);
});

describe("put --file against a running local cluster", () => {
  it("refuses /dev/zero at the value limit, as standard input is, and stores nothing", () => {
    const procEnv = { SHARDCTL_SEGMENTS: "64", SHARDCTL_ZONES: "a,b,c" };
    const file = runProcess(["--data-dir", dir, "put", "big", "--file", "/dev/zero"], { env: procEnv });
    expect(file.stderr).not.toMatch(/internal error/);
    expect(file.status, file.stderr).toBe(2);
    expect(file.stderr).toMatch(
      /^error: the value in \/dev\/zero is more than 16777216 bytes \(limits\.maxValueBytes\)$/m,
    );
    expect(file.stdout).toBe("");

    // the same refusal for standard input (which was already bounded)
    const stdin = runProcess(["--data-dir", dir, "put", "big"], {
      env: procEnv,
      input: Buffer.alloc(16 * 1024 * 1024 + 1),
    });
    expect(stdin.status).toBe(2);
    expect(stdin.stderr).toMatch(/the value on standard input is more than 16777216 bytes/);

    const get = runProcess(["--data-dir", dir, "get", "big"], { env: procEnv });
    expect(get.status).toBe(1);
    expect(get.stderr).toMatch(/key not found: big/);
  });

  it("refuses a directory on standard input (it read as an empty value, stored over the key's)", () => {
    const procEnv = { SHARDCTL_SEGMENTS: "64", SHARDCTL_ZONES: "a,b,c" };
    expect(runProcess(["--data-dir", dir, "put", "kept", "keep"], { env: procEnv }).status).toBe(0);
    const { command, args } = shardctlCommand();
    const fd = openSync(tmpdir(), "r");
    try {
      const r = spawnSync(command, [...args, "--data-dir", dir, "put", "kept"], {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, ...procEnv },
        stdio: [fd, "pipe", "pipe"],
        encoding: "utf8",
        timeout: 60_000,
      });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/^error: standard input is a directory, not a value: nothing was stored$/m);
    } finally {
      closeSync(fd);
    }
    const get = runProcess(["--data-dir", dir, "get", "kept"], { env: procEnv });
    expect(get.stdout).toBe("keep");
  });

  it("still stores a file within the limit", async () => {
    writeFileSync(join(dir, "small.bin"), Buffer.from([0, 255, 1]));
    expect((await cli("put", "small", "--file", join(dir, "small.bin"))).code).toBe(0);
    const got = await cli("get", "small", "--json");
    expect(JSON.parse(got.out)).toMatchObject({ value: "AP8B", encoding: "base64" });
  });
});
