/**
 * Run by bench/lsmm.ts in a process of its own, whose young generation is made
 * large enough (--min-semi-space-size, --max-semi-space-size) that nothing is
 * collected during one reshard: the heap's growth over it is then everything
 * the reshard allocated, an upper bound of its peak. The windows carry the same
 * skewed load as lsmm's section (c). Prints one JSON line: { allocated_mb,
 * collections, ms } (collections during the measured reshard: 0, or the figure
 * is not a bound).
 */
import { PerformanceObserver } from "node:perf_hooks";
import { runInNewContext } from "node:vm";
import { AccessWindows } from "../src/engine/access-windows.js";
import { applyLayoutDiff, planLayout } from "../src/engine/assigner.js";
import { validateMap } from "../src/engine/location-map.js";
import { ASSIGNER, initialMap, recordSkewedLoad, SEGMENTS, ZONES } from "./_reshard-setup.js";

const t = Date.UTC(2026, 0, 1);
const map = initialMap();
const windows = new AccessWindows({ segmentCount: SEGMENTS, zones: ZONES });
recordSkewedLoad(windows, t);
function reshard(): number {
  const diff = planLayout(map, windows.loads(600, t), ASSIGNER, t);
  validateMap(applyLayoutDiff(map, diff, t));
  return diff.ops.length;
}

const collect = runInNewContext("gc") as () => void; // (the process runs with --expose-gc)
for (let i = 0; i < 3; i++) reshard(); // compiled and warm
collect();
const gcs: number[] = [];
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push(e.startTime);
});
observer.observe({ entryTypes: ["gc"] });
const before = process.memoryUsage().heapUsed;
const start = performance.now();
reshard();
const end = performance.now();
const after = process.memoryUsage().heapUsed;
await new Promise((resolve) => setTimeout(resolve, 50)); // the observer's entries come on a later turn
observer.disconnect();
process.stdout.write(
  JSON.stringify({
    allocated_mb: (after - before) / 2 ** 20,
    collections: gcs.filter((s) => s >= start && s <= end).length,
    ms: end - start,
  }) + "\n",
);
