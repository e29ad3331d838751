/**
 * `shardctl migrate --shard ID --to NODE [--apply]`, `shardctl migrate
 * [--apply] plan.json` and `shardctl migrations`: live migration of log
 * shards with a two-phase cutover (src/cluster/migrate.ts), and its history.
 * Without --apply nothing changes: the moves are printed.
 */
import type { Command } from "commander";
import { AgentRpc } from "../cluster/agent-rpc.js";
import { resolveClientToken } from "../cluster/local.js";
import {
  executeMigration,
  listMigrations,
  openMigrationError,
  type MigrationRecord,
} from "../cluster/migrate.js";
import { catchUpMapEpochs, recoverMigrations, type RecoveryReport } from "../cluster/recover.js";
import { executeLayoutChange, movesOfPlan, type Move } from "../cluster/reshape.js";
import type { Config } from "../config.js";
import { isTerminal, pendingRecovery, phaseLabel } from "../engine/migration.js";
import { checkPlanSteps } from "../engine/plan-check.js";
import { parsePlanFile } from "../engine/plan-file.js";
import { checkPlanFresh, type MigrationPlan } from "../engine/planner.js";
import { systemClock } from "../engine/ports.js";
import { InterruptedError, PreconditionError, UsageError, UserError } from "../errors.js";
import { formatBytes, formatMs, printable, printJson, printTable, type IO } from "../output.js";
import { openStore } from "../store/index.js";
import { parsePositiveInt, readInputText } from "./common.js";
import { MigrationProgress } from "./migrate-progress.js";
import { finishStepOnInterrupt, type Interrupt } from "./interrupt.js";
import type { CommandContext, RegisterCommand } from "./context.js";

export interface MigrateCliOptions {
  shard?: string;
  to?: string;
  plan?: string;
  apply: boolean;
  lagThreshold?: number;
}

export interface MigrateResult {
  /** Some move was committed (with an error: not all of them). */
  applied: boolean;
  mapVersion: number;
  moves: Move[];
  migrations: MigrationRecord[];
  /** Orphaned migrations this run finished first (recovery). */
  recovered: RecoveryReport[];
  /** Why the moves stopped before the last one was done (`--json` prints it; the exit code is its). */
  error?: { message: string; hint?: string; exitCode: number };
}

/**
 * A failure (or an interrupt) of `migrate --apply` once its moves started: the
 * error as the user sees it, with what was committed before it, so that
 * `--json` can still say which moves are done.
 */
export class MigrateStoppedError extends UserError {
  constructor(
    err: UserError,
    readonly result: MigrateResult,
  ) {
    super(err.message, { exitCode: err.exitCode, hint: err.hint, cause: err });
    this.name = err.name;
  }
}

export async function runMigrate(
  opts: MigrateCliOptions,
  deps: { config: Config; io: IO },
): Promise<MigrateResult> {
  const { config, io } = deps;
  if (opts.plan && (opts.shard || opts.to))
    throw new UsageError("give either a plan file or --shard and --to, not both");
  if (!opts.plan && !(opts.shard && opts.to))
    throw new UsageError("say what to move: --shard ID --to NODE, or a plan file", {
      hint: "`shardctl migrate --shard shard-3 --to node-2 --apply`, or `shardctl migrate --apply plan.json`",
    });
  let plan: MigrationPlan | undefined;
  if (opts.plan) plan = parsePlanFile(readInputText(opts.plan, "the plan file"), opts.plan);
  const store = await openStore(config);
  // made only for --apply: a dry run talks to no agent, so it needs no token
  let rpc: AgentRpc | undefined;
  let interrupt: Interrupt | undefined;
  try {
    const vm = await store.load({ consistent: true });
    if (!vm)
      throw new PreconditionError("the location store holds no map yet", {
        hint: "start a local cluster with `shardctl up --local`",
      });
    if (plan) {
      checkPlanFresh(plan, vm.version, vm.map);
      // every step, against the map, before the first one commits: a plan is applied whole or not at all
      checkPlanSteps(vm.map, plan.steps);
    }
    const moves: Move[] = plan
      ? movesOfPlan(plan)
      : [
          {
            shard: opts.shard!,
            source: vm.map.shards.find((s) => s.id === opts.shard)?.node ?? "?",
            target: opts.to!,
          },
        ];
    for (const m of moves) {
      const s = vm.map.shards.find((x) => x.id === m.shard);
      if (!s)
        throw new UsageError(`shard ${m.shard} is not in the location map`, {
          hint: "`shardctl shards` lists them",
        });
      if (!vm.map.nodes.some((n) => n.id === m.target))
        throw new PreconditionError(
          `node ${m.target} is not in the location map (it left, or the name is wrong)`,
          {
            hint: `known nodes: ${vm.map.nodes.map((n) => n.id).join(", ")}; re-plan`,
          },
        );
      if (s.node === m.target && !m.split) throw new UsageError(`shard ${m.shard} is already on ${m.target}`);
    }
    if (moves.length === 0) {
      // (an agent token is not needed for nothing: a plan that found no move worth making)
      io.err.write(
        `${opts.apply ? "" : "dry run: "}the plan has no moves (map version ${vm.version}): nothing to do\n`,
      );
      return { applied: false, mapVersion: vm.version, moves, migrations: [], recovered: [] };
    }
    if (!opts.apply) {
      for (const m of moves)
        io.err.write(
          m.split
            ? `would split segment(s) of ${m.shard} into ${m.split.piece} on ${m.target} (${m.source} → ${m.target})\n`
            : `would move ${m.shard}: ${m.source} → ${m.target}\n`,
        );
      io.err.write("dry run: nothing changed; add --apply to migrate\n");
      return { applied: false, mapVersion: vm.version, moves, migrations: [], recovered: [] };
    }
    rpc = new AgentRpc({ token: resolveClientToken(config) });
    // Ctrl-C or SIGTERM from here: the step in flight ends at its next safe point, then exit 130 (143)
    interrupt = finishStepOnInterrupt(io.err);
    const interrupted = interrupt.reason;
    const exitCode = interrupt.exitCode;
    // a coordinator that starts finishes what a dead one left (rolls forward or back)
    const recovered = (
      await recoverMigrations({ store, rpc, clock: systemClock, log: (s) => io.err.write(`${s}\n`) })
    ).filter((r) => r.outcome !== "in-progress");
    const busy = new Map(
      (await store.listMigrations()).records
        .filter((r) => r.record.phase !== "done" && r.record.phase !== "aborted")
        .map((r) => [r.record.shard, r.record]),
    );
    for (const m of moves) {
      const open = busy.get(m.shard);
      if (open) throw openMigrationError(open, "nothing was applied");
    }
    // where the plan's map has each moved shard: its later steps are checked against it
    const expected = new Map(
      moves.flatMap((m) => {
        const s = vm.map.shards.find((x) => x.id === m.shard);
        return s && !m.split ? [[m.shard, { source: m.source, epoch: s.epoch }] as const] : [];
      }),
    );
    const done: MigrationRecord[] = [];
    // what --json reports when a move fails or the command is interrupted: the moves committed before
    const stoppedWith = (err: unknown) =>
      err instanceof UserError
        ? new MigrateStoppedError(err, {
            applied: done.length > 0,
            mapVersion: vm.version,
            moves,
            migrations: done,
            recovered,
            error: { message: err.message, hint: err.hint, exitCode: err.exitCode },
          })
        : err;
    const stopped = (why: string) =>
      new InterruptedError(
        `${why}: ${done.length} of ${moves.length} move(s) done${done.length ? ` (${done.map((r) => `${r.shard} → ${r.target}`).join(", ")})` : ""}; the rest not started`,
        {
          hint: "`shardctl migrations` shows the journal; re-plan and run again for the rest",
          exitCode: exitCode(),
        },
      );
    try {
      for (const [i, m] of moves.entries()) {
        const why = interrupted();
        if (why) throw stopped(why);
        const progress = new MigrationProgress(io.err, m.shard);
        // "split then move": the new piece is built on the move's target in one step
        const r = await (
          m.split
            ? executeLayoutChange(
                {
                  op: m.split.op,
                  pieceNodes: { [m.split.piece]: m.target },
                  planVersion: i === 0 && plan ? plan.mapVersion : undefined,
                  lagThreshold: opts.lagThreshold,
                },
                { store, rpc, clock: systemClock, log: (s) => progress.log(s), interrupted },
              )
            : executeMigration(
                {
                  shard: m.shard,
                  target: m.target,
                  // only the first step is checked against the plan's version; each move changes the map,
                  // and a later step against where the plan saw its shard (another coordinator may have moved it)
                  planVersion: i === 0 && plan ? plan.mapVersion : undefined,
                  expect: i > 0 && plan ? expected.get(m.shard) : undefined,
                  lagThreshold: opts.lagThreshold,
                  onProgress: (p) => progress.update(p),
                },
                {
                  store,
                  rpc,
                  clock: systemClock,
                  log: (s) => progress.log(s),
                  interrupted,
                },
              )
        )
          .catch((err: unknown) => {
            // stopped by the interrupt (rolled back), or failed while it was honoured: exit 130 (143) all the same
            if (interrupted() && err instanceof UserError)
              throw new InterruptedError(err.message, { hint: err.hint, cause: err, exitCode: exitCode() });
            // the steps before this one are committed: "served as before" holds for this step only
            if (done.length === 0 || !(err instanceof UserError)) throw err;
            throw new UserError(
              `step ${i + 1} of ${moves.length} (${m.shard}) failed after ${done.length} step(s) of the plan were committed: ${err.message}`,
              {
                exitCode: err.exitCode,
                hint: `${err.hint ? `step ${i + 1}: ${err.hint}. ` : ""}Steps 1-${done.length} stay committed (\`shardctl migrations\` lists them); plan what is left again with \`shardctl plan --all --out FILE\``,
                cause: err,
              },
            );
          })
          .finally(() => progress.stop());
        done.push(r);
      }
      // the step in flight was past its commit: it finished; nothing was left to start
      const why = interrupted();
      if (why) throw stopped(`${why}; the migration in flight was past its commit and finished`);
    } catch (err) {
      throw stoppedWith(err);
    }
    return { applied: true, mapVersion: vm.version, moves, migrations: done, recovered };
  } finally {
    interrupt?.remove();
    rpc?.close();
    await store.close();
  }
}

/**
 * What to do about recoveries that failed: an agent that did not answer is to be brought back; one
 * that answered and refused is not down, and bringing it back is no advice.
 */
export function recoveryHint(failed: readonly { why: string }[]): string {
  const unreached = failed.every((f) => /cannot reach|no answer|connection refused/.test(f.why));
  return unreached
    ? "bring the agents named above back, then run `shardctl migrations --recover` again"
    : "the lines above say what each agent answered; once that is dealt with, run `shardctl migrations --recover` again (`shardctl migrations` shows the records)";
}

/** The ERROR column: why the record stopped, and what recovery still waits for. */
function migrationProblem(r: MigrationRecord): string {
  const pending = pendingRecovery(r);
  const waits = pending ? `${pending.kind} waits for: ${pending.why}` : undefined;
  if (r.error && waits) return `${r.error}; ${waits}`;
  return r.error ?? waits ?? "";
}

export function printMigrations(io: IO, records: MigrationRecord[]): void {
  printTable(
    io,
    ["ID", "SHARD", "FROM", "TO", "PHASE", "COPIED", "PAUSE", "TOOK", "ERROR"],
    records.map((r) => [
      r.id,
      r.shard,
      `${r.source}@${r.fromEpoch}`,
      r.target,
      phaseLabel(r),
      formatBytes(r.bytesCopied),
      formatMs(r.writePauseMs),
      formatMs(r.endedAt === undefined ? undefined : r.endedAt - r.startedAt),
      migrationProblem(r),
    ]),
  );
}

const MIGRATE_HELP = `
A move, per shard: journal → the target receives the shard's log while the
source keeps serving → the source is fenced (writes get 503, clients retry)
→ the target catches up, checks the LSN and a checksum of the copy and
votes → COMMIT: one compare-and-set of the location map puts the shard on
the target at epoch + 1 → the target serves, the source redirects to it.
Any failure before the commit unfences the source and drops the copy: the
shard stays where it was with all its data.

Journal: a record per migration in the location store (Consul KV under
<prefix>migrations/, or the embedded map file), written at every phase and
refreshed every 2 s while the migration runs; the commit writes the map and
the record in one transaction. Before it starts, \`migrate --apply\` finishes
migrations whose coordinator died (see \`shardctl migrations --recover\`).

Examples:
  $ shardctl migrate --shard shard-3 --to node-2            # dry run
  $ shardctl migrate --shard shard-3 --to node-2 --apply
  $ shardctl plan --all --out plan.json
  $ shardctl migrate plan.json                              # dry run of a plan
  $ shardctl migrate --apply plan.json --json

A plan file is checked whole against the map before its first step runs
(dry run and --apply alike): a shard split or moved twice, a split of a shard
an earlier step moved or created, a new shard that exists, or a step whose
source is not where the map has the shard is refused (exit 2, naming the step,
nothing applied). A step that fails later leaves the steps before it
committed; the error says how many.

Interrupting: the first Ctrl-C (SIGINT) or SIGTERM stops at the next safe
point: a move before its commit is rolled back (the source unfenced, the copy
dropped, the journal record ended as aborted), one past its commit is
finished (the target activated, the record ended as done); the moves after
it are not started. A second signal exits at once and leaves the migration
in flight as it is: \`shardctl migrations --recover\` finishes it.

With --json, a run whose moves started prints its result on stdout even when
it fails or is interrupted: "applied" (some move was committed),
"migrations" (the committed moves' journal records) and "error" (message,
hint, exitCode); the exit code is the error's.

Exit codes: 0 done, 1 aborted (the shard is still served by its source; with
a plan, the steps before it stay committed), 2 bad usage (also a plan file
that is damaged or whose steps do not fit the map, see above), 3 the plan is
stale (the map moved on: re-plan), names a node that left, or moves a shard
another migration is moving (nothing was started for it), 130 interrupted by
Ctrl-C, 143 by SIGTERM (the step in flight was rolled back or finished, as
above).
`;

export const registerMigrate: RegisterCommand = (program: Command, ctx: CommandContext) => {
  program
    .command("migrate")
    .description("move shards with their data to other nodes (live, two-phase cutover)")
    .argument("[plan]", "a plan file from `shardctl plan --all --out FILE`")
    .option("--shard <id>", "the shard to move")
    .option("--to <node>", "the node to move it to")
    .option("--apply [plan]", "carry the moves out (without it: dry run)")
    .option(
      "--lag-threshold <entries>",
      "fence the source once the copy is this close (default: what the copy moves in 10 ms at its measured rate)",
    )
    .option("--json", "print the result as JSON", false)
    .addHelpText("after", MIGRATE_HELP)
    .action(
      async (
        planArg: string | undefined,
        o: { shard?: string; to?: string; apply?: string | boolean; lagThreshold?: string; json: boolean },
      ) => {
        const applyPlan = typeof o.apply === "string" ? o.apply : undefined;
        if (planArg && applyPlan) throw new UsageError("give the plan file once");
        const r = await runMigrate(
          {
            shard: o.shard,
            to: o.to,
            plan: planArg ?? applyPlan,
            apply: o.apply !== undefined && o.apply !== false,
            lagThreshold:
              o.lagThreshold === undefined ? undefined : parsePositiveInt(o.lagThreshold, "--lag-threshold"),
          },
          { config: ctx.config(), io: ctx.io },
        ).catch((err: unknown) => {
          // once moves have started, a script still learns which are committed (and why the rest is not)
          if (o.json && err instanceof MigrateStoppedError) printJson(ctx.io, err.result);
          throw err;
        });
        if (o.json) printJson(ctx.io, r);
        else if (r.applied) printMigrations(ctx.io, r.migrations);
        else for (const m of r.moves) ctx.io.out.write(`${m.shard}\t${m.source} -> ${m.target}\n`);
      },
    );
  program
    .command("migrations")
    .description("the history of migrations: phases, bytes copied, write pause, errors")
    .option("--json", "print the journal records as JSON", false)
    .option(
      "--recover",
      "finish migrations whose coordinator is gone (roll forward if committed, else back), then list",
      false,
    )
    .addHelpText(
      "after",
      `
Reads the migration journal from the location store, oldest first. A
migration in flight whose coordinator died (its process is gone, or it has
not refreshed its record for 15 s) is finished by --recover, by the next
\`migrate --apply\` or by the autopilot leader: rolled forward when the map
shows the commit happened, rolled back (source unfenced, copy dropped)
otherwise. --recover then asks every agent for its shards: a shard its
owner serves at an epoch above the map's, with no migration open on it (a
request carried an epoch the map never gave, and clients reading the map
are refused as stale), gets the owner's epoch in the map.

Examples:
  $ shardctl migrations
  $ shardctl migrations --recover
  $ shardctl migrations --json | jq '.[] | select(.phase == "aborted")'

Exit codes: 0 listed (and, with --recover, everything orphaned finished),
1 a recovery step failed (it is retried next time).
`,
    )
    .action(async (o: { json: boolean; recover: boolean }) => {
      const config = ctx.config();
      const store = await openStore(config);
      try {
        let failed: RecoveryReport[] = [];
        const open = o.recover
          ? (await store.listMigrations()).records.filter((r) => !isTerminal(r.record.phase))
          : [];
        // a map without agents (no token configured) has no agent to ask: nothing to catch up then
        const token = o.recover && open.length === 0 ? tokenIfAny(config) : undefined;
        if (o.recover && open.length === 0 && token === undefined)
          ctx.io.err.write("recovery: nothing orphaned\n");
        else if (o.recover) {
          const rpc = new AgentRpc({ token: token ?? resolveClientToken(config) });
          const log = (s: string) => ctx.io.err.write(`${s}\n`);
          try {
            let acted = false;
            if (open.length) {
              const reports = await recoverMigrations({ store, rpc, clock: systemClock, log });
              failed = reports.filter((r) => r.outcome === "failed");
              acted = reports.some((r) => r.outcome !== "in-progress");
            }
            // then the shards an agent serves at an epoch above the map's (no migration open on them)
            const raised = await catchUpMapEpochs({ store, rpc, clock: systemClock, log });
            if (!acted && raised.length === 0) ctx.io.err.write("recovery: nothing orphaned\n");
          } finally {
            rpc.close();
          }
        }
        const { records, unreadable } = await listMigrations(store);
        for (const raw of unreadable) {
          const u = printable(raw);
          const where =
            store.kind === "consul"
              ? `inspect it with \`consul kv get ${config.consul.prefix}migrations/${u}\` and delete it if it is not a migration`
              : `it is in the migrations of ${config.dataDir}/location-map.json`;
          ctx.io.err.write(`warning: journal record ${u} is not readable; skipped (${where})\n`);
        }
        if (o.json) printJson(ctx.io, records);
        else if (records.length === 0) ctx.io.err.write("no migrations recorded\n");
        else printMigrations(ctx.io, records);
        if (failed.length)
          throw new UserError(`${failed.length} migration(s) could not be recovered yet`, {
            hint: recoveryHint(failed),
          });
      } finally {
        await store.close();
      }
    });
};

/** The agents' token when one is configured, else undefined (a malformed one is still refused). */
function tokenIfAny(config: Config): string | undefined {
  try {
    return resolveClientToken(config);
  } catch (err) {
    if (err instanceof PreconditionError) return undefined;
    throw err;
  }
}
