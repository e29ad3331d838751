/**
 * `reshard --apply` after a coordinator of a split or merge died mid-change
 * (real agents, the embedded store): while that coordinator lives (here
 * stopped at the fenced point), a run is refused (exit 3) and writes no
 * journal record; once it is dead, the next run finishes its record, as
 * `migrate --apply` does, and applies the layout.
 */
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { shardctlCommand } from "../../helpers/cli.js";
import { processState } from "../../helpers/proc.js";
import { tempDir } from "../agent/harness.js";
import { clusterCli, clusterEnv, downLocalCluster, upLocalCluster, until } from "./local-fixture.js";

let dir: string;
const env = clusterEnv(64);
const cli = clusterCli(() => dir, env);

beforeAll(async () => {
  dir = tempDir("reshard-orphan");
  // every shard is cold and may change at once: the diff merges the shards of each node
  const config = join(dir, "shardctl.yaml");
  writeFileSync(config, "reshard:\n  minDwellSeconds: 0\n  mergeRate: 1\n");
  env.SHARDCTL_CONFIG = config;
  await upLocalCluster(cli, dir);
});

afterAll(async () => {
  await downLocalCluster(cli, dir);
});

async function journal() {
  return (await new EmbeddedStore(dir).listMigrations()).records.map((r) => r.record);
}

/** `reshard --apply` run until it stops at failpoint `fp` (SIGSTOP): the process, and its exit. */
async function reshardStoppedAt(fp: string) {
  const { command, args } = shardctlCommand();
  const child = spawn(command, [...args, "--data-dir", dir, "reshard", "--apply"], {
    env: { ...env, SHARDCTL_FAILPOINT: fp },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise((r) => child.once("exit", r));
  try {
    await until(
      () => err.includes(`failpoint ${fp}: stopping`) && processState(child.pid!) === "T",
      60_000,
      () => err,
    );
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  return { child, exited };
}

describe("reshard --apply and a dead coordinator's record", () => {
  it("refuses without a journal record while it lives; finishes its record once it died, then applies", async () => {
    const { child, exited } = await reshardStoppedAt("migrate.fenced");
    try {
      const before = await journal();
      expect(before.map((r) => r.phase)).toEqual(["fenced"]);
      // Given its coordinator alive (stopped): a run is refused, and leaves no record
      const refused = await cli("reshard", "--apply");
      expect(refused.code, refused.err).toBe(3);
      expect(refused.err).toMatch(/is being migrated by another coordinator/);
      expect(refused.err).toMatch(/shardctl migrations --recover/);
      expect((await journal()).map((r) => r.id)).toEqual(before.map((r) => r.id));
      // When it dies
      child.kill("SIGKILL");
      await exited;
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    // Then the next run finishes its record first, and applies the layout
    const r = await cli("reshard", "--apply");
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/recovery: migration \S+ \(\S+\): rolled-back/);
    const after = await journal();
    expect(after[0].phase).toBe("aborted");
    expect(after.slice(1).length).toBeGreaterThan(0);
    expect(after.slice(1).every((x) => x.phase === "done")).toBe(true);
  });

  it("finishes a merge whose coordinator died after the releases, once the agents removed the absorbed copies at a restart", async () => {
    // a merge's absorbed shard, released, leaves the map for good: an agent that reads the map at
    // start removes its copy; a recovery that releases it again then hears 404 unknown-shard (before:
    // a problem, the record left "roll-forward pending" for ever)
    // a fresh cluster, every shard cold: the diff merges the shards of each node
    await downLocalCluster(cli, dir);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "shardctl.yaml"), "reshard:\n  minDwellSeconds: 0\n  mergeRate: 1\n");
    await upLocalCluster(cli, dir);
    const { child, exited } = await reshardStoppedAt("migrate.activated");
    child.kill("SIGKILL");
    await exited;
    const open = (await journal()).filter((r) => r.phase === "committed");
    expect(open).toHaveLength(1);
    // the agents restart (and read the map): the absorbed copies go
    expect((await cli("down", "--timeout", "5")).code).toBe(0);
    const up = await cli("up", "--local", "--nodes", "3", "--zones", "a,b,c");
    expect(up.code, up.err).toBe(0);
    const r = await cli("migrations", "--recover");
    expect(r.code, r.err).toBe(0);
    const rec = (await journal()).find((x) => x.id === open[0].id)!;
    expect(rec.phase, JSON.stringify(rec)).toBe("done");
    expect(rec.rollForwardPending).toBeUndefined();
  });
});
