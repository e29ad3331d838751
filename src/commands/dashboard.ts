/**
 * `shardctl dashboard` (alias `top`): the live heatmap of segments or shards,
 * the nodes, migrations and a forecast, in the terminal (Ink). `--once`
 * prints one frame and exits, for scripts and tests.
 */
import type { Command } from "commander";
import { Option } from "commander";
import type { Config } from "../config.js";
import { InterruptedError, UsageError } from "../errors.js";
import type { IO } from "../output.js";
import { openStore } from "../store/index.js";
import type { DashboardSource, OnMigrate } from "../tui/source.js";
import { MIN_HEIGHT, MIN_WIDTH } from "../tui/layout.js";
import type { CommandContext } from "./context.js";
import { INTERRUPT_EXIT_CODES, INTERRUPT_SIGNALS, type InterruptSignal } from "./interrupt.js";

export interface DashboardOptions {
  refreshSeconds: number;
  once: boolean;
  view: "segments" | "shards";
  width?: number;
  height?: number;
  colour: "auto" | "always" | "never";
  hotRate: number;
}

export interface DashboardDeps {
  io: IO;
  source: DashboardSource;
  /** Runs a confirmed `m` (dashboard-migrate.ts); without it `m` says `migrateUnavailable`. */
  onMigrate?: OnMigrate;
  migrateUnavailable?: string;
  env: NodeJS.ProcessEnv;
  stdin?: NodeJS.ReadStream;
  stdout?: NodeJS.WriteStream;
}

function parseNumber(
  value: string | undefined,
  what: string,
  min: number,
  max: number,
  integer: boolean,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  // decimal digits only, as every other command takes numbers (Number() would read 0x10, 1e3, " 5")
  const decimal = integer ? /^\d+$/ : /^\d+(\.\d+)?$/;
  if (!decimal.test(value) || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(
      `${what} must be ${integer ? "an integer" : "a number"} from ${min} to ${max}, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

export function parseDashboardOptions(
  o: {
    refresh: string;
    once: boolean;
    view: string;
    width?: string;
    height?: string;
    color: string;
    hotRate?: string;
  },
  config: Config,
): DashboardOptions {
  if (o.view !== "segments" && o.view !== "shards")
    throw new UsageError(`--view must be segments or shards, got ${JSON.stringify(o.view)}`);
  if (o.color !== "auto" && o.color !== "always" && o.color !== "never")
    throw new UsageError(`--color must be auto, always or never`);
  const width = parseNumber(o.width, "--width", MIN_WIDTH, 1000, true);
  const height = parseNumber(o.height, "--height", MIN_HEIGHT, 500, true);
  if (!o.once && (width !== undefined || height !== undefined)) {
    throw new UsageError(
      "--width and --height are for --once; the interactive dashboard uses the terminal's size",
    );
  }
  return {
    refreshSeconds: parseNumber(o.refresh, "--refresh", 0.2, 3600, false)!,
    once: o.once,
    view: o.view,
    width,
    height,
    colour: o.color,
    hotRate: parseNumber(o.hotRate, "--hot-rate", 0, 1e12, false) ?? config.reshard.splitRate,
  };
}

function wantColour(mode: DashboardOptions["colour"], isTTY: boolean, env: NodeJS.ProcessEnv): boolean {
  if (mode !== "auto") return mode === "always";
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  return isTTY || (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== "0");
}

/**
 * The frame --once draws: --width/--height, else the terminal's size; a terminal that reports no
 * size (0×0 under `script`, in many containers) or none at all gets 120×40, and one smaller than
 * the dashboard's minimum gets the minimum (the frame is then wider than the terminal, as with a
 * --width it cannot show): a frame saying the terminal is too small would be no snapshot at all.
 */
export function onceFrameSize(
  opts: Pick<DashboardOptions, "width" | "height">,
  stdout: { columns?: number; rows?: number },
): { width: number; height: number } {
  const cols = stdout.columns ?? 0;
  const rows = stdout.rows ?? 0;
  return {
    width: opts.width ?? (cols > 0 ? Math.max(MIN_WIDTH, cols) : 120),
    height: opts.height ?? (rows > 0 ? Math.max(MIN_HEIGHT, rows - 1) : 40),
  };
}

const ALT_SCREEN_ON = "\x1b[?1049h";
const ALT_SCREEN_OFF = "\x1b[?1049l";

export async function runDashboard(opts: DashboardOptions, deps: DashboardDeps): Promise<void> {
  const stdout = deps.stdout ?? process.stdout;
  const stdin = deps.stdin ?? process.stdin;
  // Ink and React load only here: every other command starts without them.
  // React's development build checks every element; the dashboard draws ~150 per frame.
  process.env.NODE_ENV ??= "production";
  if (opts.once) {
    const { renderOnce } = await import("../tui/once.js");
    const frame = await renderOnce(deps.source, {
      ...onceFrameSize(opts, stdout),
      colour: wantColour(opts.colour, stdout.isTTY === true, deps.env),
      hotRate: opts.hotRate,
      view: opts.view,
    });
    deps.io.out.write(frame + "\n");
    return;
  }
  if (!stdin.isTTY || !stdout.isTTY) {
    throw new UsageError("the interactive dashboard needs a terminal on stdin and stdout", {
      hint: "use `shardctl dashboard --once` in scripts and pipes",
    });
  }
  // Ink renders only its last frame when CI or CONTINUOUS_INTEGRATION is set (it reads them
  // once, on import). This is a real terminal (checked above), so it must draw live frames
  // even in a shell where CI happens to be set.
  for (const name of ["CI", "CONTINUOUS_INTEGRATION"]) if (name in process.env) process.env[name] = "false";
  // The alternate screen: quitting gives the operator's scrollback back untouched.
  const [{ render }, { createElement }, { Dashboard }] = await Promise.all([
    import("ink"),
    import("react"),
    import("../tui/Dashboard.js"),
  ]);
  stdout.write(ALT_SCREEN_ON);
  // SIGINT/SIGTERM from outside (kill, a service manager; Ctrl-C is a key in raw mode): unmount as q
  // does, so that the terminal is given back (cooked mode, the main screen) before the process ends
  let stoppedBy: InterruptSignal | undefined;
  let unmount: (() => void) | undefined;
  const onSignal = (sig: InterruptSignal) => {
    stoppedBy ??= sig;
    unmount?.();
  };
  for (const sig of INTERRUPT_SIGNALS) process.on(sig, onSignal);
  try {
    const app = render(
      createElement(Dashboard, {
        source: deps.source,
        refreshMs: opts.refreshSeconds * 1000,
        colour: wantColour(opts.colour, true, deps.env),
        hotRate: opts.hotRate,
        initialView: opts.view,
        onMigrate: deps.onMigrate,
        migrateUnavailable: deps.migrateUnavailable,
      }),
      { stdout, stdin, exitOnCtrlC: true, patchConsole: true, maxFps: 20 },
    );
    unmount = () => app.unmount();
    if (stoppedBy) app.unmount();
    await app.waitUntilExit();
  } finally {
    for (const sig of INTERRUPT_SIGNALS) process.off(sig, onSignal);
    stdout.write(ALT_SCREEN_OFF);
  }
  if (stoppedBy)
    throw new InterruptedError(`${stoppedBy}: the dashboard stopped`, {
      exitCode: INTERRUPT_EXIT_CODES[stoppedBy],
    });
}

export function registerDashboard(program: Command, ctx: CommandContext): void {
  program
    .command("dashboard")
    .alias("top")
    .description("live heatmap of segments or shards, nodes, migrations and forecasts in the terminal")
    .option("--refresh <seconds>", "seconds between refreshes", "1")
    .option("--once", "print one frame and exit (no keyboard, no raw mode)", false)
    .addOption(
      new Option("--view <view>", "what the heatmap rows are")
        .choices(["segments", "shards"])
        .default("segments"),
    )
    .option("--width <columns>", "frame width for --once (default: the terminal's, else 120)")
    .option("--height <lines>", "frame height for --once (default: the terminal's, else 40)")
    .addOption(
      new Option("--color <when>", "colour the heatmap").choices(["auto", "always", "never"]).default("auto"),
    )
    .option("--hot-rate <per-second>", "mark rows at or above this rate hot (default: reshard.splitRate)")
    .addHelpText(
      "after",
      `
Reads the location map and the migration journal from the store and the
access windows from the node agents; with no agent running, the embedded
windows (<dataDir>/access-windows.bin). An agent that does not answer is
shown UNREACHABLE; the rest keeps working. The nodes panel shows the round
trips the agents measure (\`shardctl rtt\`), else the model's, labelled.

m runs the planner for the selected shard and, after y, moves it to the
planner's target with the same coordinator as \`shardctl migrate --apply\`;
progress and the result show on the status line, the move in the
migrations panel. When the planner proposes no move, m says why.

Keys:
  ↑ ↓ / j k     move the selection        ← → / h l   page
  enter         drill into the shard       esc         back
  p             the plan for the shard     m           move it to the plan's target (asks y/n)
  /             find a key's segment       t           segments ↔ shards
  q             quit

Colours: each cell is ▀ with the top half = reads, the bottom half = writes,
on one log colour scale (legend under the heatmap). A band of segments shows
the max over its segments; a shard row the sum. See docs/DASHBOARD.md.

Examples:
  $ shardctl up --local --nodes 3 --zones a,b,c && shardctl dashboard
  $ shardctl top --view shards --refresh 5
  $ shardctl dashboard --once --width 160 --height 50 --color never > frame.txt`,
    )
    .action(
      async (o: {
        refresh: string;
        once: boolean;
        view: string;
        width?: string;
        height?: string;
        color: string;
        hotRate?: string;
      }) => {
        const config = ctx.config();
        const opts = parseDashboardOptions(o, config);
        const store = await openStore(config);
        const { LiveSource } = await import("../tui/live-source.js");
        const source = new LiveSource({
          config,
          store,
          refreshSeconds: opts.refreshSeconds,
          // one frame shows what the agents last measured; the live dashboard keeps it fresh
          probeEverySeconds: opts.once ? 0 : undefined,
        });
        const migrator = opts.once
          ? {}
          : (await import("./dashboard-migrate.js")).dashboardMigrator(config, store);
        try {
          await runDashboard(opts, {
            io: ctx.io,
            source,
            env: ctx.env,
            onMigrate: migrator.onMigrate,
            migrateUnavailable: migrator.unavailable,
          });
        } finally {
          await source.close();
          await store.close();
        }
      },
    );
}
