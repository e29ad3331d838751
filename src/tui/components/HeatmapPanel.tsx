/** The heatmap: header, one line per band or shard, legend. Stateless. */
import type { ShardInfo } from "../../engine/location-map.js";
import { BOLD } from "../ansi.js";
import { cleanText, formatDuration } from "../format.js";
import type { HeatGrid } from "../heat.js";
import { renderHeatHeader, renderHeatRow, renderLegend } from "../heat-render.js";
import { paint } from "../text.js";
import { Lines } from "./Lines.js";

export interface HeatmapPanelProps {
  grid: HeatGrid;
  /** Index into grid.rows of the selected row (-1: none). */
  selected: number;
  /** Index into grid.rows of the hottest row (-1: none). */
  hottest: number;
  width: number;
  height: number;
  colour: boolean;
  hotRate: number;
  /** Set when drilled into a shard: its header line. */
  drilled?: { shard: ShardInfo; zone?: string; now: number };
}

export function heatmapLines(p: HeatmapPanelProps): string[] {
  const lines: string[] = [];
  if (p.drilled) {
    const { shard, zone, now } = p.drilled;
    const moved =
      shard.migrationTimestamp > 0
        ? `moved ${formatDuration(now - shard.migrationTimestamp)} ago`
        : "never moved";
    const ranges = shard.ranges.map(([a, b]) => (b - a === 1 ? `${a}` : `${a}-${b - 1}`)).join(",");
    lines.push(
      paint(
        `${shard.id} on ${shard.node}${zone ? ` (zone ${cleanText(zone)})` : ""} · epoch ${shard.epoch} · ${moved} · segments ${ranges} · esc back`,
        BOLD,
        p.colour,
      ),
    );
  }
  lines.push(renderHeatHeader(p.grid, p.width));
  const legend = renderLegend(p.grid, p.width, p.colour, p.hotRate);
  const rowSpace = p.height - lines.length - legend.length;
  for (let i = 0; i < rowSpace; i++) {
    const row = p.grid.rows[i];
    if (!row) {
      lines.push("");
      continue;
    }
    lines.push(
      renderHeatRow(row, {
        width: p.width,
        maxRate: p.grid.maxRate,
        colour: p.colour,
        selected: i === p.selected,
        hottest: i === p.hottest,
        hotRate: p.hotRate,
      }),
    );
  }
  lines.push(...legend);
  return lines;
}

export function HeatmapPanel(p: HeatmapPanelProps) {
  return <Lines lines={heatmapLines(p)} width={p.width} height={p.height} />;
}
