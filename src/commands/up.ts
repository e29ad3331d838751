/** `shardctl up --local` / `shardctl down`: a local cluster of agent processes. */
import type { Command } from "commander";
import { localDown, localUp } from "../cluster/local.js";
import { UsageError } from "../errors.js";
import { parsePositiveInt } from "../numbers.js";
import { printJson, printTable } from "../output.js";
import { openStore } from "../store/index.js";
import type { CommandContext, RegisterCommand } from "./context.js";

interface UpOptions {
  local?: boolean;
  nodes: string;
  zones?: string;
  basePort: string;
  json?: boolean;
}

export async function runUp(
  opts: UpOptions,
  ctx: CommandContext,
  given: { nodes?: boolean; zones?: boolean; basePort?: boolean } = {},
): Promise<void> {
  if (!opts.local) {
    throw new UsageError("only local clusters are started by `up` for now", {
      hint: "run `shardctl up --local`",
    });
  }
  const config = ctx.config();
  // decimal digits only: Number() would take 1e1 (ten agents) or 0x6978 for a port
  const nodes = parsePositiveInt(opts.nodes, "--nodes");
  const basePort = parsePositiveInt(opts.basePort, "--base-port");
  const raw = opts.zones ?? config.zones.join(",");
  const zones = raw.trim() === "" ? [] : raw.split(",").map((z) => z.trim());
  // "a,,b" is a typo, not two zones: refused as SHARDCTL_ZONES would be
  if (zones.some((z) => z === ""))
    throw new UsageError(`--zones ${JSON.stringify(raw)} has an empty zone name`, {
      hint: "give the zones as a comma-separated list of names, e.g. --zones a,b,c",
    });
  const store = await openStore(config);
  try {
    const configFile = ctx.configFile?.();
    const r = await localUp(config, { nodes, zones, basePort, given, configFile }, store, (m) =>
      ctx.io.err.write(m + "\n"),
    );
    for (const w of r.warnings) ctx.io.err.write(`warning: ${w}\n`);
    if (r.alreadyUp) ctx.io.err.write("the local cluster is already up\n");
    else
      ctx.io.err.write(
        `local cluster up: ${r.nodes.length} agents, ${r.shardsAssigned} shards; token in ${r.tokenFile}\n`,
      );
    if (opts.json) printJson(ctx.io, r);
    else
      printTable(
        ctx.io,
        ["node", "zone", "address", "pid"],
        r.nodes.map((n) => [n.id, n.zone, n.address, n.pid ?? "-"]),
      );
  } finally {
    await store.close();
  }
}

export async function runDown(opts: { timeout: string; json?: boolean }, ctx: CommandContext): Promise<void> {
  const timeoutMs = Number(opts.timeout) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0)
    throw new UsageError("--timeout must be a number of seconds");
  const r = await localDown(ctx.config(), timeoutMs, (m) => ctx.io.err.write(m + "\n"));
  if (r.stopped.length + r.killed.length === 0) ctx.io.err.write("no local cluster is running\n");
  if (opts.json) printJson(ctx.io, r);
}

export const registerUp: RegisterCommand = (program: Command, ctx: CommandContext) => {
  program
    .command("up")
    .description("start a local cluster: N agent processes, the initial layout in the store")
    .option("--local", "run the agents as local processes (required for now)")
    .option("--nodes <n>", "number of agents", "3")
    .option("--zones <list>", "zones dealt to the agents round-robin (default: the configured zones)")
    .option("--base-port <port>", "the first agent listens here, the next on port+1, …", "7401")
    .option("--json", "print the nodes as JSON")
    .addHelpText(
      "after",
      `
Agents run detached; pid files and logs are in <dataDir>/local/<node>/. The
bearer token is generated once into <dataDir>/local/token (mode 0600) and used
by put/get/delete. Running \`up\` again starts only agents that are not running;
the cluster keeps its nodes, so --nodes, --zones or --base-port that differ from
them are refused (exit 3): use another --data-dir for another cluster.
The agents read the config file this command read (--config, SHARDCTL_CONFIG,
./shardctl.yaml or ~/.config/shardctl/config.yaml) and use its store: their
limits, timeouts and location store are this command's.

Examples:
  $ shardctl up --local --nodes 3 --zones a,b,c
  $ shardctl put hello world && shardctl get hello
  $ shardctl down`,
    )
    .action((opts: UpOptions, command: Command) => {
      const given = (name: string) => {
        const source = command.getOptionValueSource(name);
        return source !== undefined && source !== "default";
      };
      return runUp(opts, ctx, { nodes: given("nodes"), zones: given("zones"), basePort: given("basePort") });
    });
  program
    .command("down")
    .description("stop the local cluster's agents (SIGTERM, then SIGKILL after --timeout)")
    .option("--timeout <seconds>", "wait this long for a clean stop", "10")
    .option("--json", "print what was stopped as JSON")
    .addHelpText("after", "\nExamples:\n  $ shardctl down\n  $ shardctl down --timeout 30")
    .action((opts: { timeout: string; json?: boolean }) => runDown(opts, ctx));
};
