/** Nodes: zone, health, shards, load, resources and RTT to each zone. Stateless. */
import { BOLD, fg256 } from "../ansi.js";
import { fit, formatBytesShort, formatDuration, formatPercent, formatRate } from "../format.js";
import type { NodeView } from "../source.js";
import { paint } from "../text.js";
import { Lines } from "./Lines.js";

export interface NodesPanelProps {
  nodes: readonly NodeView[];
  zones: readonly string[];
  width: number;
  height: number;
  colour: boolean;
  /** The snapshot's time: how old the RTT measurements are. */
  now?: number;
}

const HEALTH_LABEL: Record<NodeView["health"], string> = {
  ok: "ok",
  degraded: "DEGRADED",
  unreachable: "UNREACHABLE",
  "no-agent": "no agent",
};

function ratio(used: number | undefined, total: number | undefined): number | undefined {
  return used !== undefined && total ? used / total : undefined;
}

/** ms with one decimal below 10 (loopback round trips are fractions of a millisecond). */
function formatRtt(ms: number): string {
  return ms < 10 ? ms.toFixed(1).replace(/\.0$/, "") : String(Math.round(ms));
}

/** Where the RTT columns come from: the agents' probes, the zone matrix, or both (model cells marked *). */
function rttLabel(p: NodesPanelProps): { label: string; markModel: boolean } {
  const measured = p.nodes.filter((n) => n.rttSource === "measured");
  if (measured.length === 0) return { label: " (rtt ms: model)", markModel: false };
  const at = Math.max(...measured.map((n) => n.rttMeasuredAt ?? -Infinity));
  const age = p.now !== undefined && Number.isFinite(at) ? ` ${formatDuration(p.now - at)} ago` : "";
  const mixed = p.nodes.some((n) => n.rttMeasured === undefined || n.rttMeasured.some((m) => !m));
  return { label: ` (rtt ms: measured${age}${mixed ? "; * model" : ""})`, markModel: mixed };
}

export function nodesLines(p: NodesPanelProps): string[] {
  const rttHead = p.zones.map((z) => fit(`→${z}`, 6, "right")).join("");
  const { label: model, markModel } = rttLabel(p);
  const lines = [
    paint(fit(`Nodes${model}`, p.width), BOLD, p.colour),
    fit(
      `${fit("node", 10)} ${fit("zone", 5)} ${fit("health", 11)} ${fit("shards", 6, "right")} ${fit("acc/s", 7, "right")} ${fit("cpu", 5, "right")} ${fit("mem", 11, "right")} ${fit("disk", 11, "right")}${rttHead}`,
      p.width,
    ),
  ];
  const room = p.height - lines.length;
  const shown = p.nodes.length > room ? p.nodes.slice(0, Math.max(0, room - 1)) : p.nodes;
  for (const n of shown) {
    const down = n.health === "unreachable";
    const health = fit(HEALTH_LABEL[n.health], 11);
    const healthCol =
      n.health === "ok"
        ? paint(health, fg256(46), p.colour)
        : paint(health, BOLD + fg256(n.health === "no-agent" ? 244 : 196), p.colour);
    const mem =
      down || n.memoryTotalBytes === undefined
        ? "-"
        : `${formatBytesShort(n.memoryUsedBytes)}/${formatBytesShort(n.memoryTotalBytes)}`;
    const disk =
      down || n.diskTotalBytes === undefined ? "-" : formatPercent(ratio(n.diskUsedBytes, n.diskTotalBytes));
    const rtt = p.zones
      .map((_, i) => {
        const x = n.rttMs[i];
        if (x === undefined) return fit("-", 6, "right");
        const star = markModel && !n.rttMeasured?.[i] ? "*" : "";
        return fit(n.rttMeasured?.[i] ? formatRtt(x) : `${Math.round(x)}${star}`, 6, "right");
      })
      .join("");
    const rest = `${fit(String(n.shards), 6, "right")} ${fit(down ? "-" : formatRate(n.accessRate), 7, "right")} ${fit(down ? "-" : formatPercent(n.cpuLoad), 5, "right")} ${fit(mem, 11, "right")} ${fit(disk, 11, "right")}${rtt}`;
    lines.push(`${fit(n.id, 10)} ${fit(n.zone, 5)} ${healthCol} ${rest}`);
  }
  if (shown.length < p.nodes.length) lines.push(`… ${p.nodes.length - shown.length} more node(s)`);
  return lines;
}

export function NodesPanel(p: NodesPanelProps) {
  return <Lines lines={nodesLines(p)} width={p.width} height={p.height} />;
}
