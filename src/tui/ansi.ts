/**
 * The heat colour ramp and the few raw ANSI escapes the dashboard writes.
 * The heatmap is drawn as one pre-coloured string per row rather than one
 * Ink <Text> per cell: a 160×50 frame would otherwise be ~6,000 Yoga nodes,
 * and the frame must render in milliseconds with 100,000 segments.
 */

/**
 * 256-colour indices from cold to hot: dark grey (zero but measured), blues,
 * cyan, green, yellow, orange, red. Index 0 means "measured, no access".
 */
export const RAMP_256: readonly number[] = [
  236, 17, 18, 19, 20, 21, 27, 33, 39, 45, 51, 49, 47, 46, 82, 118, 154, 190, 226, 220, 214, 208, 202, 196,
];

/** Shade glyphs for terminals without colour (NO_COLOR): by total rate. */
export const RAMP_GLYPHS: readonly string[] = [" ", "·", "░", "▒", "▓", "█"];

export const RESET = "\x1b[0m";
export const fg256 = (n: number): string => `\x1b[38;5;${n}m`;
export const bg256 = (n: number): string => `\x1b[48;5;${n}m`;
export const BOLD = "\x1b[1m";
export const DIM = "\x1b[2m";

// eslint-disable-next-line no-control-regex
const ANSI_PATTERN = /\x1b\[[0-9;?]*[A-Za-z]/g;

export function stripAnsi(s: string): string {
  return s.replace(ANSI_PATTERN, "");
}

/**
 * Maps a rate to a ramp level 1..levels-1 on a log scale up to `max`
 * (0 stays 0): heat spans orders of magnitude, and a linear scale would
 * paint everything but the hottest segment the coldest colour.
 */
export function heatLevel(rate: number, max: number, levels: number): number {
  if (!(rate > 0) || !(max > 0)) return 0;
  const f = Math.log1p(rate) / Math.log1p(max);
  return Math.min(levels - 1, 1 + Math.floor(Math.min(1, f) * (levels - 2) + 1e-9));
}

/** The rate at which a ramp level starts (inverse of heatLevel), for the legend. */
export function levelRate(level: number, max: number, levels: number): number {
  if (level <= 0) return 0;
  return Math.expm1(((level - 1) / (levels - 2)) * Math.log1p(max));
}
