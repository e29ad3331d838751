/**
 * runningPid: the pid file of a local node names our agent only if that
 * process is an agent of this node in this data directory; a recycled pid
 * (another cluster's node of the same name, any other process) is not ours,
 * and `down` must not signal it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { localDir, runningPid } from "../../../src/cluster/local.js";

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A process whose command line is `node -e … agent --data-dir DATA --node-id NODE`, its pid in DIR's pid file. */
function fakeAgent(dir: string, data: string): number {
  const c = spawn(
    process.execPath,
    ["-e", "setTimeout(() => {}, 60000)", "agent", "--data-dir", data, "--node-id", "node-1"],
    {
      stdio: "ignore",
    },
  );
  children.push(c);
  mkdirSync(join(localDir(dir), "node-1"), { recursive: true });
  writeFileSync(join(localDir(dir), "node-1", "agent.pid"), `${c.pid}\n`);
  return c.pid!;
}

describe("runningPid", () => {
  it("is the agent of this node in this data directory, and not another cluster's node-1", async () => {
    const mine = mkdtempSync(join(tmpdir(), "shardctl-pid-"));
    const other = mkdtempSync(join(tmpdir(), "shardctl-pid-other-"));
    dirs.push(mine, other);
    const pid = fakeAgent(mine, join(localDir(mine), "node-1", "data"));
    await new Promise((r) => setTimeout(r, 200));
    expect(runningPid(mine, "node-1")).toBe(pid);
    // the pid file of another cluster naming this process: not its agent
    mkdirSync(join(localDir(other), "node-1"), { recursive: true });
    writeFileSync(join(localDir(other), "node-1", "agent.pid"), `${pid}\n`);
    expect(runningPid(other, "node-1")).toBeUndefined();
  });

  it("is the same agent whichever path reaches its data directory (a symlink, either way)", async () => {
    // Given a cluster started through a link to its data directory
    const root = mkdtempSync(join(tmpdir(), "shardctl-pid-link-"));
    dirs.push(root);
    const real = join(root, "real");
    const link = join(root, "link");
    mkdirSync(join(localDir(real), "node-1", "data"), { recursive: true });
    symlinkSync(real, link);
    const pid = fakeAgent(link, join(localDir(link), "node-1", "data"));
    await new Promise((r) => setTimeout(r, 200));
    // Then the real path finds its agent too (before, `down` through it called the agent not
    // running and deleted its pid file: nothing could stop it any more)
    expect(runningPid(link, "node-1")).toBe(pid);
    expect(runningPid(real, "node-1")).toBe(pid);
  });
});
