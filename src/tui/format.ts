/** Short, fixed-width-friendly numbers and durations for the dashboard's panels. */

/** Accesses per second: "0", "0.42", "7.5", "120", "3.4k", "1.2M". */
export function formatRate(n: number): string {
  if (!Number.isFinite(n) || n <= 0) return "0";
  if (n < 1) return n.toFixed(2);
  if (n < 10) return n.toFixed(1);
  if (n < 1000) return String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

/** A duration: "850ms", "45s", "3m12s", "1h05m". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "-";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return `${h}h${String(m % 60).padStart(2, "0")}m`;
}

/** Bytes in at most 7 characters: "0B", "512B", "3.2K", "41M", "1.5G". */
export function formatBytesShort(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "-";
  const units = ["B", "K", "M", "G", "T"];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(v)}B` : `${v < 10 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

export function formatPercent(fraction: number | undefined): string {
  if (fraction === undefined || !Number.isFinite(fraction)) return "-";
  return `${Math.round(fraction * 100)}%`;
}

/** HH:MM:SS in local time. */
export function formatClock(ms: number): string {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
}

// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * A name or message from outside (the location map, an agent's answer, the
 * journal) as inert text: every control character (ESC, BEL, CSI, ...) and
 * bidirectional override (U+202A–U+202E, U+2066–U+2069) becomes "?", so that it
 * cannot move the cursor, retitle or clear the terminal, nor reorder what is shown.
 */
export function cleanText(text: string): string {
  return text.replace(CONTROL_CHARS, "?");
}

// East Asian wide and fullwidth blocks (Unicode 15 EastAsianWidth W/F, the ranges terminals draw two columns wide)
const WIDE_RANGES: readonly (readonly [number, number])[] = [
  [0x1100, 0x115f],
  [0x231a, 0x231b],
  [0x2329, 0x232a],
  [0x2e80, 0x303e],
  [0x3041, 0x33ff],
  [0x3400, 0x4dbf],
  [0x4e00, 0x9fff],
  [0xa000, 0xa4cf],
  [0xa960, 0xa97f],
  [0xac00, 0xd7a3],
  [0xf900, 0xfaff],
  [0xfe10, 0xfe19],
  [0xfe30, 0xfe6f],
  [0xff00, 0xff60],
  [0xffe0, 0xffe6],
  [0x1f300, 0x1f64f],
  [0x1f900, 0x1f9ff],
  [0x20000, 0x2fffd],
  [0x30000, 0x3fffd],
];
const ZERO_WIDTH = /^[\p{Mn}\p{Me}\p{Cf}]$/u;
const EMOJI = /^\p{Emoji_Presentation}$/u;

/** Terminal columns of one character: 0 (combining, format), 2 (wide, emoji) or 1. */
export function charWidth(ch: string): number {
  const c = ch.codePointAt(0) ?? 0;
  // Latin, and the box, block and shape glyphs the heatmap is made of (every frame measures thousands)
  if (c < 0x300 || (c >= 0x2500 && c <= 0x25fc)) return 1;
  if (ZERO_WIDTH.test(ch)) return 0;
  for (const [a, b] of WIDE_RANGES) if (c >= a && c <= b) return 2;
  return EMOJI.test(ch) ? 2 : 1;
}

/** Terminal columns of a plain string (no escapes). */
export function textWidth(text: string): number {
  let w = 0;
  for (const ch of text) w += charWidth(ch);
  return w;
}

/**
 * Pads or cuts a plain string to exactly `width` terminal columns: wide
 * characters count two, control characters become "?" (cleanText).
 */
export function fit(text: string, width: number, align: "left" | "right" = "left"): string {
  if (width <= 0) return "";
  const clean = cleanText(text);
  const w = textWidth(clean);
  if (w > width) {
    if (width === 1) return "…";
    let out = "";
    let used = 0;
    for (const ch of clean) {
      const cw = charWidth(ch);
      if (used + cw > width - 1) break;
      out += ch;
      used += cw;
    }
    return out + "…" + " ".repeat(width - 1 - used);
  }
  const pad = " ".repeat(width - w);
  return align === "left" ? clean + pad : pad + clean;
}

/** A span of seconds as a short axis label: "10s", "5m", "2h". */
export function formatSpan(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}
