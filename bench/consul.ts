/**
 * `npm run bench -- consul`: starts `consul agent -dev`, then measures
 *
 * - location lookups through the cached client (a RoutingTable built from a
 *   watched map: key → segment → shard → node, in memory) against a raw
 *   Consul KV read of one key (the cheapest possible remote lookup) and a full
 *   map read (store.load); `read_ratio` = raw KV read / cached lookup;
 * - map update commits per second (ConsulStore CAS transactions, one shard
 *   changed each time, back to back) against plain single-key PUTs, for a
 *   4,096-segment map and for a 100,000-segment / 5,000-shard map (chunked:
 *   a commit rewrites one small chunk).
 *
 * Environment: BENCH_SECONDS (3 per phase), BENCH_READS (2000).
 */
import { performance } from "node:perf_hooks";
import { ConsulHttp } from "../src/consul/http.js";
import { ConsulStore } from "../src/consul/store.js";
import {
  initialLayout,
  RoutingTable,
  type LocationMap,
  type VersionedMap,
} from "../src/engine/location-map.js";
import { Segmenter } from "../src/engine/segmenter.js";
import { largeMap } from "../test/contract/maps.js";
import { startConsulDev } from "../test/helpers/consul.js";
import { emit, log, percentile, round, timePerOp } from "./_util.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const READS = Number(process.env.BENCH_READS ?? 2000);

const consul = await startConsulDev();
log(`consul -dev at ${consul.addr}`);
try {
  const prefix = "bench/";
  const http = new ConsulHttp({ addr: consul.addr, prefix });
  const store = new ConsulStore({ http, prefix });
  const nodes = [
    { id: "n1", address: "10.0.0.1:7000", zone: "a" },
    { id: "n2", address: "10.0.0.2:7000", zone: "b" },
    { id: "n3", address: "10.0.0.3:7000", zone: "c" },
  ];
  const small = initialLayout(4096, nodes, { shardsPerNode: 16, now: Date.now() });
  const w = await store.compareAndSet(0, small);
  if (!w.ok) throw new Error("initial write failed");

  // --- reads -------------------------------------------------------------
  // The cached client: a watch keeps a RoutingTable current; lookups are in memory.
  let table: RoutingTable | undefined;
  const ac = new AbortController();
  const watcher = new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
  const watching = watcher.watch((vm: VersionedMap) => (table = new RoutingTable(vm)), ac.signal);
  while (!table) await new Promise((r) => setTimeout(r, 10));
  const segmenter = new Segmenter(4096);
  const keys = Array.from({ length: 4096 }, (_, i) => `user:${i * 7919}`);
  let k = 0;
  const cachedNs = timePerOp(() => {
    let n = 0;
    for (let i = 0; i < 1000; i++) n += table!.nodeOfSegment(segmenter.segmentOf(keys[k++ & 4095])).length;
    return n;
  }, 1000);
  log(`cached lookup: ${round(cachedNs / 1000, 4)} µs`);

  for (let i = 0; i < 200; i++) await http.kvGet(`${prefix}map/meta`); // warm-up: connections, JIT
  const rawTimes: number[] = [];
  for (let i = 0; i < READS; i++) {
    const t = performance.now();
    await http.kvGet(`${prefix}map/meta`);
    rawTimes.push((performance.now() - t) * 1000);
  }
  rawTimes.sort((a, b) => a - b);
  const rawMean = rawTimes.reduce((a, b) => a + b, 0) / rawTimes.length;
  log(`raw KV read (one key): mean ${round(rawMean, 1)} µs, p99 ${round(percentile(rawTimes, 99), 1)} µs`);

  const loadTimes: number[] = [];
  for (let i = 0; i < Math.min(READS, 300); i++) {
    const t = performance.now();
    await store.load();
    loadTimes.push((performance.now() - t) * 1000);
  }
  const loadMean = loadTimes.reduce((a, b) => a + b, 0) / loadTimes.length;
  log(`full map read (store.load, 4096 segments): mean ${round(loadMean, 1)} µs`);

  // --- commits -----------------------------------------------------------
  const commitRate = async (s: ConsulStore, start: LocationMap, version: number): Promise<number> => {
    let map = start;
    let v = version;
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < SECONDS * 1000) {
      // One shard's epoch rises (a copy of that shard only: the map is immutable data).
      const i = n % map.shards.length;
      const shards = map.shards.slice();
      shards[i] = { ...shards[i], epoch: shards[i].epoch + 1 };
      const next: LocationMap = { ...map, shards, updatedAt: Date.now() };
      const r = await s.compareAndSet(v, next);
      if (!r.ok) throw new Error("a CAS lost a race in a single-writer benchmark");
      v = r.version;
      map = next;
      n++;
    }
    return n / ((performance.now() - t0) / 1000);
  };
  const smallCommits = await commitRate(store, small, w.version);
  log(`CAS commits (4096-segment map): ${round(smallCommits, 1)}/s`);

  let puts = 0;
  const p0 = performance.now();
  while (performance.now() - p0 < SECONDS * 1000) {
    await http.kvPut(`${prefix}raw-put`, String(puts++));
  }
  const putRate = puts / ((performance.now() - p0) / 1000);
  log(`plain KV PUTs (baseline): ${round(putRate, 1)}/s`);

  const bigPrefix = "bench-big/";
  const bigStore = new ConsulStore({
    http: new ConsulHttp({ addr: consul.addr, prefix: bigPrefix }),
    prefix: bigPrefix,
  });
  const big = largeMap();
  const tb = performance.now();
  const wb = await bigStore.compareAndSet(0, big);
  if (!wb.ok) throw new Error("large write failed");
  const bigFirstWriteMs = performance.now() - tb;
  const tl = performance.now();
  await bigStore.load();
  const bigLoadMs = performance.now() - tl;
  const bigCommits = await commitRate(bigStore, big, wb.version);
  log(
    `100,000 segments / 5,000 shards: first write ${round(bigFirstWriteMs, 0)} ms, load ${round(bigLoadMs, 0)} ms, CAS commits ${round(bigCommits, 1)}/s`,
  );

  ac.abort();
  await watching;
  await watcher.close();
  await bigStore.close();
  await store.close();
  emit({
    bench: "consul",
    cached_read_us: round(cachedNs / 1000, 4),
    raw_kv_read_us: round(rawMean, 1),
    raw_kv_read_p99_us: round(percentile(rawTimes, 99), 1),
    full_map_read_us: round(loadMean, 1),
    read_ratio: round(rawMean / (cachedNs / 1000), 0),
    commits_per_s: round(smallCommits, 1),
    plain_put_per_s: round(putRate, 1),
    commit_vs_put: round(smallCommits / putRate, 3),
    large_map_first_write_ms: round(bigFirstWriteMs, 0),
    large_map_load_ms: round(bigLoadMs, 0),
    large_map_commits_per_s: round(bigCommits, 1),
  });
} finally {
  await consul.stop();
}
