/**
 * The autopilot and a move that keeps failing, on three real agents and the
 * embedded store: the target refuses the shard (it holds a newer copy of it),
 * so every attempt aborts. The autopilot process must not plan and try that
 * move every cycle: it backs off (here 1.5 s, doubling, capped at 4 s), says
 * so in its log, lets the other move go ahead, and once the target accepts
 * the move goes through and the back-off is gone.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot, shardctlCommand } from "../../helpers/cli.js";
import { http } from "../agent/harness.js";
import {
  plantRefusedMove,
  logStamps,
  readMapFile,
  until,
  writeZoneMatrix,
  localClusterSuite,
} from "./local-fixture.js";

// 12 segments on 3 nodes: 12 shards of one segment each, so a hot shard moves whole (no split)
const SEGMENTS = 12;
let pilot: ChildProcess | undefined;
const cluster = localClusterSuite("autopilot-backoff", SEGMENTS);
const { env, cli, seg } = cluster;

afterAll(async () => {
  if (pilot && pilot.exitCode === null && pilot.signalCode === null) pilot.kill("SIGKILL");
});

describe("a move that keeps failing", () => {
  it("backs off (doubling, capped), lets the other move go ahead, and goes through once the target accepts", async () => {
    // the planner moves p to b and q to c; b refuses p every time (it holds a newer copy)
    const { a, b, c, p, q, keyP, fromB, bPort, plantEpoch } = await plantRefusedMove(
      cluster.dir,
      cluster.token,
      seg,
      "backoff",
    );
    const cfg = join(cluster.dir, "backoff.yaml");
    // no resharding in the way: nothing splits, nothing merges
    writeFileSync(cfg, "reshard:\n  splitRate: 1000000\n  mergeRate: 0\n  shardLoadCap: 1000000\n");
    const zones = writeZoneMatrix(cluster.dir);
    const { command, args } = shardctlCommand();
    pilot = spawn(
      command,
      [
        ...args,
        "--data-dir",
        cluster.dir,
        "autopilot",
        "--interval",
        "0.3",
        "--latency",
        zones,
        "--move-backoff",
        "1.5",
        "--move-backoff-max",
        "4",
      ],
      { cwd: repoRoot, env: { ...env, SHARDCTL_CONFIG: cfg }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let log = "";
    pilot.stdout!.on("data", (d) => (log += d));
    pilot.stderr!.on("data", (d) => (log += d));
    const exited = new Promise<number | null>((r) => pilot!.once("exit", (code) => r(code)));

    const failed = new RegExp(`migration of ${p.id} to ${b.id} failed: .*shard-exists`);
    await until(
      () => failed.test(log),
      60_000,
      () => `the first attempt of ${p.id} → ${b.id}\n${log}`,
    );
    // the other move is not held up by the failing one
    await until(
      () => readMapFile(cluster.dir).map.shards.find((s) => s.id === q.id)!.node === c.id,
      60_000,
      () => `${q.id} → ${c.id}\n${log}`,
    );
    // watch the cycles for a while: many cycles, few attempts
    const firstAt = logStamps(log, failed)[0];
    await until(
      () => Date.now() - firstAt > 9000,
      20_000,
      () => "9 s of cycles",
    );
    const window = log;
    const attempts = logStamps(window, failed);
    const cycles = logStamps(window, /autopilot: term 0: migrations: /).filter((t) => t > firstAt);
    expect(cycles.length, window).toBeGreaterThanOrEqual(6);
    expect(attempts.length, window).toBeGreaterThanOrEqual(2);
    expect(attempts.length, window).toBeLessThanOrEqual(4);
    // each retry only after its back-off: 1.5 s, then 3 s, then the cap of 4 s
    const schedule = [1500, 3000, 4000];
    attempts
      .slice(1)
      .forEach((t, i) => expect(t - attempts[i], window).toBeGreaterThanOrEqual(schedule[i] - 50));
    // the log says which move is backing off, until when, and why
    expect(window).toMatch(
      new RegExp(
        `${p.id} to ${b.id} failed: .*; not tried again before \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\(failure 1 in a row\\)`,
      ),
    );
    expect(window).toMatch(
      new RegExp(
        `backing off: ${p.id} → ${b.id} until \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\(\\d failures?: .*shard-exists`,
      ),
    );
    // every attempt is in the journal (aborted, the shard untouched): none was hidden from the log
    // (read once no attempt is in flight: the next one may be starting as the window closes)
    type Rec = { shard: string; phase: string; error?: string };
    const ofP = await until(
      async () => {
        const all = JSON.parse((await cli("migrations", "--json")).out) as Rec[];
        const mine = all.filter((r) => r.shard === p.id);
        return mine.every((r) => r.phase === "aborted" || r.phase === "done") && mine;
      },
      10_000,
      () => `no attempt of ${p.id} in flight\n${log}`,
    );
    expect(ofP.length).toBeGreaterThanOrEqual(attempts.length);
    expect(ofP.every((r) => r.phase === "aborted" && /shard-exists/.test(r.error ?? ""))).toBe(true);
    expect(readMapFile(cluster.dir).map.shards.find((s) => s.id === p.id)!.node).toBe(a.id);

    // b accepts again: the move goes through at the end of its back-off, and the back-off is gone
    const dropped = await http(bPort, "DELETE", `/v1/admin/shards/${p.id}`, {
      token: cluster.token,
      body: JSON.stringify({ epoch: plantEpoch }),
      headers: { "content-type": "application/json" },
    });
    expect(dropped.status).toBe(200);
    await until(
      () => readMapFile(cluster.dir).map.shards.find((s) => s.id === p.id)!.node === b.id,
      30_000,
      () => `${p.id} → ${b.id}\n${log}`,
    );
    const movedAt = Date.now();
    await until(
      () => logStamps(log, /autopilot: term 0: migrations: /).filter((t) => t > movedAt).length >= 2,
      20_000,
      () => "two cycles after the move",
    );
    const lastCycle = log
      .split("\n")
      .filter((l) => /autopilot: term 0: migrations: /.test(l))
      .at(-1)!;
    expect(lastCycle).not.toMatch(/backing off/);
    expect((await fromB.get(keyP))?.value.toString()).toBe("p59");
    fromB.close();

    pilot.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 180_000);
});
