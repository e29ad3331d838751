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
 */
import type { Config } from "../config.js";
import type { MigrationOwner, MigrationRecord } from "../engine/migration.js";
import type { MigrationPlan } from "../engine/planner.js";
import type { Clock, LocationStore } from "../engine/ports.js";
import { errorMessage } from "../errors.js";
import type { PlacementSource } from "../commands/plan.js";
import { runPlan } from "../commands/plan.js";
import type { AgentRpc } from "./agent-rpc.js";
import { executeMigration } from "./migrate.js";
import { recoverMigrations, type RecoveryReport } from "./recover.js";
import { executeLayoutChange, movesOfPlan } from "./reshape.js";

export interface MigrationCycleReport {
  recovered: RecoveryReport[];
  planned: number;
  skipped: string[];
  moved: MigrationRecord[];
  failed: { shard: string; target: string; error: string }[];
  mapVersion?: number;
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
}

export async function runMigrationCycle(deps: MigrationCycleDeps): Promise<MigrationCycleReport> {
  const { store, rpc, clock, log, owner } = deps;
  const report: MigrationCycleReport = { recovered: [], planned: 0, skipped: [], moved: [], failed: [] };
  report.recovered = (await recoverMigrations({ store, rpc, clock, log, owner })).filter(
    (r) => r.outcome !== "in-progress",
  );
  const served = await store.load({ consistent: true });
  if (!served?.map.nodes.some((n) => n.address !== "")) {
    report.skipped.push("no agents serve the map: nothing to migrate");
    return report;
  }
  const source = await deps.source();
  let plan: MigrationPlan;
  try {
    plan = await runPlan({ all: true }, { config: deps.config, source, clock });
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
      // the first move is checked against the plan's map version; each move changes the map
      const planVersion = first ? plan.mapVersion : undefined;
      const r = m.split
        ? await executeLayoutChange(
            { op: m.split.op, pieceNodes: { [m.split.piece]: m.target }, planVersion },
            { store, rpc, clock, log, owner },
          )
        : await executeMigration(
            { shard: m.shard, target: m.target, planVersion },
            { store, rpc, clock, log, owner },
          );
      report.moved.push(r);
    } catch (err) {
      report.failed.push({ shard: m.shard, target: m.target, error: errorMessage(err) });
      log(`autopilot: migration of ${m.shard} to ${m.target} failed: ${errorMessage(err)}`);
    }
    first = false;
  }
  return report;
}
