/**
 * Access history moves with the data (issue 8): before a migration fences
 * its source, the source's access windows of the moving segments are copied
 * to the target agent (GET /v1/access/:segment/export → PUT
 * /v1/admin/access/:segment), so that forecasts and placement keep the
 * segments' history on their new node. Accesses between this copy and the
 * cutover (a few seconds) stay on the source only. Best effort: a failure is
 * reported, never a reason to abort the move.
 */
import { expandRanges, type NodeInfo, type SegmentRange } from "../engine/location-map.js";
import type { AgentRpc } from "./agent-rpc.js";

const PARALLEL = 8;

export async function transferWindows(
  rpc: AgentRpc,
  source: NodeInfo,
  target: NodeInfo,
  ranges: readonly SegmentRange[],
): Promise<{ segments: number; problems: string[] }> {
  if (source.id === target.id) return { segments: 0, problems: [] };
  const segments = expandRanges(ranges);
  const problems: string[] = [];
  let moved = 0;
  let i = 0;
  const worker = async () => {
    while (i < segments.length && problems.length < 5) {
      const s = segments[i++];
      try {
        const r = await rpc.json(source.address, "GET", `/v1/access/${s}/export`);
        if (r.status === 404) continue; // no access recorded for it
        if (r.status !== 200) {
          problems.push(`export of segment ${s} from ${source.id}: ${r.status}`);
          continue;
        }
        const p = await rpc.json(target.address, "PUT", `/v1/admin/access/${s}`, r.body);
        if (p.status !== 200) problems.push(`import of segment ${s} on ${target.id}: ${p.status}`);
        else moved++;
      } catch (err) {
        problems.push(`segment ${s}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, segments.length) }, worker));
  return { segments: moved, problems };
}
