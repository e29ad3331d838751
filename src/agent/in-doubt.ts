/**
 * Shards in doubt after a restart (issue 8): a migration's source left
 * fenced, a target left prepared, or a shard with a prepared import, when the
 * agent stopped in the middle of a cutover. Before serving, the agent asks
 * the location store what happened, and acts only where the map is
 * unambiguous: the map gives this shard to this node at a higher epoch (the
 * commit happened: serve it at that epoch, with the map's ranges), or to
 * another node at a higher epoch (it moved: redirect there). Anything else
 * stays as it was (fenced: writes refused; prepared: nothing served) until the
 * coordinator, or recovery, finishes the migration: a live coordinator may
 * still be working on it.
 */
import type { LocationMap } from "../engine/location-map.js";
import type { Agent } from "./agent.js";

export interface InDoubtReport {
  shard: string;
  was: string;
  action: "serving" | "redirected" | "unchanged";
  why: string;
}

export async function resolveInDoubt(
  agent: Agent,
  loadMap: () => Promise<LocationMap | null>,
): Promise<InDoubtReport[]> {
  const doubtful = [...agent.shards.values()].filter(
    (s) =>
      !s.failed &&
      (s.meta.state === "fenced" ||
        s.meta.state === "prepared" ||
        Object.values(s.meta.imports ?? {}).some((i) => i.prepared)),
  );
  if (doubtful.length === 0) return [];
  let map: LocationMap | null;
  try {
    map = await loadMap();
  } catch (err) {
    const why = `the location store cannot be read (${(err as Error).message}): waiting for a coordinator`;
    return doubtful.map((s) => ({ shard: s.id, was: s.meta.state, action: "unchanged", why }));
  }
  const me = agent.opts.nodeId;
  const out: InDoubtReport[] = [];
  for (const s of doubtful) {
    const was = s.meta.state;
    const m = map?.shards.find((x) => x.id === s.id);
    if (m && m.node === me && m.epoch > s.meta.epoch) {
      const imports = Object.fromEntries(Object.entries(s.meta.imports ?? {}).filter(([, i]) => !i.prepared));
      s.setMeta({
        epoch: m.epoch,
        state: "owned",
        ranges: m.ranges,
        migrationTimestamp: m.migrationTimestamp,
        migration: undefined,
        imports,
      });
      out.push({
        shard: s.id,
        was,
        action: "serving",
        why: `the map has it here at epoch ${m.epoch}: the commit happened`,
      });
    } else if (m && m.node !== me && m.epoch > s.meta.epoch && was === "fenced") {
      const n = map!.nodes.find((x) => x.id === m.node);
      s.release(m.epoch, { node: m.node, address: n?.address ?? "", epoch: m.epoch });
      out.push({
        shard: s.id,
        was,
        action: "redirected",
        why: `the map has it on ${m.node} at epoch ${m.epoch}`,
      });
    } else {
      out.push({
        shard: s.id,
        was,
        action: "unchanged",
        why: m
          ? `the map still has it on ${m.node} at epoch ${m.epoch}: waiting for the coordinator or recovery`
          : "the map does not name it: waiting for a coordinator",
      });
    }
  }
  return out;
}
