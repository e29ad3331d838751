/** Nodes: zone, health, shards, load, resources and RTT to each zone. Stateless. */
import { BOLD, fg256 } from "../ansi.js";
import { fit, formatBytesShort, formatPercent, formatRate } from "../format.js";
import type { NodeView } from "../source.js";
import { paint } from "../text.js";
import { Lines } from "./Lines.js";

export interface NodesPanelProps {
  nodes: readonly NodeView[];
  zones: readonly string[];
  width: number;
  height: number;
  colour: boolean;
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

export function nodesLines(p: NodesPanelProps): string[] {
  const rttHead = p.zones.map((z) => fit(`→${z}`, 6, "right")).join("");
  const model = p.nodes.some((n) => n.rttSource === "model") ? " (rtt ms: model)" : " (rtt ms)";
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
      .map((_, i) => fit(n.rttMs[i] === undefined ? "-" : String(Math.round(n.rttMs[i]!)), 6, "right"))
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
