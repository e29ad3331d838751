/** Migrations in flight (phase, bytes copied, lag, elapsed) and recent (result, write pause). Stateless. */
import { BOLD, fg256 } from "../ansi.js";
import { cleanText, fit, formatBytesShort, formatDuration } from "../format.js";
import type { MigrationsView } from "../source.js";
import { paint } from "../text.js";
import { Lines } from "./Lines.js";

export interface MigrationsPanelProps {
  migrations: MigrationsView;
  now: number;
  width: number;
  height: number;
  colour: boolean;
}

export function migrationsLines(p: MigrationsPanelProps): string[] {
  const m = p.migrations;
  const lines = [
    paint(
      fit(`Migrations: ${m.inFlight.length} in flight, ${m.recent.length} recent`, p.width),
      BOLD,
      p.colour,
    ),
  ];
  if (!m.available) {
    lines.push(fit(m.note ?? "no migration journal to read", p.width));
    return lines;
  }
  if (m.inFlight.length === 0 && m.recent.length === 0) lines.push("none in flight, none recent");
  // the journal's strings are written by coordinators (and an error may quote an agent): inert text only
  const what = (r: { label?: string; shard: string; source: string; target: string }) =>
    cleanText(r.label ?? `${r.shard} ${r.source}→${r.target}`);
  for (const f of m.inFlight) {
    const copied = f.bytesTotal
      ? `${formatBytesShort(f.bytesCopied)}/${formatBytesShort(f.bytesTotal)}`
      : formatBytesShort(f.bytesCopied);
    const lag = f.lagEntries === undefined ? "" : ` lag ${f.lagEntries}`;
    const problem = f.problem ? ` ${paint(`(${cleanText(f.problem)})`, fg256(196), p.colour)}` : "";
    lines.push(
      `▸ ${what(f)} ${paint(cleanText(f.phase), fg256(214), p.colour)} ${copied}${lag} · ${formatDuration(p.now - f.startedAt)}${problem}`,
    );
  }
  for (const r of m.recent) {
    const result = paint(r.result, fg256(r.result === "committed" ? 46 : 196), p.colour);
    const pause = r.writePauseMs === undefined ? "" : ` pause ${formatDuration(r.writePauseMs)}`;
    lines.push(
      `  ${what(r)} ${result}${pause} · ${formatDuration(p.now - r.finishedAt)} ago${r.reason ? ` (${cleanText(r.reason)})` : ""}`,
    );
  }
  return lines;
}

export function MigrationsPanel(p: MigrationsPanelProps) {
  return <Lines lines={migrationsLines(p)} width={p.width} height={p.height} />;
}
