/**
 * `shardctl reshard`: the spec's trigger_resharding(). Reads the layout and the
 * access windows, prints the layout diff (dry run); with --apply, commits it
 * by compare-and-set against the version it was planned on.
 */
import type { Command } from "commander";
import type { ReshardResult } from "../engine/lsmm.js";
import type { SegmentRange } from "../engine/location-map.js";
import { printJson, printTable, type IO } from "../output.js";
import type { LocationStore } from "../engine/ports.js";
import { openStore } from "../store/index.js";
import { collectWindows } from "../cluster/windows-source.js";
import { layoutChangeBlocker, servedByAgents } from "../cluster/layout-guard.js";
import { AgentRpc } from "../cluster/agent-rpc.js";
import { resolveClientToken } from "../cluster/local.js";
import { executeLayoutDiff } from "../cluster/reshape.js";
import { recoverMigrations } from "../cluster/recover.js";
import { isTerminal } from "../engine/migration.js";
import { systemClock } from "../engine/ports.js";
import { InterruptedError, PreconditionError, UserError } from "../errors.js";
import { lsmmFor, withStore } from "./common.js";
import type { CommandContext } from "./context.js";
import { finishStepOnInterrupt } from "./interrupt.js";

export function formatRanges(ranges: SegmentRange[], max = 3): string {
  const parts = ranges.slice(0, max).map(([a, b]) => (b - a === 1 ? `${a}` : `${a}-${b - 1}`));
  if (ranges.length > max) parts.push(`… (+${ranges.length - max})`);
  return parts.join(",");
}

export function printReshard(io: IO, result: ReshardResult, json: boolean, applied: boolean): void {
  const { diff } = result;
  if (json) {
    printJson(io, { ...result, applied });
    return;
  }
  const held = diff.heldByDwell.length
    ? `; ${diff.heldByDwell.length} shard(s) changed less than reshard.minDwellSeconds ago and wait: ${diff.heldByDwell.slice(0, 5).join(", ")}`
    : "";
  if (diff.ops.length === 0) {
    io.out.write(
      `no change to the layout (version ${result.baseVersion}, ${diff.shardsBefore} shards)${held}\n`,
    );
    return;
  }
  const rows: (string | number)[][] = [];
  for (const op of diff.ops) {
    if (op.kind === "split") {
      op.pieces.forEach((p, i) =>
        rows.push([
          i === 0 ? `split (${op.reason})` : "",
          i === 0 ? op.shard : "",
          p.id,
          formatRanges(p.ranges),
          p.load,
          op.node,
        ]),
      );
    } else {
      rows.push(["merge", op.shards.join("+"), op.shards[0], formatRanges(op.ranges), op.load, op.node]);
    }
  }
  printTable(io, ["change", "from", "shard", "segments", "load/s", "node"], rows);
  io.out.write(
    `${diff.ops.length} change(s): ${diff.shardsBefore} → ${diff.shardsAfter} shards, ${diff.dedicatedAfter} hot segment(s) on their own shard${held}\n`,
  );
  if (applied) io.out.write(`applied: layout version ${result.baseVersion} → ${result.appliedVersion}\n`);
  // an --apply that did not go through says why in its error, not that this was a dry run
  else if (result.notApplied === undefined)
    io.err.write("dry run: nothing was changed; run with --apply to commit this layout\n");
}

/**
 * The error an --apply that did not go through ends with, or undefined. A
 * refusal before anything was written, or a first change that was rolled back,
 * is a precondition (exit 3, nothing changed); an execution that stopped after
 * committing some of the changes is a failure (exit 1) and says what stays
 * committed. `executed`: the agents carried the diff out (migrations ran).
 */
export function reshardOutcomeError(
  result: ReshardResult,
  executed = false,
  /** What to do about the change that stopped the run (its error's hint), when it says more. */
  stopHint?: string,
): UserError | undefined {
  if (!result.notApplied) return undefined;
  if (result.appliedVersion !== undefined) {
    return new UserError(
      `applied only in part: ${result.notApplied}; the changes before it stay committed (layout version ${result.baseVersion} → ${result.appliedVersion})`,
      {
        hint: "see `shardctl migrations` for the one that stopped; run `shardctl reshard` again to plan the rest against the new layout",
      },
    );
  }
  if (result.leftOpen)
    return new UserError(
      `not applied: ${result.notApplied}; the change that stopped stays open until its roll-back finishes (its shards may refuse writes until then)`,
      {
        hint: stopHint ?? "`shardctl migrations --recover` finishes it when the agents answer",
      },
    );
  return new PreconditionError(`not applied: ${result.notApplied}; nothing was changed`, {
    hint: executed
      ? (stopHint ??
        "see `shardctl migrations`; run `shardctl reshard` again to plan against the current layout")
      : "the plan above is what resharding would do; on a cluster without agents it can be applied",
  });
}

export function registerReshard(program: Command, ctx: CommandContext): void {
  program
    .command("reshard")
    .description(
      "re-evaluate the shard layout from access frequency (trigger_resharding); dry run unless --apply",
    )
    .option("--apply", "commit the new layout to the location store", false)
    .option("--json", "print the layout diff as JSON", false)
    .addHelpText(
      "after",
      `
Hot segments (above reshard.splitRate accesses/s) get a shard of their own; shared shards
above reshard.shardLoadCap are cut into contiguous pieces; neighbouring cold shards merge.
Hysteresis and reshard.minDwellSeconds keep a segment near a threshold from flipping.

Examples:
  $ shardctl reshard                 # show what would change
  $ shardctl reshard --apply         # commit it (exit 3 if the layout changed meanwhile)
  $ shardctl reshard --json | jq '.diff.ops | length'

Interrupting: on a cluster whose agents hold the data, the first Ctrl-C (SIGINT) or
SIGTERM during --apply stops at the next safe point: a split or merge before its commit
is rolled back, one past it is finished; the changes after it are not started. A second
signal exits at once (then run \`shardctl migrations --recover\`).

Exit codes: 0 done (or a dry run), 1 applied only in part, 3 not applied (the layout
changed meanwhile, or another migration holds a shard; nothing was changed), 130
interrupted by Ctrl-C, 143 by SIGTERM (as above).`,
    )
    .action(async (o: { apply: boolean; json: boolean }) => {
      const config = ctx.config();
      await withStore(
        () => openStore(config),
        async (store) => {
          let rpc: AgentRpc | undefined;
          const agents = () => (rpc ??= new AgentRpc({ token: resolveClientToken(config) }));
          try {
            await reshardOn(store, agents);
          } finally {
            rpc?.close();
          }
        },
      );

      async function reshardOn(store: LocationStore, agents: () => AgentRpc): Promise<void> {
        let current = await store.load({ consistent: true });
        // as `migrate --apply` does: finish first what a dead coordinator left (rolled forward or
        // back), or its record would refuse every change of its shards
        if (o.apply && current && servedByAgents(current.map)) {
          const open = (await store.listMigrations()).records.some((r) => !isTerminal(r.record.phase));
          if (open) {
            await recoverMigrations({
              store,
              rpc: agents(),
              clock: systemClock,
              log: (s) => ctx.io.err.write(`${s}\n`),
            });
            current = await store.load({ consistent: true });
          }
        }
        const collected = await collectWindows(config, current);
        for (const u of collected.unreachable)
          ctx.io.err.write(`warning: no access windows from node ${u.node}: ${u.error}\n`);
        const lsmm = lsmmFor(config, store, collected.windows);
        let executed = false;
        let stopHint: string | undefined;
        // Ctrl-C or SIGTERM while splits and merges run: the one in flight ends at its next safe point
        const interrupt = o.apply ? finishStepOnInterrupt(ctx.io.err) : undefined;
        const result = await lsmm
          .triggerResharding({
            apply: o.apply,
            canApply: (diff, map) => layoutChangeBlocker(diff, map, collected.unreachable),
            // agents hold the data: each split or merge is a migration between their shards
            execute:
              current && servedByAgents(current.map)
                ? async (diff, _map, version) => {
                    executed = true;
                    const done = await executeLayoutDiff(
                      diff,
                      {
                        store,
                        rpc: agents(),
                        clock: systemClock,
                        log: (s) => ctx.io.err.write(`${s}\n`),
                        interrupted: interrupt?.reason,
                      },
                      version,
                    );
                    stopHint = done.hint;
                    return done;
                  }
                : undefined,
          })
          .finally(() => interrupt?.remove());
        printReshard(ctx.io, result, o.json, result.appliedVersion !== undefined);
        const failed = reshardOutcomeError(result, executed, stopHint);
        const why = interrupt?.reason();
        if (why)
          throw new InterruptedError(
            failed?.message ?? `${why}: the change in flight was past its commit and finished`,
            {
              hint: failed?.hint ?? "`shardctl migrations` shows the journal",
              cause: failed,
              exitCode: interrupt?.exitCode(),
            },
          );
        if (failed) throw failed;
      }
    });
}
