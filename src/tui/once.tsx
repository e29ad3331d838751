/** `--once`: one frame as a string, no raw mode, no input. Also what the bench renders. */
import { renderToString } from "ink";
import { errorMessage } from "../errors.js";
import { Frame } from "./components/Frame.js";
import { ONCE_HELP_TEXT } from "./components/StatusBar.js";
import type { DashboardSnapshot, DashboardSource, ForecastView } from "./source.js";
import { frameModel, initialNav, type NavState } from "./view-model.js";

export interface FrameOptions {
  width: number;
  height: number;
  colour: boolean;
  hotRate: number;
  view: "segments" | "shards";
  refreshSeconds?: number;
}

/** Renders one frame of a snapshot (pure, synchronous). */
export function renderFrame(
  snapshot: DashboardSnapshot,
  opts: FrameOptions,
  forecast?: ForecastView,
  nav?: Partial<NavState>,
): string {
  const n: NavState = { ...initialNav, view: opts.view, ...nav };
  const model = frameModel(snapshot, n, opts.width, opts.height);
  return renderToString(
    <Frame
      width={opts.width}
      height={opts.height}
      snapshot={snapshot}
      model={model}
      view={n.view}
      right="forecast"
      forecast={forecast}
      forecastLoading={false}
      planLoading={false}
      input={n.input}
      message={n.message}
      colour={opts.colour}
      hotRate={opts.hotRate}
      refreshSeconds={opts.refreshSeconds}
      help={ONCE_HELP_TEXT}
    />,
    { columns: opts.width },
  );
}

/** Reads one snapshot (and the forecast of the hottest row) and renders it. */
export async function renderOnce(source: DashboardSource, opts: FrameOptions): Promise<string> {
  const snapshot = await source.snapshot();
  const model = frameModel(snapshot, { ...initialNav, view: opts.view }, opts.width, opts.height);
  let forecast: ForecastView | undefined;
  if (model.focus) {
    try {
      forecast = await source.forecast(model.focus);
    } catch (err) {
      forecast = {
        target: model.focus,
        intervalSeconds: 60,
        horizon: 0,
        intervalLevel: 0.8,
        zones: [],
        note: `forecast failed: ${errorMessage(err)}`,
      };
    }
  }
  return renderFrame(snapshot, opts, forecast);
}
