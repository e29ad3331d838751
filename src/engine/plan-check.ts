/**
 * The whole step list of a plan checked against the map it was made for,
 * before anything runs. A plan file's checksum catches damage, not a hand
 * edit that recomputed it; and `migrate --apply` commits step by step, so a
 * step that cannot be done must be found before the first one commits, or
 * the plan is left half applied. Pure: the map is given.
 *
 * The planner touches each shard in at most one step (a shard is moved, or
 * split and its new piece moved), so anything else is refused:
 *  - a shard split or moved twice, or split after a step moved or created it;
 *  - a split whose new shard already exists (in the map or from an earlier
 *    step), or whose layout change is not the split the step names (the
 *    planner splits one segment off: the new shard holds that one alone);
 *  - a step whose source node is not where the shard is: the map version
 *    matched the plan's (the caller checks that first), and a map version
 *    names one map, so this is not a stale plan but an edited one;
 *  - a move to where the shard already is.
 * These are UsageErrors (exit 2). A target node missing from the map is a
 * PreconditionError (exit 3), as for a single move: the node left.
 */
import { PreconditionError, UsageError } from "../errors.js";
import { expandRanges, SHARD_ID_PATTERN, type LocationMap, type SegmentRange } from "./location-map.js";
import type { PlanStep } from "./planner.js";

const HINT = "re-create it with `shardctl plan --all --out FILE`; never edit a plan by hand";

/**
 * Refuses (UsageError / PreconditionError naming the step) a step list that cannot be applied whole to
 * `map`; `outcome` ends the message ("nothing was applied" by default; "" for a check alone).
 */
export function checkPlanSteps(
  map: LocationMap,
  steps: readonly PlanStep[],
  outcome = "nothing was applied",
): void {
  const end = outcome ? `; ${outcome}` : "";
  const refuse = (i: number, why: string): never => {
    throw new UsageError(`the plan's step ${i + 1} ${why}${end}`, { hint: HINT });
  };
  const nodeOf = new Map(map.shards.map((s) => [s.id, s.node]));
  const segmentsOf = new Map(map.shards.map((s) => [s.id, expandRanges(s.ranges)]));
  const nodes = new Set(map.nodes.map((n) => n.id));
  /** The step (index) that last touched a shard, and how. */
  const touched = new Map<string, { step: number; how: "split" | "moved" | "created" }>();
  steps.forEach((s, i) => {
    const before = touched.get(s.shard);
    if (s.kind === "split") {
      if (before) refuse(i, `splits ${s.shard}, which step ${before.step + 1} ${before.how} already`);
      const at = nodeOf.get(s.shard);
      if (at === undefined) refuse(i, `splits ${s.shard}, which is not in the location map`);
      if (s.node !== at) refuse(i, `splits ${s.shard} on ${s.node}, but the map has it on ${at}`);
      if (!SHARD_ID_PATTERN.test(s.newShard))
        refuse(i, `splits ${s.shard} into ${JSON.stringify(s.newShard)}, which is not a shard id`);
      // the map numbers new shards after the highest: past 2^53 the count would stop advancing
      const seq = /^shard-(\d+)$/.exec(s.newShard);
      if (seq && !Number.isSafeInteger(Number(seq[1])))
        refuse(i, `splits ${s.shard} into ${s.newShard}, whose number is past what a shard id may carry`);
      const made = touched.get(s.newShard);
      if (made)
        refuse(i, `splits ${s.shard} into ${s.newShard}, which step ${made.step + 1} created already`);
      if (nodeOf.has(s.newShard)) refuse(i, `splits ${s.shard} into ${s.newShard}, which exists already`);
      const ops = s.diff.ops;
      const op = ops[0] as (typeof ops)[number] | null | undefined;
      // (a file's JSON: any of it may be null or of another type, and must be refused, not read)
      const pieces: unknown[] =
        op && typeof op === "object" && op.kind === "split" && Array.isArray(op.pieces) ? op.pieces : [];
      const pieceId = (p: unknown) => (p && typeof p === "object" ? (p as { id?: unknown }).id : undefined);
      if (
        ops.length !== 1 ||
        !op ||
        op.kind !== "split" ||
        op.shard !== s.shard ||
        op.node !== s.node ||
        pieces.length !== 2 ||
        pieceId(pieces[0]) !== s.shard ||
        pieceId(pieces[1]) !== s.newShard
      )
        refuse(i, `splits ${s.shard} into ${s.newShard}, but its layout change says something else`);
      // the pieces must share out exactly the segments the shard holds, the step's segment in the new one
      const had = segmentsOf.get(s.shard)!;
      const within = (r: unknown) => rangesWithin(r, map.segmentCount);
      const [keptPiece, newPiece] = pieces as { ranges: unknown }[];
      if (!within(keptPiece.ranges) || !within(newPiece.ranges))
        refuse(i, `splits ${s.shard} into pieces whose segment ranges are not ranges of the map`);
      const kept = expandRanges(keptPiece.ranges as SegmentRange[]);
      const split = expandRanges(newPiece.ranges as SegmentRange[]);
      const all = [...kept, ...split].sort((a, b) => a - b);
      if (
        kept.length === 0 ||
        split.length !== 1 ||
        split[0] !== s.segment ||
        all.length !== had.length ||
        all.some((g, k) => g !== had[k])
      )
        refuse(i, `splits ${s.shard} into pieces that are not its segments (segment ${s.segment} split off)`);
      touched.set(s.shard, { step: i, how: "split" });
      touched.set(s.newShard, { step: i, how: "created" });
      nodeOf.set(s.newShard, s.node);
      return;
    }
    if (before && before.how !== "created")
      refuse(i, `moves ${s.shard}, which step ${before.step + 1} ${before.how} already`);
    const at = nodeOf.get(s.shard);
    if (at === undefined) refuse(i, `moves ${s.shard}, which is not in the location map`);
    if (s.source !== at) refuse(i, `moves ${s.shard} from ${s.source}, but the map has it on ${at}`);
    if (!nodes.has(s.target))
      throw new PreconditionError(
        `the plan's step ${i + 1} moves ${s.shard} to ${s.target}, which is not in the location map (it left, or the name is wrong)${end}`,
        { hint: `known nodes: ${[...nodes].join(", ")}; re-plan` },
      );
    if (s.target === at) refuse(i, `moves ${s.shard} to ${s.target}, where it is already`);
    touched.set(s.shard, { step: i, how: "moved" });
    nodeOf.set(s.shard, s.target);
  });
}

/** Whole half-open ranges inside [0, segmentCount): checked before they are expanded (a hostile [0, 1e12] would not fit in memory). */
function rangesWithin(ranges: unknown, segmentCount: number): ranges is SegmentRange[] {
  return (
    Array.isArray(ranges) &&
    ranges.length <= segmentCount &&
    ranges.every(
      (r) =>
        Array.isArray(r) &&
        r.length === 2 &&
        Number.isInteger(r[0]) &&
        Number.isInteger(r[1]) &&
        (r[0] as number) >= 0 &&
        (r[0] as number) < (r[1] as number) &&
        (r[1] as number) <= segmentCount,
    )
  );
}
