/**
 * `shardctl status`: who leads the autopilot, the map version and term, the
 * nodes and shards, and any migration in progress.
 */
import type { Command } from "commander";
import type { Config } from "../config.js";
import type { LocationStore } from "../engine/ports.js";
import {
  readConsulStatus,
  readOpenMigrations,
  type LeaderInfo,
  type MigrationEntry,
} from "../consul/status.js";
import type { ConsulStore } from "../consul/store.js";
import { printJson, printTable } from "../output.js";
import { openStore } from "../store/index.js";
import { withStore } from "./common.js";
import type { CommandContext } from "./context.js";

export interface StatusReport {
  store: "embedded" | "consul";
  /** Where the map lives: data dir or Consul address + prefix. */
  location: string;
  leader: LeaderInfo | null;
  /** The leadership term (Consul) or the term of the map's last writer. */
  term: number;
  map: { version: number; segments: number; shards: number; mapTerm: number; updatedAt: number } | null;
  nodes: { id: string; address: string; zone: string; shards: number }[];
  /** Migrations not finished (and journal records that cannot be read). */
  migrations: MigrationEntry[];
}

export async function runStatus(deps: { store: LocationStore; config: Config }): Promise<StatusReport> {
  const { store, config } = deps;
  const vm = await store.load({ consistent: true });
  const consul = store.kind === "consul" ? (store as ConsulStore) : null;
  const cs = consul ? await readConsulStatus(consul) : null;
  const migrations = await readOpenMigrations(store);
  const perNode = new Map<string, number>();
  for (const s of vm?.map.shards ?? []) perNode.set(s.node, (perNode.get(s.node) ?? 0) + 1);
  return {
    store: store.kind,
    location: consul ? `consul ${consul.http.addr} ${consul.keys.prefix}` : config.dataDir,
    leader: cs?.leader ?? null,
    term: cs ? cs.term : (vm?.map.term ?? 0),
    map: vm
      ? {
          version: vm.version,
          segments: vm.map.segmentCount,
          shards: vm.map.shards.length,
          mapTerm: vm.map.term,
          updatedAt: vm.map.updatedAt,
        }
      : null,
    nodes: (vm?.map.nodes ?? []).map((n) => ({
      id: n.id,
      address: n.address,
      zone: n.zone,
      shards: perNode.get(n.id) ?? 0,
    })),
    migrations,
  };
}

export function registerStatus(program: Command, ctx: CommandContext): void {
  program
    .command("status")
    .description(
      "show the autopilot leader, the location map's version and term, nodes, shards and migrations",
    )
    .option("--json", "print the report as JSON", false)
    .addHelpText(
      "after",
      `
With the Consul store, the leader is the holder of the session lock <prefix>leader and the
term is the leadership counter <prefix>term; the map version is the ModifyIndex of
<prefix>map/meta. Reads are ?consistent. The migrations listed are the journal's records not
done or aborted (<prefix>migrations/ in Consul), and any that cannot be read;
\`shardctl migrations\` shows them all.

Examples:
  $ shardctl status
  $ CONSUL_HTTP_ADDR=10.0.0.2:8500 shardctl --store consul status --json | jq .leader.holder`,
    )
    .action(async (o: { json: boolean }) => {
      const config = ctx.config();
      const report = await withStore(
        () => openStore(config),
        (store) => runStatus({ store, config }),
      );
      if (o.json) {
        printJson(ctx.io, report);
        return;
      }
      const out = ctx.io.out;
      out.write(`store:      ${report.store} (${report.location})\n`);
      if (report.store === "consul") {
        out.write(
          `leader:     ${report.leader ? `${report.leader.holder}${report.leader.node ? ` on ${report.leader.node}` : ""} (session ${report.leader.session.slice(0, 8)})` : "none (no autopilot is leading)"}\n`,
        );
      }
      out.write(`term:       ${report.term}\n`);
      if (!report.map) {
        out.write("map:        none yet (create one with `shardctl init`)\n");
      } else {
        out.write(
          `map:        version ${report.map.version}, ${report.map.shards} shards over ${report.map.segments} segments, written by term ${report.map.mapTerm} at ${new Date(report.map.updatedAt).toISOString()}\n`,
        );
      }
      if (report.nodes.length) {
        printTable(
          ctx.io,
          ["node", "address", "zone", "shards"],
          report.nodes.map((n) => [n.id, n.address, n.zone, n.shards]),
        );
      }
      if (report.migrations.length === 0) out.write("migrations: none in progress\n");
      else {
        out.write("migrations:\n");
        printTable(
          ctx.io,
          ["id", "phase", "shard", "from", "to", "started"],
          report.migrations.map((m) => [
            m.id,
            m.pending ? `${m.phase} (${m.pending.kind} pending: ${m.pending.why})` : m.phase,
            m.shard ?? "",
            m.source ?? "",
            m.target ?? "",
            m.startedAt ? new Date(m.startedAt).toISOString() : "",
          ]),
        );
      }
    });
}
