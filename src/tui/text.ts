/** Width-exact strings that may hold ANSI colour. */
import { RESET, stripAnsi } from "./ansi.js";
import { fit } from "./format.js";

export function visibleWidth(s: string): number {
  return Array.from(stripAnsi(s)).length;
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
