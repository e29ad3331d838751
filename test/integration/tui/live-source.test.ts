/**
 * LiveSource against the real embedded store and windows file, and against
 * agents that do not answer (a closed port): the snapshot must degrade, not fail.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import type { MigrationPhase, MigrationRecord } from "../../../src/engine/migration.js";
import { PreconditionError, UsageError } from "../../../src/errors.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { hottestRow, segmentGrid } from "../../../src/tui/heat.js";
import { LiveSource } from "../../../src/tui/live-source.js";
import { cli } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;
const HOT = "user:hot";

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-tui-"));
  env = {
    SHARDCTL_DATA_DIR: join(dir, "data"),
    SHARDCTL_CONFIG: join(dir, "shardctl.yaml"),
    SHARDCTL_TOKEN: "t0ken",
  };
  writeFileSync(join(dir, "shardctl.yaml"), "segments: 1024\n");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

function source(): { live: LiveSource; store: EmbeddedStore } {
  const { config } = loadConfig({ file: env.SHARDCTL_CONFIG, env });
  const store = new EmbeddedStore(config.dataDir);
  return { live: new LiveSource({ config, store, refreshSeconds: 1, agentTimeoutMs: 500 }), store };
}

async function recordWorkload(): Promise<void> {
  expect((await cli(["record", HOT, "--op", "write", "--zone", "b", "--count", "3000"], env)).code).toBe(0);
  expect((await cli(["record", HOT, "--zone", "a", "--count", "600"], env)).code).toBe(0);
  for (const k of ["cold:1", "cold:2", "cold:3"])
    expect((await cli(["record", k, "--zone", "c", "--count", "5"], env)).code).toBe(0);
}

describe("LiveSource, embedded fallback (no agents)", () => {
  it("reads the access windows file and puts the hot segment in the hottest row", async () => {
    // Given a layout without agents and a recorded workload with one hot key
    expect((await cli(["init"], env)).code).toBe(0);
    await recordWorkload();
    const { live } = source();
    // When the dashboard takes a snapshot
    const snap = await live.snapshot();
    // Then the heat comes from the windows, per minute, and the hot segment stands out
    expect(snap.heat.origin).toBe("embedded-windows");
    expect(snap.heat.intervalSeconds).toBe(60);
    expect(snap.heat.reads).toHaveLength(60);
    expect(snap.nodes.map((n) => n.health)).toEqual(["no-agent", "no-agent", "no-agent"]);
    const hot = new Segmenter(1024).segmentOf(HOT);
    const grid = segmentGrid(snap.heat, { rows: 30, columns: 60 });
    expect(grid.rows[hottestRow(grid)].hottestSegment).toBe(hot);
    // the accesses are in the last minute, or the one before when a minute began since they were
    // recorded: the last two columns hold them
    const lastTwo = (cols: Float32Array[]) => cols[cols.length - 1][hot] + cols[cols.length - 2][hot];
    expect(lastTwo(snap.heat.writes)).toBeCloseTo(3000 / 60, 5);
    expect(lastTwo(snap.heat.reads)).toBeCloseTo(600 / 60, 5);
    expect(live.segmentOf(HOT)).toBe(hot);
    // the forecast per zone of the hot segment, and a plan for its shard
    const f = await live.forecast({ kind: "segment", segment: hot });
    expect(f.note).toBeUndefined();
    expect(f.zones.map((z) => z.zone)).toEqual(["a", "b", "c"]);
    expect(f.zones[1].recent.slice(-2).reduce((a, b) => a + b, 0)).toBe(3000);
    expect(f.zones[1].mean.length).toBeGreaterThan(0);
    const shard = snap.shards.find((s) => s.ranges.some(([a, b]) => hot >= a && hot < b))!;
    const plan = await live.plan(shard.id);
    expect(plan.shard).toBe(shard.id);
    expect(plan.lines.join("\n")).toMatch(/decision: /);
    // a node named beside "stay" is the best other one, not a destination
    expect(plan.lines.join("\n")).not.toMatch(/decision: stay →/);
    // the horizon in the forecast's own interval (15 one-minute steps)
    expect(plan.lines.join("\n")).toMatch(/predicted accesses next 15m by zone: /);
    expect(plan.lines.join("\n")).toMatch(/latency: not measured by the agents yet; assumed/);
    await live.close();
  });

  it("shows the migration journal from the store: in flight, and the recent ones newest first", async () => {
    // Given a layout and three journal records: one copying, one done, one aborted
    expect((await cli(["init"], env)).code).toBe(0);
    const { live, store } = source();
    const now = Date.now();
    const record = (
      id: string,
      phase: MigrationPhase,
      startedAt: number,
      extra: Partial<MigrationRecord>,
    ) => ({
      id,
      shard: "shard-1",
      source: "node-1",
      target: "node-2",
      fromEpoch: 1,
      planVersion: 1,
      phase,
      term: 0,
      startedAt,
      phaseAt: { journaled: startedAt, [phase]: startedAt + 10 },
      bytesCopied: 4096,
      entriesCopied: 10,
      rounds: 1,
      ...extra,
    });
    const put = async (r: MigrationRecord) =>
      expect((await store.putMigration({ record: r, expectRev: 0 })).ok).toBe(true);
    await put(record("m-copy", "copying", now - 30_000, { bytesTotal: 8192, lagEntries: 7 }));
    await put(record("m-done", "done", now - 60_000, { writePauseMs: 12, endedAt: now - 50_000 }));
    await put(record("m-abort", "aborted", now - 40_000, { error: "target refused", endedAt: now - 35_000 }));
    // When the dashboard takes a snapshot
    const snap = await live.snapshot();
    // Then
    expect(snap.migrations.available).toBe(true);
    expect(snap.migrations.inFlight).toEqual([
      {
        id: "m-copy",
        shard: "shard-1",
        source: "node-1",
        target: "node-2",
        phase: "copying",
        bytesCopied: 4096,
        bytesTotal: 8192,
        lagEntries: 7,
        startedAt: now - 30_000,
        problem: undefined,
      },
    ]);
    expect(
      snap.migrations.recent.map((r) => [r.id, r.result, r.writePauseMs, r.reason, r.finishedAt]),
    ).toEqual([
      ["m-abort", "aborted", undefined, "target refused", now - 35_000],
      ["m-done", "committed", 12, undefined, now - 50_000],
    ]);
    await live.close();
    // and one frame shows them
    const once = await cli(
      ["dashboard", "--once", "--width", "160", "--height", "40", "--color", "never"],
      env,
    );
    expect(once.code, once.err).toBe(0);
    expect(once.out).toContain("Migrations: 1 in flight, 2 recent");
    expect(once.out).toMatch(/▸ shard-1 node-1→node-2 copying 4\.0K\/8\.0K lag 7 · \d+s/);
    expect(once.out).toMatch(/shard-1 node-1→node-2 aborted · \d+s ago \(target refused\)/);
    expect(once.out).toMatch(/shard-1 node-1→node-2 committed pause 12ms · \d+s ago/);
    expect(once.out).not.toContain("no migration journal");
    expect(once.out).toContain("--once: one frame, no keys");
  });

  it("refuses hostile input: malformed keys, unknown shards and segments", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    const { live } = source();
    await live.snapshot();
    expect(() => live.segmentOf("")).toThrow(UsageError);
    expect(() => live.segmentOf("x".repeat(5000))).toThrow(UsageError);
    await expect(live.plan("shard-999")).rejects.toThrow(UsageError);
    await expect(live.forecast({ kind: "segment", segment: 1e9 })).rejects.toThrow(UsageError);
    await expect(live.forecast({ kind: "segment", segment: -1 })).rejects.toThrow(UsageError);
    const f = await live.forecast({ kind: "segment", segment: 3 });
    expect(f.note).toMatch(/no access/);
    await live.close();
  });

  it("says so when the windows file is corrupt, and still draws the map", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    writeFileSync(join(dir, "data/access-windows.bin"), "SCAW1 garbage that is not a windows file");
    const { live } = source();
    const snap = await live.snapshot();
    expect(snap.warnings.join("\n")).toMatch(/access windows file is corrupt/);
    expect(snap.shards.length).toBeGreaterThan(0);
    await live.close();
  });

  it("ignores, and says so, a windows file recorded for other zones than the config's", async () => {
    // Given accesses recorded with zones a,b,c, and then a config whose zones are a,b,d
    expect((await cli(["init"], env)).code).toBe(0);
    await recordWorkload();
    writeFileSync(join(dir, "shardctl.yaml"), "segments: 1024\nzones: [a, b, d]\n");
    const { live } = source();
    const snap = await live.snapshot();
    // Then the dashboard does not draw zone c's counts as zone d's
    expect(snap.warnings.join("\n")).toMatch(/was recorded for zones a,b,c, not a,b,d: ignored/);
    expect(snap.heat.reads).toEqual([]);
    await live.close();
  });

  it("fails with a precondition error and a hint when there is no layout", async () => {
    const { live } = source();
    await expect(live.snapshot()).rejects.toThrow(PreconditionError);
    await live.close();
  });
});

describe("LiveSource, agents that do not answer", () => {
  it("marks every unreachable node, warns, and falls back to the windows file", async () => {
    const ports = [await closedPort(), await closedPort(), await closedPort()];
    const nodes = ports.map((p, i) => `n${i + 1}=127.0.0.1:${p}@${"abc"[i]}`).join(",");
    expect((await cli(["init", "--nodes", nodes], env)).code).toBe(0);
    await recordWorkload();
    const { live } = source();
    const snap = await live.snapshot();
    expect(snap.nodes.map((n) => n.health)).toEqual(["unreachable", "unreachable", "unreachable"]);
    expect(snap.nodes[0].problem).toMatch(/ECONNREFUSED/);
    expect(snap.warnings.join("\n")).toMatch(/node n1 \(127\.0\.0\.1:\d+\) is UNREACHABLE/);
    expect(snap.warnings.join("\n")).toMatch(
      /no agent answered \(3 configured\); showing the embedded access windows/,
    );
    expect(snap.heat.origin).toBe("embedded-windows");
    await live.close();
  });
});

describe("shardctl dashboard (command)", () => {
  it("prints one frame with --once and exits 0", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    await recordWorkload();
    const r = await cli(["dashboard", "--once", "--width", "140", "--height", "40", "--color", "never"], env);
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(
      /^shardctl dashboard · segments view · 1024 segments · 12 shards · 3 nodes · map v1 \(embedded\)/,
    );
    expect(lines.length).toBeLessThanOrEqual(40);
    expect(r.out).toMatch(/▶.*◀/);
    const top = await cli(
      ["top", "--once", "--view", "shards", "--width", "100", "--height", "30", "--color", "always"],
      env,
    );
    expect(top.code).toBe(0);
    expect(top.out).toContain("shards view");
    expect(top.out).toContain("\x1b[38;5;");
  });

  it("draws zone names from the map as inert text, never as terminal escapes", async () => {
    // Given a layout whose nodes' zones (free strings in the map) hold escape sequences and wide characters
    expect((await cli(["init"], env)).code).toBe(0);
    await recordWorkload();
    const { store } = source();
    const vm = (await store.load())!;
    const zones = ["a\x1b]0;owned\x07\x1b[2J", "東京東京東京", "c\x9b8m"];
    const map = { ...vm.map, nodes: vm.map.nodes.map((n, i) => ({ ...n, zone: zones[i] })) };
    expect((await store.compareAndSet(vm.version, map)).ok).toBe(true);
    // When one frame is printed
    const r = await cli(["dashboard", "--once", "--width", "120", "--height", "30", "--color", "never"], env);
    // Then no control character but the newlines reaches stdout, and the names show as text
    expect(r.code, r.err).toBe(0);
    // eslint-disable-next-line no-control-regex
    expect(r.out.replace(/\n/g, "")).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
    expect(r.out).toMatch(/a\?\]0/);
    expect(r.out).toContain("東京");
  });

  it("rejects bad options with exit 2 and changes nothing", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    for (const args of [
      ["--once", "--width", "abc"],
      ["--once", "--width", "10"],
      ["--once", "--height", "1e9"],
      ["--refresh", "0"],
      ["--refresh", "-1"],
      ["--once", "--view", "nodes"],
      ["--once", "--color", "rainbow"],
      ["--width", "100"],
      // decimal digits only, as the other commands take numbers
      ["--refresh", "0x10"],
      ["--once", "--width", "1e3"],
      ["--once", "--height", " 40"],
      ["--once", "--width", "100.0"],
    ]) {
      const r = await cli(["dashboard", ...args], env);
      expect(r.code, args.join(" ")).toBe(2);
    }
  });

  it("refuses to start interactively without a terminal and says to use --once", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    const r = await cli(["dashboard"], env);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/needs a terminal/);
    expect(r.err).toMatch(/hint: use `shardctl dashboard --once`/);
  });

  it("exits 3 with a hint when the store holds no layout", async () => {
    const r = await cli(["dashboard", "--once"], env);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/hint: run `shardctl init`/);
  });
});
