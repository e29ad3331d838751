/**
 * The migration planner (the PME's plan_migration): from the location map,
 * the predicted and recent access per segment and origin zone, the latency
 * model, sizes and node resources, decide which shards should move where.
 *
 * 1. Demand is summed per shard; each shard with demand is assessed.
 * 2. Candidates (see candidates.ts): rising access from a far zone, or a node
 *    short of resources. Anything else stays, with the reason recorded.
 * 3. For a candidate, every other node is costed (cost.ts) and the best net
 *    benefit kept. When one segment alone is worth more than the whole shard,
 *    the step is "split that segment onto its own shard (the assigner's
 *    split), then move the new shard".
 * 4. Proposals are ranked by net benefit and admitted under the budget
 *    (concurrent migrations, bytes in flight, target capacity).
 *
 * The plan is plain data: the map version it was computed against, its inputs,
 * every assessment with its reasoning, and the steps. Applying it to any
 * other map version is refused (checkPlanFresh).
 */
import { PreconditionError, UsageError } from "../errors.js";
import { applyLayoutDiff, type LayoutDiff } from "./assigner.js";
import {
  candidateReasons,
  describeReason,
  type CandidateOptions,
  type CandidateReason,
} from "./candidates.js";
import {
  bestMove,
  inCooldown,
  movedAgo,
  type CostBreakdown,
  type CostOptions,
  type MoveEstimate,
} from "./cost.js";
import { utilisationWith, type LatencyModel, type LatencySnapshot, type NodeResources } from "./latency.js";
import { activeBackoffs, describeBackoff, type MoveBackoffEntry } from "./move-backoff.js";
import {
  RoutingTable,
  shardIdFor,
  toRanges,
  expandRanges,
  type LocationMap,
  type ShardInfo,
  type VersionedMap,
  mapDigest,
} from "./location-map.js";
import type { Clock } from "./ports.js";
import { Segmenter } from "./segmenter.js";

export const PLAN_FORMAT = "shardctl-migration-plan/1";

export interface PlannerOptions extends CandidateOptions, CostOptions {
  maxConcurrentMigrations: number;
  maxBytesInFlight: number;
  /** A move must save more than this share of the shard's current latency, net of costs (hysteresis). */
  minGainFraction: number;
  /** Consider splitting one segment onto its own shard when it alone is worth moving. */
  splitSegments: boolean;
}

export const DEFAULT_PLANNER_OPTIONS: PlannerOptions = {
  horizonSeconds: 3600,
  riseRatio: 1.2,
  minRiseAccesses: 0,
  farMs: 5,
  shortOfResources: 0.9,
  bandwidthBytesPerSecond: 100 * 1024 * 1024,
  writePauseMs: 50,
  cooldownMs: 30 * 60 * 1000,
  loadPenaltyMs: 0,
  targetMaxUtilisation: 0.9,
  recentMovePenaltyMs: 0,
  moveOverheadMs: 0,
  riskAversion: 1,
  maxConcurrentMigrations: 4,
  maxBytesInFlight: 8 * 1024 * 1024 * 1024,
  minGainFraction: 0.1,
  splitSegments: true,
};

export function validatePlannerOptions(o: PlannerOptions): void {
  const bad = (m: string) => {
    throw new UsageError(`planner options: ${m}`);
  };
  if (!(o.horizonSeconds > 0) || !Number.isFinite(o.horizonSeconds)) bad("horizonSeconds must be > 0");
  if (!(o.riseRatio >= 1)) bad("riseRatio must be ≥ 1");
  if (!(o.minRiseAccesses >= 0)) bad("minRiseAccesses must be ≥ 0");
  if (!(o.farMs >= 0)) bad("farMs must be ≥ 0");
  if (!(o.bandwidthBytesPerSecond > 0)) bad("bandwidthBytesPerSecond must be > 0");
  if (!(o.writePauseMs >= 0)) bad("writePauseMs must be ≥ 0");
  if (!(o.cooldownMs >= 0)) bad("cooldownMs must be ≥ 0");
  if (!Number.isInteger(o.maxConcurrentMigrations) || o.maxConcurrentMigrations < 0) {
    bad("maxConcurrentMigrations must be an integer ≥ 0");
  }
  if (!(o.maxBytesInFlight >= 0)) bad("maxBytesInFlight must be ≥ 0");
  if (!(o.minGainFraction >= 0)) bad("minGainFraction must be ≥ 0");
}

/** One segment's demand; arrays are per zone in the latency model's zone order. */
export interface SegmentDemand {
  segment: number;
  /** Predicted accesses over the horizon. */
  predicted: ArrayLike<number>;
  /** Accesses observed over an equally long span just before now. */
  recent: ArrayLike<number>;
  /** Share of accesses that are writes, 0..1. */
  writeFraction: number;
  /**
   * Optional: predicted accesses in the first interval after the cutover. When
   * given, a move that does not pay off in that interval is postponed to the
   * next planning round (moving later is better than moving early).
   */
  predictedNext?: ArrayLike<number>;
  /** Optional: standard deviation of `predicted` per zone (charged as risk, see cost.ts). */
  predictedSd?: ArrayLike<number>;
}

/** Everything the planner reads: plain data handed in by the caller (CLI, autopilot, simulator). */
export interface PlanInputs {
  map: LocationMap;
  mapVersion: number;
  /**
   * `mapDigest(map)`, recorded in the plan, for plans that leave the process (plan files: `plan`
   * gives it). Computed here it would cost every in-process plan a walk of the whole map (the
   * simulator's, at every boundary: 7.7 ms a plan for 256 nodes).
   */
  mapDigest?: string;
  latency: LatencyModel;
  /** Segments without an entry have no demand. */
  demand: readonly SegmentDemand[];
  segmentBytes: (segment: number) => number;
  resources?: Readonly<Record<string, NodeResources>>;
  inFlight?: { migrations: number; bytes: number };
  /** Where the inputs came from (e.g. "latency: default 1 ms / 50 ms"), kept in the plan. */
  notes?: string[];
  /**
   * Moves that failed recently and are backing off (move-backoff.ts): until
   * each entry's `until`, its shard is not proposed for its target (the best
   * other target is considered instead), so it takes no slot of the budget.
   */
  avoid?: readonly MoveBackoffEntry[];
}

export type Decision = "move" | "split-move" | "stay" | "deferred";

export interface ShardAssessment {
  shard: string;
  node: string;
  segments: number;
  bytes: number;
  predictedByZone: Record<string, number>;
  recentByZone: Record<string, number>;
  writeFraction: number;
  currentMeanMs: number;
  decision: Decision;
  reason: string;
  candidateReasons: string[];
  target?: string;
  targetMeanMs?: number;
  benefitMs?: number;
  costMs?: number;
  netMs?: number;
  costs?: CostBreakdown;
  copySeconds?: number;
  /** For split-move: the segment split off. */
  segment?: number;
  /** A move pays off over the horizon but not yet in the first interval: expected next round. */
  postponed?: boolean;
}

export type PlanStep =
  | { kind: "split"; shard: string; segment: number; newShard: string; node: string; diff: LayoutDiff }
  | {
      kind: "move";
      shard: string;
      source: string;
      target: string;
      bytes: number;
      benefitMs: number;
      costMs: number;
      netMs: number;
      copySeconds: number;
    };

export interface MigrationPlan {
  format: typeof PLAN_FORMAT;
  mapVersion: number;
  /**
   * The digest of the map the plan was computed against (`mapDigest`): another cluster's map at the
   * same version has another. Absent in plans from before it was recorded (their version alone is checked).
   */
  mapDigest?: string;
  createdAt: number;
  scope: { kind: "all" } | { kind: "key"; key: string; segment: number; shard: string };
  inputs: {
    horizonSeconds: number;
    latency: LatencySnapshot;
    notes: string[];
    inFlight: { migrations: number; bytes: number };
  };
  options: PlannerOptions;
  assessments: ShardAssessment[];
  steps: PlanStep[];
  budget: { maxConcurrentMigrations: number; maxBytesInFlight: number; migrations: number; bytes: number };
  summary: string;
}

interface ShardDemandAgg {
  shard: ShardInfo;
  predicted: Float64Array;
  next?: Float64Array;
  /** Σ of per-segment variances, per zone. */
  variance?: Float64Array;
  recent: Float64Array;
  writes: number;
  segs: SegmentDemand[];
  bytes: number;
  segments: number;
}

interface Proposal {
  agg: ShardDemandAgg;
  assessment: ShardAssessment;
  estimate: MoveEstimate;
  bytes: number;
  split?: { segment: number };
}

/**
 * Splits one segment out of a shard onto a new shard on the same node, as
 * the assigner's split operation (apply it with applyLayoutDiff).
 */
export function splitOutSegment(
  map: LocationMap,
  shardId: string,
  segment: number,
  newShard: string,
): LayoutDiff {
  const sh = map.shards.find((s) => s.id === shardId);
  if (!sh) throw new UsageError(`cannot split unknown shard ${shardId}`);
  const segs = expandRanges(sh.ranges);
  if (!segs.includes(segment)) throw new UsageError(`segment ${segment} is not in shard ${shardId}`);
  if (segs.length < 2)
    throw new UsageError(`shard ${shardId} holds only segment ${segment}; nothing to split`);
  const rest = segs.filter((s) => s !== segment);
  return {
    ops: [
      {
        kind: "split",
        shard: shardId,
        node: sh.node,
        reason: "hot-segment",
        pieces: [
          { id: shardId, ranges: toRanges(rest), load: 0 },
          { id: newShard, ranges: [[segment, segment + 1]], load: 0 },
        ],
      },
    ],
    shardsBefore: map.shards.length,
    shardsAfter: map.shards.length + 1,
    dedicatedAfter: 1,
    heldByDwell: [],
  };
}

function byZone(zones: readonly string[], v: ArrayLike<number>): Record<string, number> {
  const out: Record<string, number> = {};
  zones.forEach((z, i) => (out[z] = round3(v[i])));
  return out;
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/** The pure planner. `onlyShard` limits the assessment to one shard (planMigration). */
export function computePlan(
  inputs: PlanInputs,
  opts: PlannerOptions,
  nowMs: number,
  scope: MigrationPlan["scope"] = { kind: "all" },
): MigrationPlan {
  validatePlannerOptions(opts);
  const { latency, map } = inputs;
  const nz = latency.zones.length;
  const table = new RoutingTable({ map, version: inputs.mapVersion });
  const onlyShard = scope.kind === "key" ? scope.shard : undefined;
  const backingOff = activeBackoffs(inputs.avoid ?? [], nowMs);
  const avoidBy = new Map<string, MoveBackoffEntry[]>();
  for (const b of backingOff) avoidBy.set(b.shard, [...(avoidBy.get(b.shard) ?? []), b]);

  // 1. Demand per shard.
  const aggs = new Map<string, ShardDemandAgg>();
  const emptyAgg = (shard: ShardInfo): ShardDemandAgg => {
    const segments = expandRanges(shard.ranges);
    let bytes = 0;
    for (const s of segments) bytes += inputs.segmentBytes(s);
    const zeros = () => new Float64Array(nz);
    return {
      shard,
      predicted: zeros(),
      recent: zeros(),
      writes: 0,
      segs: [],
      bytes,
      segments: segments.length,
    };
  };
  for (const d of inputs.demand) {
    if (!Number.isInteger(d.segment) || d.segment < 0 || d.segment >= map.segmentCount) {
      throw new UsageError(`demand names segment ${d.segment}, outside 0..${map.segmentCount - 1}`);
    }
    if (d.predicted.length !== nz || d.recent.length !== nz) {
      throw new UsageError(
        `demand for segment ${d.segment} must have one value per zone (${latency.zones.join(", ")})`,
      );
    }
    const shard = table.shardOf(d.segment);
    if (onlyShard && shard.id !== onlyShard) continue;
    let a = aggs.get(shard.id);
    if (!a) aggs.set(shard.id, (a = emptyAgg(shard)));
    let total = 0;
    for (let z = 0; z < nz; z++) {
      const p = Math.max(0, Number(d.predicted[z]) || 0);
      a.predicted[z] += p;
      a.recent[z] += Math.max(0, Number(d.recent[z]) || 0);
      total += p;
    }
    a.writes += total * Math.min(1, Math.max(0, d.writeFraction || 0));
    if (d.predictedSd) {
      if (d.predictedSd.length !== nz)
        throw new UsageError(`predictedSd of segment ${d.segment} must have one value per zone`);
      a.variance ??= new Float64Array(nz);
      for (let z = 0; z < nz; z++) a.variance[z] += (Number(d.predictedSd[z]) || 0) ** 2;
    }
    if (d.predictedNext) {
      if (d.predictedNext.length !== nz)
        throw new UsageError(`predictedNext of segment ${d.segment} must have one value per zone`);
      a.next ??= new Float64Array(nz);
      for (let z = 0; z < nz; z++) a.next[z] += Math.max(0, Number(d.predictedNext[z]) || 0);
    }
    a.segs.push(d);
  }
  if (onlyShard && !aggs.has(onlyShard)) aggs.set(onlyShard, emptyAgg(table.shardById(onlyShard)!));

  // 2-3. Assess each shard.
  const assessments: ShardAssessment[] = [];
  const proposals: Proposal[] = [];
  for (const a of aggs.values()) {
    if (!latency.hasNode(a.shard.node)) {
      throw new UsageError(
        `shard ${a.shard.id} is on node ${a.shard.node}, which the latency model does not know`,
        {
          hint: "give a latency matrix whose zones include every node's zone",
        },
      );
    }
    const predictedTotal = sum(a.predicted);
    const writeFraction = predictedTotal > 0 ? a.writes / predictedTotal : 0;
    const currentTotal = latency.totalLatency(a.predicted, latency.nodeIndex(a.shard.node));
    const as: ShardAssessment = {
      shard: a.shard.id,
      node: a.shard.node,
      segments: a.segments,
      bytes: a.bytes,
      predictedByZone: byZone(latency.zones, a.predicted),
      recentByZone: byZone(latency.zones, a.recent),
      writeFraction: round3(writeFraction),
      currentMeanMs: round3(predictedTotal > 0 ? currentTotal / predictedTotal : 0),
      decision: "stay",
      reason: "",
      candidateReasons: [],
    };
    assessments.push(as);
    if (predictedTotal <= 0 && sum(a.recent) <= 0) {
      as.reason = "no access recorded or predicted";
      continue;
    }
    const reasons: CandidateReason[] = candidateReasons(
      { shard: a.shard.id, node: a.shard.node, predicted: a.predicted, recent: a.recent },
      latency,
      inputs.resources,
      opts,
    );
    as.candidateReasons = reasons.map(describeReason);
    if (reasons.length === 0) {
      as.reason =
        "not a candidate: no zone's predicted access rises while the node is far from it, and the node has resources";
      continue;
    }
    if (inCooldown(a.shard.migrationTimestamp, nowMs, opts.cooldownMs)) {
      as.reason = `${movedAgo(nowMs - a.shard.migrationTimestamp)}; inside the cooldown of ${Math.round(opts.cooldownMs / 1000)} s (no back and forth)`;
      continue;
    }
    const avoided = avoidBy.get(a.shard.id);
    const exclude = avoided ? new Set(avoided.map((b) => b.target)) : undefined;
    const backoffNote = avoided
      ? `; not to ${avoided.map((b) => `${b.target} (backing off until ${new Date(b.until).toISOString()} after ${b.failures} failed move${b.failures === 1 ? "" : "s"})`).join(", ")}`
      : "";
    const whole = bestMove(
      {
        predicted: a.predicted,
        writeFraction,
        bytes: a.bytes,
        sourceNode: a.shard.node,
        migrationTimestamp: a.shard.migrationTimestamp,
        predictedSd: a.variance?.map(Math.sqrt),
      },
      latency,
      inputs.resources,
      opts,
      nowMs,
      exclude,
    );
    const threshold = (total: number) => Math.max(0, opts.minGainFraction * total);
    const wholeOk =
      whole && whole.feasible && whole.netMs > threshold(whole.currentTotalMs) && whole.netMs > 0;

    // A segment alone worth more than the whole shard: split it out, then move it.
    let split: { segment: number; estimate: MoveEstimate; bytes: number } | undefined;
    if (opts.splitSegments && a.segments > 1 && a.segs.length > 0) {
      for (const s of a.segs) {
        const segPred = Float64Array.from({ length: nz }, (_, z) => Math.max(0, Number(s.predicted[z]) || 0));
        const bytes = inputs.segmentBytes(s.segment);
        const e = bestMove(
          {
            predicted: segPred,
            writeFraction: s.writeFraction,
            bytes,
            sourceNode: a.shard.node,
            migrationTimestamp: a.shard.migrationTimestamp,
            predictedSd: s.predictedSd,
          },
          latency,
          inputs.resources,
          opts,
          nowMs,
          exclude,
        );
        if (!e || !e.feasible || !(e.netMs > threshold(e.currentTotalMs)) || !(e.netMs > 0)) continue;
        if (wholeOk && e.netMs <= whole!.netMs) continue;
        if (!split || e.netMs > split.estimate.netMs) split = { segment: s.segment, estimate: e, bytes };
      }
    }
    const chosen = split ? split.estimate : wholeOk ? whole! : undefined;
    if (chosen) {
      const next = split ? a.segs.find((s) => s.segment === split!.segment)?.predictedNext : a.next;
      if (next) {
        const first =
          latency.totalLatency(next, latency.nodeIndex(a.shard.node)) -
          latency.totalLatency(next, latency.nodeIndex(chosen.target));
        if (first <= 0) {
          fillEstimate(as, chosen);
          as.postponed = true;
          as.reason = `moving to ${chosen.target} pays off over the horizon (net ${fmtMs(chosen.netMs)}), but not yet in the first interval: postponed to the next round${backoffNote}`;
          continue;
        }
      }
    }
    if (!chosen) {
      if (!whole) as.reason = "no other node to move to";
      else if (!whole.feasible) as.reason = `best target ${whole.target} refused: ${whole.refusal}`;
      else {
        as.reason =
          whole.benefitMs > 0
            ? `best target ${whole.target} would save ${fmtMs(whole.benefitMs)} for ${fmtMs(whole.costMs)} of cost; ` +
              `net ${fmtMs(whole.netMs)} is below the threshold ${fmtMs(threshold(whole.currentTotalMs))}`
            : // no node is nearer to the predicted accesses than this one: no saving to weigh
              `no other node is nearer to the predicted accesses (the best, ${whole.target}, would add ${fmtMs(-whole.benefitMs)})`;
      }
      as.reason += backoffNote;
      if (whole) fillEstimate(as, whole);
      continue;
    }
    fillEstimate(as, chosen);
    if (split) {
      as.segment = split.segment;
      as.reason = `segment ${split.segment} alone is worth moving (net ${fmtMs(chosen.netMs)}${wholeOk ? ` vs ${fmtMs(whole!.netMs)} for the whole shard` : "; the whole shard is not"}): split it onto its own shard, then move it`;
    } else {
      as.reason = `moving to ${chosen.target} saves ${fmtMs(chosen.benefitMs)} over the horizon for ${fmtMs(chosen.costMs)} of cost`;
    }
    as.reason += backoffNote;
    proposals.push({
      agg: a,
      assessment: as,
      estimate: chosen,
      bytes: split ? split.bytes : a.bytes,
      split: split ? { segment: split.segment } : undefined,
    });
  }

  // 4. Rank and admit under the budget.
  proposals.sort((x, y) => y.estimate.netMs - x.estimate.netMs || (x.agg.shard.id < y.agg.shard.id ? -1 : 1));
  const inFlight = inputs.inFlight ?? { migrations: 0, bytes: 0 };
  let slots = Math.max(0, opts.maxConcurrentMigrations - inFlight.migrations);
  let bytesLeft = Math.max(0, opts.maxBytesInFlight - inFlight.bytes);
  const resources: Record<string, NodeResources> | undefined = inputs.resources
    ? Object.fromEntries(
        Object.entries(inputs.resources).map(([k, r]) => [
          k,
          { capacity: { ...r.capacity }, load: { ...r.load } },
        ]),
      )
    : undefined;
  const steps: PlanStep[] = [];
  let seq = map.nextShardSeq;
  let usedBytes = 0;
  let usedMigrations = 0;
  for (const p of proposals) {
    const target = p.estimate.target;
    if (slots <= 0) {
      defer(p, `deferred: the budget of ${opts.maxConcurrentMigrations} concurrent migrations is used`);
      continue;
    }
    if (p.bytes > bytesLeft) {
      defer(p, `deferred: ${p.bytes} bytes would exceed the bytes-in-flight budget (${bytesLeft} left)`);
      continue;
    }
    const r = resources?.[target];
    if (r && utilisationWith(r, p.bytes) > opts.targetMaxUtilisation) {
      defer(p, `deferred: target ${target} is full after the moves ranked above`);
      continue;
    }
    if (r) {
      r.load.shards += 1;
      r.load.diskBytes += p.bytes;
    }
    slots--;
    bytesLeft -= p.bytes;
    usedBytes += p.bytes;
    usedMigrations++;
    let moved = p.agg.shard.id;
    if (p.split) {
      const newShard = shardIdFor(seq++);
      const mapForSplit = { ...map, nextShardSeq: seq - 1 };
      steps.push({
        kind: "split",
        shard: p.agg.shard.id,
        segment: p.split.segment,
        newShard,
        node: p.agg.shard.node,
        diff: splitOutSegment(mapForSplit, p.agg.shard.id, p.split.segment, newShard),
      });
      moved = newShard;
      p.assessment.decision = "split-move";
    } else p.assessment.decision = "move";
    steps.push({
      kind: "move",
      shard: moved,
      source: p.agg.shard.node,
      target,
      bytes: p.bytes,
      benefitMs: round3(p.estimate.benefitMs),
      costMs: round3(p.estimate.costMs),
      netMs: round3(p.estimate.netMs),
      copySeconds: round3(p.estimate.copySeconds),
    });
  }

  const moves = steps.filter((s) => s.kind === "move").length;
  const splits = steps.length - moves;
  let summary: string;
  if (moves > 0) {
    summary = `${moves} move${moves === 1 ? "" : "s"}${splits ? ` (${splits} after a split)` : ""} planned from ${assessments.length} shard${assessments.length === 1 ? "" : "s"} assessed`;
  } else if (assessments.length === 0) {
    summary = "nothing should move: no shard has recorded or predicted access";
  } else {
    const first = assessments.find((a) => a.decision !== "stay") ?? assessments[0];
    summary = `nothing should move: ${assessments.length === 1 ? first.reason : `${assessments.length} shards assessed, none worth moving (e.g. ${first.shard}: ${first.reason})`}`;
  }
  return {
    format: PLAN_FORMAT,
    mapVersion: inputs.mapVersion,
    mapDigest: inputs.mapDigest,
    createdAt: nowMs,
    scope,
    inputs: {
      horizonSeconds: opts.horizonSeconds,
      latency: latency.snapshot(),
      notes: [...(inputs.notes ?? []), ...backingOff.map((b) => `backing off: ${describeBackoff(b)}`)],
      inFlight: { ...inFlight },
    },
    options: { ...opts },
    assessments,
    steps,
    budget: {
      maxConcurrentMigrations: opts.maxConcurrentMigrations,
      maxBytesInFlight: opts.maxBytesInFlight,
      migrations: usedMigrations,
      bytes: usedBytes,
    },
    summary,
  };
}

function defer(p: Proposal, reason: string): void {
  p.assessment.decision = "deferred";
  p.assessment.reason = reason;
}

function fillEstimate(as: ShardAssessment, e: MoveEstimate): void {
  as.target = e.target;
  as.targetMeanMs = round3(e.targetMeanMs);
  as.benefitMs = round3(e.benefitMs);
  as.costMs = round3(e.costMs);
  as.netMs = round3(e.netMs);
  as.copySeconds = round3(e.copySeconds);
  as.costs = {
    copyMs: round3(e.costs.copyMs),
    pauseMs: round3(e.costs.pauseMs),
    loadMs: round3(e.costs.loadMs),
    recentMoveMs: round3(e.costs.recentMoveMs),
    overheadMs: round3(e.costs.overheadMs),
    riskMs: round3(e.costs.riskMs),
  };
}

function sum(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return s;
}

function fmtMs(ms: number): string {
  const abs = Math.abs(ms);
  if (abs >= 1e6) return `${(ms / 1000).toFixed(0)} s`;
  if (abs >= 1000) return `${(ms / 1000).toFixed(1)} s`;
  return `${ms.toFixed(1)} ms`;
}

/** A plan applied to another map version than it was made for (exit 3): re-plan, nothing is wrong with the move. */
export class StalePlanError extends PreconditionError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, opts);
    this.name = "StalePlanError";
  }
}

/**
 * Refuses a plan computed against another version of the location map, or, given the current map,
 * against another cluster's map at the same version (its digest differs).
 */
export function checkPlanFresh(
  plan: Pick<MigrationPlan, "mapVersion" | "mapDigest">,
  currentVersion: number,
  currentMap?: LocationMap,
): void {
  if (plan.mapVersion !== currentVersion) {
    throw new StalePlanError(
      `the plan was computed against location map version ${plan.mapVersion}, but the map is now at version ${currentVersion}`,
      {
        hint: "re-plan against the current map (`shardctl plan --all --out plan.json`) and apply the new plan",
      },
    );
  }
  if (currentMap && plan.mapDigest !== undefined && plan.mapDigest !== mapDigest(currentMap)) {
    throw new PreconditionError(
      `the plan was computed against another location map (another cluster's, or another store's) that is also at version ${currentVersion}: it does not apply to this one`,
      {
        hint: "check --store, --data-dir and CONSUL_HTTP_ADDR; a plan for this cluster: `shardctl plan --all --out plan.json`",
      },
    );
  }
}

/**
 * Applies a plan's steps to a map (pure): splits through the assigner's
 * applyLayoutDiff, moves as owner change at epoch + 1 with migrationTimestamp
 * = now. New split pieces inherit the parent's migrationTimestamp so a split
 * can never be used to dodge the cooldown. Refuses a stale plan.
 */
export function applyPlanSteps(vm: VersionedMap, plan: MigrationPlan, nowMs: number): LocationMap {
  checkPlanFresh(plan, vm.version, vm.map);
  let map = vm.map;
  for (const step of plan.steps) {
    if (step.kind === "split") {
      const parent = map.shards.find((s) => s.id === step.shard);
      if (!parent) throw new UsageError(`plan splits unknown shard ${step.shard}`);
      map = applyLayoutDiff(map, step.diff, nowMs);
      map = {
        ...map,
        shards: map.shards.map((s) =>
          s.id === step.newShard ? { ...s, migrationTimestamp: parent.migrationTimestamp } : s,
        ),
      };
    } else {
      const sh = map.shards.find((s) => s.id === step.shard);
      if (!sh) throw new UsageError(`plan moves unknown shard ${step.shard}`);
      if (sh.node !== step.source)
        throw new UsageError(`plan moves ${step.shard} from ${step.source}, but it is on ${sh.node}`);
      map = {
        ...map,
        shards: map.shards.map((s) =>
          s.id === step.shard
            ? { ...s, node: step.target, epoch: s.epoch + 1, migrationTimestamp: nowMs, changedAt: nowMs }
            : s,
        ),
        updatedAt: nowMs,
      };
    }
  }
  return map;
}

/** Where the planner's inputs come from (CLI files today, agents and Consul later, the simulator's replay). */
export interface PlanInputsPort {
  /** Reads a consistent snapshot of the inputs. */
  read(): PlanInputs;
}

/**
 * The PME's planning API: planMigration(dataKey) for one key's shard and
 * planAll() for the whole cluster. Holds no state beyond its ports.
 */
export class MigrationPlanner {
  constructor(
    private readonly deps: { inputs: PlanInputsPort; clock: Clock; options?: Partial<PlannerOptions> },
  ) {}

  get options(): PlannerOptions {
    return { ...DEFAULT_PLANNER_OPTIONS, ...this.deps.options };
  }

  planMigration(dataKey: string, maxKeyBytes = 1024): MigrationPlan {
    const inputs = this.deps.inputs.read();
    const segment = new Segmenter(inputs.map.segmentCount, maxKeyBytes).segmentOf(dataKey);
    const shard = new RoutingTable({ map: inputs.map, version: inputs.mapVersion }).shardOf(segment);
    return computePlan(inputs, this.options, this.deps.clock.now(), {
      kind: "key",
      key: dataKey,
      segment,
      shard: shard.id,
    });
  }

  planAll(): MigrationPlan {
    return computePlan(this.deps.inputs.read(), this.options, this.deps.clock.now(), { kind: "all" });
  }
}
