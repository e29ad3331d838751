/**
 * `shardctl predict --key K`: the spec's predict_access_pattern for the key's
 * segment, per origin zone, with prediction intervals.
 */
import type { Command } from "commander";
import type { Config } from "../config.js";
import type { AccessWindows } from "../engine/access-windows.js";
import {
  completeNewestEach,
  elapsedFraction,
  predictAccessPattern,
  type AccessPatternForecast,
} from "../forecast/index.js";
import { UsageError, UserError } from "../errors.js";
import { formatNumber, printable, printJson, printTable, type IO } from "../output.js";
import { collectWindows } from "../cluster/windows-source.js";
import { openStore } from "../store/index.js";
import { sparkline, tail } from "./chart.js";
import { parsePositiveInt, segmenterFor, withStore } from "./common.js";
import type { CommandContext } from "./context.js";

export interface PredictOptions {
  key: string;
  horizon?: number;
  zone?: string;
  resolutionSeconds?: number;
  json: boolean;
}

export interface Prediction extends AccessPatternForecast {
  key: string;
  segment: number;
  /** Recent history the forecast was fitted on, per zone (accesses per interval). */
  history: Record<string, number[]>;
}

/** The level to forecast from: the one with the requested resolution, else the finest minute-or-coarser level. */
export function chooseLevel(windows: AccessWindows, resolutionSeconds?: number): number {
  if (resolutionSeconds !== undefined) {
    const i = windows.levels.findIndex((l) => l.resolutionSeconds === resolutionSeconds);
    if (i < 0) {
      throw new UsageError(`no access window level has a ${resolutionSeconds} s resolution`, {
        hint: `levels: ${windows.levels.map((l) => `${l.resolutionSeconds}s×${l.slots}`).join(", ")}`,
      });
    }
    return i;
  }
  const i = windows.levels.findIndex((l) => l.resolutionSeconds >= 60);
  return i < 0 ? windows.levels.length - 1 : i;
}

export function runPredict(
  opts: PredictOptions,
  deps: { config: Config; windows: AccessWindows; now: number },
): Prediction {
  const segment = segmenterFor(deps.config).segmentOf(opts.key);
  const zones = opts.zone ? [opts.zone] : [...deps.windows.zones];
  for (const z of zones) deps.windows.zoneIndexOf(z); // unknown zone → clear error
  const level = chooseLevel(deps.windows, opts.resolutionSeconds);
  const { resolutionSeconds, slots } = deps.windows.levels[level];
  const horizon = opts.horizon ?? Math.max(1, Math.min(slots, Math.round(3600 / resolutionSeconds)));
  // a forecast reaches no further than the history it is fitted on
  if (horizon > slots) {
    throw new UsageError(
      `--horizon ${horizon} is longer than the ${slots} intervals of ${resolutionSeconds} s this window level keeps`,
      { hint: `pick --horizon ${slots} or less, or a coarser --resolution` },
    );
  }
  const perZone: Record<string, Float64Array> = {};
  for (const z of zones) perZone[z] = deps.windows.series(segment, level, deps.now, z);
  // the newest interval is still running: forecast from its expected whole count (completeNewest);
  // the history shows what was counted
  const elapsed = elapsedFraction(deps.now, resolutionSeconds);
  const forecast = predictAccessPattern(completeNewestEach(perZone, elapsed), {
    intervalSeconds: resolutionSeconds,
    horizon,
    cacheKey: String(segment),
  });
  const history: Record<string, number[]> = {};
  for (const z of zones) history[z] = Array.from(perZone[z]);
  return { key: opts.key, segment, history, ...forecast };
}

export function printPrediction(io: IO, p: Prediction): void {
  const rows = Object.entries(p.zones).map(([zone, f]) => [
    zone,
    f.model,
    f.mean[0],
    `${formatNumber(f.lower[0])} – ${formatNumber(f.upper[0])}`,
    f.mean.reduce((a, b) => a + b, 0),
    `${formatNumber(f.lower.reduce((a, b) => a + b, 0))} – ${formatNumber(f.upper.reduce((a, b) => a + b, 0))}`,
  ]);
  const t = p.total;
  rows.push([
    "all",
    t.model,
    t.mean[0],
    `${formatNumber(t.lower[0])} – ${formatNumber(t.upper[0])}`,
    t.mean.reduce((a, b) => a + b, 0),
    `${formatNumber(t.lower.reduce((a, b) => a + b, 0))} – ${formatNumber(t.upper.reduce((a, b) => a + b, 0))}`,
  ]);
  io.out.write(
    `key ${printable(p.key)} → segment ${p.segment}; accesses per ${p.intervalSeconds} s, next ${p.horizon} interval(s), ${Math.round(p.intervalLevel * 100)}% intervals\n`,
  );
  printTable(io, ["zone", "model", "next", "interval", `next ${p.horizon}`, "interval"], rows);
  // history | forecast, on one scale per zone
  const width = 48;
  for (const [zone, f] of Object.entries(p.zones)) {
    const hist = tail(p.history[zone], width - Math.min(p.horizon, width / 2));
    const fut = f.mean.slice(0, Math.min(p.horizon, width / 2));
    const max = Math.max(1, ...hist, ...f.upper.slice(0, fut.length));
    io.out.write(
      `  ${zone.padEnd(6)} ${sparkline(hist, max)}│${sparkline(fut, max)}  (max ${formatNumber(max)})\n`,
    );
  }
}

export function registerPredict(program: Command, ctx: CommandContext): void {
  program
    .command("predict")
    .description(
      "forecast the access to a key's segment per origin zone, with intervals (predict_access_pattern)",
    )
    .requiredOption("-k, --key <key>", "the data key")
    .option(
      "--horizon <n>",
      "intervals to forecast, at most the window level's slots (default: one hour's worth)",
    )
    .option("--zone <zone>", "only this origin zone")
    .option("--resolution <seconds>", "forecast from the window level of this resolution (default: minutes)")
    .option("--json", "print the forecast as JSON", false)
    .addHelpText(
      "after",
      `
The forecast uses the segment's access windows per zone (from the agents, or from the windows
file \`shardctl record\` writes when no agents serve the map) and, per zone, the model that
backtests best on that series (see \`shardctl forecast backtest\`). The chart shows the
recent history, a bar, then the forecast, on one scale per zone.

Examples:
  $ shardctl predict --key user:42
  $ shardctl predict --key user:42 --zone b --horizon 30 --json

Exit codes: 0 the forecast (zeros where nothing was counted), 1 the forecast
printed but an agent did not answer (its accesses are missing; --json lists
it under "unreachable"), 2 bad options or key.`,
    )
    .action(
      async (o: { key: string; horizon?: string; zone?: string; resolution?: string; json: boolean }) => {
        const config = ctx.config();
        const opts: PredictOptions = {
          key: o.key,
          horizon: o.horizon === undefined ? undefined : parsePositiveInt(o.horizon, "--horizon"),
          zone: o.zone,
          resolutionSeconds:
            o.resolution === undefined ? undefined : parsePositiveInt(o.resolution, "--resolution"),
          json: o.json,
        };
        const collected = await withStore(
          () => openStore(config),
          async (store) => collectWindows(config, await store.load()),
        );
        for (const u of collected.unreachable)
          ctx.io.err.write(`warning: no access windows from node ${u.node}: ${u.error}\n`);
        const p = runPredict(opts, { config, windows: collected.windows, now: Date.now() });
        const unreachable = collected.unreachable.map((u) => ({ node: u.node, error: u.error }));
        // a script must tell "no traffic" from "no data": the nodes that did not answer are in the
        // JSON, and the exit status is 1
        if (o.json) printJson(ctx.io, unreachable.length ? { ...p, unreachable } : p);
        else printPrediction(ctx.io, p);
        if (unreachable.length) {
          // (in the map's order of names, not the order the answers came in)
          const byName = (a: string, b: string) => a.localeCompare(b, "en", { numeric: true });
          const refused = collected.unreachable
            .filter((u) => u.tokenRefused)
            .map((u) => u.node)
            .sort(byName);
          const silent = collected.unreachable
            .filter((u) => !u.tokenRefused)
            .map((u) => u.node)
            .sort(byName);
          const why = [
            ...(refused.length ? [`${refused.join(", ")} (refused our token: 401)`] : []),
            ...(silent.length ? [`${silent.join(", ")} (no usable answer)`] : []),
          ].join(" and ");
          throw new UserError(
            `the forecast lacks the accesses counted by ${why}: it may show less traffic than there is`,
            {
              hint: refused.length
                ? "give the agents' token (SHARDCTL_TOKEN, agent.token in the config, or <data-dir>/local/token for a local cluster), then run predict again"
                : "start the agents that did not answer (`shardctl nodes` lists them), then run predict again",
            },
          );
        }
      },
    );
}
