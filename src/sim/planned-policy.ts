/**
 * The planner-driven policies of the simulator, reactive and predictive: the
 * state of one policy (its map, pending moves, what it has seen) and its
 * decision at each boundary (src/sim/simulate.ts describes the model).
 */
import { applyLayoutDiff, planLayout, type AssignerOptions, type LayoutDiff } from "../engine/assigner.js";
import type { NodeResources } from "../engine/latency.js";
import { RoutingTable, type LocationMap } from "../engine/location-map.js";
import {
  computePlan,
  DEFAULT_PLANNER_OPTIONS,
  type MigrationPlan,
  type PlannerOptions,
  type SegmentDemand,
} from "../engine/planner.js";
import {
  chooseShareSeason,
  normalQuantile,
  shareGroups,
  shareSurprise,
  zoneShares,
  type ZoneShareOptions,
} from "../forecast/index.js";
import type { BatchForecast, SeriesForecast, SeriesToForecast } from "./forecaster.js";
import { Replay, type Workload } from "./workload.js";

/** The standard normal's 99.9% quantile: a count above mean + z·√mean is a 0.1% Poisson surprise. */
const POISSON_UPPER_Z = normalQuantile(0.999);

interface PendingMove {
  shard: string;
  target: string;
  boundary: number;
  bytes: number;
}

/** The state of a planner-driven policy (reactive or predictive). */
export class PlannedPolicy {
  map: LocationMap;
  version = 1;
  readonly nodeOfSeg: Int32Array;
  pending: PendingMove[] = [];
  readonly replay: Replay;
  /**
   * The counts as a decision sees them, laid out as Workload.counts: at decision k, intervals before
   * k − 1 complete, interval k − 1 up to the decision time (scaled to a whole interval), nothing after.
   */
  private readonly seen: Float64Array;
  private seenUpTo = 0;
  private readonly nodeIndex: Map<string, number>;

  constructor(
    private readonly w: Workload,
    initial: LocationMap,
    private readonly kind: "reactive" | "predictive",
    private readonly forecast: BatchForecast | undefined,
  ) {
    this.map = initial;
    this.nodeIndex = new Map(w.latency.nodes.map((n, i) => [n.id, i]));
    this.nodeOfSeg = new Int32Array(w.opts.segmentCount);
    this.replay = new Replay(w);
    this.seen = new Float64Array(w.counts.length);
    this.refreshNodes();
  }

  /** Brings `seen` to decision k: interval k − 2 complete, interval k − 1 as far as the decision time. */
  private see(k: number): void {
    const w = this.w;
    const scale = w.dt / (w.dt - w.opts.leadSeconds * 1000);
    for (let j = Math.max(0, this.seenUpTo - 1); j < k; j++) {
      const full = j < k - 1;
      for (let r = 0; r < w.active.length * w.Z; r++) {
        const i = r * w.nI + j;
        this.seen[i] = full ? w.counts[i] : w.partial[i] * scale;
      }
    }
    this.seenUpTo = k;
  }

  /** Σ seen counts of active segment a, zone z, over intervals [from, to). */
  private sum(a: number, z: number, from: number, to: number): number {
    return this.w.sum(a, z, from, to, this.seen);
  }

  private refreshNodes(): void {
    for (const sh of this.map.shards) {
      const ni = this.nodeIndex.get(sh.node)!;
      for (const [a, b] of sh.ranges) this.nodeOfSeg.fill(ni, a, b);
    }
  }

  private plannerOptions(): PlannerOptions {
    const o = this.w.opts;
    return {
      ...DEFAULT_PLANNER_OPTIONS,
      horizonSeconds: o.horizonIntervals * o.intervalSeconds,
      bandwidthBytesPerSecond: o.bandwidthBytesPerSecond,
      writePauseMs: o.writePauseMs,
      cooldownMs: o.cooldownIntervals * o.intervalSeconds * 1000,
      maxConcurrentMigrations: o.maxConcurrentMigrations,
      maxBytesInFlight: o.maxBytesInFlight,
      minGainFraction: o.minGainFraction,
      riskAversion: o.riskAversion,
      splitSegments: o.splitSegments,
      riseRatio: o.riseRatio,
      minRiseAccesses: o.minRiseAccesses,
    };
  }

  /**
   * The decision at d_k = b_k − lead: sees intervals < k − 1 complete and interval k − 1 up to d_k.
   * Reactive plans on what was observed. Predictive plans on the forecast,
   * then gives the reactive check to the segments the forecast left alone (not
   * moved, not postponed) whose recent accesses the prediction did not expect
   * (`surprised`: other zones than the share profile's, or more than the
   * forecast total), so a forecast that misses a change costs no more than
   * reacting to it, and one that did not miss is not second-guessed.
   *
   * Both decide from the first boundary on. Until H + 1 intervals are seen (the warm-up) there is no
   * history to forecast from, nor a full horizon to compare with the one before: both plan on what
   * they observed, over the last half of what they saw (scaled to the horizon), without the
   * planner's splits and without resharding, whose load windows would rest on a few minutes.
   */
  decide(k: number): void {
    const w = this.w;
    const H = w.opts.horizonIntervals;
    // intervals [0, done) are seen: all but the last complete, the last up to the decision time
    const done = Math.min(k, w.nI);
    this.see(done);
    const now = w.boundary(k) - w.opts.leadSeconds * 1000;
    const warmUp = done < H + 1;
    if (w.opts.reshard && !warmUp && this.pending.length === 0) this.reshard(done, now);

    const demandSegs: number[] = [];
    for (let a = 0; a < w.active.length; a++) {
      let vol = 0;
      for (let z = 0; z < w.Z; z++) vol += this.sum(a, z, done - 2 * H, done);
      if (vol > 0) demandSegs.push(a);
    }
    if (demandSegs.length === 0) return;
    const observed = (a: number) => this.observedDemand(a, done);
    if (warmUp) {
      this.planAndApply(demandSegs.map(observed), k, now, { splitSegments: false });
      return;
    }
    if (this.kind === "reactive") {
      this.planAndApply(demandSegs.map(observed), k, now);
      return;
    }
    const pred = this.predicted(done, demandSegs);
    const forecastDemand = demandSegs.map((a) => {
      const d = observed(a);
      d.predicted = Array.from({ length: w.Z }, (_, z) => pred.sum.get(a * w.Z + z) ?? 0);
      d.predictedSd = Array.from({ length: w.Z }, (_, z) => pred.sd.get(a * w.Z + z) ?? 0);
      d.predictedNext = Array.from({ length: w.Z }, (_, z) => pred.next.get(a * w.Z + z) ?? 0);
      return d;
    });
    const plan = this.planAndApply(forecastDemand, k, now);
    const settled = new Set(
      plan ? plan.assessments.filter((x) => x.postponed || x.decision !== "stay").map((x) => x.shard) : [],
    );
    const table = new RoutingTable({ map: this.map, version: this.version });
    const fallback = demandSegs
      .filter((a) => !settled.has(table.shardOf(w.active[a]).id) && this.surprised(a, done))
      .map(observed);
    if (fallback.length) this.planAndApply(fallback, k, now);
  }

  /**
   * How many of the horizon's intervals from `done` on the replay covers: H, or fewer at the trace's
   * end. Accesses after the last interval are never replayed, so a move for them would be counted
   * (a migration, its bytes, a loss until then) and never paid back; both policies plan over the
   * same cut horizon, as the oracle optimises over the trace alone.
   */
  private replayedAfter(done: number): number {
    return Math.max(0, Math.min(this.w.opts.horizonIntervals, this.w.nI - done));
  }

  /**
   * What was observed, standing in for what comes next: the last H intervals seen vs the H before,
   * Poisson noise. In the warm-up (fewer than H + 1 intervals seen) the last ⌈done/2⌉ intervals vs
   * the ones before them, scaled to the horizon. Near the trace's end the horizon stops there (see
   * `replayedAfter`).
   */
  private observedDemand(a: number, done: number): SegmentDemand {
    const w = this.w;
    const H = w.opts.horizonIntervals;
    const span = done < H + 1 ? Math.ceil(done / 2) : H;
    // per interval seen, times the intervals of the horizon the replay covers
    const scale = this.replayedAfter(done) / span;
    const predicted = new Array<number>(w.Z);
    const recent = new Array<number>(w.Z);
    const sd = new Array<number>(w.Z);
    let tot = 0;
    for (let z = 0; z < w.Z; z++) {
      const seen = this.sum(a, z, done - span, done);
      predicted[z] = seen * scale;
      recent[z] = this.sum(a, z, done - 2 * span, done - span) * scale;
      sd[z] = Math.sqrt(seen) * scale;
      // the write fraction over the last span's complete intervals
      tot += w.sum(a, z, done - 1 - span, done - 1);
    }
    const writeFraction = tot > 0 ? w.writeSum(a, done - 1 - span, done - 1) / tot : 0;
    return { segment: w.active[a], predicted, recent, writeFraction, predictedSd: sd };
  }

  /** One planning pass over the shards without a pending move; splits apply at once, moves wait for their boundary. */
  private planAndApply(
    demandAll: SegmentDemand[],
    k: number,
    now: number,
    override: Partial<PlannerOptions> = {},
  ): MigrationPlan | undefined {
    const w = this.w;
    const busy = new Set(this.pending.map((p) => p.shard));
    const table = new RoutingTable({ map: this.map, version: this.version });
    const demand = busy.size ? demandAll.filter((d) => !busy.has(table.shardOf(d.segment).id)) : demandAll;
    if (demand.length === 0) return undefined;
    const resources: Record<string, NodeResources> = {};
    const shardsOn = new Map<string, number>();
    for (const sh of this.map.shards) shardsOn.set(sh.node, (shardsOn.get(sh.node) ?? 0) + 1);
    for (const n of w.latency.nodes) {
      resources[n.id] = {
        capacity: {
          cpu: 1,
          memoryBytes: 1,
          diskBytes: Number.MAX_SAFE_INTEGER,
          shardSlots: w.opts.segmentCount,
        },
        load: { cpu: 0, memoryBytes: 0, diskBytes: 0, shards: shardsOn.get(n.id) ?? 0 },
      };
    }
    const inFlight = {
      migrations: this.pending.length,
      bytes: this.pending.reduce((acc, p) => acc + p.bytes, 0),
    };
    const plan = computePlan(
      {
        map: this.map,
        mapVersion: this.version,
        latency: w.latency,
        demand,
        segmentBytes: (s) => w.segBytes[s],
        resources,
        inFlight,
      },
      { ...this.plannerOptions(), ...override },
      now,
    );
    w.opts.onPlan?.(this.kind, k, plan);
    for (const step of plan.steps) {
      if (step.kind === "split") {
        const parent = this.map.shards.find((s) => s.id === step.shard)!;
        this.map = applyLayoutDiff(this.map, step.diff, now);
        this.map.shards = this.map.shards.map((s) =>
          s.id === step.newShard ? { ...s, migrationTimestamp: parent.migrationTimestamp } : s,
        );
        this.version++;
        this.replay.splits++;
      } else {
        const lateness = (step.copySeconds * 1000 + w.opts.writePauseMs - w.opts.leadSeconds * 1000) / w.dt;
        const boundary = k + Math.max(0, Math.ceil(lateness));
        this.pending.push({ shard: step.shard, target: step.target, boundary, bytes: step.bytes });
      }
    }
    return plan;
  }

  /** The last forecast of each segment's total: made with data up to `done`; by active index. */
  private lastForecast?: { done: number; byKey: Map<number, SeriesForecast> };

  /** Each zone's counts of active segment a, over the whole trace (callers bound what they read). */
  private zoneCounts(a: number): Float64Array[] {
    const w = this.w;
    return Array.from({ length: w.Z }, (_, z) =>
      this.seen.subarray((a * w.Z + z) * w.nI, (a * w.Z + z + 1) * w.nI),
    );
  }

  /**
   * The share groups (shareGroups over the history the forecaster sees, revisited as often as the
   * totals are forecast), and each group's counts summed (made when first asked for, summed up to
   * `summedTo`).
   */
  private groups?: {
    done: number;
    groupOf: Int32Array;
    members: number[][];
    sums: Map<number, { counts: Float64Array[]; summedTo: number }>;
  };

  /**
   * The counts segment a's zone shares are estimated from: its share group's (src/forecast's
   * shareGroups: the segments whose zone counts cannot be told apart from its own), its own when it
   * is alone. A sparse segment's profile then rests on the accesses of every segment that follows
   * the same pattern.
   */
  private shareCounts(a: number, done: number): Float64Array[] {
    const w = this.w;
    if (!w.opts.shareGroups) return this.zoneCounts(a);
    let g = this.groups;
    if (!g || done - g.done >= w.opts.forecastEvery) {
      const { groupOf, members } = shareGroups(
        w.active.map((_, b) => this.zoneCounts(b)),
        {
          block: 2 * w.opts.horizonIntervals,
          historyStart: Math.max(0, done - w.opts.historyIntervals),
          historyEnd: done,
        },
      );
      g = this.groups = { done, groupOf, members, sums: new Map() };
    }
    const k = g.groupOf[a];
    const members = g.members[k];
    if (members.length === 1) return this.zoneCounts(a);
    let sum = g.sums.get(k);
    if (!sum) {
      sum = { counts: Array.from({ length: w.Z }, () => new Float64Array(w.nI)), summedTo: 0 };
      g.sums.set(k, sum);
    }
    // from the last interval summed on: it was seen up to the decision time then, and has grown
    for (let z = 0; z < w.Z; z++) {
      const out = sum.counts[z];
      for (let j = Math.max(0, sum.summedTo - 1); j < done; j++) {
        let x = 0;
        for (const m of members) x += this.seen[(m * w.Z + z) * w.nI + j];
        out[j] = x;
      }
    }
    sum.summedTo = done;
    return sum.counts;
  }

  /** The season of the zones' shares (chooseShareSeason on the busiest segments) and when it was chosen. */
  private shareSeason?: { done: number; season: number };

  private shareOptions(done: number): ZoneShareOptions {
    const w = this.w;
    const H = w.opts.horizonIntervals;
    // revisited as the history grows (by a tenth, at least every forecast refresh), as model choices are
    const due = this.shareSeason && done - this.shareSeason.done >= Math.max(w.opts.forecastEvery, done / 10);
    if (!this.shareSeason || due) {
      // scored on the busiest segments (at most 256), each over the history the forecaster sees
      const from = Math.max(0, done - w.opts.historyIntervals);
      const volume = (a: number) => {
        let v = 0;
        for (let z = 0; z < w.Z; z++) v += this.sum(a, z, from, done);
        return v;
      };
      const busiest = w.active
        .map((_, a) => ({ a, v: volume(a) }))
        .filter((x) => x.v > 0)
        .sort((x, y) => y.v - x.v)
        .slice(0, 256);
      const series = busiest.map(({ a }) => this.zoneCounts(a).map((c) => c.subarray(from, done)));
      const { season } = chooseShareSeason(series, w.opts.intervalSeconds, { horizon: H, priorSpan: H });
      this.shareSeason = { done, season };
    }
    return { season: this.shareSeason.season, priorSpan: H, historyEnd: done };
  }

  /**
   * Predicted accesses per (segment, zone) over the intervals [done, done + H) — the ones a cutover
   * at b_done affects (interval done − 1 is in progress, seen up to now), cut at the trace's end
   * (`replayedAfter`) — with their standard deviation,
   * and the first interval alone. Top-down: the forecaster predicts each segment's total, and the
   * zones' share profile over the day (src/forecast/zone-shares.ts) splits it. The deviation charged
   * as risk is the shares' standard error only: an uncertain volume scales the benefit of a move but
   * cannot turn it negative, a wrong share can. Re-forecasts the totals every forecastEvery
   * intervals, reaching far enough ahead to cover the gap.
   */
  private predicted(
    done: number,
    demandSegs: number[],
  ): { sum: Map<number, number>; sd: Map<number, number>; next: Map<number, number> } {
    const w = this.w;
    const H = w.opts.horizonIntervals;
    const R = w.opts.forecastEvery;
    const B = w.opts.smoothIntervals;
    // a trailing mean over B intervals ending at interval i is centred on i − shift
    const shift = Math.floor((B - 1) / 2);
    let f = this.lastForecast;
    const missing = f ? demandSegs.some((a) => !f!.byKey.has(a)) : true;
    if (!f || done - f.done >= R || missing) {
      const from = Math.max(0, done - w.opts.historyIntervals);
      const series: SeriesToForecast[] = demandSegs.map((a) => {
        const total = new Float64Array(done - from);
        for (let z = 0; z < w.Z; z++) {
          const base = (a * w.Z + z) * w.nI;
          for (let j = from; j < done; j++) total[j - from] += this.seen[base + j];
        }
        return { id: String(w.active[a]), values: B > 1 ? trailingMean(total, B) : total };
      });
      const forecasts = series.length
        ? this.forecast!(series, { intervalSeconds: w.opts.intervalSeconds, horizon: H + R + shift })
        : [];
      const byKey = new Map<number, SeriesForecast>();
      demandSegs.forEach((a, i) => byKey.set(a, forecasts[i]));
      f = this.lastForecast = { done, byKey };
    }
    const sum = new Map<number, number>();
    const sd = new Map<number, number>();
    const next = new Map<number, number>();
    const shareOpts = this.shareOptions(done);
    const end = done + this.replayedAfter(done);
    for (const a of demandSegs) {
      const fc = f.byKey.get(a);
      const { share, support } = zoneShares(this.shareCounts(a, done), done, H, shareOpts);
      for (let z = 0; z < w.Z; z++) {
        let s = 0;
        let v = 0;
        for (let i = done; i < end; i++) {
          // Step 0 of the forecast is interval f.done; interval i is step i − f.done.
          const m = fc ? fc.mean[i - f.done + shift] : 0;
          const total = Number.isFinite(m) && m > 0 ? m : 0;
          const sh = share[z][i - done];
          s += total * sh;
          // the steps share one profile, so their errors add up (correlated), not in quadrature
          v += total * Math.sqrt((sh * (1 - sh)) / support[i - done]);
          if (i === done) next.set(a * w.Z + z, total * sh);
        }
        sum.set(a * w.Z + z, s);
        sd.set(a * w.Z + z, v);
      }
    }
    return { sum, sd, next };
  }

  /**
   * Did segment a's recent accesses depart from what the prediction expected? Either its zone counts
   * over the last H intervals surprised the share profile (shareSurprise, χ² at 1%), or the last
   * interval seen brought more accesses than the total's forecast allowed for: beyond the Poisson
   * upper 0.1% bound of the forecast and at least minRiseAccesses more (a burst the forecast missed,
   * from where the profile expected it).
   */
  private surprised(a: number, done: number): boolean {
    const w = this.w;
    const H = w.opts.horizonIntervals;
    if (shareSurprise(this.zoneCounts(a), done - H, done, this.shareOptions(done)).surprised) return true;
    const f = this.lastForecast;
    const fc = f?.byKey.get(a);
    if (!f || !fc) return false;
    // the forecast of interval done − 1 if it was made before it, else of the next interval
    const step = Math.max(0, done - 1 - f.done) + Math.floor((w.opts.smoothIntervals - 1) / 2);
    const m = fc.mean[step];
    const expected = Number.isFinite(m) && m > 0 ? m : 0;
    let seen = 0;
    for (let z = 0; z < w.Z; z++) seen += this.sum(a, z, done - 1, done);
    return seen > expected + POISSON_UPPER_Z * Math.sqrt(expected) + w.opts.minRiseAccesses;
  }

  private reshard(done: number, now: number): void {
    const w = this.w;
    const H = w.opts.horizonIntervals;
    const loads = new Float64Array(w.opts.segmentCount);
    // a longer window than the planner's, so that noise does not split and merge shards back and forth
    const win = Math.min(done, 4 * H);
    const span = win * w.opts.intervalSeconds;
    let total = 0;
    for (let a = 0; a < w.active.length; a++) {
      let s = 0;
      for (let z = 0; z < w.Z; z++) s += this.sum(a, z, done - win, done);
      loads[w.active[a]] = s / span;
      total += s / span;
    }
    if (!(total > 0)) return;
    // Thresholds relative to a fair shard's share of the current load, so they fit any trace's scale.
    const fair = total / (w.N * w.opts.shardsPerNode);
    const opts: AssignerOptions = {
      splitRate: fair / 2,
      mergeRate: fair / 20,
      shardLoadCap: fair * 2,
      hysteresis: 0.2,
      minDwellMs: w.opts.cooldownIntervals * w.dt,
    };
    const diff = planLayout(this.map, loads, opts, now);
    if (diff.ops.length === 0) return;
    this.map = applyWithInheritedTimestamps(this.map, diff, now);
    this.version++;
    this.replay.reshardOps += diff.ops.length;
  }

  /** Applies the cutovers due at boundary k; returns the placement after b_k into `next`. */
  nextPlacement(k: number, next: Int32Array): void {
    next.set(this.nodeOfSeg);
    for (const p of this.pending) {
      if (p.boundary !== k) continue;
      const sh = this.map.shards.find((s) => s.id === p.shard);
      if (!sh) continue;
      const ni = this.nodeIndex.get(p.target)!;
      for (const [a, b] of sh.ranges) next.fill(ni, a, b);
    }
  }

  commit(k: number): void {
    const due = this.pending.filter((p) => p.boundary === k);
    if (due.length === 0) return;
    this.pending = this.pending.filter((p) => p.boundary !== k);
    const at = this.w.boundary(k);
    const byId = new Map(due.map((p) => [p.shard, p]));
    this.map = {
      ...this.map,
      shards: this.map.shards.map((s) => {
        const p = byId.get(s.id);
        if (!p) return s;
        this.replay.migrations++;
        this.replay.bytes += p.bytes;
        return { ...s, node: p.target, epoch: s.epoch + 1, migrationTimestamp: at, changedAt: at };
      }),
      updatedAt: at,
    };
    this.version++;
    this.refreshNodes();
  }
}

/**
 * applyLayoutDiff, with the cooldown carried over: a piece split off a shard
 * keeps the shard's migrationTimestamp and a merge keeps the latest of its
 * members', so resharding can never reset a cooldown.
 */
export function applyWithInheritedTimestamps(map: LocationMap, diff: LayoutDiff, nowMs: number): LocationMap {
  const stamp = new Map(map.shards.map((s) => [s.id, s.migrationTimestamp]));
  const inherited = new Map<string, number>();
  for (const op of diff.ops) {
    if (op.kind === "split") {
      const ts = stamp.get(op.shard) ?? inherited.get(op.shard) ?? 0;
      for (const p of op.pieces) inherited.set(p.id, Math.max(ts, inherited.get(p.id) ?? 0));
    } else {
      let ts = 0;
      for (const id of op.shards) ts = Math.max(ts, stamp.get(id) ?? 0, inherited.get(id) ?? 0);
      inherited.set(op.shards[0], ts);
    }
  }
  const next = applyLayoutDiff(map, diff, nowMs);
  next.shards = next.shards.map((s) =>
    inherited.has(s.id)
      ? { ...s, migrationTimestamp: Math.max(s.migrationTimestamp, inherited.get(s.id)!) }
      : s,
  );
  return next;
}

/** Trailing mean over `width` points (the first points average what there is). */
export function trailingMean(values: ArrayLike<number>, width: number): Float64Array {
  const out = new Float64Array(values.length);
  let acc = 0;
  for (let i = 0; i < values.length; i++) {
    acc += values[i];
    if (i >= width) acc -= values[i - width];
    out[i] = acc / Math.min(width, i + 1);
  }
  return out;
}
