/**
 * Migration candidates: shards worth assessing for a move. A shard is a
 * candidate when the predicted access from some origin zone rises while the
 * shard sits on a node far from that zone, or when its node is short of
 * resources. A stationary workload (prediction = recent past) on healthy
 * nodes yields no candidates, so it never yields a plan: the planner follows
 * change, it does not churn on a steady state.
 */
import { utilisation, type LatencyModel, type NodeResources } from "./latency.js";

export interface CandidateOptions {
  /** Predicted ≥ riseRatio × recent counts as a rise (per zone, over equal spans). */
  riseRatio: number;
  /**
   * ... and by at least this many accesses over the horizon. 0 by default: a floor in accesses
   * depends on the workload's scale (it hid every change of a shard with a few accesses per
   * horizon), and the cost-benefit charges the noise of the demand as risk.
   */
  minRiseAccesses: number;
  /** A node is far from a zone when its RTT exceeds that zone's best RTT by at least this. */
  farMs: number;
  /** A node at or above this utilisation is short of resources. */
  shortOfResources: number;
}

/** One shard's demand as the candidate finder sees it: per zone, in latency-model zone order. */
export interface ShardDemandView {
  shard: string;
  node: string;
  /** Predicted accesses over the horizon. */
  predicted: ArrayLike<number>;
  /** Accesses observed over an equally long span just before now. */
  recent: ArrayLike<number>;
}

export type CandidateReason =
  | { kind: "rising-far"; zone: string; predicted: number; recent: number; extraMs: number }
  | { kind: "short-of-resources"; node: string; utilisation: number };

export interface Candidate {
  shard: string;
  reasons: CandidateReason[];
}

/** Why a shard is (or is not) a candidate; `reasons` empty means it is not. */
export function candidateReasons(
  d: ShardDemandView,
  latency: LatencyModel,
  resources: Readonly<Record<string, NodeResources>> | undefined,
  opts: CandidateOptions,
): CandidateReason[] {
  const reasons: CandidateReason[] = [];
  const ni = latency.nodeIndex(d.node);
  for (let z = 0; z < latency.zones.length; z++) {
    const p = d.predicted[z];
    const r = d.recent[z];
    if (!(p >= opts.riseRatio * r) || !(p - r >= opts.minRiseAccesses) || !(p > 0)) continue;
    const extra = latency.rttAt(z, ni) - latency.bestRttFrom(z);
    if (extra >= opts.farMs)
      reasons.push({ kind: "rising-far", zone: latency.zones[z], predicted: p, recent: r, extraMs: extra });
  }
  const res = resources?.[d.node];
  if (res) {
    const u = utilisation(res);
    if (u >= opts.shortOfResources)
      reasons.push({ kind: "short-of-resources", node: d.node, utilisation: u });
  }
  return reasons;
}

export function findCandidates(
  shards: readonly ShardDemandView[],
  latency: LatencyModel,
  resources: Readonly<Record<string, NodeResources>> | undefined,
  opts: CandidateOptions,
): Candidate[] {
  const out: Candidate[] = [];
  for (const d of shards) {
    const reasons = candidateReasons(d, latency, resources, opts);
    if (reasons.length) out.push({ shard: d.shard, reasons });
  }
  return out;
}

export function describeReason(r: CandidateReason): string {
  if (r.kind === "rising-far") {
    return `access from zone ${r.zone} rises (${fmt(r.recent)} → ${fmt(r.predicted)} predicted) and the node is ${fmt(r.extraMs)} ms farther than the closest`;
  }
  return `node ${r.node} is short of resources (utilisation ${(r.utilisation * 100).toFixed(0)}%)`;
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}
