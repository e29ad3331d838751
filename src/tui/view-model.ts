/**
 * From a snapshot and the operator's navigation state to what the frame
 * shows: the grid, the selected and hottest rows, the focused segment or
 * shard. Pure, shared by the interactive container, `--once` and the bench.
 */
import type { ShardInfo } from "../engine/location-map.js";
import { segmentGrid, segmentsOfShard, shardGrid, type HeatGrid, type HeatView } from "./heat.js";
import { heatPlotWidth } from "./heat-render.js";
import { layoutFor, type FrameLayout } from "./layout.js";
import type { DashboardSnapshot, FocusTarget } from "./source.js";
import type { InputState } from "./components/StatusBar.js";

/** Columns of history the heatmap shows at most (the live source keeps this many). */
export const HISTORY_COLUMNS = 60;

export interface NavState {
  view: HeatView;
  /** The shard drilled into, if any. */
  drilled?: string;
  /** Selected row: an index into all rows of the current grid (shard rows scroll). */
  selected: number;
  /**
   * In the shards view, the shard the operator selected: the selection stays
   * on it when a split or merge renumbers the rows (`selected` is used when it
   * is gone).
   */
  selectedShard?: string;
  /** A segment found with `/`: the focus until the selection moves. */
  pinnedSegment?: number;
  right: "forecast" | "plan";
  input: InputState;
  message?: { text: string; error: boolean };
}

export const initialNav: NavState = {
  view: "segments",
  selected: -1,
  right: "forecast",
  input: { kind: "none" },
};

export interface FrameModel {
  layout: FrameLayout;
  grid: HeatGrid;
  /** Index into grid.rows. */
  selectedRow: number;
  hottestRow: number;
  drilledShard?: ShardInfo;
  focus?: FocusTarget;
  /** The shard that enter/p/m act on. */
  actionShard?: ShardInfo;
  focusLabel: string;
}

export function shardOfSegment(shards: readonly ShardInfo[], segment: number): ShardInfo | undefined {
  for (const sh of shards) for (const [a, b] of sh.ranges) if (segment >= a && segment < b) return sh;
  return undefined;
}

export function gridFor(snapshot: DashboardSnapshot, nav: NavState, layout: FrameLayout): HeatGrid {
  const plot = heatPlotWidth(layout.leftWidth);
  const columns = Math.min(plot, Math.max(snapshot.heat.reads.length, HISTORY_COLUMNS));
  const drilled = nav.drilled ? snapshot.shards.find((s) => s.id === nav.drilled) : undefined;
  if (drilled)
    return segmentGrid(snapshot.heat, { rows: layout.heatRows, columns, segments: segmentsOfShard(drilled) });
  if (nav.view === "shards") {
    return shardGrid(snapshot.heat, snapshot.shards, {
      rows: layout.heatRows,
      columns,
      selected: nav.selected,
    });
  }
  return segmentGrid(snapshot.heat, { rows: layout.heatRows, columns });
}

export function frameModel(
  snapshot: DashboardSnapshot,
  nav: NavState,
  width: number,
  height: number,
): FrameModel {
  const drilledShard = nav.drilled ? snapshot.shards.find((s) => s.id === nav.drilled) : undefined;
  if (nav.view === "shards" && !drilledShard && nav.selectedShard !== undefined) {
    const idx = snapshot.shards.findIndex((s) => s.id === nav.selectedShard);
    if (idx >= 0) nav = { ...nav, selected: idx };
  }
  const layout = layoutFor(width, height, snapshot.nodes.length, drilledShard !== undefined);
  const grid = gridFor(snapshot, { ...nav, drilled: drilledShard?.id }, layout);
  const hottest =
    grid.hottestIndex >= grid.offset && grid.hottestIndex < grid.offset + grid.rows.length
      ? grid.hottestIndex - grid.offset
      : -1;
  const selectedAbs =
    nav.selected >= 0
      ? Math.min(nav.selected, grid.totalRows - 1)
      : grid.selected >= 0
        ? grid.selected
        : grid.offset + Math.max(0, hottest);
  const selectedRow = selectedAbs - grid.offset;
  const row = grid.rows[selectedRow];
  let focus: FocusTarget | undefined;
  let actionShard: ShardInfo | undefined = drilledShard;
  let focusLabel = "nothing selected";
  if (nav.pinnedSegment !== undefined) {
    focus = { kind: "segment", segment: nav.pinnedSegment };
    actionShard ??= shardOfSegment(snapshot.shards, nav.pinnedSegment);
  } else if (row?.shard !== undefined) {
    focus = { kind: "shard", shard: row.shard };
    actionShard ??= snapshot.shards.find((s) => s.id === row.shard);
  } else if (row) {
    focus = { kind: "segment", segment: row.hottestSegment };
    actionShard ??= shardOfSegment(snapshot.shards, row.hottestSegment);
  }
  if (focus?.kind === "segment") {
    const sh = shardOfSegment(snapshot.shards, focus.segment);
    focusLabel = `segment ${focus.segment}${sh ? ` (${sh.id} on ${sh.node})` : ""}${nav.pinnedSegment !== undefined ? " · found" : " · hottest in row"}`;
  } else if (focus?.kind === "shard") {
    const sh = snapshot.shards.find((s) => s.id === focus.shard);
    focusLabel = `${focus.shard}${sh ? ` on ${sh.node}` : ""} (sum of its segments)`;
  }
  return { layout, grid, selectedRow, hottestRow: hottest, drilledShard, focus, actionShard, focusLabel };
}

export function focusKey(f: FocusTarget | undefined): string {
  if (!f) return "";
  return f.kind === "segment" ? `segment:${f.segment}` : `shard:${f.shard}`;
}
