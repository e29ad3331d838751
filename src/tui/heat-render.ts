/**
 * Heatmap rows and the legend as strings of exactly the frame's width.
 *
 * One terminal cell = one row (band of segments, or shard) × one time
 * column, drawn as "▀" with the foreground = reads and the background =
 * writes, both on the same log colour ramp: reads and writes stay apart in
 * one cell. Without colour, a shade glyph shows max(reads, writes).
 */
import { bg256, BOLD, fg256, heatLevel, levelRate, RAMP_256, RAMP_GLYPHS, RESET } from "./ansi.js";
import { fit, formatRate, formatSpan } from "./format.js";
import type { HeatGrid, HeatRow } from "./heat.js";

/** marker(1) label(13) gap(1) … gap(1) peak(8) flag(2) */
export const HEAT_LABEL_WIDTH = 13;
const FIXED_WIDTH = 1 + HEAT_LABEL_WIDTH + 1 + 1 + 8 + 2;

/** Columns of the plot area for a heatmap `width` wide. */
export function heatPlotWidth(width: number): number {
  return Math.max(1, width - FIXED_WIDTH);
}

export interface HeatRowOptions {
  width: number;
  maxRate: number;
  colour: boolean;
  selected: boolean;
  hottest: boolean;
  /** A row whose peak reaches this rate is marked hot. */
  hotRate: number;
}

function cellsOf(row: HeatRow, plotWidth: number, maxRate: number, colour: boolean): string {
  const n = row.reads.length;
  const cellWidth = Math.max(1, Math.floor(plotWidth / Math.max(1, n)));
  const used = Math.min(n, Math.floor(plotWidth / cellWidth));
  let out = " ".repeat(plotWidth - used * cellWidth);
  const levels = RAMP_256.length;
  let lastFg = -1;
  let lastBg = -1;
  for (let c = n - used; c < n; c++) {
    const r = row.reads[c];
    const w = row.writes[c];
    if (r < 0 || w < 0) {
      if (colour && (lastFg !== -1 || lastBg !== -1)) {
        out += RESET;
        lastFg = lastBg = -1;
      }
      out += " ".repeat(cellWidth);
      continue;
    }
    if (!colour) {
      const lvl = heatLevel(Math.max(r, w), maxRate, RAMP_GLYPHS.length);
      // a measured zero is "·" (the column exists), never a blank
      out += (lvl === 0 ? RAMP_GLYPHS[1] : RAMP_GLYPHS[Math.max(1, lvl)]).repeat(cellWidth);
      continue;
    }
    const f = RAMP_256[heatLevel(r, maxRate, levels)];
    const b = RAMP_256[heatLevel(w, maxRate, levels)];
    if (f !== lastFg) {
      out += fg256(f);
      lastFg = f;
    }
    if (b !== lastBg) {
      out += bg256(b);
      lastBg = b;
    }
    out += "▀".repeat(cellWidth);
  }
  if (colour && (lastFg !== -1 || lastBg !== -1)) out += RESET;
  return out;
}

/** One heatmap line: "▶ 0-2499      ▀▀▀…▀ 12.3k/s ◀". */
export function renderHeatRow(row: HeatRow, opts: HeatRowOptions): string {
  const plotWidth = heatPlotWidth(opts.width);
  const hot = row.peak >= opts.hotRate && row.peak > 0;
  const marker = opts.selected ? "▶" : " ";
  let label = fit(row.label, HEAT_LABEL_WIDTH);
  if (opts.colour && opts.selected) label = `\x1b[7m${label}${RESET}`;
  else if (opts.colour && hot) label = `${BOLD}${fg256(196)}${label}${RESET}`;
  const peak = fit(`${formatRate(row.peak)}/s`, 8, "right");
  const flag = opts.hottest ? " ◀" : hot ? " !" : "  ";
  const coloredFlag = opts.colour && (opts.hottest || hot) ? `${BOLD}${fg256(196)}${flag}${RESET}` : flag;
  return `${marker}${label} ${cellsOf(row, plotWidth, opts.maxRate, opts.colour)} ${peak}${coloredFlag}`;
}

/** The heatmap's column header: what a column is and where "now" is. */
export function renderHeatHeader(grid: HeatGrid, width: number): string {
  const plotWidth = heatPlotWidth(width);
  const cellWidth = Math.max(1, Math.floor(plotWidth / Math.max(1, grid.columns)));
  const shown = Math.min(grid.columns, Math.floor(plotWidth / cellWidth));
  const span = formatSpan(shown * grid.intervalSeconds);
  const what =
    grid.view === "segments"
      ? grid.bandSize > 1
        ? `${grid.bandSize} seg/row`
        : "segment"
      : `shard (${grid.offset + 1}-${grid.offset + grid.rows.length}/${grid.totalRows})`;
  const axis = fit(`-${span}`, Math.max(1, plotWidth - 3)) + "now";
  return fit(` ${fit(what, HEAT_LABEL_WIDTH)} ${axis}  peak/s`, width);
}

/** Two legend lines: the ramp with its scale, and how to read a cell. */
export function renderLegend(grid: HeatGrid, width: number, colour: boolean, hotRate: number): string[] {
  const levels = RAMP_256.length;
  const agg =
    grid.aggregation === "max"
      ? grid.bandSize > 1
        ? `cell = max over ${grid.bandSize} segments`
        : "cell = the segment"
      : "cell = sum over the shard's segments";
  const col = `column = ${formatSpan(grid.intervalSeconds)}`;
  let ramp: string;
  if (colour) {
    ramp = "";
    for (let l = 0; l < levels; l++) ramp += `${bg256(RAMP_256[l])} `;
    ramp += RESET;
  } else {
    ramp = RAMP_GLYPHS.slice(1).join("");
  }
  const rampWidth = colour ? levels : RAMP_GLYPHS.length - 1;
  const mid = levelRate(Math.floor(levels / 2), grid.maxRate, levels);
  const scale = `0 `;
  const after = ` ${formatRate(grid.maxRate)}/s (log; mid ${formatRate(mid)}/s)`;
  const line1Plain = `${scale}${" ".repeat(rampWidth)}${after}`;
  const line1 = `${scale}${ramp}${after}` + " ".repeat(Math.max(0, width - Array.from(line1Plain).length));
  const how = colour ? "▀ top = reads, bottom = writes" : "glyph = max(reads, writes)";
  const line2 = fit(`${how} · ${agg} · ${col} · hot ≥ ${formatRate(hotRate)}/s !`, width);
  return [line1Plain.length > width ? fit(line1Plain, width) : line1, line2];
}
