/**
 * The shard assigner: from per-segment access rates, decide the shard layout.
 *
 * - A segment above `splitRate` gets a shard of its own (split out of its shared shard).
 * - A shared shard above `shardLoadCap` is cut into contiguous pieces, packed greedily
 *   up to cap·(1 − hysteresis).
 * - Neighbouring shards (by first segment) on the same node merge when one of them is
 *   below `mergeRate` and together they stay under cap·(1 − hysteresis).
 *
 * Hysteresis: a segment keeps its own shard until its rate falls below
 * splitRate·(1 − hysteresis); pieces and merges leave headroom under the cap.
 * A shard changed less than `minDwellMs` ago is not touched. Together these
 * make a stationary load a fixed point: re-running on the result changes nothing.
 *
 * The output is a diff (split and merge operations), never a rewrite of
 * unchanged shards. Moving shards between nodes is the planner's business.
 */
import { UsageError } from "../errors.js";
import { shardIdFor, toRanges, type LocationMap, type SegmentRange, type ShardInfo } from "./location-map.js";

export interface AssignerOptions {
  splitRate: number;
  mergeRate: number;
  shardLoadCap: number;
  hysteresis: number;
  minDwellMs: number;
}

export interface ShardPiece {
  id: string;
  ranges: SegmentRange[];
  load: number;
}

export type LayoutOp =
  | {
      kind: "split";
      shard: string;
      node: string;
      reason: "hot-segment" | "over-cap";
      /** The pieces after the split; the first keeps the shard's id. */
      pieces: ShardPiece[];
    }
  | {
      kind: "merge";
      /** The shards merged, in segment order; the first id is kept. */
      shards: string[];
      node: string;
      ranges: SegmentRange[];
      load: number;
    };

export interface LayoutDiff {
  ops: LayoutOp[];
  /** Shard count before and after. */
  shardsBefore: number;
  shardsAfter: number;
  /** Segments with a shard of their own after the diff. */
  dedicatedAfter: number;
  /** Shards that need a change but changed less than minDwellMs ago, so were left alone. */
  heldByDwell: string[];
}

interface WorkShard {
  id: string;
  node: string;
  segs: number[];
  load: number;
  /** May this shard change in this run (dwell over, or created in this run)? */
  mutable: boolean;
  /** changed in this run */
  touched: boolean;
}

export function validateAssignerOptions(o: AssignerOptions): void {
  const bad = (m: string) => {
    throw new UsageError(`reshard thresholds: ${m}`);
  };
  if (!(o.splitRate > 0)) bad("splitRate must be > 0");
  if (!(o.mergeRate >= 0) || o.mergeRate >= o.splitRate) bad("mergeRate must be ≥ 0 and below splitRate");
  if (!(o.shardLoadCap >= o.splitRate)) bad("shardLoadCap must be at least splitRate");
  if (!(o.hysteresis >= 0 && o.hysteresis < 1)) bad("hysteresis must be in [0, 1)");
  if (!(o.minDwellMs >= 0)) bad("minDwellMs must be ≥ 0");
}

/** Decides the layout changes for `loads` (accesses/s per segment). Pure. */
export function planLayout(
  map: LocationMap,
  loads: Float64Array,
  opts: AssignerOptions,
  nowMs: number,
): LayoutDiff {
  validateAssignerOptions(opts);
  if (loads.length !== map.segmentCount) {
    throw new UsageError(`loads cover ${loads.length} segments; the map has ${map.segmentCount}`);
  }
  for (let i = 0; i < loads.length; i++) {
    if (!(loads[i] >= 0) || !Number.isFinite(loads[i])) {
      throw new UsageError(`load of segment ${i} is ${loads[i]}; loads must be finite and ≥ 0`);
    }
  }
  const fill = opts.shardLoadCap * (1 - opts.hysteresis);
  const keepDedicated = opts.splitRate * (1 - opts.hysteresis);
  let seq = map.nextShardSeq;
  const ops: LayoutOp[] = [];

  const work: WorkShard[] = map.shards.map((sh) => {
    const segs: number[] = [];
    let load = 0;
    for (const [a, b] of sh.ranges)
      for (let s = a; s < b; s++) {
        segs.push(s);
        load += loads[s];
      }
    return {
      id: sh.id,
      node: sh.node,
      segs,
      load,
      mutable: nowMs - sh.changedAt >= opts.minDwellMs,
      touched: false,
    };
  });

  // 1. Hot segments out of shared shards; over-cap shared shards cut into pieces.
  const next: WorkShard[] = [];
  const heldByDwell: string[] = [];
  for (const sh of work) {
    if (
      !sh.mutable &&
      sh.segs.length > 1 &&
      (sh.load > opts.shardLoadCap || sh.segs.some((s) => loads[s] > opts.splitRate))
    ) {
      heldByDwell.push(sh.id);
    }
    if (!sh.mutable || sh.segs.length === 1) {
      next.push(sh);
      continue;
    }
    const hot = sh.segs.filter((s) => loads[s] > opts.splitRate);
    const rest = hot.length ? sh.segs.filter((s) => !(loads[s] > opts.splitRate)) : sh.segs;
    const restLoad = hot.length ? rest.reduce((acc, s) => acc + loads[s], 0) : sh.load;
    const groups: number[][] = [];
    if (rest.length > 0) {
      if (restLoad > opts.shardLoadCap) groups.push(...packContiguous(rest, loads, fill));
      else groups.push(rest);
    }
    for (const s of hot) groups.push([s]);
    if (groups.length === 1) {
      next.push(sh);
      continue;
    }
    const pieces: WorkShard[] = groups.map((segs, i) => ({
      id: i === 0 ? sh.id : shardIdFor(seq++),
      node: sh.node,
      segs,
      load: segs.reduce((acc, s) => acc + loads[s], 0),
      mutable: true,
      touched: true,
    }));
    ops.push({
      kind: "split",
      shard: sh.id,
      node: sh.node,
      reason: hot.length ? "hot-segment" : "over-cap",
      pieces: pieces.map((p) => ({ id: p.id, ranges: toRanges(p.segs), load: p.load })),
    });
    next.push(...pieces);
  }

  // 2. Merge neighbours (in order of first segment) when one is cold and the sum has headroom.
  next.sort((a, b) => a.segs[0] - b.segs[0]);
  const isDedicatedHot = (sh: WorkShard) => sh.segs.length === 1 && loads[sh.segs[0]] >= keepDedicated;
  const merged: WorkShard[] = [];
  let group: WorkShard[] = [];
  const flush = () => {
    if (group.length > 1) {
      const segs = group.flatMap((g) => g.segs).sort((a, b) => a - b);
      const load = group.reduce((acc, g) => acc + g.load, 0);
      ops.push({
        kind: "merge",
        shards: group.map((g) => g.id),
        node: group[0].node,
        ranges: toRanges(segs),
        load,
      });
      merged.push({ id: group[0].id, node: group[0].node, segs, load, mutable: true, touched: true });
    } else if (group.length === 1) merged.push(group[0]);
    group = [];
  };
  for (const sh of next) {
    if (isDedicatedHot(sh)) {
      // A hot segment's own shard stands aside: its cold neighbours on either side may still merge.
      merged.push(sh);
      continue;
    }
    const cur = group.length ? group : null;
    if (cur) {
      const load = cur.reduce((acc, g) => acc + g.load, 0);
      const head = cur[0];
      const canMerge =
        sh.mutable &&
        sh.node === head.node &&
        (load < opts.mergeRate || sh.load < opts.mergeRate) &&
        load + sh.load <= fill;
      if (canMerge) {
        group.push(sh);
        continue;
      }
      flush();
    }
    if (sh.mutable) group = [sh];
    else merged.push(sh);
  }
  flush();

  return {
    ops,
    shardsBefore: map.shards.length,
    shardsAfter: merged.length,
    dedicatedAfter: merged.filter((s) => s.segs.length === 1 && loads[s.segs[0]] > keepDedicated).length,
    heldByDwell,
  };
}

/** Greedy contiguous packing of sorted segments into groups of load ≤ fill (a lone heavier segment stands alone). */
function packContiguous(segs: number[], loads: Float64Array, fill: number): number[][] {
  const groups: number[][] = [];
  let cur: number[] = [];
  let load = 0;
  for (const s of segs) {
    if (cur.length && load + loads[s] > fill) {
      groups.push(cur);
      cur = [];
      load = 0;
    }
    cur.push(s);
    load += loads[s];
  }
  if (cur.length) groups.push(cur);
  return groups;
}

/**
 * Applies a diff to a map (pure): shards whose membership changes get
 * epoch + 1 and changedAt = now; new shards start at epoch 1 on the parent's
 * node. Throws if the diff does not fit the map.
 */
export function applyLayoutDiff(map: LocationMap, diff: LayoutDiff, nowMs: number): LocationMap {
  const shards = new Map<string, ShardInfo>(
    map.shards.map((s) => [s.id, { ...s, ranges: s.ranges.map((r) => [...r] as SegmentRange) }]),
  );
  let nextSeq = map.nextShardSeq;
  for (const op of diff.ops) {
    if (op.kind === "split") {
      const parent = shards.get(op.shard);
      if (!parent) throw new UsageError(`layout diff splits unknown shard ${op.shard}`);
      op.pieces.forEach((p, i) => {
        if (i === 0) {
          if (p.id !== parent.id) throw new UsageError("the first piece of a split must keep the shard's id");
          parent.ranges = p.ranges;
          parent.epoch += 1;
          parent.changedAt = nowMs;
        } else {
          if (shards.has(p.id)) throw new UsageError(`layout diff creates shard ${p.id}, which exists`);
          shards.set(p.id, {
            id: p.id,
            node: parent.node,
            epoch: 1,
            migrationTimestamp: 0,
            changedAt: nowMs,
            ranges: p.ranges,
          });
          const n = Number(p.id.replace(/^shard-/, ""));
          // (a number past 2^53 would stop the count: such an id never collides with the next anyway)
          if (Number.isSafeInteger(n) && n >= nextSeq) nextSeq = n + 1;
        }
      });
    } else {
      const keep = shards.get(op.shards[0]);
      if (!keep) throw new UsageError(`layout diff merges unknown shard ${op.shards[0]}`);
      let epoch = keep.epoch;
      for (const id of op.shards.slice(1)) {
        const gone = shards.get(id);
        if (!gone) throw new UsageError(`layout diff merges unknown shard ${id}`);
        epoch = Math.max(epoch, gone.epoch);
        shards.delete(id);
      }
      keep.ranges = op.ranges;
      keep.epoch = epoch + 1;
      keep.changedAt = nowMs;
    }
  }
  const out: LocationMap = {
    ...map,
    shards: [...shards.values()].sort((a, b) => a.ranges[0][0] - b.ranges[0][0]),
    nextShardSeq: nextSeq,
    updatedAt: nowMs,
  };
  return out;
}
