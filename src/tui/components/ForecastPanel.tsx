/** The forecast for the focused segment or shard: recent access and prediction with interval, per zone. Stateless. */
import { BOLD, DIM, fg256, RESET } from "../ansi.js";
import { CHART_LABEL_WIDTH, chartMax, renderChart } from "../chart.js";
import { fit, formatRate, formatSpan } from "../format.js";
import type { ForecastView } from "../source.js";
import { paint } from "../text.js";
import { Lines } from "./Lines.js";

export interface ForecastPanelProps {
  /** What is focused, e.g. "segment 42 (shard-3)". */
  targetLabel: string;
  forecast?: ForecastView;
  loading: boolean;
  width: number;
  height: number;
  colour: boolean;
}

export function forecastLines(p: ForecastPanelProps): string[] {
  const lines = [paint(fit(`Forecast · ${p.targetLabel}`, p.width), BOLD, p.colour)];
  const f = p.forecast;
  if (!f) {
    lines.push(p.loading ? "forecasting…" : "no forecast yet");
    return lines;
  }
  if (f.note || f.zones.length === 0) {
    lines.push(fit(f.note ?? "no access history for this target", p.width));
    return lines;
  }
  const legend = p.colour
    ? `${fg256(51)}█${RESET} recent  ${fg256(220)}█${RESET} forecast  ${DIM}${fg256(220)}░${RESET} ${Math.round(f.intervalLevel * 100)}% interval · ${formatSpan(f.intervalSeconds)}/col · shared scale`
    : `█ recent, then forecast; ░ ${Math.round(f.intervalLevel * 100)}% interval · ${formatSpan(f.intervalSeconds)}/col · shared scale`;
  const perZone = Math.floor((p.height - 2) / f.zones.length);
  const chartHeight = Math.max(1, perZone - 1);
  // one scale for every zone: the zones compare at a glance
  const toRate = (xs: readonly number[]) => xs.map((x) => x / f.intervalSeconds);
  const inputs = f.zones.map((z) => ({
    recent: toRate(z.recent),
    mean: toRate(z.mean),
    lower: toRate(z.lower),
    upper: toRate(z.upper),
  }));
  const max = Math.max(...inputs.map(chartMax)) || 1;
  f.zones.forEach((z, i) => {
    const inp = inputs[i];
    const now = inp.recent.length ? inp.recent[inp.recent.length - 1] : 0;
    const next = inp.mean[0] ?? 0;
    const lo = inp.lower[0] ?? 0;
    const hi = inp.upper[0] ?? 0;
    lines.push(
      fit(
        `zone ${z.zone} · ${z.model} · now ${formatRate(now)}/s → next ${formatRate(next)}/s (${formatRate(lo)}–${formatRate(hi)})`,
        p.width,
      ),
    );
    if (perZone >= 2)
      lines.push(...renderChart(inp, { width: p.width, height: chartHeight, colour: p.colour, max }));
  });
  while (lines.length < p.height - 1) lines.push("");
  lines.push(" ".repeat(CHART_LABEL_WIDTH) + legend);
  return lines;
}

export function ForecastPanel(p: ForecastPanelProps) {
  return <Lines lines={forecastLines(p)} width={p.width} height={p.height} />;
}
