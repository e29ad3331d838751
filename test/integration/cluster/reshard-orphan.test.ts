/**
 * `reshard --apply` after a coordinator of a split or merge died mid-change
 * (real agents, the embedded store): while that coordinator lives (here
 * stopped at the fenced point), a run is refused (exit 3) and writes no
 * journal record; once it is dead, the next run finishes its record, as
 * `migrate --apply` does, and applies the layout.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
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

describe("reshard --apply and a dead coordinator's record", () => {
  it("refuses without a journal record while it lives; finishes its record once it died, then applies", async () => {
    const { command, args } = shardctlCommand();
    const child = spawn(command, [...args, "--data-dir", dir, "reshard", "--apply"], {
      env: { ...env, SHARDCTL_FAILPOINT: "migrate.fenced" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise((r) => child.once("exit", r));
    try {
      await until(
        () => err.includes("failpoint migrate.fenced: stopping") && processState(child.pid!) === "T",
        60_000,
        () => err,
      );
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
});
