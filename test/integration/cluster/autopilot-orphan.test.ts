/**
 * The autopilot finishes the migrations a dead coordinator left open before
 * its reshard stage plans, on three real agents and the embedded store: a
 * `reshard --apply` killed (-9) while its split was fenced left a record open;
 * the autopilot's next cycle planned the same split, was refused ("being
 * migrated by another coordinator"), and put it in back-off for a failure not
 * its own; the record was rolled back only later, by the migration stage.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cli as runShardctl, watchedProcess } from "../../helpers/cli.js";
import { hasOwnShard, localClusterSuite, stoppedAtFailpoint, twoBusyShards } from "./local-fixture.js";

const SEGMENTS = 64;
const cluster = localClusterSuite("autopilot-orphan", SEGMENTS);
const { env, seg } = cluster;

describe("an orphaned record at the start of an autopilot cycle", () => {
  it("is recovered before the reshard stage plans: its shard's split goes through, nothing backs off", async () => {
    const { keyX, keyY, c } = await twoBusyShards(cluster, "orphan");
    const cfg = join(cluster.dir, "orphan.yaml");
    writeFileSync(
      cfg,
      "reshard:\n  splitRate: 0.05\n  mergeRate: 0\n  shardLoadCap: 100000\n  minDwellSeconds: 0\n",
    );
    // a coordinator killed while its first split is fenced leaves that record open
    const coordinator = watchedProcess(["--data-dir", cluster.dir, "--config", cfg, "reshard", "--apply"], {
      ...env,
      SHARDCTL_FAILPOINT: "migrate.fenced",
    });
    await stoppedAtFailpoint(coordinator, "migrate.fenced");
    coordinator.child.kill("SIGKILL");
    await coordinator.exited;
    const open = await runShardctl(["--data-dir", cluster.dir, "migrations", "--json"], env);
    expect(open.out).toMatch(/"phase": "fenced"/);

    const pilot = await runShardctl(
      ["--data-dir", cluster.dir, "--config", cfg, "autopilot", "--once", "--no-migrate"],
      env,
    );
    expect(pilot.code, pilot.err).toBe(0);
    expect(pilot.err).toMatch(/recovery: .*rolled[- ]back|rolled back/);
    expect(pilot.err).not.toMatch(/another coordinator|not tried again/);
    // both busy segments got a shard of their own, and their keys read back
    expect(hasOwnShard(cluster.dir, seg, keyX)).toBe(true);
    expect(hasOwnShard(cluster.dir, seg, keyY)).toBe(true);
    expect((await c.get(keyX))?.value.toString()).toBe("x59");
    expect((await c.get(keyY))?.value.toString()).toBe("y59");
    c.close();
  }, 120_000);
});
