/**
 * Where the engine's access windows come from: the agents that serve the
 * shards (each counts the accesses to the segments it holds), or — on the
 * embedded default with no agents — the windows file `shardctl record` writes.
 * A node that does not answer is reported, not fatal: its segments simply have
 * no history in this collection.
 */
import type { Config } from "../config.js";
import { AccessWindows, type SegmentWindows } from "../engine/access-windows.js";
import { RoutingTable, type VersionedMap } from "../engine/location-map.js";
import { errorMessage } from "../errors.js";
import { loadWindows, newWindows } from "../store/windows-file.js";
import { AgentRpc } from "./agent-rpc.js";
import { resolveClientToken } from "./local.js";

export interface CollectedWindows {
  windows: AccessWindows;
  /** "agents" or "file". */
  source: "agents" | "file";
  /** Nodes that did not answer, with why. */
  unreachable: { node: string; error: string }[];
}

interface AccessList {
  segments: { segment: number }[];
}

/**
 * Collects the windows of every segment from the node that owns it in the map.
 * With nodes unreachable the collection is incomplete: callers must not
 * commit decisions on it (see layoutChangeBlocker).
 */
export async function collectWindows(
  config: Config,
  vm: VersionedMap | null,
  timeoutMs = 5000,
): Promise<CollectedWindows> {
  const nodes = vm?.map.nodes.filter((n) => n.address) ?? [];
  if (!vm || nodes.length === 0) return { windows: loadWindows(config), source: "file", unreachable: [] };
  let token: string;
  try {
    token = resolveClientToken(config);
  } catch (err) {
    const error = errorMessage(err);
    return {
      windows: newWindows(config),
      source: "agents",
      unreachable: nodes.map((n) => ({ node: n.id, error })),
    };
  }
  const rpc = new AgentRpc({ token, timeoutMs });
  const table = new RoutingTable(vm);
  const windows = newWindows(config);
  const unreachable: CollectedWindows["unreachable"] = [];
  try {
    await Promise.all(
      nodes.map(async (node) => {
        try {
          const list = await rpc.json<AccessList>(node.address, "GET", "/v1/access?window=1");
          if (list.status !== 200) throw new Error(`HTTP ${list.status}`);
          // Only the owner's history counts: a former owner may still hold a stale copy.
          const owned = list.body.segments
            .map((s) => s.segment)
            .filter((s) => table.nodeOfSegment(s) === node.id);
          for (const segment of owned) {
            const res = await rpc.json<SegmentWindows>(node.address, "GET", `/v1/access/${segment}/export`);
            if (res.status === 200) windows.importSegment(res.body);
          }
        } catch (err) {
          unreachable.push({ node: node.id, error: errorMessage(err) });
        }
      }),
    );
  } finally {
    rpc.pool.destroy();
  }
  return { windows, source: "agents", unreachable };
}
