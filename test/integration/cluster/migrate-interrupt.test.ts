/**
 * Ctrl-C or SIGTERM during `shardctl migrate --apply` (a real process, real
 * agents, the embedded store). The coordinator is stopped at a phase boundary
 * by a failpoint, sent SIGINT or SIGTERM, and continued: it must stop at its
 * next safe point — before the commit roll back (source unfenced, copy
 * dropped, record aborted), after it finish the activation (record done) —
 * and exit 130 (143 for SIGTERM). The
 * shard then serves reads and writes, with every acknowledged write. A second
 * SIGINT ends the process at once.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { MigrateResult } from "../../../src/commands/migrate.js";
import { parsePlanFile, serialisePlanFile } from "../../../src/engine/plan-file.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { watchedProcess } from "../../helpers/cli.js";
import { http } from "../agent/harness.js";
import {
  continueUntilExit,
  keysIn,
  localAgentPid,
  localClusterSuite,
  moveStep,
  readMapFile,
  stoppedAtFailpoint,
  until,
} from "./local-fixture.js";
import { processState } from "../../helpers/proc.js";

const SEGMENTS = 64;
const cluster = localClusterSuite("migrate-interrupt", SEGMENTS);
const { env, cli, seg } = cluster;

/** `migrate --apply --json` of `shard` to `target`, stopped by the failpoint `fp`. */
function coordinator(shard: string, target: string, fp: string) {
  const p = watchedProcess(
    ["--data-dir", cluster.dir, "migrate", "--shard", shard, "--to", target, "--apply", "--json"],
    { ...env, SHARDCTL_FAILPOINT: fp },
  );
  return {
    ...p,
    /** What --json printed. */
    json: () => JSON.parse(p.out()) as MigrateResult,
    stopped: () => stoppedAtFailpoint(p, fp),
  };
}

async function agentState(node: string, shard: string): Promise<string> {
  const { map } = readMapFile(cluster.dir);
  const port = Number(map.nodes.find((n) => n.id === node)!.address.split(":")[1]);
  const r = await http(port, "GET", `/v1/shards/${shard}`, { token: cluster.token });
  return r.status === 200 ? (r.json() as { state: string }).state : `http ${r.status}`;
}

/** Acknowledged writes to keys of `shard`. */
async function writeTo(shard: string, prefix: string, n: number): Promise<Map<string, string>> {
  const s = readMapFile(cluster.dir).map.shards.find((x) => x.id === shard)!;
  const acked = new Map<string, string>();
  for (const k of keysIn(seg, s.ranges, prefix, n)) {
    const r = await cli("put", k, `${k}-value`);
    expect(r.code, r.err).toBe(0);
    acked.set(k, `${k}-value`);
  }
  return acked;
}

/**
 * A move of a node-1 shard (after `n` writes under `prefix`) whose target agent is killed while the
 * coordinator is stopped at failpoint `fp`; the coordinator, continued, has exited 1.
 */
async function targetDiesAt(fp: string, target: string, prefix: string, n: number) {
  const { map } = readMapFile(cluster.dir);
  const sh = map.shards.find((s) => s.node === "node-1")!;
  const acked = await writeTo(sh.id, prefix, n);
  const c = coordinator(sh.id, target, fp);
  await c.stopped();
  process.kill(localAgentPid(cluster.dir, target), "SIGKILL");
  c.child.kill("SIGCONT");
  const { code } = await c.exited;
  expect(code, c.err()).toBe(1);
  return { sh, acked, c };
}

/** Every acknowledged write is read back, and a new write to the shard is acknowledged and read. */
async function expectServed(shard: string, acked: Map<string, string>, prefix: string): Promise<void> {
  for (const [k, v] of acked) {
    const g = await cli("get", k);
    expect(g.code, `${k}: ${g.err}`).toBe(0);
    expect(g.out, k).toBe(v);
  }
  const more = await writeTo(shard, `${prefix}-after`, 2);
  for (const [k, v] of more) expect((await cli("get", k)).out).toBe(v);
}

async function record(shard: string) {
  const { records } = await new EmbeddedStore(cluster.dir).listMigrations();
  return records.map((r) => r.record).filter((r) => r.shard === shard && !r.layout);
}

describe("Ctrl-C or SIGTERM during migrate --apply", () => {
  for (const [fp, index, outcome, sig, exit] of [
    ["migrate.copying", 0, "aborted", "SIGINT", 130],
    ["migrate.fenced", 1, "aborted", "SIGINT", 130],
    ["migrate.committed", 2, "done", "SIGINT", 130],
    // what a service manager, timeout(1) or a CI runner sends
    ["migrate.fenced", 4, "aborted", "SIGTERM", 143],
    ["migrate.committed", 5, "done", "SIGTERM", 143],
  ] as const) {
    it(`${sig} at ${fp}: ${outcome === "done" ? "finishes the committed move" : "rolls back"}, ends the record ${outcome} and exits ${exit}`, async () => {
      const { map } = readMapFile(cluster.dir);
      const sh = map.shards[index];
      const target = map.nodes.find((n) => n.id !== sh.node)!.id;
      const prefix = `int-${index}`;
      const acked = await writeTo(sh.id, prefix, 20);
      const c = coordinator(sh.id, target, fp);
      try {
        await c.stopped();
        // When the signal reaches the coordinator there
        c.child.kill(sig);
        c.child.kill("SIGCONT");
        const { code, signal } = await c.exited;
        // Then it says what it does, and exits 128 + the signal's number (not killed by the signal)
        expect(signal, c.err()).toBeNull();
        expect(code, c.err()).toBe(exit);
        expect(c.err()).toMatch(
          sig === "SIGINT"
            ? /SIGINT: finishing the step in flight; press Ctrl-C again to exit now/
            : /SIGTERM: finishing the step in flight; send SIGTERM again to exit now/,
        );
      } finally {
        if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
      }
      // and the journal record is ended
      const [r] = await record(sh.id);
      expect(r.phase, JSON.stringify(r)).toBe(outcome);
      // --json still says what was done, and why the command stopped
      const result = c.json();
      expect(result.applied).toBe(outcome === "done");
      expect(result.migrations.map((m) => [m.shard, m.phase])).toEqual(
        outcome === "done" ? [[sh.id, "done"]] : [],
      );
      expect(result.error?.exitCode).toBe(exit);
      expect(result.error?.message).toMatch(new RegExp(`interrupted \\(${sig}\\)`));
      // the shard is on the side the outcome says, served there
      const owner = readMapFile(cluster.dir).map.shards.find((s) => s.id === sh.id)!.node;
      expect(owner).toBe(outcome === "done" ? target : sh.node);
      expect(await agentState(owner, sh.id)).toBe("owned");
      await expectServed(sh.id, acked, prefix);
    });
  }

  it("a second Ctrl-C exits at once; recovery finishes what it left", async () => {
    const { map } = readMapFile(cluster.dir);
    const sh = map.shards[3];
    const target = map.nodes.find((n) => n.id !== sh.node)!.id;
    const acked = await writeTo(sh.id, "int-3", 10);
    const targetPid = localAgentPid(cluster.dir, target);
    const c = coordinator(sh.id, target, "migrate.fenced");
    try {
      await c.stopped();
      // the target does not answer: the step in flight cannot end
      process.kill(targetPid, "SIGSTOP");
      c.child.kill("SIGINT");
      c.child.kill("SIGCONT");
      await until(
        () => /finishing the step in flight/.test(c.err()),
        20_000,
        () => c.err(),
      );
      const t0 = Date.now();
      c.child.kill("SIGINT");
      const { signal } = await c.exited;
      expect(signal, c.err()).toBe("SIGINT");
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(c.err()).toMatch(/run `shardctl migrations --recover`/);
    } finally {
      process.kill(targetPid, "SIGCONT");
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
    }
    const rec = await cli("migrations", "--recover");
    expect(rec.code, rec.err).toBe(0);
    const [r] = await record(sh.id);
    expect(r.phase).toBe("aborted");
    await expectServed(sh.id, acked, "int-3");
  });

  it("a reader of stderr that went away (EPIPE) does not end the step: rolled back, exit 130", async () => {
    const { map } = readMapFile(cluster.dir);
    const sh = map.shards[6];
    const target = map.nodes.find((n) => n.id !== sh.node)!.id;
    const acked = await writeTo(sh.id, "int-6", 10);
    const c = coordinator(sh.id, target, "migrate.fenced");
    try {
      await c.stopped();
      // the terminal is gone: what the coordinator writes to stderr from now on fails with EPIPE
      c.child.stderr!.destroy();
      c.child.kill("SIGINT");
      c.child.kill("SIGCONT");
      const { code, signal } = await c.exited;
      expect(signal).toBeNull();
      expect(code).toBe(130);
    } finally {
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
    }
    const [r] = await record(sh.id);
    expect(r.phase, JSON.stringify(r)).toBe("aborted");
    expect(readMapFile(cluster.dir).map.shards.find((s) => s.id === sh.id)!.node).toBe(sh.node);
    await expectServed(sh.id, acked, "int-6");
  });

  it("a target that dies during the copy: the shard is served unfenced, its open record refuses another move with what it waits for, and --recover closes it once the target is back", async () => {
    const [target, other] = ["node-3", "node-2"];
    const { sh, acked, c } = await targetDiesAt("migrate.copying", target, "dies", 10);
    expect(c.err()).toMatch(
      new RegExp(
        `the roll-back did not finish: drop on ${target}: cannot reach 127\\.0\\.0\\.1:\\d+ \\(connection refused\\)`,
      ),
    );
    // not fenced: the hint does not send the user to unfence it, and writes go on
    expect(c.err()).toContain(
      `hint: ${sh.id} was not fenced: node-1 serves it as before; when ${target} answers again`,
    );
    expect(c.err()).not.toMatch(/unfences/);
    await expectServed(sh.id, acked, "dies-1");
    // the open record holds the shard: the refusal says what it waits for, not "another coordinator"
    // (a process of its own, as a user's: the recovery it runs first owns the record until it exits)
    const p = watchedProcess(
      ["--data-dir", cluster.dir, "migrate", "--shard", sh.id, "--to", other, "--apply"],
      env,
    );
    const refused = { code: (await p.exited).code, err: p.err() };
    expect(refused.code, refused.err).toBe(3);
    expect(refused.err).toMatch(
      new RegExp(
        `error: ${sh.id} has an open migration \\(\\S+-${sh.id}-\\S+ to ${target}\\): it was aborted, and its roll-back waits for an agent \\(drop on ${target}: cannot reach 127\\.0\\.0\\.1:\\d+ \\(connection refused\\)\\); nothing was applied`,
      ),
    );
    expect(refused.err).toContain(
      "hint: `shardctl migrations --recover` finishes it once that agent answers again",
    );
    expect(refused.err).not.toMatch(/another coordinator/);
    expect(readMapFile(cluster.dir).map.shards.find((s) => s.id === sh.id)!.node).toBe("node-1");
    // the listings say the record waits for its roll-back, not merely that it is copying
    const listed = await cli("migrations");
    expect(listed.out).toMatch(/copying \(roll-back pending\)/);
    expect(listed.out).toMatch(new RegExp(`roll-back waits for: drop on ${target}: cannot reach`));
    const status = await cli("status");
    expect(status.out).toMatch(new RegExp(`copying \\(roll-back pending: drop on ${target}: cannot reach`));
    const statusJson = JSON.parse((await cli("status", "--json")).out) as {
      migrations: { pending?: { kind: string; why: string } }[];
    };
    expect(statusJson.migrations.map((m) => m.pending?.kind)).toEqual(["roll-back"]);
    // the target back: recovery drops the copy and closes the record; the shard moves again
    expect((await cli("up", "--local")).code).toBe(0);
    const rec = await cli("migrations", "--recover");
    expect(rec.code, rec.err).toBe(0);
    const ended = await record(sh.id);
    expect(ended.filter((r) => r.phase !== "done" && r.phase !== "aborted")).toEqual([]);
    expect(ended.at(-1)).toMatchObject({ target, phase: "aborted" });
    const moved = await cli("migrate", "--shard", sh.id, "--to", other, "--apply");
    expect(moved.code, moved.err).toBe(0);
    expect(readMapFile(cluster.dir).map.shards.find((s) => s.id === sh.id)!.node).toBe(other);
    await expectServed(sh.id, acked, "dies-2");
  });

  it("a target that dies once the source is fenced: the hint says the source is unfenced again (it said recovery would unfence it)", async () => {
    expect((await cli("up", "--local")).code).toBe(0);
    const target = "node-2";
    const { sh, acked, c } = await targetDiesAt("migrate.fenced", target, "fenced-dies", 5);
    expect(c.err()).toMatch(new RegExp(`the roll-back did not finish: drop on ${target}: cannot reach`));
    expect(c.err()).toContain(
      `hint: ${sh.id} is unfenced again: node-1 serves it as before; when ${target} answers again`,
    );
    expect(c.err()).not.toMatch(/unfences/);
    await expectServed(sh.id, acked, "fenced-dies-1");
    expect((await cli("up", "--local")).code).toBe(0);
    const p = watchedProcess(["--data-dir", cluster.dir, "migrations", "--recover"], env);
    expect((await p.exited).code, p.err()).toBe(0);
  });

  it("a recovery whose roll-back cannot finish leaves the record with its roll-back pending, as the coordinator's own abort does", async () => {
    const { map } = readMapFile(cluster.dir);
    const sh = map.shards.find((s) => s.node === "node-2")!;
    const target = "node-3";
    const acked = await writeTo(sh.id, "orphan", 10);
    const c = coordinator(sh.id, target, "migrate.fenced");
    await c.stopped();
    // the coordinator dies with the shard fenced and the copy on the target; then the target dies too
    c.child.kill("SIGKILL");
    await c.exited;
    const pidOf = (n: string) => localAgentPid(cluster.dir, n);
    process.kill(pidOf(target), "SIGKILL");
    // each recovery and move in a process of its own, as a user's: a recovery owns the record it
    // takes over until its process exits (in this process, it would stay owned by a live one)
    const run = async (...args: string[]) => {
      const p = watchedProcess(["--data-dir", cluster.dir, ...args], env);
      return { code: (await p.exited).code, err: p.err() };
    };
    const rec = await run("migrations", "--recover");
    expect(rec.code, rec.err).toBe(1);
    const [open] = (await record(sh.id)).filter((r) => r.phase !== "done" && r.phase !== "aborted");
    expect(open.rollBackPending).toMatch(new RegExp(`^drop on ${target}: cannot reach`));
    // before: phase "copying" alone, and "being migrated by another coordinator" to the next move
    const listed = await cli("migrations");
    expect(listed.out).toMatch(/\(roll-back pending\)/);
    const statusJson = JSON.parse((await cli("status", "--json")).out) as {
      migrations: { shard: string; pending?: { kind: string } }[];
    };
    expect(statusJson.migrations.filter((m) => m.shard === sh.id).map((m) => m.pending?.kind)).toEqual([
      "roll-back",
    ]);
    const again = await run("migrate", "--shard", sh.id, "--to", "node-1", "--apply");
    expect(again.code, again.err).toBe(3);
    expect(again.err).toMatch(/it was aborted, and its roll-back waits for an agent/);
    expect(again.err).not.toMatch(/another coordinator/);
    // the target back, recovery finishes the roll-back; every acknowledged write is served
    expect((await cli("up", "--local")).code).toBe(0);
    const done = await run("migrations", "--recover");
    expect(done.code, done.err).toBe(0);
    expect((await record(sh.id)).filter((r) => r.phase !== "done" && r.phase !== "aborted")).toEqual([]);
    expect(readMapFile(cluster.dir).map.shards.find((s) => s.id === sh.id)!.node).toBe("node-2");
    await expectServed(sh.id, acked, "orphan-1");
  });

  it("a target that refuses the connection at the first step: the record is closed as aborted at once, and the shard moves elsewhere", async () => {
    const { map } = readMapFile(cluster.dir);
    const sh = map.shards.find((s) => s.node !== "node-3")!;
    const other = sh.node === "node-1" ? "node-2" : "node-1";
    const acked = await writeTo(sh.id, "refused", 5);
    const pid = localAgentPid(cluster.dir, "node-3");
    process.kill(pid, "SIGKILL");
    await until(
      () => ["", "Z"].includes(processState(pid)),
      10_000,
      () => "node-3 gone",
    );
    const r = await cli("migrate", "--shard", sh.id, "--to", "node-3", "--apply");
    expect(r.code, r.err).toBe(1);
    expect(r.err).toContain(`migration of ${sh.id} to node-3 aborted: cannot reach node-3`);
    expect(r.err).not.toMatch(/roll-back did not finish/);
    const recs = (await record(sh.id)).filter((x) => x.target === "node-3");
    expect(recs.at(-1)).toMatchObject({ phase: "aborted" });
    expect(recs.at(-1)!.rollBackPending).toBeUndefined();
    const moved = await cli("migrate", "--shard", sh.id, "--to", other, "--apply");
    expect(moved.code, moved.err).toBe(0);
    await expectServed(sh.id, acked, "refused-1");
    expect((await cli("up", "--local")).code).toBe(0);
  });

  // last: it kills an agent
  it("a plan's later step whose shard another coordinator moved meanwhile is refused as stale (exit 3), not moved again", async () => {
    expect((await cli("up", "--local")).code).toBe(0);
    const { map } = readMapFile(cluster.dir);
    const first = map.shards.find((s) => s.node === "node-1")!;
    const second = map.shards.find((s) => s.node === "node-2")!;
    const acked = new Map([
      ...(await writeTo(first.id, "stale-a", 5)),
      ...(await writeTo(second.id, "stale-b", 5)),
    ]);
    const made = await cli("plan", "--all", "--out", join(cluster.dir, "plan.json"));
    expect(made.code, made.err).toBe(0);
    const plan = parsePlanFile(readFileSync(join(cluster.dir, "plan.json"), "utf8"));
    writeFileSync(
      join(cluster.dir, "stale.json"),
      serialisePlanFile({
        ...plan,
        steps: [moveStep(first.id, "node-1", "node-3"), moveStep(second.id, "node-2", "node-3")],
      }),
    );
    const c = watchedProcess(
      ["--data-dir", cluster.dir, "migrate", "--apply", join(cluster.dir, "stale.json"), "--json"],
      { ...env, SHARDCTL_FAILPOINT: "migrate.activated" },
    );
    try {
      await stoppedAtFailpoint(c, "migrate.activated");
      // while step 1 waits, another coordinator moves the plan's second shard
      const other = watchedProcess(
        ["--data-dir", cluster.dir, "migrate", "--shard", second.id, "--to", "node-1", "--apply"],
        env,
      );
      expect((await other.exited).code, other.err()).toBe(0);
      // continued (each step stops at the failpoint), the plan's coordinator comes to step 2
      await continueUntilExit(c);
    } finally {
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
    }
    const { code } = await c.exited;
    expect(code, c.err()).toBe(3);
    expect(c.err()).toMatch(
      new RegExp(
        `step 2 of 2 \\(${second.id}\\) failed after 1 step\\(s\\) of the plan were committed: the plan moves ${second.id} from node-2 \\(epoch \\d+\\), but it is on node-1 \\(epoch \\d+\\) since: another coordinator moved it`,
      ),
    );
    const after = readMapFile(cluster.dir).map;
    expect(after.shards.find((s) => s.id === first.id)!.node).toBe("node-3");
    // moved once (by the other coordinator), not again by the plan
    expect(after.shards.find((s) => s.id === second.id)!.node).toBe("node-1");
    for (const [k, v] of acked) expect((await cli("get", k)).out).toBe(v);
  });

  it("a move whose commit finds the map changed by another shard's move commits on the new map (it aborted, its copy wasted)", async () => {
    expect((await cli("up", "--local")).code).toBe(0);
    const { map } = readMapFile(cluster.dir);
    const a = map.shards.find((s) => s.node === "node-2")!;
    const b = map.shards.find((s) => s.node === "node-3")!;
    const acked = new Map([...(await writeTo(a.id, "both-a", 5)), ...(await writeTo(b.id, "both-b", 5))]);
    const c = coordinator(a.id, "node-1", "migrate.commit-read");
    try {
      await c.stopped();
      // between A's commit reading the map and writing the next one, B's move commits
      const other = watchedProcess(
        ["--data-dir", cluster.dir, "migrate", "--shard", b.id, "--to", "node-1", "--apply"],
        env,
      );
      expect((await other.exited).code, other.err()).toBe(0);
      // continued (the commit's next round reads the map again, and stops there again)
      await continueUntilExit(c);
      const { code } = await c.exited;
      expect(code, c.err()).toBe(0);
      expect(c.err()).not.toMatch(/the location map changed during the migration/);
    } finally {
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
    }
    const after = readMapFile(cluster.dir).map;
    expect(after.shards.find((s) => s.id === a.id)!.node).toBe("node-1");
    expect(after.shards.find((s) => s.id === b.id)!.node).toBe("node-1");
    expect((await record(a.id)).at(-1)!.phase).toBe("done");
    await expectServed(a.id, acked, "both-1");
  });

  it("a plan whose second move fails: exit 1, and --json names the move that stays committed", async () => {
    const { map } = readMapFile(cluster.dir);
    const dead = "node-3";
    const first = map.shards.find((s) => s.node === "node-1")!;
    const second = map.shards.find((s) => s.node === "node-2")!;
    const acked = new Map([
      ...(await writeTo(first.id, "plan-a", 5)),
      ...(await writeTo(second.id, "plan-b", 5)),
    ]);
    const made = await cli("plan", "--all", "--out", join(cluster.dir, "plan.json"));
    expect(made.code, made.err).toBe(0);
    const plan = parsePlanFile(readFileSync(join(cluster.dir, "plan.json"), "utf8"));
    writeFileSync(
      join(cluster.dir, "two.json"),
      serialisePlanFile({
        ...plan,
        steps: [moveStep(first.id, "node-1", "node-2"), moveStep(second.id, "node-2", dead)],
      }),
    );
    // the second move's target is gone
    process.kill(localAgentPid(cluster.dir, dead), "SIGKILL");
    const r = await cli("migrate", "--apply", join(cluster.dir, "two.json"), "--json");
    expect(r.code, r.err).toBe(1);
    expect(r.err).toMatch(/step 2 of 2 \(shard-\d+\) failed after 1 step\(s\) of the plan were committed/);
    // the cause in words, naming the node that is gone
    expect(r.err).toMatch(
      new RegExp(`ABORT: cannot reach ${dead} at 127\\.0\\.0\\.1:\\d+ \\(connection refused\\)`),
    );
    expect(r.err).not.toMatch(/unexpected/);
    const result = JSON.parse(r.out) as MigrateResult;
    expect(result.applied).toBe(true);
    expect(result.migrations.map((m) => [m.shard, m.target, m.phase])).toEqual([
      [first.id, "node-2", "done"],
    ]);
    expect(result.error).toMatchObject({ exitCode: 1 });
    expect(result.error!.message).toMatch(/step 2 of 2/);
    // the map says the same: the first shard moved, the second stayed where it serves
    const after = readMapFile(cluster.dir).map;
    expect(after.shards.find((s) => s.id === first.id)!.node).toBe("node-2");
    expect(after.shards.find((s) => s.id === second.id)!.node).toBe("node-2");
    for (const [k, v] of acked) expect((await cli("get", k)).out).toBe(v);
  });
});
