/**
 * The cost-benefit of moving one shard (or one segment split onto its own
 * shard) from its node to a target. Everything is expressed in one unit:
 * milliseconds of access latency summed over the horizon's accesses, so a
 * benefit and a cost can be subtracted.
 *
 * - benefit = Σ_zone predicted accesses × (RTT from the current node − RTT from the target)
 * - copy: the shard's bytes at the measured bandwidth; the benefit only
 *   starts once the copy is done, so the share of the horizon spent copying
 *   is lost benefit
 * - write pause: writes arriving in the fenced tail wait, on average, half of it
 * - target load: a move onto a fuller node costs more; above the ceiling it is infeasible
 * - recent move: inside the cooldown a move is infeasible (no back and forth);
 *   for one more cooldown after that it carries a penalty that fades to zero
 * - risk: the prediction is uncertain; when the caller gives the standard
 *   deviation of the predicted accesses per zone, the benefit's standard
 *   deviation (zones independent) times `riskAversion` is charged, so a move
 *   must pay off beyond the forecast's noise, not just on its mean
 */
import { utilisationWith, type LatencyModel, type NodeResources } from "./latency.js";

export interface CostOptions {
  horizonSeconds: number;
  bandwidthBytesPerSecond: number;
  writePauseMs: number;
  cooldownMs: number;
  /** Penalty (ms of latency) per unit of the target's resulting utilisation. */
  loadPenaltyMs: number;
  /** A target whose utilisation would exceed this is refused. */
  targetMaxUtilisation: number;
  /** Penalty (ms) for moving a shard right after its cooldown; fades linearly over one more cooldown. */
  recentMovePenaltyMs: number;
  /** Fixed cost of one move (ms): control traffic. */
  moveOverheadMs: number;
  /** Standard deviations of the benefit charged as risk (0: ignore uncertainty). */
  riskAversion: number;
}

export interface MoveSubject {
  /** Predicted accesses over the horizon per zone (latency-model order). */
  predicted: ArrayLike<number>;
  writeFraction: number;
  bytes: number;
  sourceNode: string;
  /** ms since the epoch of the last move; 0 if never. */
  migrationTimestamp: number;
  /** Standard deviation of the predicted accesses per zone, when known. */
  predictedSd?: ArrayLike<number>;
}

export interface CostBreakdown {
  copyMs: number;
  pauseMs: number;
  loadMs: number;
  recentMoveMs: number;
  overheadMs: number;
  riskMs: number;
}

export interface MoveEstimate {
  target: string;
  /** Total latency (ms over the horizon's accesses) from the current node and from the target. */
  currentTotalMs: number;
  targetTotalMs: number;
  /** Mean per access. */
  currentMeanMs: number;
  targetMeanMs: number;
  benefitMs: number;
  copySeconds: number;
  costs: CostBreakdown;
  costMs: number;
  netMs: number;
  feasible: boolean;
  /** Why the move is infeasible. */
  refusal?: string;
}

export function inCooldown(migrationTimestamp: number, nowMs: number, cooldownMs: number): boolean {
  return migrationTimestamp > 0 && nowMs - migrationTimestamp < cooldownMs;
}

export function estimateMove(
  subject: MoveSubject,
  target: string,
  latency: LatencyModel,
  resources: Readonly<Record<string, NodeResources>> | undefined,
  opts: CostOptions,
  nowMs: number,
): MoveEstimate {
  const si = latency.nodeIndex(subject.sourceNode);
  const ti = latency.nodeIndex(target);
  let accesses = 0;
  for (let z = 0; z < latency.zones.length; z++) accesses += subject.predicted[z];
  const currentTotalMs = latency.totalLatency(subject.predicted, si);
  const targetTotalMs = latency.totalLatency(subject.predicted, ti);
  const benefitMs = currentTotalMs - targetTotalMs;
  const copySeconds =
    opts.bandwidthBytesPerSecond > 0 ? subject.bytes / opts.bandwidthBytesPerSecond : Infinity;
  const lostShare = opts.horizonSeconds > 0 ? Math.min(1, copySeconds / opts.horizonSeconds) : 1;
  const copyMs = Math.max(0, benefitMs) * lostShare;
  const writesInPause =
    opts.horizonSeconds > 0
      ? (accesses * subject.writeFraction * (opts.writePauseMs / 1000)) / opts.horizonSeconds
      : 0;
  const pauseMs = writesInPause * (opts.writePauseMs / 2);
  let feasible = true;
  let refusal: string | undefined;
  let loadMs = 0;
  const res = resources?.[target];
  if (res) {
    const u = utilisationWith(res, subject.bytes);
    loadMs = opts.loadPenaltyMs * u;
    if (u > opts.targetMaxUtilisation) {
      feasible = false;
      refusal = `target ${target} would be ${(u * 100).toFixed(0)}% full (limit ${(opts.targetMaxUtilisation * 100).toFixed(0)}%)`;
    }
  }
  let recentMoveMs = 0;
  if (subject.migrationTimestamp > 0) {
    const age = nowMs - subject.migrationTimestamp;
    if (age < opts.cooldownMs) {
      feasible = false;
      refusal = `${movedAgo(age)}; cooldown is ${Math.round(opts.cooldownMs / 1000)} s`;
    } else if (age < 2 * opts.cooldownMs && opts.cooldownMs > 0) {
      recentMoveMs = opts.recentMovePenaltyMs * (1 - (age - opts.cooldownMs) / opts.cooldownMs);
    }
  }
  if (target === subject.sourceNode) {
    feasible = false;
    refusal = "the target is the current node";
  }
  let riskMs = 0;
  if (subject.predictedSd && opts.riskAversion > 0) {
    let v = 0;
    for (let z = 0; z < latency.zones.length; z++) {
      const d = (latency.rttAt(z, si) - latency.rttAt(z, ti)) * (subject.predictedSd[z] || 0);
      v += d * d;
    }
    riskMs = opts.riskAversion * Math.sqrt(v);
  }
  const costs: CostBreakdown = {
    copyMs,
    pauseMs,
    loadMs,
    recentMoveMs,
    overheadMs: opts.moveOverheadMs,
    riskMs,
  };
  const costMs = copyMs + pauseMs + loadMs + recentMoveMs + opts.moveOverheadMs + riskMs;
  return {
    target,
    currentTotalMs,
    targetTotalMs,
    currentMeanMs: accesses > 0 ? currentTotalMs / accesses : 0,
    targetMeanMs: accesses > 0 ? targetTotalMs / accesses : 0,
    benefitMs,
    copySeconds,
    costs,
    costMs,
    netMs: benefitMs - costMs,
    feasible,
    refusal,
  };
}

/** The best feasible target by net benefit, or the best infeasible one (for the reasoning) when none is feasible. */
export function bestMove(
  subject: MoveSubject,
  latency: LatencyModel,
  resources: Readonly<Record<string, NodeResources>> | undefined,
  opts: CostOptions,
  nowMs: number,
  /** Targets not to consider (a move there is backing off after failures). */
  exclude?: ReadonlySet<string>,
): MoveEstimate | undefined {
  let best: MoveEstimate | undefined;
  let bestInfeasible: MoveEstimate | undefined;
  for (const n of latency.nodes) {
    if (n.id === subject.sourceNode || exclude?.has(n.id)) continue;
    const e = estimateMove(subject, n.id, latency, resources, opts, nowMs);
    if (e.feasible) {
      if (!best || e.netMs > best.netMs) best = e;
    } else if (!bestInfeasible || e.benefitMs > bestInfeasible.benefitMs) bestInfeasible = e;
  }
  return best ?? bestInfeasible;
}

/**
 * "moved N s ago"; for a move stamped after now (the clock of the coordinator that moved it was
 * ahead of this one), says so instead of a negative age: the cooldown then lasts as much longer.
 */
export function movedAgo(ageMs: number): string {
  const s = Math.round(ageMs / 1000);
  return s >= 0
    ? `moved ${s} s ago`
    : `moved at a time ${-s} s ahead of this host's clock (the clocks of this host and of the coordinator that moved it disagree)`;
}
