/**
 * `shardctl autopilot`: the engine as a service. Several may run; with Consul
 * one leads (session lock) and the others stand by and take over within
 * seconds when it dies. Logs to stderr.
 */
import type { Command } from "commander";
import { errorMessage, InterruptedError, UsageError, UserError } from "../errors.js";
import { openStore } from "../store/index.js";
import { collectWindows } from "../cluster/windows-source.js";
import { recoverMigrations } from "../cluster/recover.js";
import { AgentRpc } from "../cluster/agent-rpc.js";
import { MoveBackoffs, runLayoutChanges, runMigrationCycle } from "../cluster/autopilot-migrate.js";
import { AutopilotMemory } from "../cluster/autopilot-memory.js";
import { validateBackoffPolicy, type BackoffPolicy } from "../engine/move-backoff.js";
import { thisOwner } from "../cluster/journal.js";
import { resolveClientToken } from "../cluster/local.js";
import { systemClock } from "../engine/ports.js";
import { fileSource } from "./plan.js";
import { readZoneMatrix } from "./simulate.js";
import { withStore } from "./common.js";
import type { CommandContext } from "./context.js";
import { INTERRUPT_EXIT_CODES, type InterruptSignal } from "./interrupt.js";
import type { CycleReport } from "../consul/autopilot.js";

export function parseInterval(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !Number.isFinite(n) || n < 0.1 || n > 86_400) {
    throw new UsageError(
      `--interval must be a number of seconds from 0.1 to 86400, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

/** --move-backoff / --move-backoff-max: seconds, 0.1 to 7 days, the cap not below the first back-off. */
export function parseBackoffPolicy(initial: string, max: string): BackoffPolicy {
  const seconds = (value: string, flag: string): number => {
    const n = Number(value);
    if (!/^\d+(\.\d+)?$/.test(value.trim()) || !Number.isFinite(n) || n < 0.1 || n > 604_800) {
      throw new UsageError(
        `${flag} must be a number of seconds from 0.1 to 604800 (7 days), got ${JSON.stringify(value)}`,
        { hint: `e.g. ${flag} ${flag === "--move-backoff" ? "60" : "3600"}` },
      );
    }
    return n;
  };
  const policy = {
    initialMs: Math.round(seconds(initial, "--move-backoff") * 1000),
    maxMs: Math.round(seconds(max, "--move-backoff-max") * 1000),
  };
  try {
    validateBackoffPolicy(policy);
  } catch {
    throw new UsageError(
      `--move-backoff-max (${max} s) must not be below --move-backoff (${initial} s): it caps the back-off that starts there`,
    );
  }
  return policy;
}

export function registerAutopilot(program: Command, ctx: CommandContext): void {
  program
    .command("autopilot")
    .description(
      "run the engine continuously (collect access windows, reshard, predict, plan, migrate); one of several instances leads",
    )
    .option("--interval <seconds>", "seconds between cycles", "30")
    .option("--once", "run one cycle if no other autopilot leads, then exit", false)
    .option("--id <name>", "this instance's name in the leader lock (default host:pid)")
    .option("--no-migrate", "only reshard: do not predict, plan and migrate")
    .option(
      "--move-backoff <seconds>",
      "after a move (same shard, same target), split or merge fails, do not try it again for this long; doubles with each further failure",
      "60",
    )
    .option("--move-backoff-max <seconds>", "the longest back-off of a failing move, split or merge", "3600")
    .option(
      "--latency <file>",
      'zone round trips for planning, JSON {"zones": [...], "rtt_ms": [[...]]} (default: measured by the agents)',
    )
    .addHelpText(
      "after",
      `
With the Consul store, every instance campaigns for the lock <prefix>leader through a
session bound to its own 3 s liveness check (service "shardctl-autopilot"), lock-delay 1 s.
The leader bumps the leadership term <prefix>term and stamps it on every map and migration
journal write; a deposed leader's late write is refused. Followers block on the lock and
take over when the leader's session ends: about 1 s after a graceful stop (SIGINT/SIGTERM;
the leader first finishes the migration step in flight, a second signal kills it), about
4 s after a crash (kill -9) or a freeze/partition (10-20 s if the token may not register
the check).
With the embedded store there is no election: run a single instance.

Each cycle, on the leader only:
  1. collects the access windows from the agents (or, with no agents in the map,
     <data-dir>/access-windows.bin), and finishes migrations whose coordinator died
     (like \`shardctl migrations --recover\`; also with --no-migrate);
  2. re-shards the layout (like \`shardctl reshard --apply\`); a split or merge that fails
     backs off as a failed move does (5.), and the other changes go ahead meanwhile (a
     change touching a shard of one backing off waits with it);
  3. finishes migrations whose coordinator died since (as in 1.);
  4. forecasts and plans (like \`shardctl plan --all\`): the planner admits moves under its
     budget of concurrent migrations and bytes in flight;
  5. migrates the admitted moves, one after the other (like \`shardctl migrate --apply\`).
     Every commit carries the leader's term: a deposed leader's migration rolls back.
     A move that fails (the target refuses or is down) backs off: that shard is not planned
     for that target again for --move-backoff seconds, doubling with each failure in a row up
     to --move-backoff-max; the planner meanwhile ranks the other moves (and other targets)
     as if it were not possible. A success resets it. Each cycle's log line names the moves
     backing off and until when. The back-off is kept in the store beside the map (Consul:
     <prefix>autopilot-memory; embedded: <data-dir>/autopilot-memory.json), so a restarted
     autopilot, the next run with --once and a new leader go on from it.
Steps 3-5 need agents serving the map; --no-migrate leaves them out. Progress goes to stderr.

Exit codes: running as a service, 0 when stopped by SIGINT/SIGTERM (after the step in flight).
With --once: 0 the cycle ran and nothing it tried failed (changes held back by an earlier
failure's back-off are left for a later cycle), 1 a move or a split/merge it tried failed (named
in the error; it backs off as above), 2 bad usage, 3 another autopilot leads or this one's term
was superseded (nothing done), 130 stopped by Ctrl-C, 143 by SIGTERM (the step in flight
finished, no other was started).

Examples:
  $ shardctl --store consul autopilot --interval 10          # on two or three hosts
  $ shardctl autopilot --once                                 # one cycle, then exit
  $ shardctl autopilot --once --latency zones.json            # plan with these zone round trips
  $ shardctl autopilot --move-backoff 30 --move-backoff-max 600   # retry failed moves sooner`,
    )
    .action(
      async (o: {
        interval: string;
        once: boolean;
        id?: string;
        migrate: boolean;
        latency?: string;
        moveBackoff: string;
        moveBackoffMax: string;
      }) => {
        const intervalS = parseInterval(o.interval);
        // the memory of failed moves, kept in the store: it survives a lost leadership, a restart,
        // a run with --once, and goes to the next leader
        const policy = parseBackoffPolicy(o.moveBackoff, o.moveBackoffMax);
        const backoff = new MoveBackoffs(policy);
        const layoutBackoff = new MoveBackoffs(policy);
        const memory = new AutopilotMemory(backoff, layoutBackoff);
        if (o.id !== undefined && !/^[A-Za-z0-9_.:@-]{1,128}$/.test(o.id)) {
          throw new UsageError(`--id ${JSON.stringify(o.id)} may hold letters, digits and _ . : @ - only`);
        }
        const config = ctx.config();
        if (o.latency) readZoneMatrix(o.latency); // a bad file is a usage error now, not in every cycle
        // Loaded on use: the Consul client stays out of every other command's start-up.
        const { runAutopilot } = await import("../consul/autopilot.js");
        const ac = new AbortController();
        const log = (msg: string) => ctx.io.err.write(`${new Date().toISOString()} ${msg}\n`);

        let stoppedBy: InterruptSignal | undefined;
        const stop = (sig: InterruptSignal) => {
          stoppedBy ??= sig;
          log(
            `${sig}: stopping: the step in flight finishes, no other is started, then leadership is released`,
          );
          ac.abort();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        let report: CycleReport | undefined;
        try {
          report = await withStore(
            () => openStore(config),
            (store) =>
              runAutopilot(
                { intervalS, once: o.once, id: o.id },
                {
                  config,
                  store,
                  windows: async () => {
                    const collected = await collectWindows(config, await store.load({ consistent: true }));
                    for (const u of collected.unreachable) {
                      ctx.io.err.write(
                        `${new Date().toISOString()} no access windows from node ${u.node}: ${u.error}\n`,
                      );
                    }
                    return collected;
                  },
                  log,
                  signal: ac.signal,
                  memory,
                  recover: async (term, stamped) => {
                    let token: string;
                    try {
                      token = resolveClientToken(config);
                    } catch {
                      return; // no agent token: the migration stage says so
                    }
                    const rpc = new AgentRpc({ token });
                    try {
                      await recoverMigrations({
                        store: stamped,
                        rpc,
                        clock: systemClock,
                        log,
                        owner: thisOwner(term),
                      });
                    } finally {
                      rpc.close();
                    }
                  },
                  executeLayout: async (diff, _map, stamped, signal, version) => {
                    const rpc = new AgentRpc({ token: resolveClientToken(config) });
                    try {
                      return await runLayoutChanges(
                        diff,
                        { store: stamped, rpc, clock: systemClock, log, owner: thisOwner(0) },
                        layoutBackoff,
                        signal,
                        version,
                      );
                    } finally {
                      rpc.close();
                    }
                  },
                  migrate: o.migrate
                    ? async (term, stamped, signal) => {
                        let token: string;
                        try {
                          token = resolveClientToken(config);
                        } catch (err) {
                          const why = `migrations off: ${errorMessage(err)}`;
                          return {
                            recovered: [],
                            planned: 0,
                            moved: [],
                            failed: [],
                            skipped: [why],
                            backingOff: [],
                          };
                        }
                        const rpc = new AgentRpc({ token });
                        try {
                          return await runMigrationCycle({
                            config,
                            store: stamped,
                            rpc,
                            clock: systemClock,
                            log,
                            owner: thisOwner(term),
                            source: () => fileSource(config, o.latency),
                            signal,
                            backoff,
                          });
                        } finally {
                          rpc.close();
                        }
                      }
                    : undefined,
                },
              ),
          );
        } finally {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
        }
        if (o.once) {
          const failure = onceOutcome(report, stoppedBy);
          if (failure) throw failure;
        }
      },
    );
}

/**
 * How a run with --once ends (the standing autopilot exits 0 when stopped: it is a service). A
 * signal: 130 or 143, as for `migrate --apply`. A move or a layout change that this cycle tried
 * and that failed: exit 1, naming them (changes held back by an earlier failure's back-off are the
 * autopilot's patience, not this run's failure). Otherwise 0.
 */
export function onceOutcome(
  report: CycleReport | undefined,
  stoppedBy: InterruptSignal | undefined,
): UserError | undefined {
  if (stoppedBy) {
    return new InterruptedError(
      `${stoppedBy}: the autopilot stopped; the step in flight finished and no other was started`,
      {
        exitCode: INTERRUPT_EXIT_CODES[stoppedBy],
        hint: "run `shardctl autopilot --once` again to finish the cycle",
      },
    );
  }
  if (!report) return undefined;
  const failures: string[] = [];
  if (report.layoutFailed)
    failures.push(`a layout change failed (${report.notApplied ?? "see the log above"})`);
  for (const f of report.migrations?.failed ?? [])
    failures.push(`the move of ${f.shard} to ${f.target} failed: ${f.error}`);
  if (failures.length === 0) return undefined;
  return new UserError(`the cycle ran, but ${failures.join("; ")}`, {
    hint: "`shardctl migrations` shows what stopped; the next cycle tries it again after its back-off",
  });
}
