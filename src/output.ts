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

export function renderTable(head: string[], rows: (string | number)[][]): string {
  const table = new Table({ head, style: { head: [], border: [] } });
  for (const row of rows)
    table.push(row.map((cell) => (typeof cell === "number" ? formatNumber(cell) : cell)));
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
