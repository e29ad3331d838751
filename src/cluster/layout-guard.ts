/**
 * Whether a layout change may be carried out now. Missing access windows
 * (an agent that did not answer, or whose answer was refused) look like cold
 * segments, so no change is made on them. On a map that agents serve, a split
 * or merge moves data between their shards: it is carried out op by op by the
 * migration machinery (src/cluster/reshape.ts, `servedByAgents` tells when); on
 * a map no agent serves, it is one map write.
 */
import type { LayoutDiff } from "../engine/assigner.js";
import type { LocationMap } from "../engine/location-map.js";

export function layoutChangeBlocker(
  diff: LayoutDiff,
  map: LocationMap,
  unreachable: { node: string }[] = [],
): string | undefined {
  if (diff.ops.length > 0 && unreachable.length > 0) {
    // Missing windows look like cold segments: merging on them would be a decision on data we do not have.
    return `the access windows are incomplete (none from ${unreachable.map((u) => u.node).join(", ")})`;
  }
  void map;
  return undefined;
}

/** Whether agents serve the map (a layout change then moves data between them). */
export function servedByAgents(map: LocationMap): boolean {
  return map.nodes.some((n) => n.address !== "");
}
