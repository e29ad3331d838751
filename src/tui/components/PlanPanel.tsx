/** What the planner would do with one shard. Stateless. */
import { BOLD } from "../ansi.js";
import { fit } from "../format.js";
import type { PlanView } from "../source.js";
import { paint } from "../text.js";
import { Lines } from "./Lines.js";

export interface PlanPanelProps {
  shard: string;
  plan?: PlanView;
  loading: boolean;
  error?: string;
  width: number;
  height: number;
  colour: boolean;
}

export function planLines(p: PlanPanelProps): string[] {
  const head = p.plan
    ? `Plan · ${p.shard} (map v${p.plan.mapVersion}) · p/esc back`
    : `Plan · ${p.shard} · p/esc back`;
  const lines = [paint(fit(head, p.width), BOLD, p.colour)];
  if (p.error) lines.push(`planning failed: ${p.error}`);
  else if (!p.plan) lines.push(p.loading ? "planning…" : "no plan yet");
  else {
    for (const l of p.plan.lines) {
      // wrap long reasons rather than cut them
      for (let i = 0; i < l.length; i += p.width) lines.push(l.slice(i, i + p.width));
    }
    lines.push(
      p.plan.target
        ? `m: migrate ${p.shard} to ${p.plan.target}`
        : "the planner proposes no move for this shard",
    );
  }
  return lines;
}

export function PlanPanel(p: PlanPanelProps) {
  return <Lines lines={planLines(p)} width={p.width} height={p.height} />;
}
