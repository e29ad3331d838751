/**
 * A block-character chart of one zone's access: the recent history, then
 * the forecast mean with its interval shaded behind it. Pure: returns
 * exactly `height` strings of exactly `width` columns (plus ANSI colour when
 * asked), so that the frame never changes size.
 *
 *   recent  █ (cyan)      forecast mean  █ (yellow)      interval  ░ (dim yellow)
 */
import { DIM, fg256, RESET } from "./ansi.js";
import { fit, formatRate } from "./format.js";

const EIGHTHS = [" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
const RECENT_COLOUR = 51;
const FORECAST_COLOUR = 220;
const BAND_GLYPH = "░";

export interface ChartInput {
  /** Observed rate per interval (accesses/s), oldest first. */
  recent: readonly number[];
  /** Forecast rate per interval (accesses/s). */
  mean: readonly number[];
  lower: readonly number[];
  upper: readonly number[];
}

export interface ChartOptions {
  width: number;
  height: number;
  colour: boolean;
  /** Scale maximum; defaults to the chart's own maximum (pass a shared one to compare zones). */
  max?: number;
}

export const CHART_LABEL_WIDTH = 6;

/** The chart's scale maximum: the highest recent value or upper bound. */
export function chartMax(input: ChartInput): number {
  let m = 0;
  for (const v of input.recent) if (v > m) m = v;
  for (const v of input.upper) if (v > m) m = v;
  for (const v of input.mean) if (v > m) m = v;
  return m;
}

export function renderChart(input: ChartInput, opts: ChartOptions): string[] {
  const height = Math.max(1, opts.height);
  const plotWidth = Math.max(1, opts.width - CHART_LABEL_WIDTH);
  const nForecast = Math.min(input.mean.length, Math.max(0, plotWidth - 1));
  const nRecent = Math.min(input.recent.length, plotWidth - nForecast);
  const lead = plotWidth - nForecast - nRecent;
  const max = opts.max && opts.max > 0 ? opts.max : chartMax(input) || 1;
  type Col =
    | { kind: "none" }
    | { kind: "recent"; v: number }
    | { kind: "forecast"; v: number; lo: number; hi: number };
  const cols: Col[] = [];
  for (let i = 0; i < lead; i++) cols.push({ kind: "none" });
  for (let i = input.recent.length - nRecent; i < input.recent.length; i++)
    cols.push({ kind: "recent", v: input.recent[i] });
  for (let i = 0; i < nForecast; i++) {
    cols.push({
      kind: "forecast",
      v: input.mean[i],
      lo: input.lower[i] ?? input.mean[i],
      hi: input.upper[i] ?? input.mean[i],
    });
  }
  const lines: string[] = [];
  for (let row = height - 1; row >= 0; row--) {
    const label = row === height - 1 ? formatRate(max) : row === 0 ? "0" : "";
    let line = fit(label, CHART_LABEL_WIDTH - 1, "right") + "│";
    let current = "";
    const paint = (colour: string, glyph: string) => {
      if (!opts.colour) {
        line += glyph;
        return;
      }
      if (colour !== current) {
        line += RESET + colour;
        current = colour;
      }
      line += glyph;
    };
    const rowLo = (row / height) * max;
    const rowHi = ((row + 1) / height) * max;
    for (const c of cols) {
      if (c.kind === "none") {
        paint("", " ");
        continue;
      }
      const fill = Math.max(0, Math.min(1, (c.v - rowLo) / (rowHi - rowLo)));
      const eighth = Math.round(fill * 8);
      const colour = fg256(c.kind === "recent" ? RECENT_COLOUR : FORECAST_COLOUR);
      // without colour, the forecast is ▓ so that it stays apart from the recent █
      if (eighth > 0)
        paint(colour, eighth === 8 && c.kind === "forecast" && !opts.colour ? "▓" : EIGHTHS[eighth]);
      else if (c.kind === "forecast" && c.hi > rowLo && c.lo < rowHi)
        paint(DIM + fg256(FORECAST_COLOUR), BAND_GLYPH);
      else paint("", " ");
    }
    if (opts.colour && current !== "") line += RESET;
    lines.push(line);
  }
  return lines;
}
