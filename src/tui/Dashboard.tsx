/**
 * The dashboard's one container: it owns the state (snapshot, navigation,
 * forecast, plan, prompts), the effects (the refresh loop, forecasting,
 * planning, migrating) and the key bindings. Everything it draws is the
 * stateless <Frame>.
 */
import { useApp, useInput, useStdout } from "ink";
import { useEffect, useMemo, useRef, useState } from "react";
import { errorMessage } from "../errors.js";
import { Frame } from "./components/Frame.js";
import { rowOfSegment } from "./heat.js";
import type { DashboardSnapshot, DashboardSource, ForecastView, PlanView } from "./source.js";
import { focusKey, frameModel, initialNav, shardOfSegment, type NavState } from "./view-model.js";

export interface DashboardProps {
  source: DashboardSource;
  refreshMs: number;
  colour: boolean;
  /** Accesses/s from which a row is marked hot. */
  hotRate: number;
  initialView?: "segments" | "shards";
  /** Fixed size (tests); otherwise the terminal's, following resizes. */
  width?: number;
  height?: number;
  /** Re-forecast the focused target at most this often while it stays focused. */
  forecastEveryMs?: number;
}

const MAX_FIND_LENGTH = 4096;

/** Typed text only: no control characters or escape sequences into the search box. */
function isPrintable(s: string): boolean {
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0)) return false;
  }
  return true;
}

function useTerminalSize(fixed: { width?: number; height?: number }): { width: number; height: number } {
  const { stdout } = useStdout();
  const read = () => ({
    width: fixed.width ?? stdout.columns ?? 120,
    // one line short of the terminal: a frame as tall as the screen makes Ink clear and redraw (flicker)
    height: fixed.height ?? Math.max(1, (stdout.rows ?? 40) - 1),
  });
  const [size, setSize] = useState(read);
  useEffect(() => {
    if (fixed.width !== undefined && fixed.height !== undefined) return;
    const onResize = () => setSize(read());
    stdout.on("resize", onResize);
    return () => {
      stdout.off("resize", onResize);
    };
  }, [stdout, fixed.width, fixed.height]);
  return size;
}

export function Dashboard(props: DashboardProps) {
  const { source } = props;
  const { exit } = useApp();
  const { width, height } = useTerminalSize({ width: props.width, height: props.height });
  const [snapshot, setSnapshot] = useState<DashboardSnapshot>();
  const [fatal, setFatal] = useState<string>();
  const [nav, setNav] = useState<NavState>({ ...initialNav, view: props.initialView ?? "segments" });
  const [forecast, setForecast] = useState<ForecastView>();
  const [forecastLoading, setForecastLoading] = useState(false);
  const [plan, setPlan] = useState<PlanView>();
  const [planLoading, setPlanLoading] = useState(false);
  const [planError, setPlanError] = useState<string>();
  const mounted = useRef(true);
  useEffect(
    () => () => {
      mounted.current = false;
    },
    [],
  );

  // The refresh loop: one snapshot at a time, never overlapping.
  useEffect(() => {
    let busy = false;
    let stopped = false;
    const tick = async () => {
      if (busy || stopped) return;
      busy = true;
      try {
        const s = await source.snapshot();
        if (!stopped) {
          setSnapshot(s);
          setFatal(undefined);
        }
      } catch (err) {
        if (!stopped) setFatal(errorMessage(err));
      } finally {
        busy = false;
      }
    };
    void tick();
    const timer = setInterval(() => void tick(), Math.max(100, props.refreshMs));
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [source, props.refreshMs]);

  const model = useMemo(
    () => (snapshot ? frameModel(snapshot, nav, width, height) : undefined),
    [snapshot, nav, width, height],
  );

  // Forecast the focused target when it changes, and again every forecastEveryMs.
  const fKey = focusKey(model?.focus);
  const fEpoch = snapshot ? Math.floor(snapshot.takenAt / (props.forecastEveryMs ?? 30_000)) : 0;
  useEffect(() => {
    const focus = model?.focus;
    if (!focus) return;
    let cancelled = false;
    setForecastLoading(true);
    const timer = setTimeout(() => {
      source
        .forecast(focus)
        .then((f) => !cancelled && setForecast(f))
        .catch(
          (err) =>
            !cancelled &&
            setForecast({
              target: focus,
              intervalSeconds: 60,
              horizon: 0,
              intervalLevel: 0.8,
              zones: [],
              note: `forecast failed: ${errorMessage(err)}`,
            }),
        )
        .finally(() => !cancelled && setForecastLoading(false));
    }, 150);
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [source, fKey, fEpoch]);

  // The plan of the shard in focus, while the plan panel is open.
  const planShard = nav.right === "plan" ? model?.actionShard?.id : undefined;
  useEffect(() => {
    if (!planShard) return;
    let cancelled = false;
    setPlan(undefined);
    setPlanError(undefined);
    setPlanLoading(true);
    source
      .plan(planShard)
      .then((p) => !cancelled && setPlan(p))
      .catch((err) => !cancelled && setPlanError(errorMessage(err)))
      .finally(() => !cancelled && setPlanLoading(false));
    return () => {
      cancelled = true;
    };
  }, [source, planShard]);

  // Key handlers read the latest render's values through this ref: a handler
  // registered by an earlier render must not act on a stale snapshot or selection.
  const live = useRef({ model, nav, snapshot, width, height });
  live.current = { model, nav, snapshot, width, height };

  const update = (patch: Partial<NavState>) => setNav((n) => ({ ...n, ...patch }));
  const say = (text: string, error = false) => update({ message: { text, error } });

  const moveBy = (delta: number) => {
    const { model } = live.current;
    if (!model) return;
    const current = model.grid.offset + model.selectedRow;
    const next = Math.max(0, Math.min(model.grid.totalRows - 1, current + delta));
    update({ selected: next, pinnedSegment: undefined, message: undefined });
  };

  const find = (key: string) => {
    const { snapshot, model, nav, width, height } = live.current;
    if (!snapshot || !model) return;
    let segment: number;
    try {
      segment = source.segmentOf(key);
    } catch (err) {
      update({
        input: { kind: "none" },
        message: {
          text: `cannot find ${JSON.stringify(key.slice(0, 60))}: ${errorMessage(err)}`,
          error: true,
        },
      });
      return;
    }
    const shard = shardOfSegment(snapshot.shards, segment);
    const base = { input: { kind: "none" } as const, pinnedSegment: segment, right: "forecast" as const };
    const msg = {
      text: `key ${JSON.stringify(key.slice(0, 40))} → segment ${segment}${shard ? ` in ${shard.id} on ${shard.node}` : ""}`,
      error: false,
    };
    if (nav.view === "shards" && !nav.drilled) {
      const idx = shard ? snapshot.shards.indexOf(shard) : 0;
      setNav((n) => ({ ...n, ...base, selected: idx, message: msg }));
      return;
    }
    const drilled = nav.drilled && shard?.id === nav.drilled ? nav.drilled : undefined;
    const target = frameModel(snapshot, { ...nav, drilled, selected: 0 }, width, height);
    const row = rowOfSegment(target.grid, segment);
    setNav((n) => ({ ...n, ...base, drilled, selected: Math.max(0, row), message: msg }));
  };

  const startMigrate = () => {
    const { model, snapshot } = live.current;
    const shard = model?.actionShard;
    if (!shard || !snapshot) {
      say("nothing selected to migrate", true);
      return;
    }
    say(`asking the planner where ${shard.id} should go…`);
    source
      .plan(shard.id)
      .then((p) => {
        if (!mounted.current) return;
        let target = p.target;
        let why = "the planner's target";
        if (!target) {
          const other =
            snapshot.nodes.find((n) => n.id !== shard.node && n.health === "ok") ??
            snapshot.nodes.find((n) => n.id !== shard.node);
          target = other?.id;
          why = "the planner proposes no move; first other node";
        }
        if (!target) {
          say(`no other node to move ${shard.id} to`, true);
          return;
        }
        update({
          input: { kind: "confirm", shard: shard.id, source: shard.node, target, why },
          message: undefined,
        });
      })
      .catch((err) => mounted.current && say(`planning failed: ${errorMessage(err)}`, true));
  };

  useInput((input, key) => {
    const { model, nav } = live.current;
    const mode = nav.input;
    if (mode.kind === "find") {
      if (key.escape) update({ input: { kind: "none" }, message: undefined });
      else if (key.return) find(mode.text);
      else if (key.backspace || key.delete)
        update({ input: { kind: "find", text: Array.from(mode.text).slice(0, -1).join("") } });
      else if (!key.ctrl && !key.meta && input && isPrintable(input)) {
        update({ input: { kind: "find", text: (mode.text + input).slice(0, MAX_FIND_LENGTH) } });
      }
      return;
    }
    if (mode.kind === "confirm") {
      if (input === "y" || input === "Y") {
        update({
          input: { kind: "none" },
          message: { text: `migrating ${mode.shard} to ${mode.target}…`, error: false },
        });
        source
          .migrate(mode.shard, mode.target)
          .then((r) => mounted.current && say(r.message, !r.ok))
          .catch((err) => mounted.current && say(`migration failed: ${errorMessage(err)}`, true));
      } else if (input === "n" || input === "N" || key.escape) {
        update({ input: { kind: "none" }, message: { text: `not migrating ${mode.shard}`, error: false } });
      }
      return;
    }
    const page = Math.max(1, (model?.grid.rows.length ?? 1) - 1);
    if (input === "q") exit();
    else if (key.downArrow || input === "j") moveBy(1);
    else if (key.upArrow || input === "k") moveBy(-1);
    else if (key.rightArrow || input === "l" || key.pageDown) moveBy(page);
    else if (key.leftArrow || input === "h" || key.pageUp) moveBy(-page);
    else if (key.return) {
      const shard = model?.actionShard;
      if (!shard) say("nothing to drill into", true);
      else if (nav.drilled === shard.id) say(`already in ${shard.id}; esc goes back`);
      else update({ drilled: shard.id, selected: -1, pinnedSegment: undefined, message: undefined });
    } else if (key.escape || key.backspace || key.delete) {
      if (nav.right === "plan") update({ right: "forecast", message: undefined });
      else if (nav.drilled)
        update({ drilled: undefined, selected: -1, pinnedSegment: undefined, message: undefined });
      else update({ message: undefined, pinnedSegment: undefined });
    } else if (input === "t") {
      update({
        view: nav.view === "segments" ? "shards" : "segments",
        drilled: undefined,
        selected: -1,
        pinnedSegment: undefined,
        message: undefined,
      });
    } else if (input === "p")
      update({ right: nav.right === "plan" ? "forecast" : "plan", message: undefined });
    else if (input === "m") startMigrate();
    else if (input === "/") update({ input: { kind: "find", text: "" }, message: undefined });
  });

  return (
    <Frame
      width={width}
      height={height}
      snapshot={snapshot}
      model={model}
      view={nav.view}
      right={nav.right}
      forecast={forecast && focusKey(forecast.target) === fKey ? forecast : undefined}
      forecastLoading={forecastLoading}
      plan={plan && plan.shard === planShard ? plan : undefined}
      planLoading={planLoading}
      planError={planError}
      input={nav.input}
      message={nav.message}
      fatal={fatal}
      colour={props.colour}
      hotRate={props.hotRate}
      refreshSeconds={props.refreshMs / 1000}
    />
  );
}
