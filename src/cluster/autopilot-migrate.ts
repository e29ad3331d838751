/**
 * The autopilot's migration stage (issue 8): after collect → reshard, the
 * leader finishes orphaned migrations (recovery), forecasts and plans
 * (`runPlan --all`: predict per segment, cost-benefit per shard, admitted
 * under the planner's budget of concurrent migrations and bytes in flight),
 * then carries out the admitted moves one after the other.
 *
 * The store it is given stamps the leader's term on every map write, so a
 * leader deposed in the middle of a migration cannot commit it: the commit is
 * refused and the migration rolls back.
 *
 * A plan's "split then move" is one step: the new piece is built on the
 * move's target (src/cluster/reshape.ts).
 *
 * A move that fails backs off (MoveBackoffs, the pure schedule in
 * src/engine/move-backoff.ts): the planner is told not to propose that shard
 * for that target until the back-off ends, so a target that keeps refusing is
 * not tried every cycle, and the moves ranked below it get the budget. The
 * reshard stage's splits and merges back off the same way (runLayoutChanges).
 */
import type { Config } from "../config.js";
import type { LayoutDiff, LayoutOp } from "../engine/assigner.js";
import type { MigrationOwner, MigrationRecord } from "../engine/migration.js";
import {
  DEFAULT_BACKOFF_POLICY,
  activeBackoffs,
  pruneBackoffs,
  recordMoveFailure,
  recordMoveSuccess,
  validateBackoffPolicy,
  type BackoffPolicy,
  type MoveBackoffEntry,
} from "../engine/move-backoff.js";
import { StalePlanError, type MigrationPlan } from "../engine/planner.js";
import type { Clock, LocationStore } from "../engine/ports.js";
import { errorMessage } from "../errors.js";
import type { PlacementSource } from "../commands/plan.js";
import { runPlan } from "../commands/plan.js";
import type { AgentRpc } from "./agent-rpc.js";
import { TakenOverError } from "./journal.js";
import { executeMigration, type MigrateDeps } from "./migrate.js";
import { recoverMigrations, type RecoveryReport } from "./recover.js";
import { executeLayoutChange, executeLayoutDiff, movesOfPlan } from "./reshape.js";

export interface MigrationCycleReport {
  recovered: RecoveryReport[];
  planned: number;
  skipped: string[];
  moved: MigrationRecord[];
  failed: { shard: string; target: string; error: string }[];
  /** Moves not planned this cycle because they failed recently, and until when. */
  backingOff: MoveBackoffEntry[];
  mapVersion?: number;
}

/**
 * The autopilot's memory of failed moves, kept across its cycles (and, through
 * the store, across its processes and leaderships: autopilot-memory.ts). The
 * schedule itself is pure data and functions (move-backoff.ts); this only
 * holds the state.
 */
export class MoveBackoffs {
  private state: MoveBackoffEntry[] = [];
  readonly policy: BackoffPolicy;
  constructor(policy: BackoffPolicy = DEFAULT_BACKOFF_POLICY) {
    validateBackoffPolicy(policy);
    this.policy = { ...policy };
  }
  /** Forgets entries long over or of shards gone from the map; returns those still backing off. */
  active(now: number, shards?: ReadonlySet<string>): MoveBackoffEntry[] {
    this.state = pruneBackoffs(this.state, now, this.policy, shards);
    return activeBackoffs(this.state, now);
  }
  failed(move: { shard: string; target: string; error: string }, now: number): MoveBackoffEntry {
    this.state = recordMoveFailure(this.state, move, now, this.policy);
    return this.state.find((e) => e.shard === move.shard && e.target === move.target)!;
  }
  succeeded(shard: string, target: string): void {
    this.state = recordMoveSuccess(this.state, shard, target);
  }
  /** Every entry, backing off or not yet forgotten (for the autopilot's memory in the store). */
  entries(): MoveBackoffEntry[] {
    return [...this.state];
  }
  /** Replaces the state with entries read back from the store. */
  replace(entries: readonly MoveBackoffEntry[]): void {
    this.state = [...entries];
  }
}

export interface MigrationCycleDeps {
  config: Config;
  /** The leader's term-stamped store. */
  store: LocationStore;
  rpc: AgentRpc;
  clock: Clock;
  log: (msg: string) => void;
  owner: MigrationOwner;
  /** The planner's inputs (map, windows, latency); opened per cycle. */
  source: () => Promise<PlacementSource>;
  /** Stops between moves (leadership lost or shutdown). */
  signal?: AbortSignal;
  /** Failed moves back off (absent: every cycle plans them again). */
  backoff?: MoveBackoffs;
}

export async function runMigrationCycle(deps: MigrationCycleDeps): Promise<MigrationCycleReport> {
  const { store, rpc, clock, log, owner } = deps;
  const report: MigrationCycleReport = {
    recovered: [],
    planned: 0,
    skipped: [],
    moved: [],
    failed: [],
    backingOff: [],
  };
  report.recovered = (await recoverMigrations({ store, rpc, clock, log, owner })).filter(
    (r) => r.outcome !== "in-progress",
  );
  const served = await store.load({ consistent: true });
  if (!served?.map.nodes.some((n) => n.address !== "")) {
    report.skipped.push("no agents serve the map: nothing to migrate");
    return report;
  }
  const avoid = deps.backoff?.active(clock.now(), new Set(served.map.shards.map((s) => s.id)));
  const source = await deps.source();
  let plan: MigrationPlan;
  try {
    plan = await runPlan({ all: true, avoid }, { config: deps.config, source, clock });
  } finally {
    await source.close();
  }
  report.mapVersion = plan.mapVersion;
  const busy = new Set(
    (await store.listMigrations()).records
      .filter((r) => r.record.phase !== "done" && r.record.phase !== "aborted")
      .map((r) => r.record.shard),
  );
  const vm = await store.load({ consistent: true });
  const known = new Set(vm?.map.shards.map((s) => s.id) ?? []);
  const moves = movesOfPlan(plan);
  report.planned = moves.length;
  let first = true;
  for (const m of moves) {
    if (deps.signal?.aborted) {
      report.skipped.push(`${m.shard}: stopped (leadership lost or shutting down)`);
      continue;
    }
    if (!known.has(m.shard)) {
      report.skipped.push(`${m.shard}: not in the map any more`);
      continue;
    }
    if (busy.has(m.shard)) {
      report.skipped.push(`${m.shard}: another coordinator is migrating it`);
      continue;
    }
    try {
      // the first move is checked against the plan's map version (every move, when the map read here
      // is not the plan's already); each move changes the map, so a later one is checked against
      // where the plan saw its shard: another coordinator may have moved it meanwhile
      const fresh = vm?.version === plan.mapVersion;
      const planVersion = first || !fresh ? plan.mapVersion : undefined;
      const seen = vm?.map.shards.find((s) => s.id === m.shard);
      const expect = !first && fresh && seen ? { source: m.source, epoch: seen.epoch } : undefined;
      const r = m.split
        ? await executeLayoutChange(
            { op: m.split.op, pieceNodes: { [m.split.piece]: m.target }, planVersion },
            { store, rpc, clock, log, owner },
          )
        : await executeMigration(
            { shard: m.shard, target: m.target, planVersion, expect },
            { store, rpc, clock, log, owner },
          );
      report.moved.push(r);
      deps.backoff?.succeeded(m.shard, m.target);
    } catch (err) {
      report.failed.push({ shard: m.shard, target: m.target, error: errorMessage(err) });
      // Not the move's fault: leadership lost or shutting down (a deposed leader's commit is
      // refused), another coordinator took the record over, or the map moved on since the plan.
      const backsOff =
        deps.backoff &&
        !deps.signal?.aborted &&
        !(err instanceof TakenOverError) &&
        !(err instanceof StalePlanError);
      if (backsOff) {
        const b = deps.backoff!.failed(
          { shard: m.shard, target: m.target, error: errorMessage(err) },
          clock.now(),
        );
        log(
          `autopilot: migration of ${m.shard} to ${m.target} failed: ${errorMessage(err)}; not tried again before ${new Date(b.until).toISOString()} (failure ${b.failures} in a row)`,
        );
      } else log(`autopilot: migration of ${m.shard} to ${m.target} failed: ${errorMessage(err)}`);
    }
    first = false;
  }
  report.backingOff = deps.backoff?.active(clock.now()) ?? [];
  return report;
}

/** A layout change's key in the back-off: the shards it involves and its kind. */
function layoutKey(op: LayoutOp): { shard: string; target: string } {
  return op.kind === "split"
    ? { shard: op.shard, target: "split" }
    : { shard: [...op.shards].sort().join("+"), target: "merge" };
}

/** Every shard a layout change touches: the shard split and its pieces, or the shards merged. */
function shardsOf(op: LayoutOp): string[] {
  return op.kind === "split" ? [op.shard, ...op.pieces.map((p) => p.id)] : op.shards;
}

/** "split of shard-3", "merge of shard-1+shard-2". */
function describeOp(op: LayoutOp): string {
  const k = layoutKey(op);
  return `${k.target} of ${k.shard}`;
}

/** "split of shard-3 until 2026-…Z (2 failures: …)". */
export function describeLayoutBackoff(e: MoveBackoffEntry): string {
  const err = e.lastError.length > 200 ? `${e.lastError.slice(0, 200)}…` : e.lastError;
  return `${e.target} of ${e.shard} until ${new Date(e.until).toISOString()} (${e.failures} failure${e.failures === 1 ? "" : "s"}: ${err})`;
}

/**
 * The reshard stage's layout changes (splits and merges carried out as
 * migrations between the agents' shards), with the same back-off as moves: a
 * change that failed is held back until its back-off ends, and the diff's
 * other changes are carried out meanwhile. (executeLayoutDiff stops at the
 * first failure, so without this one change that keeps failing would be
 * tried every cycle and hold up every change after it.) A failure that is
 * not the change's own (`signal` aborted: leadership lost, a stale term,
 * shutting down; a map that moved on; shards another migration holds) does
 * not count.
 */
export async function runLayoutChanges(
  diff: LayoutDiff,
  deps: MigrateDeps,
  backoff: MoveBackoffs,
  signal?: AbortSignal,
  /** The map version the diff was computed against: a map that moved on since refuses the first change. */
  planVersion?: number,
): Promise<{ appliedVersion?: number; notApplied?: string; failed?: boolean }> {
  const { clock, log } = deps;
  const active = backoff.active(clock.now());
  const held = (op: LayoutOp) => {
    const k = layoutKey(op);
    return active.find((e) => e.shard === k.shard && e.target === k.target);
  };
  const waiting = diff.ops.flatMap((op) => {
    const e = held(op);
    return e ? [e] : [];
  });
  // A change that touches a shard of a held one is held with it: the diff was planned with the held
  // change in it (a merge of the pieces a held split makes), and would fence, copy and then be
  // refused at its commit (the layout would have a gap).
  const heldShards = new Set(diff.ops.filter((op) => held(op)).flatMap(shardsOf));
  const withHeld = diff.ops.filter((op) => !held(op) && shardsOf(op).some((id) => heldShards.has(id)));
  const ops = diff.ops.filter((op) => !held(op) && !withHeld.includes(op));
  const heldNote = waiting.length
    ? `backing off: ${waiting.map(describeLayoutBackoff).join("; ")}${withHeld.length ? `; held with them: ${withHeld.map(describeOp).join(", ")}` : ""}`
    : undefined;
  if (ops.length === 0) return { notApplied: heldNote };
  // stopping (shutting down, leadership lost): the change in flight finishes, no other one starts
  const r = await executeLayoutDiff({ ...diff, ops }, deps, planVersion, () =>
    signal?.aborted ? "the autopilot is stopping (shutting down or no longer the leader)" : undefined,
  );
  // executeLayoutDiff carries the ops out in order and stops at the first failure
  for (const op of ops.slice(0, r.records.length)) {
    const k = layoutKey(op);
    backoff.succeeded(k.shard, k.target);
  }
  let notApplied = r.notApplied;
  // a map that moved on since the diff, or shards another migration holds (a `migrate --apply` or a
  // second autopilot beside this one), is not the change's fault: the next cycle plans again
  const failure =
    r.records.length < ops.length && !signal?.aborted && !r.stalePlan && !r.busy ? r.notApplied : undefined;
  if (failure !== undefined) {
    const op = ops[r.records.length];
    const e = backoff.failed({ ...layoutKey(op), error: failure }, clock.now());
    const next = `the ${e.target} of ${e.shard} is not tried again before ${new Date(e.until).toISOString()} (failure ${e.failures} in a row)`;
    log(`autopilot: ${next}`);
    notApplied = `${r.notApplied}; ${next}`;
  }
  if (heldNote) notApplied = notApplied ? `${notApplied}; ${heldNote}` : heldNote;
  return {
    appliedVersion: r.appliedVersion,
    notApplied,
    ...(failure !== undefined || r.leftOpen ? { failed: true } : {}),
  };
}
