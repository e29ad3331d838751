/**
 * Output helpers shared by every command: data to stdout (a table, or JSON
 * with --json), status and progress to stderr.
 */
import Table from "cli-table3";
import type { Writable } from "node:stream";

export interface IO {
  out: Writable;
  err: Writable;
}

export const processIO: IO = { out: process.stdout, err: process.stderr };

export function printJson(io: IO, value: unknown): void {
  io.out.write(JSON.stringify(value, null, 2) + "\n");
}

/**
 * Text that came from outside (a key, a remote command's output) as a
 * terminal shows it harmlessly: control characters (C0, DEL, C1) and the
 * bidirectional overrides, which could move the cursor, clear the screen,
 * change colours or reorder what is shown, become visible escapes (\n, \t,
 * \x1b, \u202e). With keepNewlines, a line break stays one (multi-line cells).
 */
export function printable(text: string, keepNewlines = false): string {
  return text.replace(keepNewlines ? UNSAFE_BUT_NEWLINE : UNSAFE, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\t") return "\\t";
    if (c === "\r") return "\\r";
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex
const UNSAFE_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

export function renderTable(head: string[], rows: (string | number)[][]): string {
  const table = new Table({ head, style: { head: [], border: [] } });
  for (const row of rows)
    table.push(row.map((cell) => (typeof cell === "number" ? formatNumber(cell) : printable(cell, true))));
  return table.toString();
}

export function printTable(io: IO, head: string[], rows: (string | number)[][]): void {
  io.out.write(renderTable(head, rows) + "\n");
}

export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return String(n);
  if (Math.abs(n) < 1e-9) return "0";
  const abs = Math.abs(n);
  if (abs >= 100) return n.toFixed(1);
  if (abs >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/** A span of ms for a table ("12 ms"); "-" when unknown, or negative (a clock stepped back between its ends). */
export function formatMs(n: number | undefined): string {
  return n === undefined || n < 0 ? "-" : `${Math.round(n)} ms`;
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
