/**
 * `npm run bench -- windows`: collecting the access windows from the agents
 * (collectWindows: what reshard, predict, plan and the autopilot decide on).
 * Starts three local agents (`shardctl up --local`, 4,096 segments), writes
 * keys until nearly every segment has windows, then collects them again and
 * again: all of a node's windows in one binary answer (GET /v1/access/export),
 * against the baseline in the same run, one request per segment (GET
 * /v1/access/:segment/export, as agents from before the bulk export are
 * asked). Runs alternate so both see the same machine. Ends with one JSON line.
 *
 * Options: --segments N (default 4096), --keys N (default 20000), --rounds N (default 5).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { runCli } from "../src/cli.js";
import { ShardClient } from "../src/client/shard-client.js";
import { collectWindows } from "../src/cluster/windows-source.js";
import { loadConfig } from "../src/config.js";
import { EmbeddedStore } from "../src/store/embedded.js";
import { freePortRange } from "../test/helpers/ports.js";
import { emit, log, now, numberArg, percentile, round } from "./_util.js";

const SEGMENTS = numberArg("segments", 4096);
const KEYS = numberArg("keys", 20_000);
const ROUNDS = numberArg("rounds", 5);

const dir = mkdtempSync(join(tmpdir(), "shardctl-bench-windows-"));
const env: NodeJS.ProcessEnv = {
  ...process.env,
  SHARDCTL_SEGMENTS: String(SEGMENTS),
  SHARDCTL_ZONES: "a,b,c",
};
delete env.SHARDCTL_CONFIG;
delete env.SHARDCTL_STORE;
delete env.SHARDCTL_TOKEN;
const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
const cli = (...args: string[]) => runCli(["--data-dir", dir, ...args], { out: sink(), err: sink() }, env);

try {
  const base = await freePortRange(3);
  log(`starting 3 local agents (${SEGMENTS} segments) in ${dir}`);
  if ((await cli("up", "--local", "--nodes", "3", "--zones", "a,b,c", "--base-port", String(base))) !== 0)
    throw new Error("shardctl up --local failed");
  const token = readFileSync(join(dir, "local", "token"), "utf8").trim();
  const store = new EmbeddedStore(dir);
  const client = new ShardClient({ store, token, originZone: "a" });
  for (let i = 0; i < KEYS; i += 200)
    await Promise.all(
      Array.from({ length: Math.min(200, KEYS - i) }, (_, k) => client.put(`k${i + k}`, "v")),
    );
  client.close();
  const { config } = loadConfig({ env: { ...env, SHARDCTL_DATA_DIR: dir } });
  const vm = await store.load();
  const times: Record<"bulk" | "perSegment", number[]> = { bulk: [], perSegment: [] };
  let active = 0;
  for (let r = 0; r < ROUNDS + 1; r++) {
    for (const perSegment of r % 2 ? [true, false] : [false, true]) {
      const t0 = now();
      const c = await collectWindows(config, vm, 10_000, { perSegment });
      const ms = now() - t0;
      if (c.unreachable.length) throw new Error(`unreachable: ${JSON.stringify(c.unreachable)}`);
      active = [...c.windows.activeSegments()].length;
      if (r > 0) times[perSegment ? "perSegment" : "bulk"].push(ms); // round 0 warms up
    }
  }
  const med = (xs: number[]) =>
    percentile(
      [...xs].sort((a, b) => a - b),
      50,
    );
  const bulk = med(times.bulk);
  const per = med(times.perSegment);
  log(
    `collected ${active} segments' windows from 3 agents: bulk ${bulk.toFixed(0)} ms, per segment ${per.toFixed(0)} ms (medians of ${ROUNDS})`,
  );
  emit({
    bench: "windows",
    segments: SEGMENTS,
    active_segments: active,
    nodes: 3,
    bulk_ms: round(bulk, 1),
    per_segment_ms: round(per, 1),
    speedup: round(per / bulk, 2),
    bulk_runs_ms: times.bulk.map((x) => round(x, 1)),
    per_segment_runs_ms: times.perSegment.map((x) => round(x, 1)),
  });
} finally {
  await cli("down", "--timeout", "5");
  rmSync(dir, { recursive: true, force: true });
}
