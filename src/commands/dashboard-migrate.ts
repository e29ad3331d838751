/**
 * The dashboard's `m`: one confirmed move through the same coordinator as
 * `shardctl migrate --apply` (executeMigration, src/cluster/migrate.ts).
 * This is the only place the dashboard touches the coordinator, so that a
 * change of its dependencies is one edit here.
 */
import { AgentRpc } from "../cluster/agent-rpc.js";
import { resolveClientToken } from "../cluster/local.js";
import { executeMigration } from "../cluster/migrate.js";
import type { Config } from "../config.js";
import { systemClock, type LocationStore } from "../engine/ports.js";
import { errorMessage } from "../errors.js";
import type { OnMigrate } from "../tui/source.js";
import { formatMs } from "../output.js";

/**
 * The dashboard's migration callback, or why there is none (no agent token:
 * the coordinator could not talk to the agents).
 */
export function dashboardMigrator(
  config: Config,
  store: LocationStore,
): { onMigrate?: OnMigrate; unavailable?: string } {
  try {
    resolveClientToken(config);
  } catch (err) {
    return { unavailable: errorMessage(err) };
  }
  const onMigrate: OnMigrate = async (shard, target, report, plan) => {
    const rpc = new AgentRpc({ token: resolveClientToken(config) });
    try {
      // the same dependencies as `shardctl migrate` (src/commands/migrate.ts); the journal is in the store
      const deps = { store, rpc, clock: systemClock, log: report.log };
      const r = await executeMigration(
        { shard, target, planVersion: plan?.mapVersion, onProgress: report.progress },
        deps,
      );
      if (r.phase !== "done")
        return {
          ok: false,
          message: `${shard} → ${target} ended ${r.phase}${r.rollForwardPending ? `: ${r.rollForwardPending}` : ""}`,
        };
      return {
        ok: true,
        message: `${shard} moved to ${target}: write pause ${formatMs(r.writePauseMs)}, took ${formatMs(r.endedAt === undefined ? undefined : r.endedAt - r.startedAt)}`,
      };
    } finally {
      rpc.close();
    }
  };
  return { onMigrate };
}
