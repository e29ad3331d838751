/**
 * The cluster and load of lsmm's reshard benchmark, shared by bench/lsmm.ts
 * and the process it measures the reshard's peak in (bench/_reshard-peak.ts):
 * both must reshard the same map under the same load.
 */
import type { AccessWindows } from "../src/engine/access-windows.js";
import type { AssignerOptions } from "../src/engine/assigner.js";
import { initialLayout, type LocationMap } from "../src/engine/location-map.js";

export const SEGMENTS = 100_000;
export const ZONES = ["a", "b", "c"];
export const ASSIGNER: AssignerOptions = {
  splitRate: 50,
  mergeRate: 5,
  shardLoadCap: 200,
  hysteresis: 0.2,
  minDwellMs: 0,
};

/** Six nodes over the three zones, 800 shards each. */
export function initialMap(): LocationMap {
  const nodes = ["n1", "n2", "n3", "n4", "n5", "n6"].map((id, i) => ({
    id,
    address: `10.0.0.${i}:7400`,
    zone: ZONES[i % 3],
  }));
  return initialLayout(SEGMENTS, nodes, { shardsPerNode: 800, now: 0 });
}

/** The skewed load resharded: every 997th segment hot (40,000 accesses), the others 0–49, at time t. */
export function recordSkewedLoad(windows: AccessWindows, t: number): void {
  for (let s = 0; s < SEGMENTS; s++) {
    const load = s % 997 === 0 ? 40_000 : (s * 31) % 50;
    if (load) windows.record(s, s % 5 === 0, s % 3, t, load);
  }
}
