/**
 * Whether a layout change can be committed to a map that live agents serve.
 * A split or merge moves segments between shards, so their data must move
 * between the agents' shard logs; that is carried out by the migration
 * machinery, which this version does not have yet. Until it does, such a
 * change is planned and shown but not committed while agents serve the map:
 * committing it would route keys to shards that no agent holds.
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
    return `the access windows are incomplete (${unreachable.map((u) => u.node).join(", ")} did not answer)`;
  }
  const served = map.nodes.filter((n) => n.address !== "");
  if (diff.ops.length === 0 || served.length === 0) return undefined;
  return (
    `${diff.ops.length} split/merge change(s) would move segments between shards that agents serve ` +
    `(${served.map((n) => n.id).join(", ")}), and moving shard data between agents is not supported yet`
  );
}
