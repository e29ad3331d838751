/** A small builder of planner inputs: a cluster of one node per zone and per-segment demand. */
import { defaultZoneMatrix, LatencyModel } from "../../../src/engine/latency.js";
import { initialLayout, mapDigest, type LocationMap } from "../../../src/engine/location-map.js";
import {
  DEFAULT_PLANNER_OPTIONS,
  type PlanInputs,
  type PlannerOptions,
  type SegmentDemand,
} from "../../../src/engine/planner.js";

export const ZONES = ["a", "b", "c"] as const;
export const MiB = 1024 * 1024;

export class PlanBuilder {
  map: LocationMap;
  version = 7;
  readonly latency = LatencyModel.fromZoneMatrix(defaultZoneMatrix(ZONES), [
    { id: "na", zone: "a" },
    { id: "nb", zone: "b" },
    { id: "nc", zone: "c" },
  ]);
  private demand = new Map<number, SegmentDemand>();
  bytesPerSegment = 16 * MiB;

  constructor(segments = 24, shardsPerNode = 2) {
    this.map = initialLayout(
      segments,
      this.latency.nodes.map((n) => ({ id: n.id, address: "127.0.0.1:1", zone: n.zone })),
      { shardsPerNode, now: 0 },
    );
  }

  /** Segment demand: predicted over the horizon and the baseline, per zone [a, b, c]. */
  segment(segment: number, predicted: number[], recent: number[] = predicted, writeFraction = 0.2): this {
    this.demand.set(segment, { segment, predicted, recent, writeFraction });
    return this;
  }

  /** Marks a shard as moved at `at` (ms). */
  movedAt(shard: string, at: number): this {
    this.map = {
      ...this.map,
      shards: this.map.shards.map((s) => (s.id === shard ? { ...s, migrationTimestamp: at } : s)),
    };
    return this;
  }

  shardOf(segment: number) {
    return this.map.shards.find((s) => s.ranges.some(([a, b]) => segment >= a && segment < b))!;
  }

  inputs(extra: Partial<PlanInputs> = {}): PlanInputs {
    return {
      map: this.map,
      mapVersion: this.version,
      mapDigest: mapDigest(this.map),
      latency: this.latency,
      demand: [...this.demand.values()],
      segmentBytes: () => this.bytesPerSegment,
      ...extra,
    };
  }
}

export function options(o: Partial<PlannerOptions> = {}): PlannerOptions {
  return { ...DEFAULT_PLANNER_OPTIONS, riskAversion: 0, ...o };
}
