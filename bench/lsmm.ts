/**
 * `npm run bench -- lsmm`: the LSMM's hot paths against baselines measured in
 * the same run.
 *  (a) getShardLocation vs Map.get on the same 1,000,000 keys (a Map from key
 *      to node is what a client would otherwise keep),
 *  (b) updateAccessPattern vs a plain counter increment, keys spread over
 *      100,000 segments: uniformly (each of the 1,000,000 keys in turn: every
 *      event's windows are likely a cache miss, its key string is not), Zipf-
 *      skewed (s = 1.1, drawn at random: the shape of real access, the reason
 *      hot segments get their own shards, and the costlier case here, since
 *      the rarer keys' strings are cache misses too) and a 10,000-key working
 *      set that fits in cache; the same events through the
 *      batch path (Segmenter.segmentsOf, then AccessWindows.recordBatch, 256
 *      events at a time: hashing and validation included); the keys are
 *      decoded from bytes, as the agent gets them from a request; both paths
 *      again with the same keys as rope strings (built by concatenation); and
 *      where an event's time goes (the key → segment hash alone, the record
 *      alone),
 *  (c) a full reshard of 100,000 segments (rates from the windows → plan →
 *      apply → validate): time and peak memory.
 */
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { AccessWindows, OP_READ, OP_WRITE, parseAccessType } from "../src/engine/access-windows.js";
import { applyLayoutDiff, planLayout } from "../src/engine/assigner.js";
import { validateMap, type VersionedMap } from "../src/engine/location-map.js";
import { Lsmm } from "../src/engine/lsmm.js";
import type { LocationStore } from "../src/engine/ports.js";
import { Segmenter } from "../src/engine/segmenter.js";
import { ASSIGNER, initialMap, recordSkewedLoad, SEGMENTS, ZONES } from "./_reshard-setup.js";
import { emit, log, now, round, timePerOp } from "./_util.js";

const here = dirname(fileURLToPath(import.meta.url));
const KEYS = 1_000_000;
const zones = ZONES;

let t = Date.UTC(2026, 0, 1);
const clock = { now: () => t };
const map = initialMap();
let stored: VersionedMap = { map, version: 1 };
const store: LocationStore = {
  kind: "embedded",
  load: async () => stored,
  compareAndSet: async (v, m) => {
    if (v !== stored.version) return { ok: false, currentVersion: stored.version };
    stored = { map: m, version: v + 1 };
    return { ok: true, version: stored.version };
  },
  watch: async () => {},
  close: async () => {},
  // the benchmark migrates nothing: an empty journal
  putMigration: async () => ({ ok: false, rev: 0 }),
  getMigration: async () => null,
  listMigrations: async () => ({ records: [], unreadable: [] }),
};
const windows = new AccessWindows({ segmentCount: SEGMENTS, zones });
const segmenter = new Segmenter(SEGMENTS);
const lsmm = new Lsmm({
  store,
  windows,
  segmenter,
  clock,
  assigner: ASSIGNER,
  rateWindowSeconds: 600,
});
await lsmm.refresh();

// Keys as the agent has them: decoded from request bytes, i.e. sequential strings. The same keys
// built by concatenation, as an application might build them, are V8 rope (cons) strings, whose
// characters cost more to read: they are measured too, below.
const keyText = (i: number): string => `user:${(i * 2654435761) % 4294967296}:profile`;
const keys = Array.from({ length: KEYS }, (_, i) => Buffer.from(keyText(i), "utf8").toString("utf8"));

// (a) lookups
log(`lookups over ${KEYS} keys…`);
const baseline = new Map<string, string>();
for (const k of keys) baseline.set(k, lsmm.getShardLocation(k));
let idx = 0;
const BATCH = 10_000;
const mapNs = timePerOp(
  () => {
    let n = 0;
    for (let i = 0; i < BATCH; i++) {
      n += baseline.get(keys[idx])!.length;
      idx = idx + 1 === KEYS ? 0 : idx + 1;
    }
    return n;
  },
  BATCH,
  1500,
);
const lookupNs = timePerOp(
  () => {
    let n = 0;
    for (let i = 0; i < BATCH; i++) {
      n += lsmm.getShardLocation(keys[idx]).length;
      idx = idx + 1 === KEYS ? 0 : idx + 1;
    }
    return n;
  },
  BATCH,
  1500,
);
// correctness of what was timed
for (let i = 0; i < 1000; i++)
  if (baseline.get(keys[i]) !== lsmm.getShardLocation(keys[i])) throw new Error("lookup mismatch");
log(`  Map.get ${round(mapNs, 1)} ns, getShardLocation ${round(lookupNs, 1)} ns`);

// (b) access events
log("access events…");
const counters = new Float64Array(SEGMENTS);
const counterNs = timePerOp(
  () => {
    for (let i = 0; i < BATCH; i++) {
      counters[i % SEGMENTS]++;
    }
    return counters[0];
  },
  BATCH,
  1000,
);
/** Measures updateAccessPattern over the keys in `order` (indices into keySet). */
function measureEvents(order: Uint32Array, keySet: readonly string[] = keys): number {
  let z = 0;
  let j = 0;
  return timePerOp(
    () => {
      for (let i = 0; i < BATCH; i++) {
        lsmm.updateAccessPattern(keySet[order[j]], (i & 3) === 0 ? "write" : "read", zones[z]);
        j = j + 1 === order.length ? 0 : j + 1;
        z = z === 2 ? 0 : z + 1;
      }
      t += 1; // the clock moves a millisecond per batch
      return j;
    },
    BATCH,
    2000,
  );
}
const uniform = Uint32Array.from({ length: KEYS }, (_, i) => i);
// Zipf(1.1) over the keys by inverse CDF, with a fixed LCG so every run draws the same sequence
const cdf = new Float64Array(KEYS);
let acc = 0;
for (let k = 0; k < KEYS; k++) cdf[k] = acc += 1 / Math.pow(k + 1, 1.1);
let seed = 12345;
const zipf = Uint32Array.from({ length: KEYS }, () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  const u = (seed / 4294967296) * acc;
  let lo = 0;
  let hi = KEYS - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
});
// a working set that fits in cache: 10,000 keys in 10,000 segments' windows
const hot = Uint32Array.from({ length: KEYS }, (_, i) => (i * 7919) % 10_000);
const eventNs = measureEvents(uniform);
const eventHotNs = measureEvents(hot);
const eventZipfNs = measureEvents(zipf);
const eventsPerS = 1e9 / eventNs;
const eventsPerSZipf = 1e9 / eventZipfNs;
const eventsPerSHot = 1e9 / eventHotNs;
log(
  `  counter ${round(counterNs, 2)} ns; updateAccessPattern uniform ${round(eventNs, 1)} ns (${Math.round(eventsPerS)}/s), zipf ${round(eventZipfNs, 1)} ns (${Math.round(eventsPerSZipf)}/s), 10k-key working set ${round(eventHotNs, 1)} ns (${Math.round(eventsPerSHot)}/s)`,
);

// the batch path: the same keys, ops, zones and clock as measureEvents, each op and zone parsed
// per event as there, BATCH_EVENTS events per segmentsOf + recordBatch
const BATCH_EVENTS = 256;
const batchKeys: string[] = new Array<string>(BATCH_EVENTS).fill("");
const batchSegments = new Uint32Array(BATCH_EVENTS);
const batchOps = new Uint8Array(BATCH_EVENTS);
const batchZones = new Int8Array(BATCH_EVENTS);
function measureBatches(order: Uint32Array, keySet: readonly string[] = keys): number {
  let z = 0;
  let j = 0;
  return timePerOp(
    () => {
      for (let i0 = 0; i0 < BATCH; i0 += BATCH_EVENTS) {
        const n = Math.min(BATCH_EVENTS, BATCH - i0);
        for (let k = 0; k < n; k++) {
          batchKeys[k] = keySet[order[j]];
          batchOps[k] =
            parseAccessType(((i0 + k) & 3) === 0 ? "write" : "read") === "write" ? OP_WRITE : OP_READ;
          batchZones[k] = windows.zoneIndexOf(zones[z]);
          j = j + 1 === order.length ? 0 : j + 1;
          z = z === 2 ? 0 : z + 1;
        }
        segmenter.segmentsOf(batchKeys, batchSegments, 0, n);
        windows.recordBatch(batchSegments, batchOps, batchZones, n, clock.now());
      }
      t += 1;
      return j;
    },
    BATCH,
    2000,
  );
}
const batchNs = measureBatches(uniform);
const batchZipfNs = measureBatches(zipf);
// where an event's time goes: the key → segment hash alone, and the record alone (segments precomputed)
let jj = 0;
const segmentOfNs = timePerOp(
  () => {
    let n = 0;
    for (let i = 0; i < BATCH; i++) {
      n += segmenter.segmentOf(keys[jj]);
      jj = jj + 1 === KEYS ? 0 : jj + 1;
    }
    return n;
  },
  BATCH,
  1500,
);
const uniformSegments = Uint32Array.from(keys, (k) => segmenter.segmentOf(k));
jj = 0;
const recordNs = timePerOp(
  () => {
    for (let i = 0; i < BATCH; i++) {
      windows.record(uniformSegments[jj], (i & 3) === 0, i % 3, t);
      jj = jj + 1 === KEYS ? 0 : jj + 1;
    }
    t += 1;
    return jj;
  },
  BATCH,
  1500,
);
/**
 * Both paths with the same keys as rope strings (built by concatenation, then hashed once by a Map,
 * as an application's keys might be), measured last: they make the hash's string reads polymorphic.
 * The key set is garbage afterwards (the reshard below does not keep it alive).
 */
function measureRopeKeys(): [events: number, batch: number] {
  const ropeKeys = Array.from({ length: KEYS }, (_, i) => keyText(i));
  const index = new Map<string, number>();
  for (let i = 0; i < KEYS; i++) index.set(ropeKeys[i], i);
  return [measureEvents(uniform, ropeKeys), measureBatches(uniform, ropeKeys)];
}
const [eventRopeNs, batchRopeNs] = measureRopeKeys();
log(
  `  batch path (${BATCH_EVENTS} events per batch): uniform ${round(batchNs, 1)} ns (${Math.round(1e9 / batchNs)}/s), zipf ${round(batchZipfNs, 1)} ns (${Math.round(1e9 / batchZipfNs)}/s); uniform keys: segmentOf alone ${round(segmentOfNs, 1)} ns, record alone ${round(recordNs, 1)} ns`,
);
log(
  `  the same keys as rope strings (built by concatenation), uniform: updateAccessPattern ${round(eventRopeNs, 1)} ns (${Math.round(1e9 / eventRopeNs)}/s), batch path ${round(batchRopeNs, 1)} ns (${Math.round(1e9 / batchRopeNs)}/s)`,
);

// (c) a full reshard of 100k segments with a skewed load
log("reshard of 100,000 segments…");
recordSkewedLoad(windows, t);
// Peak heap, bounded from both sides. The reshard is synchronous, so a timer cannot sample inside
// it. Below: the heap is collected before each run (a baseline of live data only) and read after
// each phase; what the phases build (the loads, the diff, the next map) is still referenced when
// the run ends, so the growth seen covers it (garbage collected inside a phase is not counted).
// Above: the same reshard in a process of its own whose young generation holds everything it
// allocates (bench/_reshard-peak.ts): with no collection during it, the heap's growth is all it
// allocated, which its peak cannot exceed.
setFlagsFromString("--expose-gc");
const collect = runInNewContext("gc") as () => void;
const times: number[] = [];
let peakGrowth = 0;
let ops = 0;
for (let run = 0; run < 5; run++) {
  collect();
  const heapBefore = process.memoryUsage().heapUsed;
  let peak = heapBefore;
  const sample = (): void => {
    peak = Math.max(peak, process.memoryUsage().heapUsed);
  };
  const start = now();
  const loads = windows.loads(600, t);
  sample();
  const diff = planLayout(map, loads, ASSIGNER, t);
  sample();
  const next = applyLayoutDiff(map, diff, t);
  sample();
  validateMap(next);
  times.push(now() - start);
  sample();
  ops = diff.ops.length;
  peakGrowth = Math.max(peakGrowth, peak - heapBefore);
}
times.sort((a, b) => a - b);
const reshardMs = times[Math.floor(times.length / 2)];
const child = JSON.parse(
  execFileSync(
    process.execPath,
    [
      "--expose-gc",
      "--min-semi-space-size=256",
      "--max-semi-space-size=256",
      "--import",
      pathToFileURL(join(here, "../node_modules/tsx/dist/loader.mjs")).href,
      join(here, "_reshard-peak.ts"),
    ],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  ),
) as { allocated_mb: number; collections: number; ms: number };
if (child.collections !== 0)
  throw new Error(`the reshard's own process collected ${child.collections} times: its growth is no bound`);
const maxRssMb = process.resourceUsage().maxRSS / 1024;
log(
  `  median ${round(reshardMs, 1)} ms over 5 runs, ${ops} layout changes; peak heap growth between ${round(peakGrowth / 2 ** 20, 1)} MB (live after each phase) and ${round(child.allocated_mb, 1)} MB (all it allocated, in a process of its own: ${round(child.ms, 1)} ms); process max RSS ${round(maxRssMb, 0)} MB`,
);
log(
  `  access windows for 100,000 segments: ${round(windows.allocatedBytes / 2 ** 20, 1)} MB (${windows.bytesPerSegment} bytes/segment)`,
);

emit({
  bench: "lsmm",
  lookup_ns: round(lookupNs, 1),
  map_get_ns: round(mapNs, 1),
  lookup_time_ratio: round(lookupNs / mapNs, 2),
  events_per_s: Math.round(eventsPerS),
  events_per_s_zipf: Math.round(eventsPerSZipf),
  events_per_s_hot_set: Math.round(eventsPerSHot),
  events_per_s_batch: Math.round(1e9 / batchNs),
  events_per_s_batch_zipf: Math.round(1e9 / batchZipfNs),
  events_per_s_rope_keys: Math.round(1e9 / eventRopeNs),
  events_per_s_batch_rope_keys: Math.round(1e9 / batchRopeNs),
  segment_of_ns: round(segmentOfNs, 1),
  record_ns: round(recordNs, 1),
  counter_increment_ns: round(counterNs, 2),
  event_time_ratio: round(eventNs / counterNs, 1),
  reshard_100k_ms: round(reshardMs, 1),
  // the upper bound; reshard_100k_live_mb is the lower one
  reshard_100k_peak_mb: round(child.allocated_mb, 1),
  reshard_100k_live_mb: round(peakGrowth / 2 ** 20, 1),
  process_max_rss_mb: round(maxRssMb, 0),
  windows_100k_mb: round(windows.allocatedBytes / 2 ** 20, 1),
  bytes_per_segment: windows.bytesPerSegment,
  reshard_ops: ops,
});
