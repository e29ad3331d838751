/**
 * One whole dashboard frame, from plain props: title, heatmap, forecast or
 * plan, nodes, migrations, status and help. Stateless: the container
 * (Dashboard.tsx) and `--once` both render it.
 */
import { Box } from "ink";
import type { FrameModel } from "../view-model.js";
import type { DashboardSnapshot, ForecastView, PlanView } from "../source.js";
import { formatClock } from "../format.js";
import { MIN_HEIGHT, MIN_WIDTH } from "../layout.js";
import { ForecastPanel } from "./ForecastPanel.js";
import { HeatmapPanel } from "./HeatmapPanel.js";
import { Lines } from "./Lines.js";
import { MigrationsPanel } from "./MigrationsPanel.js";
import { NodesPanel } from "./NodesPanel.js";
import { PlanPanel } from "./PlanPanel.js";
import { HelpLine, StatusLine, TitleBar, type InputState } from "./StatusBar.js";

export interface FrameProps {
  width: number;
  height: number;
  snapshot?: DashboardSnapshot;
  model?: FrameModel;
  view: "segments" | "shards";
  right: "forecast" | "plan";
  forecast?: ForecastView;
  forecastLoading: boolean;
  plan?: PlanView;
  planLoading: boolean;
  planError?: string;
  input: InputState;
  message?: { text: string; error: boolean };
  /**
   * The last refresh failed: without a snapshot the frame says only that;
   * with one, the status line warns that the frame shows that older snapshot.
   */
  fatal?: string;
  colour: boolean;
  hotRate: number;
  refreshSeconds?: number;
  /** The help line's text (default: the key bindings). */
  help?: string;
  /** Rows of the terminal the frame leaves free (the interactive dashboard: 1), for the size message. */
  reservedRows?: number;
}

export function Frame(p: FrameProps) {
  if (p.width < MIN_WIDTH || p.height < MIN_HEIGHT) {
    // the terminal's size, not the frame's: 60×16 was refused as "60×15, need 60×16"
    const r = p.reservedRows ?? 0;
    return (
      <Lines
        lines={[
          `terminal too small: ${p.width}×${p.height + r}, need ${MIN_WIDTH}×${MIN_HEIGHT + r}`,
          "q quits",
        ]}
        width={Math.max(1, p.width)}
        height={Math.max(1, Math.min(p.height, 2))}
      />
    );
  }
  const { snapshot, model } = p;
  if (!snapshot || !model) {
    const lines = [
      p.fatal ? `cannot read the cluster: ${p.fatal}` : "loading the location map and the agents…",
    ];
    return (
      <Box flexDirection="column" width={p.width} height={p.height}>
        <TitleBar snapshot={undefined} view={p.view} width={p.width} colour={p.colour} />
        <Lines lines={lines} width={p.width} height={p.height - 3} />
        <StatusLine input={p.input} message={p.message} warnings={[]} width={p.width} colour={p.colour} />
        <HelpLine width={p.width} text={p.help} />
      </Box>
    );
  }
  const L = model.layout;
  const gap = <Lines lines={[]} width={1} height={L.mainHeight} />;
  const shardZone = model.drilledShard
    ? snapshot.nodes.find((n) => n.id === model.drilledShard!.node)?.zone
    : undefined;
  return (
    <Box flexDirection="column" width={L.width} height={L.height}>
      <TitleBar
        snapshot={snapshot}
        view={p.view}
        drilledShard={model.drilledShard?.id}
        refreshSeconds={p.refreshSeconds}
        width={L.width}
        colour={p.colour}
      />
      <Box flexDirection="row" height={L.mainHeight}>
        <HeatmapPanel
          grid={model.grid}
          selected={model.selectedRow}
          hottest={model.hottestRow}
          width={L.leftWidth}
          height={L.mainHeight}
          colour={p.colour}
          hotRate={p.hotRate}
          drilled={
            model.drilledShard
              ? { shard: model.drilledShard, zone: shardZone, now: snapshot.takenAt }
              : undefined
          }
        />
        {gap}
        {p.right === "plan" && model.actionShard ? (
          <PlanPanel
            shard={model.actionShard.id}
            plan={p.plan}
            loading={p.planLoading}
            error={p.planError}
            width={L.rightWidth}
            height={L.mainHeight}
            colour={p.colour}
          />
        ) : (
          <ForecastPanel
            targetLabel={model.focusLabel}
            forecast={p.forecast}
            loading={p.forecastLoading}
            width={L.rightWidth}
            height={L.mainHeight}
            colour={p.colour}
          />
        )}
      </Box>
      <Box flexDirection="row" height={L.bottomHeight}>
        <NodesPanel
          nodes={snapshot.nodes}
          zones={snapshot.zones}
          width={L.leftWidth}
          height={L.bottomHeight}
          colour={p.colour}
          now={snapshot.takenAt}
        />
        <Lines lines={[]} width={1} height={L.bottomHeight} />
        <MigrationsPanel
          migrations={snapshot.migrations}
          now={snapshot.takenAt}
          width={L.rightWidth}
          height={L.bottomHeight}
          colour={p.colour}
        />
      </Box>
      <StatusLine
        input={p.input}
        message={p.message}
        warnings={
          p.fatal
            ? [`cannot refresh (showing ${formatClock(snapshot.takenAt)}): ${p.fatal}`, ...snapshot.warnings]
            : snapshot.warnings
        }
        width={L.width}
        colour={p.colour}
      />
      <HelpLine width={L.width} text={p.help} />
    </Box>
  );
}
