/**
 * `shardctl reshard --apply` on a local cluster of real agents, where each
 * change of the diff is a migration: when the agent of a later change dies
 * after earlier changes were committed, the command must say that the diff
 * was applied in part (exit 1, the committed version, no "nothing was
 * changed" and no "dry run"), and the map must hold exactly those changes.
 */
import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocationMap } from "../../../src/engine/location-map.js";
import { freePortRange, tempDir } from "../agent/harness.js";
import { cli as runShardctl, shardctlCommand } from "../../helpers/cli.js";
import { processState } from "../../helpers/proc.js";
import { until } from "./local-fixture.js";

let dir: string;
const env: NodeJS.ProcessEnv = { ...process.env, SHARDCTL_SEGMENTS: "64", SHARDCTL_ZONES: "a,b,c" };
delete env.SHARDCTL_TOKEN;
delete env.SHARDCTL_DATA_DIR;
delete env.SHARDCTL_STORE;
delete env.SHARDCTL_FAILPOINT;
const cli = (...args: string[]) => runShardctl(["--data-dir", dir, ...args], env);
const readMap = (): { version: number; map: LocationMap } => {
  const f = JSON.parse(readFileSync(join(dir, "location-map.json"), "utf8"));
  return { version: f.version, map: f.map };
};

beforeAll(async () => {
  dir = tempDir("reshard-apply");
  // every shard is cold and may change at once: the diff merges the 4 shards of each node
  const config = join(dir, "shardctl.yaml");
  writeFileSync(config, "reshard:\n  minDwellSeconds: 0\n  mergeRate: 1\n");
  env.SHARDCTL_CONFIG = config;
  const base = String(await freePortRange(3));
  const up = await cli("up", "--local", "--nodes", "3", "--zones", "a,b,c", "--base-port", base, "--json");
  expect(up.code, up.err).toBe(0);
}, 60_000);

afterAll(async () => {
  await cli("down", "--timeout", "5");
  rmSync(dir, { recursive: true, force: true });
});

describe("reshard --apply carried out by the agents", () => {
  it("a diff that stops half way (an agent died) reports the changes that stay committed, exit 1", async () => {
    const dry = JSON.parse((await cli("reshard", "--json")).out) as {
      diff: { ops: { kind: string; node: string }[] };
    };
    expect(dry.diff.ops.map((o) => `${o.kind}@${o.node}`)).toEqual([
      "merge@node-1",
      "merge@node-2",
      "merge@node-3",
    ]);
    const before = readMap();
    const { command, args } = shardctlCommand();
    const child = spawn(command, [...args, "--data-dir", dir, "reshard", "--apply"], { env });
    let out = "";
    let err = "";
    let killed = false;
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString();
      // the second change has started: the third one's agent dies before it does
      if (!killed && /merge of shard-5/.test(err)) {
        killed = true;
        const pid = Number(readFileSync(join(dir, "local", "node-3", "agent.pid"), "utf8").trim());
        process.kill(pid, "SIGKILL");
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(killed, err).toBe(true);
    const after = readMap();
    // the first two merges are committed, the third is not
    expect(after.version).toBeGreaterThan(before.version);
    const ids = after.map.shards.map((s) => s.id);
    expect(ids).toEqual(expect.arrayContaining(["shard-1", "shard-5", "shard-9", "shard-10"]));
    expect(ids).not.toContain("shard-2");
    expect(ids).not.toContain("shard-6");
    expect(err).toMatch(/error: applied only in part: 2 of 3 change\(s\) done/);
    expect(err).toMatch(new RegExp(`layout version ${before.version} → ${after.version}`));
    expect(err).not.toMatch(/nothing was changed/);
    expect(err).not.toMatch(/dry run/);
    expect(err).toMatch(/hint: .*shardctl reshard/);
    expect(out).toMatch(new RegExp(`applied: layout version ${before.version} → ${after.version}`));
    expect(code).toBe(1);
  }, 60_000);

  it("a change committed whose agent then died: applied in part (exit 1), not 'nothing was changed'; recovery finishes it", async () => {
    // node-3 is back (the test above killed it) and its open record is finished
    // (`up --local` on an existing cluster starts what is down, as it is)
    const up = await cli("up", "--local");
    expect(up.code, up.err).toBe(0);
    expect((await cli("migrations", "--recover")).code).toBe(0);
    const dry = JSON.parse((await cli("reshard", "--json")).out) as {
      diff: { ops: { kind: string; node: string }[] };
    };
    expect(dry.diff.ops.map((o) => `${o.kind}@${o.node}`)).toEqual(["merge@node-3"]);
    const before = readMap();
    const { command, args } = shardctlCommand();
    const child = spawn(command, [...args, "--data-dir", dir, "reshard", "--apply"], {
      env: { ...env, SHARDCTL_FAILPOINT: "migrate.committed" },
    });
    let err = "";
    let stopped = false;
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString();
      const m = /failpoint migrate\.committed: stopping \(pid (\d+)\)/.exec(err);
      if (m && !stopped) {
        stopped = true;
        // the merge is committed: its agent dies before the roll-forward, then the coordinator goes on
        const pid = Number(readFileSync(join(dir, "local", "node-3", "agent.pid"), "utf8").trim());
        process.kill(pid, "SIGKILL");
        // continued once the kernel reports it stopped (a SIGCONT before the stop would be lost)
        void until(
          () => processState(Number(m[1])) === "T",
          30_000,
          () => err,
        ).then(() => process.kill(Number(m[1]), "SIGCONT"));
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    const after = readMap();
    expect(after.version).toBeGreaterThan(before.version);
    expect(err).toMatch(
      /error: applied only in part: 0 of 1 change\(s\) done; then: merge of .* committed, but/,
    );
    expect(err).not.toMatch(/nothing was changed/);
    expect(code, err).toBe(1);
    // the agent back, recovery rolls it forward
    const again = await cli("up", "--local");
    expect(again.code, again.err).toBe(0);
    const rec = await cli("migrations", "--recover");
    expect(rec.code, rec.err).toBe(0);
    expect((await cli("migrations", "--json")).out).not.toMatch(/"phase": "committed"/);
  }, 90_000);
});
