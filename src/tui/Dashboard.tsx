/**
 * The dashboard's one container: it owns the state (snapshot, navigation,
 * forecast, plan, prompts), the effects (the refresh loop, forecasting,
 * planning, migrating) and the key bindings. Everything it draws is the
 * stateless <Frame>.
 *
 * `m` moves the selected shard to the target the planner proposes, after a
 * y/n confirmation, through the `onMigrate` callback the command gives it
 * (it runs the same coordinator as `shardctl migrate`); progress and the
 * result go to the status line. One migration at a time.
 */
import { useApp, useInput, useStdout } from "ink";
import { useEffect, useMemo, useRef, useState } from "react";
import { errorMessage } from "../errors.js";
import { Frame } from "./components/Frame.js";
import { rowOfSegment } from "./heat.js";
import type {
  DashboardSnapshot,
  DashboardSource,
  ForecastView,
  MigrateProgress,
  OnMigrate,
  PlanView,
} from "./source.js";
import { formatBytesShort } from "./format.js";
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
  /** Runs a confirmed migration; without it `m` says why it cannot migrate here. */
  onMigrate?: OnMigrate;
  /** Why there is no onMigrate, for `m` to say (e.g. no agent token). */
  migrateUnavailable?: string;
}

/** Progress lines on the status line at most this often. */
const PROGRESS_EVERY_MS = 250;

function progressText(shard: string, target: string, p: MigrateProgress): string {
  const total = p.bytesTotal ? `/${formatBytesShort(p.bytesTotal)}` : "";
  return `migrating ${shard} → ${target}: ${p.phase}, ${formatBytesShort(p.bytes)}${total} copied, lag ${p.lag} entries`;
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
  /** The migration running now, if any (one at a time), and whether q was pressed once during it. */
  const migrating = useRef<{ shard: string; target: string }>(undefined);
  /** The shard `m` is asking the planner about (one question at a time: each answer asks y/n). */
  const asking = useRef<string>(undefined);
  const quitArmed = useRef(false);
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
    const { model, snapshot } = live.current;
    if (!model || !snapshot) return;
    const current = model.grid.offset + model.selectedRow;
    const next = Math.max(0, Math.min(model.grid.totalRows - 1, current + delta));
    // in the shards view the rows are the map's shards in order, and the selection is the shard, not
    // the row number: a split or merge renumbers the rows
    const selectedShard =
      model.grid.view === "shards" && !model.drilledShard ? snapshot.shards[next]?.id : undefined;
    update({ selected: next, selectedShard, pinnedSegment: undefined, message: undefined });
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
      setNav((n) => ({ ...n, ...base, selected: idx, selectedShard: shard?.id, message: msg }));
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
    if (migrating.current) {
      say(
        `a migration is running (${migrating.current.shard} → ${migrating.current.target}); one at a time`,
        true,
      );
      return;
    }
    if (!props.onMigrate) {
      say(
        `cannot migrate from here: ${props.migrateUnavailable ?? "this dashboard was started without a migration coordinator"}; nothing was changed`,
        true,
      );
      return;
    }
    if (asking.current) {
      say(`still asking the planner where ${asking.current} should go`, true);
      return;
    }
    asking.current = shard.id;
    say(`asking the planner where ${shard.id} should go…`);
    source
      .plan(shard.id)
      .finally(() => {
        asking.current = undefined;
      })
      .then((p) => {
        if (!mounted.current) return;
        if (!p.target) {
          const reason = p.lines.find((l) => l.startsWith("reason: "))?.slice("reason: ".length);
          say(
            `the planner proposes no move for ${shard.id}${reason ? ` (${reason})` : ""}: nothing to migrate; to move it anyway: shardctl migrate --shard ${shard.id} --to NODE --apply`,
            true,
          );
          return;
        }
        if (p.target === shard.node) {
          say(`${shard.id} is already on ${p.target}`, true);
          return;
        }
        update({
          input: {
            kind: "confirm",
            shard: shard.id,
            source: shard.node,
            target: p.target,
            why: `the planner's target, map v${p.mapVersion}`,
            planVersion: p.mapVersion,
          },
          message: undefined,
        });
      })
      .catch((err) => mounted.current && say(`planning failed: ${errorMessage(err)}`, true));
  };

  const runMigration = (shard: string, target: string, planVersion?: number) => {
    const onMigrate = props.onMigrate;
    if (!onMigrate || migrating.current) return;
    migrating.current = { shard, target };
    let lastProgress = 0;
    say(`migrating ${shard} → ${target}…`);
    const report = {
      progress: (p: MigrateProgress) => {
        const now = Date.now();
        if (!mounted.current || now - lastProgress < PROGRESS_EVERY_MS) return;
        lastProgress = now;
        say(progressText(shard, target, p));
      },
      log: (line: string) => {
        if (mounted.current) say(`${shard} → ${target}: ${line}`);
      },
    };
    let call: Promise<{ ok: boolean; message: string }>;
    try {
      call = onMigrate(
        shard,
        target,
        report,
        planVersion === undefined ? undefined : { mapVersion: planVersion },
      );
    } catch (err) {
      call = Promise.reject(err);
    }
    call
      .then((r) => mounted.current && say(r.message, !r.ok))
      .catch(
        (err) =>
          mounted.current && say(`migration of ${shard} to ${target} failed: ${errorMessage(err)}`, true),
      )
      .finally(() => {
        migrating.current = undefined;
        quitArmed.current = false;
      });
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
        update({ input: { kind: "none" } });
        runMigration(mode.shard, mode.target, mode.planVersion);
      } else if (input === "n" || input === "N" || key.escape) {
        update({ input: { kind: "none" }, message: { text: `not migrating ${mode.shard}`, error: false } });
      }
      return;
    }
    const page = Math.max(1, (model?.grid.rows.length ?? 1) - 1);
    if (input === "q" && migrating.current && !quitArmed.current) {
      // quitting mid-migration leaves it to recovery: say so once
      quitArmed.current = true;
      say(
        `${migrating.current.shard} is still migrating; q again quits anyway (its journal record lets recovery finish or roll it back)`,
        true,
      );
    } else if (input === "q") exit();
    else if (key.downArrow || input === "j") moveBy(1);
    else if (key.upArrow || input === "k") moveBy(-1);
    else if (key.rightArrow || input === "l" || key.pageDown) moveBy(page);
    else if (key.leftArrow || input === "h" || key.pageUp) moveBy(-page);
    else if (key.return) {
      const shard = model?.actionShard;
      if (!shard) say("nothing to drill into", true);
      else if (nav.drilled === shard.id) say(`already in ${shard.id}; esc goes back`);
      else
        update({
          drilled: shard.id,
          selected: -1,
          selectedShard: undefined,
          pinnedSegment: undefined,
          message: undefined,
        });
    } else if (key.escape || key.backspace || key.delete) {
      if (nav.right === "plan") update({ right: "forecast", message: undefined });
      else if (nav.drilled)
        update({
          drilled: undefined,
          selected: -1,
          selectedShard: undefined,
          pinnedSegment: undefined,
          message: undefined,
        });
      else update({ message: undefined, pinnedSegment: undefined });
    } else if (input === "t") {
      update({
        view: nav.view === "segments" ? "shards" : "segments",
        drilled: undefined,
        selected: -1,
        selectedShard: undefined,
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
      reservedRows={props.height === undefined ? 1 : 0}
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
