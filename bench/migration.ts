/**
 * `npm run bench -- migration`: the write pause of a live migration, and its
 * copy throughput against a raw file copy (issue 8).
 *
 * Per shard size (10 MB, 100 MB, 1 GB of log): a source agent and a target
 * agent are started on free local ports with temporary data directories; the
 * source's shard is generated on disk first (1 KiB values over 100,000 keys,
 * snapshots off so the whole log moves); a steady writer puts one value every
 * BENCH_WRITE_EVERY_MS ms (sequential: the next starts when the previous was
 * acknowledged, at the earliest on its schedule), through the routing client
 * that applications use (it follows the fence, the redirect and the new map),
 * while `shardctl migrate --apply --json` moves the shard to the target in a
 * process of its own. The client retries a fenced shard after 1–5 ms
 * (baseBackoffMs 1, maxBackoffMs 5; the defaults, 20 ms doubling to 1 s, would
 * measure the client's backoff rather than the pause). Reported per size:
 * p50/p99/max latency of the writes that overlapped the migration
 * (pause_max_ms is that max), the max of the writes that overlapped the
 * cutover (fenced → done), the max before the migration began (the machine's
 * own noise), the write pause the record measured (fence → target
 * activated), the catch-up after the fence, the phase times and the copy rate.
 *
 * Baseline, same run, same bytes: `cp` of the source's shard files followed by
 * `sync` of the copies (the migration's copy is durable, so the baseline is
 * too), with the files in the page cache (as the source's are: it read them at
 * startup); also reported cold (the files evicted first with dd
 * iflag=nocache). copy_ratio_vs_cp = migration copy MB/s ÷ warm cp MB/s.
 *
 * Environment: SIZES (MB, default "10,100,1000"), BENCH_WRITE_EVERY_MS (2),
 * BENCH_VALUE_BYTES (1024), BENCH_SNAPSHOT_BYTES (the agents'
 * --snapshot-bytes; default 1 TiB = off; set it below the size to measure the
 * snapshot path instead of the log path).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { ShardClient } from "../src/client/shard-client.js";
import type { MigrationRecord } from "../src/engine/migration.js";
import type { LocationMap } from "../src/engine/location-map.js";
import { EmbeddedStore } from "../src/store/embedded.js";
import { freePort, stopChild, writeShardLog } from "./_shards.js";
import { emit, log, now, percentile, round } from "./_util.js";

const SIZES_MB = (process.env.SIZES ?? "10,100,1000")
  .split(",")
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isFinite(n) && n > 0);
const WRITE_EVERY_MS = Number(process.env.BENCH_WRITE_EVERY_MS ?? 2);
const VALUE_BYTES = Number(process.env.BENCH_VALUE_BYTES ?? 1024);
const SNAPSHOT_BYTES = Number(process.env.BENCH_SNAPSHOT_BYTES ?? 1024 ** 4);
const SEGMENTS = 4096;
const TOKEN = "bench-migration-token";
const SHARD = "shard-1";
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const MB = 1000 * 1000;

function tsxArgs(): string[] {
  return [
    "--import",
    pathToFileURL(join(root, "node_modules/tsx/dist/loader.mjs")).href,
    join(root, "bin/shardctl.ts"),
  ];
}

function startAgent(dataDir: string, port: number, nodeId: string, zone: string): ChildProcess {
  mkdirSync(dataDir, { recursive: true });
  const tokenFile = join(dataDir, "..", "token");
  writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  return spawn(
    process.execPath,
    [
      ...tsxArgs(),
      "--data-dir",
      dataDir,
      "agent",
      "--listen",
      `127.0.0.1:${port}`,
      "--zone",
      zone,
      "--node-id",
      nodeId,
      "--token-file",
      tokenFile,
      "--segments",
      String(SEGMENTS),
      "--snapshot-bytes",
      String(SNAPSHOT_BYTES),
    ],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, SHARDCTL_ZONES: "a,b,c" } },
  );
}

function health(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/health", agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", () => resolve(0));
    req.end();
  });
}

async function waitHealthy(child: ChildProcess, port: number): Promise<void> {
  const deadline = Date.now() + 600_000;
  while ((await health(port)) !== 200) {
    if (child.exitCode !== null) throw new Error(`an agent exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error("an agent did not become healthy");
    await sleep(50);
  }
}

/** Writes the source's shard: `bytes` of log in 64 MiB files, VALUE_BYTES values over 100,000 keys. */
function generateShard(shardDir: string, bytes: number): { entries: number; bytes: number } {
  const t = Date.now();
  const g = writeShardLog(shardDir, bytes, {
    shardId: SHARD,
    segments: SEGMENTS,
    valueBytes: VALUE_BYTES,
    timestamp: () => t,
  });
  execFileSync("sync");
  return g;
}

/** Seconds to `cp -r` the shard's directory and `sync` the copies; `cold` evicts the sources from the page cache first. */
function timeCp(shardDir: string, into: string, cold: boolean): number {
  const files = readdirSync(shardDir).map((f) => join(shardDir, f));
  if (cold) for (const f of files) execFileSync("dd", [`if=${f}`, "iflag=nocache", "count=0", "status=none"]);
  rmSync(into, { recursive: true, force: true });
  const t0 = now();
  execFileSync("cp", ["-r", shardDir, into]);
  execFileSync(
    "sync",
    readdirSync(into).map((f) => join(into, f)),
  );
  const s = (now() - t0) / 1000;
  rmSync(into, { recursive: true, force: true });
  return s;
}

interface Write {
  start: number;
  end: number;
  ok: boolean;
}

/** One put every `everyMs` (never two in flight); each write's wall-clock start and end. */
function startWriter(store: EmbeddedStore) {
  const c = new ShardClient({ store, token: TOKEN, deadlineMs: 60_000, baseBackoffMs: 1, maxBackoffMs: 5 });
  const writes: Write[] = [];
  let running = true;
  const value = Buffer.alloc(VALUE_BYTES, "w");
  const done = (async () => {
    let next = performance.now();
    for (let i = 0; running; i++) {
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
      next += WRITE_EVERY_MS;
      const start = Date.now();
      const t0 = performance.now();
      let ok = true;
      try {
        await c.put(`w-${i}`, value);
      } catch {
        ok = false;
      }
      const ms = performance.now() - t0;
      writes.push({ start, end: start + ms, ok });
      if (next < performance.now()) next = performance.now(); // late: do not burst to catch up
    }
  })();
  return {
    writes,
    stop: async () => {
      running = false;
      await done;
      c.close();
    },
  };
}

function runMigrate(ctlDir: string): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [
        ...tsxArgs(),
        "--data-dir",
        ctlDir,
        "migrate",
        "--shard",
        SHARD,
        "--to",
        "node-2",
        "--apply",
        "--json",
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          SHARDCTL_TOKEN: TOKEN,
          SHARDCTL_SEGMENTS: String(SEGMENTS),
          SHARDCTL_ZONES: "a,b,c",
        },
      },
    );
    let out = "";
    let err = "";
    child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr!.on("data", (c: Buffer) => {
      err += c.toString();
      process.stderr.write(`    | ${c.toString().trimEnd().replace(/\n/g, "\n    | ")}\n`);
    });
    child.on("exit", (code) => resolve({ code: code ?? -1, out, err }));
  });
}

interface SizeResult {
  label: string;
  bytes: number;
  entries: number;
  writes: number;
  failedWrites: number;
  p50: number;
  p99: number;
  max: number;
  baselineMax: number;
  cutoverMax: number;
  pauseMs: number;
  catchUpMs: number;
  catchUpEntries: number;
  phaseMs: Partial<Record<string, number>>;
  rounds: number;
  copiedBytes: number;
  copyMBps: number;
  cpMBps: number;
  cpColdMBps: number;
}

async function benchSize(mb: number): Promise<SizeResult> {
  const label = mb >= 1000 ? `${mb / 1000}GB` : `${mb}MB`;
  const dir = mkdtempSync(join(tmpdir(), "shardctl-bench-migration-"));
  const agents: ChildProcess[] = [];
  try {
    const shardDir = join(dir, "node-1", "shards", SHARD);
    log(`${label}: generating the source's shard`);
    const g = generateShard(shardDir, mb * MB);
    const cpCold = timeCp(shardDir, join(dir, "cp-copy"), true);
    const cpWarm = timeCp(shardDir, join(dir, "cp-copy"), false);
    log(
      `${label}: ${g.entries} entries, ${round(g.bytes / MB, 1)} MB; cp + sync ${round(cpWarm, 3)} s warm (${round(g.bytes / MB / cpWarm, 0)} MB/s), ${round(cpCold, 3)} s cold`,
    );
    const [p1, p2] = [await freePort(), await freePort()];
    const t0 = now();
    const a = startAgent(join(dir, "node-1"), p1, "node-1", "a");
    const b = startAgent(join(dir, "node-2"), p2, "node-2", "b");
    agents.push(a, b);
    for (const c of agents) c.stderr!.on("data", () => {}); // drained, not shown
    await Promise.all([waitHealthy(a, p1), waitHealthy(b, p2)]);
    log(`${label}: agents up (the source recovered its log) in ${round((now() - t0) / 1000, 1)} s`);
    const ctlDir = join(dir, "ctl");
    mkdirSync(ctlDir);
    const store = new EmbeddedStore(ctlDir);
    const map: LocationMap = {
      format: 1,
      segmentCount: SEGMENTS,
      nodes: [
        { id: "node-1", address: `127.0.0.1:${p1}`, zone: "a" },
        { id: "node-2", address: `127.0.0.1:${p2}`, zone: "b" },
      ],
      shards: [
        { id: SHARD, node: "node-1", epoch: 1, migrationTimestamp: 0, changedAt: 0, ranges: [[0, SEGMENTS]] },
      ],
      nextShardSeq: 2,
      term: 0,
      updatedAt: Date.now(),
    };
    const cas = await store.compareAndSet(0, map);
    if (!cas.ok) throw new Error("could not write the location map");
    const writer = startWriter(store);
    await sleep(1500); // the writer's latency before the migration: the baseline of its own
    const r = await runMigrate(ctlDir);
    await sleep(500);
    await writer.stop();
    if (r.code !== 0) throw new Error(`migrate exited with ${r.code}: ${r.err.slice(-2000)}`);
    const rec = (JSON.parse(r.out) as { migrations: MigrationRecord[] }).migrations[0];
    const begin = rec.startedAt;
    const end = rec.endedAt ?? Date.now();
    const during = writer.writes.filter((w) => w.end >= begin && w.start <= end);
    const before = writer.writes.filter((w) => w.end < begin);
    const lat = Float64Array.from(during.map((w) => w.end - w.start)).sort();
    const latBefore = Float64Array.from(before.map((w) => w.end - w.start)).sort();
    // the writes that overlapped the cutover (fenced → done): the pause as the writer saw it
    const fencedAt = rec.phaseAt.fenced ?? begin;
    const cutover = during.filter((w) => w.end >= fencedAt && w.start <= (rec.phaseAt.done ?? end));
    const copyMs = rec.phaseMs?.copying ?? end - begin;
    const caught = /caught up (\d+) entries in (\d+) ms/.exec(r.err);
    const res: SizeResult = {
      label,
      bytes: g.bytes,
      entries: g.entries,
      writes: during.length,
      failedWrites: during.filter((w) => !w.ok).length,
      p50: percentile(lat, 50),
      p99: percentile(lat, 99),
      max: lat.length ? lat[lat.length - 1] : NaN,
      baselineMax: latBefore.length ? latBefore[latBefore.length - 1] : NaN,
      cutoverMax: Math.max(...cutover.map((w) => w.end - w.start)),
      pauseMs: rec.writePauseMs ?? NaN,
      catchUpMs: caught ? Number(caught[2]) : NaN,
      catchUpEntries: caught ? Number(caught[1]) : NaN,
      phaseMs: rec.phaseMs ?? {},
      rounds: rec.rounds,
      copiedBytes: rec.bytesCopied,
      copyMBps: rec.bytesCopied / MB / (copyMs / 1000),
      cpMBps: g.bytes / MB / cpWarm,
      cpColdMBps: g.bytes / MB / cpCold,
    };
    log(
      `${label}: ${res.writes} writes during the migration (${res.failedWrites} failed): p50 ${round(res.p50, 2)} ms, p99 ${round(res.p99, 2)} ms, max ${round(res.max, 1)} ms (max before it ${round(res.baselineMax, 1)} ms; across the cutover ${round(res.cutoverMax, 1)} ms); write pause ${res.pauseMs} ms (catch-up ${res.catchUpEntries} entries in ${res.catchUpMs} ms); phases ${JSON.stringify(res.phaseMs)}; copy ${round(res.copyMBps, 0)} MB/s vs cp ${round(res.cpMBps, 0)} MB/s`,
    );
    return res;
  } finally {
    await Promise.all(agents.map(stopChild));
    rmSync(dir, { recursive: true, force: true });
  }
}

const free =
  Number(execFileSync("df", ["-Pk", tmpdir()]).toString().trim().split("\n")[1].split(/\s+/)[3]) * 1024;
const need = Math.max(...SIZES_MB) * MB * 3.5;
if (free < need) {
  log(
    `not enough space in ${tmpdir()}: ${round(free / 1e9, 1)} GB free, the largest size needs ~${round(need / 1e9, 1)} GB`,
  );
  process.exit(1);
}
const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number);
const loadBefore = loadavg();
log(`load average ${loadBefore.join(" ")} (2 cores: above 2, everything waits for a CPU)`);
const results: SizeResult[] = [];
for (const mb of SIZES_MB) results.push(await benchSize(mb));
const per = <T>(f: (r: SizeResult) => T) => Object.fromEntries(results.map((r) => [r.label, f(r)]));
const copied = results.reduce((s, r) => s + r.copiedBytes, 0);
const copySeconds = results.reduce((s, r) => s + r.copiedBytes / MB / r.copyMBps, 0);
const cpSeconds = results.reduce((s, r) => s + r.bytes / MB / r.cpMBps, 0);
const largest = results[results.length - 1];
emit({
  bench: "migration",
  write_every_ms: WRITE_EVERY_MS,
  value_bytes: VALUE_BYTES,
  snapshot_bytes: SNAPSHOT_BYTES,
  sizes: results.map((r) => r.label),
  pause_max_ms: per((r) => round(r.max, 1)),
  write_pause_ms: per((r) => r.pauseMs),
  catchup_ms: per((r) => r.catchUpMs),
  catchup_entries: per((r) => r.catchUpEntries),
  latency_p50_ms: per((r) => round(r.p50, 2)),
  latency_p99_ms: per((r) => round(r.p99, 2)),
  latency_max_ms: per((r) => round(r.max, 1)),
  latency_max_before_ms: per((r) => round(r.baselineMax, 1)),
  cutover_write_max_ms: per((r) => round(r.cutoverMax, 1)),
  writes_during: per((r) => r.writes),
  failed_writes: per((r) => r.failedWrites),
  phase_ms: per((r) => r.phaseMs),
  precopy_rounds: per((r) => r.rounds),
  copy_mb_per_s: per((r) => round(r.copyMBps, 1)),
  cp_mb_per_s: per((r) => round(r.cpMBps, 1)),
  cp_cold_mb_per_s: per((r) => round(r.cpColdMBps, 1)),
  // over all sizes (bytes-weighted); the largest size alone below
  copy_ratio_vs_cp: round(
    copied / MB / copySeconds / (results.reduce((s, r) => s + r.bytes, 0) / MB / cpSeconds),
    3,
  ),
  copy_ratio_vs_cp_largest: round(largest.copyMBps / largest.cpMBps, 3),
  pause_goal_met: results.every((r) => r.max < 100),
  load_before: loadBefore,
  load_after: loadavg(),
});
