/**
 * `shardctl autopilot`: the engine as a service. Several may run; with Consul
 * one leads (session lock) and the others stand by and take over within
 * seconds when it dies. Logs to stderr.
 */
import type { Command } from "commander";
import { UsageError } from "../errors.js";
import { openStore } from "../store/index.js";
import { collectWindows } from "../cluster/windows-source.js";
import { withStore } from "./common.js";
import type { CommandContext } from "./context.js";

export function parseInterval(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !Number.isFinite(n) || n < 0.1 || n > 86_400) {
    throw new UsageError(
      `--interval must be a number of seconds from 0.1 to 86400, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

export function registerAutopilot(program: Command, ctx: CommandContext): void {
  program
    .command("autopilot")
    .description(
      "run the engine continuously (collect access windows, reshard); one of several instances leads",
    )
    .option("--interval <seconds>", "seconds between cycles", "30")
    .option("--once", "run one cycle if no other autopilot leads, then exit", false)
    .option("--id <name>", "this instance's name in the leader lock (default host:pid)")
    .addHelpText(
      "after",
      `
With the Consul store, every instance campaigns for the lock <prefix>leader through a
session bound to its own 3 s liveness check (service "shardctl-autopilot"), lock-delay 1 s.
The leader bumps the leadership term <prefix>term and stamps it on every map write; a
deposed leader's late write is refused. Followers block on the lock and take over when the
leader's session ends: about 1 s after a graceful stop (SIGINT/SIGTERM), about 4 s after a
crash (kill -9) or a freeze/partition (10-20 s if the token may not register the check).
With the embedded store there is no election: run a single instance.

Each cycle collects the access windows from the agents (or, with no agents in the map,
<data-dir>/access-windows.bin) and re-shards the
layout (like \`shardctl reshard --apply\`). Progress goes to stderr.

Examples:
  $ shardctl --store consul autopilot --interval 10          # on two or three hosts
  $ shardctl autopilot --once                                 # one cycle, then exit`,
    )
    .action(async (o: { interval: string; once: boolean; id?: string }) => {
      const intervalS = parseInterval(o.interval);
      if (o.id !== undefined && !/^[A-Za-z0-9_.:@-]{1,128}$/.test(o.id)) {
        throw new UsageError(`--id ${JSON.stringify(o.id)} may hold letters, digits and _ . : @ - only`);
      }
      const config = ctx.config();
      // Loaded on use: the Consul client stays out of every other command's start-up.
      const { runAutopilot } = await import("../consul/autopilot.js");
      const ac = new AbortController();
      const stop = () => ac.abort();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      try {
        await withStore(
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
                      `${new Date().toISOString()} node ${u.node} did not answer: ${u.error}\n`,
                    );
                  }
                  return collected;
                },
                log: (msg) => ctx.io.err.write(`${new Date().toISOString()} ${msg}\n`),
                signal: ac.signal,
              },
            ),
        );
      } finally {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
      }
    });
}
