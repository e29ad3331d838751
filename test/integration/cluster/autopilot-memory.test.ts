/**
 * The autopilot's back-off outlives its process: three real agents, the
 * embedded store, and `shardctl autopilot --once` run twice, as from cron.
 * The target refuses the shard (it holds a newer copy), so the first run's
 * move aborts and backs off (the run exits 1); the second run, a new process, takes the
 * back-off up from the store and does not try the move again, while the
 * other move goes ahead. A record in the store that is junk does not stop a
 * run: it is logged, and replaced.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { shardctlCommand } from "../../helpers/cli.js";
import { plantRefusedMove, readMapFile, writeZoneMatrix, localClusterSuite } from "./local-fixture.js";

// 12 segments on 3 nodes: 12 shards of one segment each, so a hot shard moves whole (no split)
const SEGMENTS = 12;
const cluster = localClusterSuite("autopilot-memory", SEGMENTS);
const { env, cli, seg } = cluster;

describe("the autopilot's back-off across processes", () => {
  it("a second `autopilot --once` does not try again a move that failed in the first", async () => {
    // the planner moves p to b and q to c; b refuses p every time (it holds a newer copy)
    const { a, b, c, p, q, fromB } = await plantRefusedMove(cluster.dir, cluster.token, seg, "memory");
    fromB.close();
    const cfg = join(cluster.dir, "memory.yaml");
    writeFileSync(cfg, "reshard:\n  splitRate: 1000000\n  mergeRate: 0\n  shardLoadCap: 1000000\n");
    const zones = writeZoneMatrix(cluster.dir);
    // each run its own process (the build), as cron would start it
    const once = async () => {
      const { command, args } = shardctlCommand();
      const child = spawn(
        command,
        [
          ...args,
          "--data-dir",
          cluster.dir,
          "autopilot",
          "--once",
          "--latency",
          zones,
          "--move-backoff",
          "600",
        ],
        { env: { ...env, SHARDCTL_CONFIG: cfg }, stdio: ["ignore", "pipe", "pipe"] },
      );
      let err = "";
      child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
      child.stdout!.on("data", (d: Buffer) => (err += d.toString()));
      const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
      return { code, err };
    };
    const attemptsOfP = async () => {
      const all = JSON.parse((await cli("migrations", "--json")).out) as { shard: string; phase: string }[];
      return all.filter((r) => r.shard === p.id);
    };
    const failedP = new RegExp(`migration of ${p.id} to ${b.id} failed: .*shard-exists`);

    // the first run: p's move fails and backs off (exit 1, the error names it); q's goes through;
    // the back-off is in the store
    const first = await once();
    expect(first.code, first.err).toBe(1);
    expect(first.err).toMatch(failedP);
    expect(first.err).toMatch(
      new RegExp(`error: the cycle ran, but the move of ${p.id} to ${b.id} failed: .*shard-exists`),
    );
    expect(first.err).toMatch(/\(failure 1 in a row\)/);
    expect(readMapFile(cluster.dir).map.shards.find((s) => s.id === q.id)!.node).toBe(c.id);
    expect((await attemptsOfP()).map((r) => r.phase)).toEqual(["aborted"]);
    const memoryFile = join(cluster.dir, "autopilot-memory.json");
    expect(existsSync(memoryFile)).toBe(true);
    expect(readFileSync(memoryFile, "utf8")).toContain(`"shard":"${p.id}","target":"${b.id}","failures":1`);

    // the second run, a new process: p → b is backing off, not tried (nothing this run tried
    // failed: exit 0)
    const second = await once();
    expect(second.code, second.err).toBe(0);
    expect(second.err).not.toMatch(failedP);
    expect(second.err).toMatch(
      new RegExp(`backing off: ${p.id} → ${b.id} until .*\\(1 failure: .*shard-exists`),
    );
    expect(await attemptsOfP()).toHaveLength(1);
    expect(readMapFile(cluster.dir).map.shards.find((s) => s.id === p.id)!.node).toBe(a.id);

    // junk in the store's record: the run goes on (and, remembering nothing, tries p again), says so,
    // and saves a readable record again
    writeFileSync(memoryFile, "{ this is not the autopilot's memory");
    const third = await once();
    expect(third.code, third.err).toBe(1);
    expect(third.err).toMatch(/memory of failed moves in the store is unreadable \(not JSON\)/);
    expect(third.err).toMatch(failedP);
    expect(JSON.parse(readFileSync(memoryFile, "utf8")).moves).toHaveLength(1);
  }, 180_000);
});
