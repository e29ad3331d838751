/**
 * The autopilot's reshard stage and a split that keeps failing, on three real
 * agents and the embedded store: the node refuses the split's new piece (it
 * holds a newer copy of a shard by that id), so the split aborts. The layout
 * changes are carried out one after the other and stop at the first failure:
 * without a back-off the failing split was tried every cycle and the split
 * after it never ran. Now the failing split backs off, the other one goes
 * through, and the failing one is tried again when its back-off ends.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { LayoutOp } from "../../../src/engine/assigner.js";
import { repoRoot, cli as runShardctl, shardctlCommand } from "../../helpers/cli.js";
import { http } from "../agent/harness.js";
import {
  hasOwnShard,
  logStamps,
  readMapFile,
  until,
  localClusterSuite,
  twoBusyShards,
} from "./local-fixture.js";

const SEGMENTS = 64;
let pilot: ChildProcess | undefined;
const cluster = localClusterSuite("autopilot-layout-backoff", SEGMENTS);
const { env, seg } = cluster;

afterAll(async () => {
  if (pilot && pilot.exitCode === null && pilot.signalCode === null) pilot.kill("SIGKILL");
});

/** Whether the segment of `key` has a shard of its own. */
const dedicated = (key: string) => hasOwnShard(cluster.dir, seg, key);

describe("a split that keeps failing", () => {
  it("backs off, lets the split after it go through, and is done once its back-off ends", async () => {
    const { map } = readMapFile(cluster.dir);
    const { x, y, keyX, keyY, c } = await twoBusyShards(cluster, "layout");
    const cfg = join(cluster.dir, "layout.yaml");
    writeFileSync(
      cfg,
      "reshard:\n  splitRate: 0.05\n  mergeRate: 0\n  shardLoadCap: 100000\n  minDwellSeconds: 0\n",
    );
    // the two splits, in the order the autopilot carries them out
    const dry = await runShardctl(["--data-dir", cluster.dir, "--config", cfg, "reshard", "--json"], env);
    expect(dry.code, dry.err).toBe(0);
    const ops = (JSON.parse(dry.out) as { diff: { ops: LayoutOp[] } }).diff.ops;
    expect(ops.map((o) => (o.kind === "split" ? o.shard : "?")).sort()).toEqual([x.id, y.id].sort());
    const first = ops[0] as Extract<LayoutOp, { kind: "split" }>;
    const firstKey = first.shard === x.id ? keyX : keyY;
    const secondKey = first.shard === x.id ? keyY : keyX;
    // the first split's node refuses its new piece: it holds that shard id at a newer epoch
    const piece = first.pieces[1].id;
    const port = Number(map.nodes.find((n) => n.id === first.node)!.address.split(":")[1]);
    const planted = await http(port, "POST", `/v1/admin/shards/${piece}/receive`, {
      token: cluster.token,
      body: JSON.stringify({ epoch: 6 }),
      headers: { "content-type": "application/json" },
    });
    expect(planted.status).toBe(201);

    const { command, args } = shardctlCommand();
    pilot = spawn(
      command,
      [
        ...args,
        "--data-dir",
        cluster.dir,
        "autopilot",
        "--no-migrate",
        "--interval",
        "0.3",
        "--move-backoff",
        "3",
        "--move-backoff-max",
        "4",
      ],
      { cwd: repoRoot, env: { ...env, SHARDCTL_CONFIG: cfg }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let log = "";
    pilot.stdout!.on("data", (d) => (log += d));
    pilot.stderr!.on("data", (d) => (log += d));
    const exited = new Promise<number | null>((r) => pilot!.once("exit", (code) => r(code)));

    const failed = new RegExp(`ABORT: target \\S+ \\(receive ${piece}\\) answered 409 shard-exists`);
    await until(
      () => failed.test(log),
      60_000,
      () => `the first split fails\n${log}`,
    );
    const firstAt = logStamps(log, failed)[0];
    const backedOff = new RegExp(
      `the split of ${first.shard} is not tried again before \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\(failure 1 in a row\\)`,
    );
    await until(
      () => backedOff.test(log),
      10_000,
      () => `the back-off of the first split\n${log}`,
    );
    // the split after it is not held up: its segment gets a shard of its own within a few cycles
    await until(
      () => dedicated(secondKey),
      30_000,
      () => `the second split\n${log}`,
    );
    // (the cycle that carried it out says why the first one was held back)
    const held = new RegExp(`backing off: split of ${first.shard} until \\S+Z \\(1 failure: `);
    await until(
      () => held.test(log),
      10_000,
      () => `the held-back split in the cycle's line\n${log}`,
    );
    // and the first is tried again once its back-off is over, and is done
    await until(
      () => dedicated(firstKey),
      30_000,
      () => `the first split, retried\n${log}`,
    );
    const attempts = logStamps(log, failed);
    expect(attempts.length, log).toBeLessThanOrEqual(3);
    const schedule = [3000, 4000];
    attempts
      .slice(1)
      .forEach((t, i) => expect(t - attempts[i], log).toBeGreaterThanOrEqual(schedule[i] - 50));
    const cycles = logStamps(log, /autopilot: term 0: /).filter((t) => t > firstAt);
    expect(cycles.length, log).toBeGreaterThanOrEqual(4);
    // both keys are served from their new shards
    expect((await c.get(keyX))?.value.toString()).toBe("x59");
    expect((await c.get(keyY))?.value.toString()).toBe("y59");
    c.close();
    pilot.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 180_000);
});
