/**
 * The trace simulator: an in-process replay of a workload trace with a
 * virtual clock, through the same engine code the CLI uses (computePlan, the
 * assigner's planLayout/applyLayoutDiff, and a forecaster from src/forecast),
 * comparing four placement policies on the same accesses.
 *
 * Time is cut into decision intervals of Δ seconds, I_j = [b_j, b_{j+1}).
 * Every policy places each shard on one node per interval: a move decided
 * during I_{k-1} (at d_k = b_k − lead, seeing every access before d_k: the
 * complete intervals up to I_{k-2} and the first Δ − lead seconds of I_{k-1},
 * counted as a whole interval at that rate, as an agent's per-second windows
 * would show them) copies the shard in the background, fences it for the write
 * pause and cuts over exactly at a boundary — b_k if copy + pause fits in the
 * lead, else the first boundary it fits before. Writes arriving in the fenced
 * tail [b − pause, b) wait until b and are then served by the target.
 * An access costs the RTT from its zone to the node holding its shard (plus
 * any pause wait).
 *
 * Policies:
 *  - static: the initial layout, never changed;
 *  - reactive: the planner fed with what was observed (demand = the last H
 *    intervals seen, compared with the H before): it moves after a change;
 *  - predictive: the planner fed with the prediction of the H intervals
 *    after the cutover: the forecaster's prediction of each segment's total,
 *    split over the zones by their share profile over the season
 *    (src/forecast/zone-shares.ts); segments whose recent counts depart from
 *    the profile, or exceed the forecast total, get the reactive check as well;
 *  - oracle: knows the whole trace; per segment, an exact dynamic programme
 *    over node schedules minimising the total latency of the actual accesses
 *    with the same pause cost on every move, and the same cooldown: two
 *    changes of a segment's node at least cooldownIntervals apart. Any policy
 *    above places every segment on one node per interval, pays the same pause
 *    cost and moves a segment's shard only after the cooldown since its last
 *    cutover has passed at the decision (a split or merge carries the latest
 *    cutover of the segments it groups), so its schedule is one path of that
 *    programme: the oracle's total (hence mean) latency is a true lower bound
 *    for all of them. It ignores shard grouping, budgets, capacity and the
 *    copy lead, which only makes the bound lower. The same programme without
 *    the cooldown is reported too (oracle_without_cooldown): a bound for any
 *    placement whatever its rules.
 */
import { UsageError } from "../errors.js";
import type { LatencyModel } from "../engine/latency.js";
import { initialLayout } from "../engine/location-map.js";
import { DEFAULT_PLANNER_OPTIONS, type MigrationPlan } from "../engine/planner.js";
import type { BatchForecast } from "./forecaster.js";
import { runOracle } from "./oracle.js";
import { PlannedPolicy } from "./planned-policy.js";
import type { Trace } from "./trace.js";
import { Replay, Workload } from "./workload.js";

export { percentileOf } from "./workload.js";
export { applyWithInheritedTimestamps, trailingMean } from "./planned-policy.js";

export const POLICIES = ["static", "reactive", "predictive", "oracle"] as const;
export type PolicyName = (typeof POLICIES)[number];

export interface SimOptions {
  /** Decision interval Δ (seconds). */
  intervalSeconds: number;
  /** Planning horizon H, in intervals. */
  horizonIntervals: number;
  /** Seconds before a boundary at which decisions are made (the copy must fit in it). */
  leadSeconds: number;
  /** Intervals of history given to the forecaster. */
  historyIntervals: number;
  /** Re-forecast every this many intervals (forecasts reach far enough to cover the gap). */
  forecastEvery: number;
  /** Trailing mean over this many intervals applied to the series before forecasting (1: none). */
  smoothIntervals: number;
  segmentCount: number;
  shardsPerNode: number;
  /** Bytes each key's data takes (moved with its shard). */
  keyBytes: number;
  bandwidthBytesPerSecond: number;
  writePauseMs: number;
  cooldownIntervals: number;
  maxConcurrentMigrations: number;
  maxBytesInFlight: number;
  minGainFraction: number;
  /** Standard deviations of the benefit charged as risk (see cost.ts). */
  riskAversion: number;
  riseRatio: number;
  minRiseAccesses: number;
  /** Run the assigner (split/merge by access rate) in the reactive and predictive policies. */
  reshard: boolean;
  /** Let the planner split a segment onto its own shard to move it alone. */
  splitSegments: boolean;
  /**
   * Estimate the predictive policy's zone shares from the counts of each segment's share group
   * (src/forecast's shareGroups: the segments whose zone counts follow one pattern), not its own.
   */
  shareGroups: boolean;
  policies: readonly PolicyName[];
  /** Called with every plan a planner-driven policy makes (for tests and debugging). */
  onPlan?: (policy: PolicyName, boundary: number, plan: MigrationPlan) => void;
  /** Called with each policy's node per segment for every interval j, in order (for tests and analysis). */
  onPlacement?: (policy: PolicyName, j: number, nodeOfSeg: Int32Array) => void;
  /** Called with each policy's latency per access, in trace order (for tests and analysis). */
  onLatencies?: (policy: PolicyName, lat: Float64Array) => void;
  /** Called as each policy's replay goes on: intervals replayed of the trace's (a progress display). */
  onProgress?: (policy: PolicyName, intervalsDone: number, intervals: number) => void;
}

export const DEFAULT_SIM_OPTIONS: SimOptions = {
  intervalSeconds: 300,
  horizonIntervals: 6,
  leadSeconds: 30,
  historyIntervals: 864,
  forecastEvery: 6,
  smoothIntervals: 1,
  segmentCount: 1024,
  shardsPerNode: 4,
  keyBytes: 8 * 1024 * 1024,
  bandwidthBytesPerSecond: 100 * 1024 * 1024,
  writePauseMs: 50,
  cooldownIntervals: 6,
  maxConcurrentMigrations: 16,
  maxBytesInFlight: 16 * 1024 * 1024 * 1024,
  minGainFraction: 0.1,
  riskAversion: 1,
  riseRatio: 1.2,
  minRiseAccesses: DEFAULT_PLANNER_OPTIONS.minRiseAccesses,
  reshard: true,
  splitSegments: true,
  shareGroups: true,
  policies: POLICIES,
};

export interface PolicyResult {
  mean_ms: number;
  p99_ms: number;
  migrations: number;
  bytes_moved: number;
  /** Segments split onto their own shard by the planner (split-then-move steps). */
  splits: number;
  /** Layout operations by the assigner (resharding). */
  reshard_ops: number;
}

export interface SimResult {
  policies: Partial<Record<PolicyName, PolicyResult>>;
  events: number;
  keys: number;
  active_segments: number;
  intervals: number;
  interval_seconds: number;
  nodes: number;
  /**
   * The oracle with no cooldown (a segment may change node at every boundary): a lower bound for
   * any placement, whatever its rules; present when the oracle ran with a cooldown.
   */
  oracle_without_cooldown?: PolicyResult;
  /** Wall-clock time of the replay, filled in by the caller if it measures it. */
  notes: string[];
}

export function validateSimOptions(o: SimOptions): void {
  const bad = (m: string) => {
    throw new UsageError(`simulator options: ${m}`);
  };
  if (!(o.intervalSeconds > 0)) bad("the interval must be > 0 seconds");
  if (!Number.isInteger(o.horizonIntervals) || o.horizonIntervals < 1)
    bad("the horizon must be an integer ≥ 1 interval");
  if (!(o.leadSeconds >= 0) || o.leadSeconds >= o.intervalSeconds)
    // the user may not have given --lead at all: say its value and that it is the default
    bad(
      `the lead (--lead: ${o.leadSeconds} s${o.leadSeconds === DEFAULT_SIM_OPTIONS.leadSeconds ? ", its default" : ""}) must be ≥ 0 and shorter than the decision interval (--interval: ${o.intervalSeconds} s); give a --lead below the interval`,
    );
  if (!Number.isInteger(o.historyIntervals) || o.historyIntervals < 2)
    bad("the history must be ≥ 2 intervals");
  if (!Number.isInteger(o.forecastEvery) || o.forecastEvery < 1) bad("forecastEvery must be an integer ≥ 1");
  if (!Number.isInteger(o.smoothIntervals) || o.smoothIntervals < 1)
    bad("smoothIntervals must be an integer ≥ 1");
  if (!(o.keyBytes >= 0)) bad("key bytes must be ≥ 0");
  if (!(o.bandwidthBytesPerSecond > 0)) bad("the bandwidth must be > 0");
  if (!(o.writePauseMs >= 0) || o.writePauseMs >= o.intervalSeconds * 1000)
    bad("the write pause must be ≥ 0 and shorter than the interval");
  if (!Number.isInteger(o.cooldownIntervals) || o.cooldownIntervals < 0)
    bad("the cooldown must be an integer ≥ 0");
  for (const p of o.policies) if (!POLICIES.includes(p)) bad(`unknown policy ${p}`);
}
/** Runs the chosen policies over the trace. `forecast` is required for the predictive policy. */
export function simulate(
  trace: Trace,
  latency: LatencyModel,
  forecast: BatchForecast | undefined,
  options: Partial<SimOptions> = {},
): SimResult {
  const opts: SimOptions = { ...DEFAULT_SIM_OPTIONS, ...options };
  validateSimOptions(opts);
  if (trace.zones.join(",") !== latency.zones.join(",")) {
    throw new UsageError("the trace was parsed against other zones than the latency model's");
  }
  if (opts.policies.includes("predictive") && !forecast)
    throw new UsageError("the predictive policy needs a forecaster");
  const w = new Workload(trace, latency, opts);
  const nodes = latency.nodes.map((n) => ({ id: n.id, address: "sim", zone: n.zone }));
  const initial = initialLayout(opts.segmentCount, nodes, { shardsPerNode: opts.shardsPerNode, now: w.t0 });
  const nodeIndex = new Map(latency.nodes.map((n, i) => [n.id, i]));
  const initialNodeOfSeg = new Int32Array(opts.segmentCount);
  for (const sh of initial.shards)
    initialNodeOfSeg.fill(nodeIndex.get(sh.node)!, sh.ranges[0][0], sh.ranges[0][1]);

  const result: SimResult = {
    policies: {},
    events: trace.length,
    keys: trace.keys.length,
    active_segments: w.active.length,
    intervals: w.nI,
    interval_seconds: opts.intervalSeconds,
    nodes: latency.nodes.length,
    notes: [],
  };
  // the planned policies plan on what they observed until H + 1 intervals are seen (PlannedPolicy.decide),
  // and a decision places the interval after it: no forecast falls inside a trace of H + 1 intervals or fewer
  const H = opts.horizonIntervals;
  if (H + 2 > w.nI && opts.policies.includes("predictive"))
    result.notes.push(
      `the horizon (--horizon: ${H} intervals of ${opts.intervalSeconds} s) leaves no forecast inside the trace (${w.nI} intervals): until ${H + 1} intervals are seen, reactive and predictive both plan on what they observed, so predictive decides as reactive does here; ${w.nI >= 3 ? `give a --horizon below ${w.nI - 1}` : "no --horizon gives one in a trace this short (a forecast needs 3 intervals or more): give a shorter --interval"}`,
    );
  for (const name of opts.policies) {
    if (name === "static") {
      const r = new Replay(w);
      for (let j = 0; j < w.nI; j++) {
        opts.onPlacement?.("static", j, initialNodeOfSeg);
        r.interval(j, initialNodeOfSeg, initialNodeOfSeg);
        opts.onProgress?.("static", j + 1, w.nI);
      }
      result.policies.static = r.result();
    } else if (name === "oracle") {
      opts.onProgress?.("oracle", 0, w.nI);
      const r = runOracle(w, initialNodeOfSeg, opts.cooldownIntervals, (j, at) =>
        opts.onPlacement?.("oracle", j, at),
      );
      opts.onLatencies?.("oracle", r.lat);
      result.policies.oracle = r.result();
      opts.onProgress?.("oracle", w.nI, w.nI);
      if (opts.cooldownIntervals > 0)
        result.oracle_without_cooldown = runOracle(w, initialNodeOfSeg, 0).result();
    } else {
      const p = new PlannedPolicy(w, structuredClone(initial), name, forecast);
      const next = new Int32Array(opts.segmentCount);
      for (let j = 0; j < w.nI; j++) {
        // the boundary at the trace's end is not decided and no cutover is carried out there: a move
        // after the last interval serves nothing of the trace (it would count a migration for
        // predicting what comes after, which reacting to it after the end never pays)
        const inside = j + 1 < w.nI;
        if (inside) {
          p.decide(j + 1);
          p.nextPlacement(j + 1, next);
        } else next.set(p.nodeOfSeg);
        opts.onPlacement?.(name, j, p.nodeOfSeg);
        p.replay.interval(j, p.nodeOfSeg, next);
        if (inside) p.commit(j + 1);
        opts.onProgress?.(name, j + 1, w.nI);
      }
      opts.onLatencies?.(name, p.replay.lat);
      result.policies[name] = p.replay.result();
    }
  }
  return result;
}
