/**
 * `shardctl rtt`: the round trips the agents measure between each other
 * (src/cluster/rtt.ts), as the planner's latency model sees them: one row
 * per origin zone, one column per node.
 */
import type { Command } from "commander";
import { measureClusterRtts, type MeasuredRtts } from "../cluster/rtt.js";
import type { Config } from "../config.js";
import { defaultZoneMatrix, LatencyModel, type LatencySnapshot } from "../engine/latency.js";
import type { LocationMap } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";
import { PreconditionError, UsageError, UserError } from "../errors.js";
import { printJson, printTable, type IO } from "../output.js";
import { openStore } from "../store/index.js";
import { parsePositiveInt, withStore } from "./common.js";
import type { CommandContext, RegisterCommand } from "./context.js";

const MAX_SAMPLES = 50;

export interface RttResult extends MeasuredRtts {
  /** What the planner uses: the measurements over the default matrix. */
  model: LatencySnapshot;
}

/** The model the planner builds from these measurements (default matrix underneath). */
export function plannerModel(map: LocationMap, m: MeasuredRtts): LatencySnapshot {
  const base = LatencyModel.fromZoneMatrix(
    defaultZoneMatrix(m.zones),
    map.nodes.map((n) => ({ id: n.id, zone: n.zone })),
  );
  return LatencyModel.fromMeasurements(base, m).snapshot();
}

export async function runRtt(
  opts: { samples?: number },
  deps: { config: Config; store: LocationStore },
): Promise<RttResult> {
  const vm = await deps.store.load();
  if (!vm)
    throw new PreconditionError(`the ${deps.store.kind} store holds no location map yet`, {
      hint: "start a local cluster with `shardctl up --local`",
    });
  const agents = vm.map.nodes.filter((n) => n.address !== "");
  if (agents.length < 2)
    throw new PreconditionError(
      `round trips are measured between agents, and the map has ${agents.length === 0 ? "no node with an agent address" : "only one agent"}`,
      {
        hint:
          agents.length === 1
            ? "a cluster of one node has no round trip to measure; add nodes with `shardctl deploy`, or start a local cluster of several in another --data-dir (`shardctl --data-dir DIR up --local --nodes 3`)"
            : "start agents with `shardctl up --local --nodes 3` or `shardctl deploy`",
      },
    );
  const m = await measureClusterRtts(deps.config, vm.map, { samples: opts.samples });
  if (m.measuredCells === 0) {
    const why = [
      ...m.agents.filter((a) => !a.ok).map((a) => `${a.node}: ${a.error}`),
      ...m.pairs.filter((p) => !p.ok).map((p) => `${p.from} → ${p.to}: ${p.error}`),
    ];
    throw new UserError(`no round trip could be measured:\n  ${why.slice(0, 20).join("\n  ")}`, {
      hint: "are the agents up (`shardctl nodes`), and is the token right (SHARDCTL_TOKEN)?",
    });
  }
  return { ...m, model: plannerModel(vm.map, m) };
}

export function printRtt(io: IO, r: RttResult): void {
  const zoneOf = new Map(r.model.nodes.map((n) => [n.id, n.zone]));
  printTable(
    io,
    ["from zone", ...r.nodes.map((n) => `${n} (${zoneOf.get(n) ?? "?"})`)],
    r.zones.map((z, i) => [
      z,
      ...r.nodes.map((_, j) => {
        const x = r.rttMs[i][j];
        return x === null ? `${r.model.rttMs[i][j]}*` : x.toFixed(2);
      }),
    ]),
  );
}

function warn(io: IO, r: RttResult): void {
  for (const a of r.agents) if (!a.ok) io.err.write(`warning: ${a.node} measured nothing: ${a.error}\n`);
  for (const p of r.pairs) if (!p.ok) io.err.write(`warning: ${p.from} → ${p.to}: ${p.error}\n`);
  io.err.write(
    `round trips in ms, median of ${r.samples} samples per agent pair, median over the agents of each zone; ` +
      `${r.measuredCells} of ${r.totalCells} measured; * = not measured, the planner assumes 1 ms within a zone, 50 ms between\n`,
  );
}

const RTT_HELP = `
Every agent of the location map is asked to time \`GET /health\` to every other
agent (POST /v1/admin/probe: a fresh keep-alive connection, one warm-up,
then --samples timed requests). The agent in zone z stands for the clients
of zone z: the cell (z, node) is the median over the agents of zone z of
their median round trip to that node. A node's own zone, when it is alone
there, and zones without an agent are not measured: the planner keeps
1 ms within a zone and 50 ms between zones there (marked *).

\`shardctl plan\` measures the same way at plan time unless --latency FILE is
given; its note says "measured by the agents" or "assumed". The agents
remember their last measurements (GET /v1/node, "rtt"): the dashboard's
nodes panel shows them.

Examples:
  $ shardctl up --local --nodes 3 --zones a,b,c
  $ shardctl rtt
  $ shardctl rtt --samples 20 --json | jq '.rttMs'

Exit codes: 0 measured, 1 no round trip could be measured (agents down,
wrong token), 3 no map or fewer than two agents in it.
`;

export const registerRtt: RegisterCommand = (program: Command, ctx: CommandContext) => {
  program
    .command("rtt")
    .description("measure the round trips between the agents (the planner's latency model)")
    .option("--samples <n>", `timed requests per agent pair (1-${MAX_SAMPLES}, default 5)`)
    .option("--json", "print the measurements and the planner's model as JSON", false)
    .addHelpText("after", RTT_HELP)
    .action(async (o: { samples?: string; json: boolean }) => {
      const config = ctx.config();
      let samples: number | undefined;
      if (o.samples !== undefined) {
        samples = parsePositiveInt(o.samples, "--samples");
        if (samples > MAX_SAMPLES)
          throw new UsageError(`--samples must be at most ${MAX_SAMPLES}, got ${samples}`);
      }
      const r = await withStore(
        () => openStore(config),
        (store) => runRtt({ samples }, { config, store }),
      );
      warn(ctx.io, r);
      if (o.json) printJson(ctx.io, r);
      else printRtt(ctx.io, r);
    });
};
