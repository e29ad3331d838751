/** `shardctl init`: writes the initial layout into the location store. */
import type { Command } from "commander";
import type { Config } from "../config.js";
import { initialLayout, NODE_ID_PATTERN, type LocationMap, type NodeInfo } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";
import { CorruptLocationMapError, PreconditionError, UsageError } from "../errors.js";
import { printJson, type IO } from "../output.js";
import { EmbeddedStore } from "../store/embedded.js";
import { openStore } from "../store/index.js";
import { parsePositiveInt, withStore } from "./common.js";
import type { CommandContext } from "./context.js";

export interface InitOptions {
  nodes: NodeInfo[];
  shardsPerNode: number;
  force: boolean;
  json: boolean;
}

export interface InitDeps {
  io: IO;
  store: LocationStore;
  config: Config;
  now: number;
}

/**
 * A node's address: HOST:PORT, the host a name or IPv4 address (letters, digits, dots, hyphens)
 * or an IPv6 address in brackets, the port 1–65535. No spaces or control characters.
 */
const ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$/;

/**
 * Parses `id=host:port@zone,...`. The zone is required (a node put in a zone it was not given
 * would be placed wrongly); the address may be left out (`id@zone`: a node named before it has
 * one). Every problem names the entry, counted from 1.
 */
export function parseNodeSpecs(spec: string, zones: readonly string[]): NodeInfo[] {
  const parts = spec.split(",").map((s) => s.trim());
  if (parts.every((p) => p === "")) throw new UsageError("--nodes needs at least one node");
  const hint = "e.g. --nodes n1=10.0.0.1:7400@a,n2=10.0.0.2:7400@b";
  const nodes = parts.map((part, i) => {
    const entry = `--nodes entry ${i + 1}`;
    if (part === "")
      throw new UsageError(`${entry} is empty (two commas in a row, or one at an end)`, { hint });
    const shown = JSON.stringify(part);
    const at = part.lastIndexOf("@");
    if (at < 0)
      throw new UsageError(`${entry} ${shown} has no zone: expected id=host:port@zone`, {
        hint: `configured zones: ${zones.join(", ")}`,
      });
    const zone = part.slice(at + 1);
    const head = part.slice(0, at);
    const eq = head.indexOf("=");
    const id = eq < 0 ? head : head.slice(0, eq);
    const address = eq < 0 ? "" : head.slice(eq + 1);
    if (!NODE_ID_PATTERN.test(id))
      throw new UsageError(`${entry}: node id ${JSON.stringify(id)} must match ${NODE_ID_PATTERN}`, { hint });
    // an address, when given, is one an agent could listen on (a node may be named without one)
    if (eq >= 0) {
      const m = ADDRESS.exec(address);
      const port = m ? Number(m[1]) : 0;
      if (!m || port < 1 || port > 65535)
        throw new UsageError(
          `${entry} (node ${id}): address ${JSON.stringify(address)} is not HOST:PORT (port 1–65535, no spaces)`,
          { hint },
        );
    }
    if (!zones.includes(zone)) {
      throw new UsageError(`${entry} (node ${id}): zone ${JSON.stringify(zone)} is not configured`, {
        hint: `configured zones: ${zones.join(", ")}`,
      });
    }
    return { id, address, zone };
  });
  if (new Set(nodes.map((n) => n.id)).size !== nodes.length)
    throw new UsageError("--nodes lists a node twice");
  return nodes;
}

export async function runInit(opts: InitOptions, deps: InitDeps): Promise<void> {
  let current;
  try {
    current = await deps.store.load({ consistent: true });
  } catch (err) {
    // the hint of every corrupt-map error says to run init --force: it must be able to repair
    if (!(err instanceof CorruptLocationMapError) || !opts.force || !deps.store.replaceCorruptMap) throw err;
    return replaceCorrupt(deps.store, opts, deps);
  }
  if (current && !opts.force) {
    throw new PreconditionError(
      `the ${deps.store.kind} store already holds a layout (version ${current.version}, ${current.map.shards.length} shards)`,
      { hint: "use --force to replace it (data on agents is not moved)" },
    );
  }
  if (current) {
    // a migration committing after the new layout would find its shard at the node and epoch it
    // expects (init restarts epochs at 1) and commit a copy onto segments it never held
    const open = (await deps.store.listMigrations()).records.find(
      (r) => r.record.phase !== "done" && r.record.phase !== "aborted",
    )?.record;
    if (open)
      throw new PreconditionError(
        `migration ${open.id} of ${open.shard} is open (${open.phase}): replacing the layout under it would commit its copy onto a shard of the new layout; nothing was changed`,
        {
          hint: "let it finish, or finish it with `shardctl migrations --recover` if its coordinator is gone; then run init --force again",
        },
      );
  }
  const map = initialLayout(deps.config.segments, opts.nodes, {
    shardsPerNode: opts.shardsPerNode,
    now: deps.now,
  });
  const cas = await deps.store.compareAndSet(current?.version ?? 0, map);
  if (!cas.ok) {
    throw new PreconditionError(`the layout changed while initialising (now version ${cas.currentVersion})`, {
      hint: "run the command again",
    });
  }
  printInitialised(deps.store, map, cas.version, opts, deps);
}

/**
 * `init --force` over a damaged map: a copy of it kept (beside the embedded store's file, under
 * the Consul prefix's corrupt/ folder), said on stderr.
 */
async function replaceCorrupt(store: LocationStore, opts: InitOptions, deps: InitDeps): Promise<void> {
  const map = initialLayout(deps.config.segments, opts.nodes, {
    shardsPerNode: opts.shardsPerNode,
    now: deps.now,
  });
  const r = await store.replaceCorruptMap!(map, deps.now);
  deps.io.err.write(
    store instanceof EmbeddedStore
      ? `the location map ${store.file} was corrupt (${r.why}): replaced; the damaged file is kept as ${r.keptAs}\n`
      : `the location map in ${store.kind} was corrupt (${r.why}): replaced; the damaged keys are kept under ${r.keptAs}\n`,
  );
  printInitialised(store, map, r.version, opts, deps, r.keptAs);
}

function printInitialised(
  store: LocationStore,
  map: LocationMap,
  version: number,
  opts: InitOptions,
  deps: InitDeps,
  corruptKeptAs?: string,
): void {
  const summary = {
    store: store.kind,
    version,
    segments: map.segmentCount,
    shards: map.shards.length,
    nodes: map.nodes.map((n) => n.id),
    ...(corruptKeptAs === undefined ? {} : { corruptKeptAs }),
  };
  // a shard holds at least one segment: more asked for than there are segments is fewer shards
  const asked = opts.shardsPerNode * map.nodes.length;
  if (map.shards.length < asked)
    deps.io.err.write(
      `note: ${asked} shards asked for (--shards-per-node ${opts.shardsPerNode} × ${map.nodes.length} node(s)), but there are ${map.segmentCount} segments: ${map.shards.length} shards of one segment each\n`,
    );
  if (opts.json) printJson(deps.io, summary);
  else
    deps.io.out.write(
      `initialised the ${summary.store} store: ${summary.segments} segments in ${summary.shards} shards on ${summary.nodes.length} node(s) (version ${summary.version})\n`,
    );
}

export function registerInit(program: Command, ctx: CommandContext): void {
  program
    .command("init")
    .description(
      "write the initial layout (segments in equal contiguous shards over the nodes) into the location store",
    )
    .option(
      "--nodes <list>",
      "nodes as id=host:port@zone,... (the zone required; id@zone names a node without an address) (default: one node per configured zone)",
    )
    .option("--shards-per-node <n>", "shards per node in the initial layout", "4")
    .option(
      "--force",
      "replace an existing layout (refused while a migration is open: exit 3), or a corrupt map (a copy is kept: location-map.json.corrupt-TIME beside the embedded store's file, PREFIX/corrupt/TIME-ID/ in Consul)",
      false,
    )
    .option("--json", "print the result as JSON", false)
    .addHelpText(
      "after",
      `
Examples:
  $ shardctl init                                   # one node per zone, embedded store
  $ shardctl init --nodes n1=10.0.0.1:7400@a,n2=10.0.0.2:7400@b --shards-per-node 8
  $ shardctl --store consul init --force`,
    )
    .action(async (o: { nodes?: string; shardsPerNode: string; force: boolean; json: boolean }) => {
      const config = ctx.config();
      const nodes = o.nodes
        ? parseNodeSpecs(o.nodes, config.zones)
        : config.zones.map((zone, i) => ({ id: `node-${i + 1}`, address: "", zone }));
      const shardsPerNode = parsePositiveInt(o.shardsPerNode, "--shards-per-node");
      await withStore(
        () => openStore(config),
        (store) =>
          runInit(
            { nodes, shardsPerNode, force: o.force, json: o.json },
            { io: ctx.io, store, config, now: Date.now() },
          ),
      );
    });
}
