/** The title line, the status/prompt line and the help line. Stateless. */
import { BOLD, fg256 } from "../ansi.js";
import { fit, formatClock } from "../format.js";
import type { DashboardSnapshot } from "../source.js";
import { paint } from "../text.js";
import { Lines } from "./Lines.js";

export interface TitleBarProps {
  snapshot?: DashboardSnapshot;
  view: "segments" | "shards";
  drilledShard?: string;
  refreshSeconds?: number;
  width: number;
  colour: boolean;
}

export function titleLine(p: TitleBarProps): string {
  const s = p.snapshot;
  if (!s) return paint(fit("shardctl dashboard · loading…", p.width), BOLD, p.colour);
  const down = s.nodes.filter((n) => n.health === "unreachable").length;
  const nodes = `${s.nodes.length} nodes${down ? ` (${down} UNREACHABLE)` : ""}`;
  const where = p.drilledShard ? `shard ${p.drilledShard}` : `${p.view} view`;
  const data =
    s.heat.origin === "agents"
      ? "agents"
      : s.heat.origin === "embedded-windows"
        ? "embedded windows (no agents)"
        : "fixture";
  const every = p.refreshSeconds ? ` every ${p.refreshSeconds}s` : "";
  const text = `shardctl dashboard · ${where} · ${s.heat.segmentCount} segments · ${s.shards.length} shards · ${nodes} · map v${s.mapVersion} (${s.storeKind}) · data: ${data} · ${formatClock(s.takenAt)}${every}`;
  return paint(fit(text, p.width), BOLD, p.colour);
}

export function TitleBar(p: TitleBarProps) {
  return <Lines lines={[titleLine(p)]} width={p.width} height={1} />;
}

export type InputState =
  | { kind: "none" }
  | { kind: "find"; text: string }
  | {
      kind: "confirm";
      shard: string;
      source: string;
      target: string;
      why: string;
      /** The map version the proposing plan was made against: the move is refused if the map moved on. */
      planVersion?: number;
    };

export interface StatusLineProps {
  input: InputState;
  message?: { text: string; error: boolean };
  warnings: readonly string[];
  width: number;
  colour: boolean;
}

export function statusLine(p: StatusLineProps): string {
  if (p.input.kind === "find")
    return fit(`/ find key: ${p.input.text}█  (enter: jump to its segment · esc: cancel)`, p.width);
  if (p.input.kind === "confirm") {
    const q = `Migrate ${p.input.shard} from ${p.input.source} to ${p.input.target}? (${p.input.why}) [y/n]`;
    return paint(fit(q, p.width), BOLD + fg256(214), p.colour);
  }
  if (p.message)
    return paint(
      fit(p.message.text, p.width),
      p.message.error ? fg256(196) : "",
      p.colour && p.message.error,
    );
  if (p.warnings.length) {
    const more = p.warnings.length > 1 ? ` (+${p.warnings.length - 1} more)` : "";
    return paint(fit(`⚠ ${p.warnings[0]}${more}`, p.width), BOLD + fg256(196), p.colour);
  }
  return "";
}

export function StatusLine(p: StatusLineProps) {
  return <Lines lines={[statusLine(p)]} width={p.width} height={1} />;
}

export const HELP_TEXT =
  "↑↓/jk move · ←→/hl page · enter drill into shard · esc back · p plan · m migrate · / find key · t segments/shards · q quit";

/** `--once` reads no keys: the help line says where they work instead of listing them. */
export const ONCE_HELP_TEXT =
  "--once: one frame, no keys · the keys (p plan, m migrate, / find, enter, t) work in the interactive `shardctl dashboard`";

export function HelpLine({ width, text = HELP_TEXT }: { width: number; text?: string }) {
  return <Lines lines={[fit(text, width)]} width={width} height={1} />;
}
