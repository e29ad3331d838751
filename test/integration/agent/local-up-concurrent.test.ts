/**
 * Two `shardctl up --local` at once on one fresh data directory (real processes): they run one
 * after the other, so every agent left running is the one its pid file names and `down` stops
 * them all. Before, both started agents on the same ports and wrote the same pid files: the
 * agents left running had none, `down` could not stop them, and the next `up` took them for
 * another cluster's.
 */
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { processAlive } from "../../../src/store/embedded.js";
import { shardctlCommand } from "../../helpers/cli.js";
import { freePortRange, tempDir } from "./harness.js";

const dir = join(tempDir("local-up-concurrent"), "data");
const env: NodeJS.ProcessEnv = { ...process.env, SHARDCTL_SEGMENTS: "64", SHARDCTL_ZONES: "a,b,c" };

function run(...args: string[]): Promise<{ code: number | null; err: string }> {
  const { command, args: base } = shardctlCommand();
  const child = spawn(command, [...base, "--data-dir", dir, ...args], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, err })));
}

/** The pids of the processes whose command line names this data directory's agents. */
function agentProcesses(): number[] {
  const out: number[] = [];
  for (const p of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
      if (argv.includes("agent") && argv.some((a) => a.startsWith(join(dir, "local")))) out.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return out.filter((pid) => processAlive(pid));
}

afterAll(async () => {
  await run("down", "--timeout", "5");
  for (const pid of agentProcesses()) process.kill(pid, "SIGKILL");
});

describe("up --local twice at once", () => {
  it("runs them one after the other: the agents running are the ones the pid files name, and down stops them all", async () => {
    // (the race needs both to pass the port check before either starts its agents: three at a
    // time, a few rounds, make it likely where nothing orders them)
    for (let round = 0; round < 3; round++) {
      const base = String(await freePortRange(3));
      const up = ["up", "--local", "--nodes", "3", "--zones", "a,b,c", "--base-port", base];
      const results = await Promise.all([run(...up), run(...up), run(...up)]);
      for (const r of results) expect(r.code, r.err).toBe(0);
      const named = ["node-1", "node-2", "node-3"].map((n) =>
        Number(readFileSync(join(dir, "local", n, "agent.pid"), "utf8").trim()),
      );
      expect(
        named.every((pid) => processAlive(pid)),
        `round ${round}`,
      ).toBe(true);
      expect(agentProcesses().sort(), `round ${round}`).toEqual([...named].sort());
      const down = await run("down", "--timeout", "5");
      expect(down.code, down.err).toBe(0);
      expect(agentProcesses(), `round ${round}`).toEqual([]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
