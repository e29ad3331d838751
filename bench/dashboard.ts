/**
 * `npm run bench -- dashboard`: is the dashboard responsive with 100,000 segments?
 *
 *  (a) frame_ms: one full frame (160×50, colour) of the segments view — band
 *      aggregation of 100,000 segments × 60 columns, layout and Ink's render to
 *      a string — median over many frames, each over a new snapshot;
 *      frame_ms_shards: the same for the shards view (4,800 shards).
 *  (b) baseline_frame_ms: Ink rendering a plain-text frame of the same size
 *      (50 lines of 160 characters, no aggregation, no colour) in the same run;
 *      string_frame_ms: building that frame as a string without Ink.
 *  (c) cpu_percent_at_1hz: the interactive container (<Dashboard>, Ink render
 *      to a fake 160×51 TTY) refreshing once a second for ~10 s over a source
 *      that hands out a new 100,000-segment snapshot each time: process CPU
 *      time / wall time. The source is synthetic, so this is the UI's own cost
 *      (not the agents' HTTP nor the forecaster's).
 */
import { loadavg } from "node:os";
import { PassThrough, Writable } from "node:stream";
import { initialLayout } from "../src/engine/location-map.js";
import type { DashboardSnapshot, DashboardSource, FocusTarget, ForecastView } from "../src/tui/source.js";
import { emit, log, now, percentile, round } from "./_util.js";

// as `shardctl dashboard` does: React's production build (set before React loads)
process.env.NODE_ENV ??= "production";
const { Box, render, renderToString, Text } = await import("ink");
const { createElement } = await import("react");
const { Dashboard } = await import("../src/tui/Dashboard.js");
const { renderFrame } = await import("../src/tui/once.js");

const SEGMENTS = 100_000;
const COLUMNS = 60;
const WIDTH = 160;
const HEIGHT = 50;
const zones = ["a", "b", "c"];
const nodes = ["n1", "n2", "n3", "n4", "n5", "n6"].map((id, i) => ({
  id,
  address: `10.0.0.${i}:7400`,
  zone: zones[i % 3],
}));
const map = initialLayout(SEGMENTS, nodes, { shardsPerNode: 800, now: 0 });

/** A deterministic pseudo-random generator (xorshift), so runs compare. */
let seed = 0x9e3779b9;
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
}

/** One column: every segment active, heavy-tailed rates, one hot segment. */
function column(): { reads: Float32Array; writes: Float32Array } {
  const reads = new Float32Array(SEGMENTS);
  const writes = new Float32Array(SEGMENTS);
  for (let s = 0; s < SEGMENTS; s++) {
    const r = random();
    reads[s] = r < 0.5 ? 0 : 1 / (1 - r) - 2;
    writes[s] = r < 0.8 ? 0 : (1 / (1 - r) - 5) / 4;
  }
  reads[77_777] = 5000;
  writes[77_777] = 800;
  return { reads, writes };
}

const reads: Float32Array[] = [];
const writes: Float32Array[] = [];
log(`building ${COLUMNS} columns × ${SEGMENTS} segments…`);
for (let c = 0; c < COLUMNS; c++) {
  const col = column();
  reads.push(col.reads);
  writes.push(col.writes);
}

let tick = 0;
const histR = reads.map((c) => c.slice());
const histW = writes.map((c) => c.slice());
function snapshot(): DashboardSnapshot {
  // one new column per refresh (a fresh array, as a live source takes it), the oldest dropped
  tick++;
  histR.shift();
  histW.shift();
  histR.push(reads[tick % COLUMNS].slice());
  histW.push(writes[tick % COLUMNS].slice());
  const r = [...histR];
  const w = [...histW];
  return {
    takenAt: Date.UTC(2026, 0, 1) + tick * 1000,
    mapVersion: 1,
    storeKind: "embedded",
    zones,
    shards: map.shards,
    nodes: nodes.map((n) => ({
      id: n.id,
      zone: n.zone,
      address: n.address,
      health: "ok" as const,
      shards: 800,
      accessRate: 1234,
      cpuLoad: 0.3,
      memoryUsedBytes: 1e9,
      memoryTotalBytes: 8e9,
      diskUsedBytes: 1e10,
      diskTotalBytes: 1e11,
      rttMs: zones.map((z) => (z === n.zone ? 1 : 50)),
      rttSource: "model" as const,
    })),
    heat: { segmentCount: SEGMENTS, intervalSeconds: 1, endMs: 0, reads: r, writes: w, origin: "fixture" },
    migrations: { available: true, inFlight: [], recent: [] },
    warnings: [],
  };
}

function forecastFor(target: FocusTarget): ForecastView {
  const z = (zone: string, level: number) => ({
    zone,
    model: "ets",
    recent: Array.from({ length: 60 }, (_, i) => level * (1 + Math.sin(i / 5))),
    mean: Array.from({ length: 15 }, () => level),
    lower: Array.from({ length: 15 }, () => level / 2),
    upper: Array.from({ length: 15 }, () => level * 1.5),
  });
  return {
    target,
    intervalSeconds: 60,
    horizon: 15,
    intervalLevel: 0.8,
    zones: zones.map((zone, i) => z(zone, 100 * (i + 1))),
  };
}

function median(xs: number[]): number {
  return percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
}

// (a) full frames
const opts = { width: WIDTH, height: HEIGHT, colour: true, hotRate: 50 };
const FRAMES = 25;
const segmentTimes: number[] = [];
const shardTimes: number[] = [];
const segmentCpu: number[] = [];
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
let frameChars = 0;
for (let i = 0; i < FRAMES + 3; i++) {
  const snap = snapshot();
  const c0 = cpuMs();
  const t0 = now();
  const frame = renderFrame(
    snap,
    { ...opts, view: "segments" },
    forecastFor({ kind: "segment", segment: 77_777 }),
  );
  const t1 = now();
  const c1 = cpuMs();
  renderFrame(snap, { ...opts, view: "shards" }, forecastFor({ kind: "shard", shard: "shard-1" }));
  const t2 = now();
  if (i >= 3) {
    segmentTimes.push(t1 - t0);
    segmentCpu.push(c1 - c0);
    shardTimes.push(t2 - t1);
  }
  frameChars = frame.length;
}
const frameMs = median(segmentTimes);
const shardFrameMs = median(shardTimes);
log(
  `segments view frame: ${round(frameMs, 2)} ms (median of ${FRAMES}); shards view: ${round(shardFrameMs, 2)} ms; ${frameChars} bytes with colour`,
);

// (b) baselines: a plain-text frame of the same size through Ink, and as a bare string
const baselineTimes: number[] = [];
const baselineCpu: number[] = [];
const stringTimes: number[] = [];
for (let i = 0; i < FRAMES + 3; i++) {
  const lines = Array.from({ length: HEIGHT }, (_, l) => String((l * 7919 + i) % 10).repeat(WIDTH));
  const c0 = cpuMs();
  const t0 = now();
  renderToString(
    createElement(
      Box,
      { flexDirection: "column", width: WIDTH, height: HEIGHT },
      ...lines.map((line, k) => createElement(Text, { key: k, wrap: "truncate-end" }, line)),
    ),
    { columns: WIDTH },
  );
  const t1 = now();
  const c1 = cpuMs();
  const s = lines.join("\n");
  const t2 = now();
  if (s.length === 0) log("unreachable");
  if (i >= 3) {
    baselineTimes.push(t1 - t0);
    baselineCpu.push(c1 - c0);
    stringTimes.push(t2 - t1);
  }
}
const baselineMs = median(baselineTimes);
// the same plain frame drawn with the heatmap's glyphs (no colour): Ink's per-character cost of non-ASCII text
const glyphTimes: number[] = [];
for (let i = 0; i < FRAMES + 3; i++) {
  const lines = Array.from(
    { length: HEIGHT },
    (_, l) => "▀·█░│".repeat(WIDTH / 5).slice(0, WIDTH - ((l + i) % 3)) + "x".repeat((l + i) % 3),
  );
  const c0 = cpuMs();
  renderToString(
    createElement(
      Box,
      { flexDirection: "column", width: WIDTH, height: HEIGHT },
      ...lines.map((line, k) => createElement(Text, { key: k, wrap: "truncate-end" }, line)),
    ),
    { columns: WIDTH },
  );
  if (i >= 3) glyphTimes.push(cpuMs() - c0);
}
log(`plain frame of box glyphs through Ink: ${round(median(glyphTimes), 2)} ms CPU`);
log(
  `baseline plain-text Ink frame: ${round(baselineMs, 2)} ms; bare string: ${round(median(stringTimes), 4)} ms`,
);

// (c) CPU of the live container at 1 refresh per second
class FakeTty extends Writable {
  isTTY = true;
  columns = WIDTH;
  rows = HEIGHT + 1;
  bytes = 0;
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.bytes += chunk.length;
    cb();
  }
}
const stdout = new FakeTty();
const stdin = Object.assign(new PassThrough(), {
  isTTY: true,
  setRawMode: () => stdin,
  ref: () => stdin,
  unref: () => stdin,
});
const source: DashboardSource = {
  snapshot: async () => snapshot(),
  forecast: async (t) => forecastFor(t),
  plan: async (shard) => ({ shard, mapVersion: 1, lines: [] }),
  migrate: async () => ({ ok: false, message: "bench" }),
  segmentOf: () => 0,
  close: async () => {},
};
const SECONDS = Number(process.env.BENCH_DASHBOARD_SECONDS ?? 10);
const app = render(createElement(Dashboard, { source, refreshMs: 1000, colour: true, hotRate: 50 }), {
  stdout: stdout as unknown as NodeJS.WriteStream,
  stdin: stdin as unknown as NodeJS.ReadStream,
  exitOnCtrlC: false,
  patchConsole: false,
});
await new Promise((r) => setTimeout(r, 1500)); // first snapshot and forecast
const heap0 = process.memoryUsage().heapUsed;
const cpu0 = process.cpuUsage();
const wall0 = now();
const bytes0 = stdout.bytes;
await new Promise((r) => setTimeout(r, SECONDS * 1000));
const cpu = process.cpuUsage(cpu0);
const wall = now() - wall0;
const heap1 = process.memoryUsage().heapUsed;
app.unmount();
const cpuPercent = ((cpu.user + cpu.system) / 1000 / wall) * 100;
log(
  `live container at 1 Hz for ${round(wall / 1000, 1)} s: ${round(cpuPercent, 1)}% of one core; ${Math.round(((stdout.bytes - bytes0) / wall) * 1000)} bytes/s to the terminal`,
);

emit({
  bench: "dashboard",
  segments: SEGMENTS,
  columns: COLUMNS,
  shards: map.shards.length,
  terminal: `${WIDTH}x${HEIGHT}`,
  frame_ms: round(frameMs, 2),
  frame_ms_shards: round(shardFrameMs, 2),
  frame_cpu_ms: round(median(segmentCpu), 2),
  baseline_frame_cpu_ms: round(median(baselineCpu), 2),
  baseline_glyph_frame_cpu_ms: round(median(glyphTimes), 2),
  baseline_frame_ms: round(baselineMs, 2),
  string_frame_ms: round(median(stringTimes), 4),
  frame_vs_baseline: round(frameMs / baselineMs, 2),
  cpu_percent_at_1hz: round(cpuPercent, 1),
  measured_seconds: round(wall / 1000, 1),
  load_average_1m: round(loadavg()[0], 2),
  heap_growth_mb_during_run: round((heap1 - heap0) / 1048576, 1),
  terminal_bytes_per_second: Math.round(((stdout.bytes - bytes0) / wall) * 1000),
});
process.exit(0);
