/** Width-exact strings that may hold ANSI colour. */
import { RESET, stripAnsi } from "./ansi.js";
import { cleanText, fit, textWidth } from "./format.js";

/** Terminal columns of a line, not counting its colour escapes. */
export function visibleWidth(s: string): number {
  return textWidth(stripAnsi(s));
}

// eslint-disable-next-line no-control-regex
const SGR = /\x1b\[[0-9;]*m/g;

/**
 * A line as the terminal may receive it: the dashboard's own colours (SGR
 * escapes) stay, every other control character becomes "?" (cleanText), so
 * that a name that was not cut by fit() still cannot reach the terminal as an
 * escape sequence.
 */
export function safeLine(line: string): string {
  let out = "";
  let at = 0;
  for (const m of line.matchAll(SGR)) {
    out += cleanText(line.slice(at, m.index)) + m[0];
    at = m.index + m[0].length;
  }
  return out + cleanText(line.slice(at));
}

/** Pads a possibly coloured line to `width`; a too-long line is cut (losing its colour). */
export function padAnsi(line: string, width: number): string {
  const w = visibleWidth(line);
  if (w === width) return line;
  if (w < width) return line + " ".repeat(width - w);
  return fit(stripAnsi(line), width);
}

/** Colours a piece of text when colour is on. */
export function paint(text: string, code: string, colour: boolean): string {
  return colour ? `${code}${text}${RESET}` : text;
}
