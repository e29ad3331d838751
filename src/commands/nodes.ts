/**
 * `shardctl nodes`: the agents. With Consul, the `shardctl-agent` services
 * from the health API (with their check status), joined with the map's nodes;
 * with the embedded store, the map's nodes.
 */
import type { Command } from "commander";
import type { LocationStore } from "../engine/ports.js";
import { listAgentNodes, type Health } from "../consul/services.js";
import type { ConsulStore } from "../consul/store.js";
import { printJson, printTable } from "../output.js";
import { openStore } from "../store/index.js";
import { withStore } from "./common.js";
import type { CommandContext } from "./context.js";

export interface NodeRow {
  id: string;
  address: string;
  zone: string;
  /** Consul check status; "n/a" with the embedded store; "unregistered" for a map node Consul does not know. */
  health: Health | "n/a" | "unregistered";
  inMap: boolean;
  shards: number;
  registered: boolean;
}

export async function runNodes(deps: { store: LocationStore }): Promise<NodeRow[]> {
  const vm = await deps.store.load();
  const perNode = new Map<string, number>();
  for (const s of vm?.map.shards ?? []) perNode.set(s.node, (perNode.get(s.node) ?? 0) + 1);
  const rows = new Map<string, NodeRow>();
  for (const n of vm?.map.nodes ?? []) {
    rows.set(n.id, {
      id: n.id,
      address: n.address,
      zone: n.zone,
      health: deps.store.kind === "consul" ? "unregistered" : "n/a",
      inMap: true,
      shards: perNode.get(n.id) ?? 0,
      registered: false,
    });
  }
  if (deps.store.kind === "consul") {
    for (const a of await listAgentNodes((deps.store as ConsulStore).http)) {
      const row = rows.get(a.id);
      if (row)
        Object.assign(row, {
          health: a.health,
          registered: true,
          address: a.address,
          zone: a.zone || row.zone,
        });
      else
        rows.set(a.id, {
          id: a.id,
          address: a.address,
          zone: a.zone,
          health: a.health,
          inMap: false,
          shards: 0,
          registered: true,
        });
    }
  }
  return [...rows.values()].sort((a, b) => a.id.localeCompare(b.id));
}

export function registerNodes(program: Command, ctx: CommandContext): void {
  program
    .command("nodes")
    .description("list the nodes: registered agents with their health (Consul) and the map's nodes")
    .option("--json", "print the nodes as JSON", false)
    .addHelpText(
      "after",
      `
With the Consul store, agents register as the service "shardctl-agent" (id = node id,
zone in the metadata, an HTTP check on the agent's /health); health is the worst of
their checks. A node in the map that Consul does not know shows as "unregistered".

Examples:
  $ shardctl --store consul nodes
  $ shardctl nodes --json | jq -r '.[] | select(.health != "passing") | .id'`,
    )
    .action(async (o: { json: boolean }) => {
      const config = ctx.config();
      const rows = await withStore(
        () => openStore(config),
        (store) => runNodes({ store }),
      );
      if (o.json) {
        printJson(ctx.io, rows);
        return;
      }
      if (rows.length === 0) {
        ctx.io.err.write("no nodes: no layout yet and no agent registered\n");
        return;
      }
      printTable(
        ctx.io,
        ["node", "address", "zone", "health", "shards", "in map"],
        rows.map((r) => [r.id, r.address, r.zone, r.health, r.shards, r.inMap ? "yes" : "no"]),
      );
    });
}
