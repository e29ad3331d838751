/**
 * Access history moves with the data (issue 8): before a migration fences
 * its source, the source's access windows of the moving segments are copied
 * to the target agent (GET /v1/access/:segment/export → PUT
 * /v1/admin/access/:segment), so that forecasts and placement keep the
 * segments' history on their new node. Accesses between this copy and the
 * cutover (a few seconds) stay on the source only. Best effort: a failure is
 * reported, never a reason to abort the move.
 *
 * Slot numbers are times on the clock that counted them: when the two
 * agents' clocks differ by more than the measurement can tell, each segment's
 * windows are moved onto the target's clock before they are sent
 * (AccessWindows.importSegment's offset), so that the moved history is not
 * read there as future (dropped) or stale.
 */
import { AccessWindows, type SegmentWindows } from "../engine/access-windows.js";
import { expandRanges, type NodeInfo, type SegmentRange } from "../engine/location-map.js";
import type { AgentRpc } from "./agent-rpc.js";
import { agentClock, CLOCK_TOLERANCE_MS } from "./windows-source.js";

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
  // how far the source's clock is ahead of the target's (0: not more than the measurement can tell)
  let skewMs = 0;
  try {
    const [src, dst] = await Promise.all([agentClock(rpc, source), agentClock(rpc, target)]);
    const d = src.offsetMs - dst.offsetMs;
    if (Math.abs(d) > src.uncertaintyMs + dst.uncertaintyMs + CLOCK_TOLERANCE_MS) skewMs = d;
  } catch (err) {
    problems.push(`the clocks could not be compared (${(err as Error).message}): windows copied as they are`);
  }
  /** Where a segment's windows are moved onto the target's clock: one store for the whole transfer. */
  let shifter: AccessWindows | undefined;
  const onTargetClock = (data: SegmentWindows): SegmentWindows => {
    if (skewMs === 0) return data;
    shifter ??= new AccessWindows({
      segmentCount: segments.reduce((a, b) => Math.max(a, b), 0) + 1,
      zones: data.zones,
      levels: data.levels,
    });
    shifter.importSegment(data, skewMs);
    return shifter.exportSegment(data.segment) ?? data;
  };
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
        const p = await rpc.json(
          target.address,
          "PUT",
          `/v1/admin/access/${s}`,
          onTargetClock(r.body as SegmentWindows),
        );
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
