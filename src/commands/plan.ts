/**
 * `shardctl plan --key K` / `shardctl plan --all --out plan.json` /
 * `shardctl plan --verify plan.json`: the PME's plan_migration, read-only.
 *
 * Inputs come through a PlacementSource: the map from the configured
 * store, access windows from the agents (or `<dataDir>/access-windows.bin`),
 * and the latency: a matrix file (`--latency`), else the round trips the
 * agents measure (src/cluster/rtt.ts) over the default matrix.
 */
import type { Command } from "commander";
import { existsSync } from "node:fs";
import type { Config } from "../config.js";
import type { AccessWindows } from "../engine/access-windows.js";
import { defaultZoneMatrix, LatencyModel, type MeasuredLatency, type ZoneMatrix } from "../engine/latency.js";
import type { VersionedMap } from "../engine/location-map.js";
import type { MoveBackoffEntry } from "../engine/move-backoff.js";
import { parsePlanFile, planChecksum, serialisePlanFile } from "../engine/plan-file.js";
import { checkPlanSteps } from "../engine/plan-check.js";
import {
  checkPlanFresh,
  DEFAULT_PLANNER_OPTIONS,
  MigrationPlanner,
  type MigrationPlan,
  type PlanInputs,
  type SegmentDemand,
} from "../engine/planner.js";
import { systemClock, type Clock } from "../engine/ports.js";
import { RoutingTable, expandRanges, mapDigest } from "../engine/location-map.js";
import { errorMessage, PreconditionError, UsageError } from "../errors.js";
import {
  chooseShareSeason,
  groupCounts,
  shareGroupsSteps,
  completeNewest,
  elapsedFraction,
  INTERVAL_Z,
  hotSeries,
  ModelSelectionCache,
  predictAccessPatternSteps,
} from "../forecast/index.js";
import { formatBytes, formatNumber, printJson, printTable, type IO } from "../output.js";
import { openStore } from "../store/index.js";
import { windowsPath } from "../store/windows-file.js";
import { collectWindows, type CollectedWindows } from "../cluster/windows-source.js";
import { latencyNote, measureClusterRtts, type MeasuredRtts } from "../cluster/rtt.js";
import { checkOutputPath, writeOutputFile } from "../store/embedded.js";
import { runAtOnce, runInSlices } from "../slices.js";
import { parsePositiveInt, readInputText, segmenterFor } from "./common.js";
import type { CommandContext, RegisterCommand } from "./context.js";
import { chooseLevel } from "./predict.js";
import { readZoneMatrix } from "./simulate.js";

/** Bytes assumed per segment with recorded access until agents report shard sizes. */
export const ASSUMED_SEGMENT_BYTES = 64 * 1024 * 1024;

/** Where the planner's inputs come from; the agent transport replaces the file-based one later. */
export interface PlacementSource {
  /** The map, read consistently (it is the version the plan is computed against). */
  loadMap(): Promise<VersionedMap>;
  /** Access windows, or undefined when none were recorded. */
  accessWindows(): AccessWindows | undefined;
  /** The zone RTT matrix and a note saying where it came from (and whether measurements override it). */
  latencyMatrix(zones: readonly string[]): { matrix: ZoneMatrix; note: string };
  /** Round trips the agents measured, laid over the matrix; undefined when none (or a matrix file rules). */
  measuredLatency?(): MeasuredLatency | undefined;
  segmentBytes(segment: number): number;
  /** Notes about inputs that were assumed rather than measured. */
  notes(): string[];
  close(): Promise<void>;
}

/**
 * The source of a CLI run: the configured store, the access windows from the
 * agents that serve the map (or `<dataDir>/access-windows.bin` when no agents
 * do), and `--latency FILE`, else the round trips the agents measure now.
 */
export async function fileSource(
  config: Config,
  latencyFile?: string,
  opts: { measureRtts?: boolean } = {},
): Promise<PlacementSource> {
  const store = await openStore(config);
  let collected: CollectedWindows | undefined;
  let measured: MeasuredRtts | undefined;
  let measureProblem: string | undefined;
  return {
    async loadMap() {
      const vm = await store.load({ consistent: true });
      if (!vm) {
        throw new PreconditionError("the location store holds no layout yet", {
          hint: "create one with `shardctl init` (or `shardctl up --local`)",
        });
      }
      collected = await collectWindows(config, vm);
      const agents = vm.map.nodes.filter((n) => n.address !== "").length;
      if (!latencyFile && opts.measureRtts !== false && agents >= 2) {
        try {
          measured = await measureClusterRtts(config, vm.map);
        } catch (err) {
          measureProblem = errorMessage(err);
        }
      }
      return vm;
    },
    accessWindows() {
      if (!collected) return undefined;
      if (collected.source === "file" && !existsSync(windowsPath(config.dataDir))) return undefined;
      return collected.windows;
    },
    latencyMatrix(zones) {
      if (latencyFile)
        return { matrix: readZoneMatrix(latencyFile), note: `latency: matrix from ${latencyFile}` };
      return {
        matrix: defaultZoneMatrix(zones),
        note: measured?.measuredCells
          ? latencyNote(measured, "assumed: 1 ms within a zone, 50 ms between zones")
          : latencyNote(
              measured,
              "no --latency matrix given and no round trips measured by the agents; assumed 1 ms within a zone and 50 ms between zones",
              measureProblem,
            ),
      };
    },
    measuredLatency: () => (latencyFile || !measured?.measuredCells ? undefined : measured),
    segmentBytes: () => ASSUMED_SEGMENT_BYTES,
    notes: () => {
      const access =
        collected?.source === "agents"
          ? `access: windows from the agents${collected.unreachable.length ? `; none from ${collected.unreachable.map((u) => u.node).join(", ")}` : ""}`
          : existsSync(windowsPath(config.dataDir))
            ? `access: windows from ${windowsPath(config.dataDir)}`
            : `access: no agents and no ${windowsPath(config.dataDir)}; nothing recorded, so nothing to plan`;
      return [`sizes: not measured yet; assumed ${formatBytes(ASSUMED_SEGMENT_BYTES)} per segment`, access];
    },
    close: () => store.close(),
  };
}

export interface PlanOptions {
  key?: string;
  all: boolean;
  /** Planning horizon in seconds. */
  horizonSeconds?: number;
  /** Moves backing off after failures (the autopilot's): not proposed until each one's end. */
  avoid?: readonly MoveBackoffEntry[];
}

/**
 * Demand per segment from the access windows: the forecast of the next
 * horizon per zone (demandFromZoneSeries) from each segment's series at the
 * level predict uses (a minute by default); the horizon is cut to a third of
 * that level's span, and the result says so. A step at a time (runInSlices):
 * thousands of segments take seconds.
 */
export function demandFromWindows(
  windows: AccessWindows,
  segments: Iterable<number>,
  zones: readonly string[],
  horizonSeconds: number,
  nowMs: number,
): Demand {
  return runAtOnce(demandFromWindowsSteps(windows, segments, zones, horizonSeconds, nowMs));
}

/** demandFromWindows a step at a time. */
export function* demandFromWindowsSteps(
  windows: AccessWindows,
  segments: Iterable<number>,
  zones: readonly string[],
  horizonSeconds: number,
  nowMs: number,
): Generator<void, Demand, void> {
  const level = chooseLevel(windows);
  for (const z of windows.zones) {
    if (!zones.includes(z)) {
      throw new UsageError(`access was recorded from zone ${z}, which the latency matrix does not list`, {
        hint: `give a matrix whose zones include ${windows.zones.join(", ")}`,
      });
    }
  }
  const { resolutionSeconds, slots } = windows.levels[level];
  // the newest interval is still running: forecast from its expected whole count (completeNewest)
  const elapsed = elapsedFraction(nowMs, resolutionSeconds);
  const series: SegmentZoneSeries[] = [];
  let visited = 0;
  for (const segment of segments) {
    const perZone: Record<string, Float64Array> = {};
    let volume = 0;
    for (const z of windows.zones) {
      perZone[z] = completeNewest(windows.series(segment, level, nowMs, z), elapsed);
      for (const x of perZone[z]) volume += x;
    }
    if (++visited % 64 === 0) yield;
    if (volume === 0) continue; // nothing to forecast: its writes and totals are not read
    series.push({
      segment,
      perZone,
      writes: completeNewest(windows.series(segment, level, nowMs, "writes"), elapsed),
      totals: completeNewest(windows.series(segment, level, nowMs, "total"), elapsed),
    });
  }
  return yield* demandSteps(series, zones, resolutionSeconds, horizonSeconds, slots);
}

/** One segment's access counts per interval (oldest first), as the windows or an agent give them. */
export interface SegmentZoneSeries {
  segment: number;
  /** Accesses per origin zone. */
  perZone: Record<string, Float64Array>;
  /** Writes and all accesses (for the write fraction); without them it is taken as 0. */
  writes?: Float64Array;
  totals?: Float64Array;
}

/** Each accessed segment's demand, what the forecast was (for the plan's notes), and its horizon. */
export interface Demand {
  demand: SegmentDemand[];
  note: string;
  horizonSeconds: number;
}

/**
 * Demand per segment from its per-zone series: the forecast of the next
 * horizon per zone — top-down (src/forecast's predictAccessPattern with
 * `shares`: the segment's total forecast, split by the zones' share profile
 * over the season that chooseShareSeason picks on the busiest segments), with
 * the shares' standard error as the uncertainty — against the baseline of the
 * equally long span before the latest one. `shardctl plan` and the
 * dashboard's plan preview both build their demand here. The horizon is
 * `horizonSeconds` in intervals, at most a third of `maxPoints` (default: the
 * series' length), at least one. Each total's model is chosen by full
 * backtests for the FULL_SELECTION_SEGMENTS busiest segments, by the cheap
 * tier for the others (the note says so).
 */
export function demandFromZoneSeries(
  series: readonly SegmentZoneSeries[],
  zones: readonly string[],
  resolutionSeconds: number,
  horizonSeconds: number,
  maxPoints?: number,
): Demand {
  return runAtOnce(demandSteps(series, zones, resolutionSeconds, horizonSeconds, maxPoints));
}

/** A count as the forecasts read it: NaN, negative and infinite ones count as none. */
const count = (x: number): number => (x > 0 && x < Infinity ? x : 0);

/** Segments whose counts demandSteps reads between two turns of the event loop. */
const SETUP_CHUNK = 1024;

/**
 * demandFromZoneSeries a step at a time: yields every SETUP_CHUNK segments while it reads their
 * counts, after choosing the share season and the busiest segments, after each model's fit at
 * each backtest origin of a full selection, and after each segment's forecast. The
 * `fullSelection` busiest segments get full model selection (the benchmark's baseline gives all).
 */
export function* demandSteps(
  series: readonly SegmentZoneSeries[],
  zones: readonly string[],
  resolutionSeconds: number,
  horizonSeconds: number,
  maxPoints?: number,
  fullSelection = FULL_SELECTION_SEGMENTS,
): Generator<void, Demand, void> {
  let points = maxPoints ?? 0;
  if (maxPoints === undefined)
    for (const s of series) for (const v of Object.values(s.perZone)) points = Math.max(points, v.length);
  const asked = Math.max(1, Math.round(horizonSeconds / resolutionSeconds));
  const h = Math.max(1, Math.min(Math.floor(points / 3), asked));
  // one pass over every segment's counts: O(segments × points), so with turns between chunks
  const accessed: { s: SegmentZoneSeries; volume: number; total: Float64Array }[] = [];
  let scratch = new Float64Array(0);
  for (let k = 0; k < series.length; k++) {
    const s = series[k];
    // the zones' sum into a reused array, kept (copied) only for a segment that was accessed
    const zs = Object.values(s.perZone);
    const n = zs[0]?.length ?? 0;
    if (scratch.length < n) scratch = new Float64Array(n);
    const total = scratch.subarray(0, n);
    total.fill(0);
    for (const z of zs) for (let i = 0; i < n; i++) total[i] += count(z[i]);
    let volume = 0;
    for (let i = 0; i < n; i++) volume += total[i];
    if (volume > 0) accessed.push({ s, volume, total: total.slice() });
    if (k % SETUP_CHUNK === SETUP_CHUNK - 1) yield;
  }
  const seriesZones = [...new Set(series.flatMap((s) => Object.keys(s.perZone)))];
  // The segments whose every zone's series spans the windows' whole length (a zone without one
  // counts as no access): the share season is chosen on the busiest of them, and they are compared
  // for share groups. A segment with a shorter series is forecast alone.
  const comparable: number[] = [];
  accessed.forEach(({ s }, i) => {
    if (Object.values(s.perZone).every((z) => z.length === points)) comparable.push(i);
  });
  const zoneSeries = comparable.map((i) =>
    seriesZones.map((z) => accessed[i].s.perZone[z] ?? new Float64Array(points)),
  );
  const busiest = comparable
    .map((i, k) => ({ k, volume: accessed[i].volume }))
    .sort((a, b) => b.volume - a.volume)
    .slice(0, SHARE_SEASON_SEGMENTS);
  const { season } = chooseShareSeason(
    busiest.map(({ k }) => zoneSeries[k]),
    resolutionSeconds,
    { horizon: h, priorSpan: h },
  );
  // full model selection for the busiest segments only (~35 ms each), the cheap tier for the rest
  const full = hotSeries(
    accessed.map((a) => a.total),
    1,
    fullSelection,
  );
  // segments whose zone counts cannot be told apart pool them for their share profiles
  const groups = yield* shareGroupsSteps(zoneSeries, { block: 2 * h });
  const rankOf = new Map(comparable.map((i, k) => [i, k]));
  const pooledOf = new Map<number, Float64Array[]>();
  const pooledShares = (i: number): Record<string, Float64Array> | undefined => {
    const k = rankOf.get(i);
    if (k === undefined) return undefined;
    const g = groups.groupOf[k];
    if (groups.members[g].length === 1) return undefined;
    const sums = pooledOf.get(g) ?? groupCounts(zoneSeries, groups.members[g]);
    pooledOf.set(g, sums);
    return Object.fromEntries(
      Object.keys(accessed[i].s.perZone).map((z) => [z, sums[seriesZones.indexOf(z)]]),
    );
  };
  const cache = new ModelSelectionCache();
  const demand: SegmentDemand[] = [];
  yield; // the share season and the busiest segments are chosen: a turn before the first forecast
  for (const [i, { s }] of accessed.entries()) {
    const { segment, perZone } = s;
    // full selection yields after each model's fit at each origin: the loop's turns come ms apart
    const f = yield* predictAccessPatternSteps(perZone, {
      intervalSeconds: resolutionSeconds,
      horizon: h,
      cache,
      cacheKey: String(segment),
      shares: { season, priorSpan: h, pooled: pooledShares(i) },
      selection: full.has(i) ? "full" : "cheap",
    });
    const predicted: number[] = [];
    const recent: number[] = [];
    const sd: number[] = [];
    const next: number[] = [];
    for (const z of zones) {
      const fz = f.zones[z];
      const zs = perZone[z];
      if (!fz || !zs) {
        predicted.push(0);
        recent.push(0);
        sd.push(0);
        next.push(0);
        continue;
      }
      let p = 0;
      let v = 0;
      for (let i = 0; i < h; i++) {
        p += fz.mean[i];
        // the steps share one share profile, so their errors add up (correlated), not in quadrature
        const half = (fz.upper[i] - fz.lower[i]) / (2 * INTERVAL_Z);
        v += Number.isFinite(half) ? half : 0;
      }
      let r = 0;
      for (let i = Math.max(0, zs.length - 2 * h); i < zs.length - h; i++) r += count(zs[i]);
      predicted.push(p);
      recent.push(r);
      sd.push(v);
      next.push(fz.mean[0]);
    }
    let w = 0;
    let t = 0;
    if (s.writes && s.totals) {
      for (let i = Math.max(0, s.totals.length - h); i < s.totals.length; i++) {
        w += count(s.writes[i] ?? 0);
        t += count(s.totals[i]);
      }
    }
    demand.push({
      segment,
      predicted,
      recent,
      predictedSd: sd,
      predictedNext: next,
      writeFraction: t > 0 ? w / t : 0,
    });
    yield;
  }
  const shares =
    season >= 2
      ? `the zones' shares over a ${season}-interval season`
      : `the zones' shares over the last ${h} interval(s)`;
  const cut =
    h < asked
      ? `; the horizon asked for, ${horizonSeconds} s, is cut to ${h * resolutionSeconds} s: a forecast reaches at most a third of the ${points} intervals the windows keep`
      : h * resolutionSeconds !== horizonSeconds
        ? `; the horizon asked for, ${horizonSeconds} s, is rounded to ${h * resolutionSeconds} s: a whole number (at least one) of the windows' ${resolutionSeconds}-s intervals`
        : "";
  const pooling = groups.members.filter((m) => m.length > 1);
  const grouped =
    pooling.length > 0
      ? `; ${pooling.reduce((n, m) => n + m.length, 0)} segment(s) in ${pooling.length} group(s) whose zone counts follow one pattern pool them for their shares`
      : "";
  const cheap = accessed.length - full.size;
  const tiers =
    cheap > 0
      ? `; models chosen by full backtests for the ${full.size} busiest segment(s), by the cheap tier (seasonal naive or fixed Holt-Winters) for the other ${cheap}`
      : "";
  return {
    demand,
    note: `forecast: ${h} × ${resolutionSeconds} s ahead from the access windows (each segment's total, split by ${shares}), against the ${h} intervals before the latest ${h}${cut}${grouped}${tiers}`,
    horizonSeconds: h * resolutionSeconds,
  };
}

/** Segments the share season is chosen on (the busiest), to bound its cost on large clusters. */
const SHARE_SEASON_SEGMENTS = 256;
/**
 * Segments whose total gets full model selection (the busiest; the others the cheap tier): about
 * 35 ms each, so a plan over thousands of active segments takes seconds, not minutes.
 */
export const FULL_SELECTION_SEGMENTS = 50;

/** Builds the planner's inputs and runs planMigration or planAll. */
export async function runPlan(
  opts: PlanOptions,
  deps: { config: Config; source: PlacementSource; clock?: Clock },
): Promise<MigrationPlan> {
  if (!!opts.key === opts.all) throw new UsageError("give exactly one of --key K or --all");
  const clock = deps.clock ?? systemClock;
  const vm = await deps.source.loadMap();
  const now = clock.now();
  const horizonSeconds = opts.horizonSeconds ?? DEFAULT_PLANNER_OPTIONS.horizonSeconds;
  const zones = [...new Set([...deps.config.zones, ...vm.map.nodes.map((n) => n.zone)])];
  const { matrix, note } = deps.source.latencyMatrix(zones);
  const base = LatencyModel.fromZoneMatrix(
    matrix,
    vm.map.nodes.map((n) => ({ id: n.id, zone: n.zone })),
  );
  const measured = deps.source.measuredLatency?.();
  const latency = measured ? LatencyModel.fromMeasurements(base, measured) : base;
  const windows = deps.source.accessWindows();
  const notes = [note, ...deps.source.notes()];
  let segments: Iterable<number> = [];
  if (windows) {
    if (opts.key) {
      const segment = segmenterFor(deps.config).segmentOf(opts.key);
      const shard = new RoutingTable(vm).shardOf(segment);
      segments = expandRanges(shard.ranges);
    } else segments = windows.activeSegments();
  }
  // (a step at a time: an autopilot's leader heartbeat and a dashboard keep running meanwhile)
  const forecast = windows
    ? await runInSlices(demandFromWindowsSteps(windows, segments, latency.zones, horizonSeconds, now))
    : { demand: [], note: "forecast: none (no access recorded)", horizonSeconds };
  const demand = forecast.demand;
  notes.push(forecast.note);
  const inputs: PlanInputs = {
    map: vm.map,
    mapVersion: vm.version,
    mapDigest: mapDigest(vm.map),
    latency,
    demand,
    segmentBytes: (s) => deps.source.segmentBytes(s),
    notes,
    avoid: opts.avoid,
  };
  const planner = new MigrationPlanner({
    inputs: { read: () => inputs },
    clock: { now: () => now },
    // the horizon the forecast reaches (the windows may hold less than the one asked for)
    options: { horizonSeconds: forecast.horizonSeconds },
  });
  return opts.key ? planner.planMigration(opts.key, deps.config.limits.maxKeyBytes) : planner.planAll();
}

/** Reads a plan file and checks it against the current map version. */
export async function runVerify(
  file: string,
  source: Pick<PlacementSource, "loadMap">,
): Promise<{ plan: MigrationPlan; version: number }> {
  // (nothing is applied here: the refusals say what is wrong, not that nothing was applied)
  const plan = parsePlanFile(readInputText(file, "the plan file"), `the plan file ${file}`, "");
  const vm = await source.loadMap();
  checkPlanFresh(plan, vm.version, vm.map);
  // what `migrate --apply` checks before its first step: a plan that passes here is applied whole
  checkPlanSteps(vm.map, plan.steps, "");
  return { plan, version: vm.version };
}

function zoneList(rec: Record<string, number>): string {
  return Object.entries(rec)
    .map(([z, v]) => `${z}=${formatNumber(v)}`)
    .join(" ");
}

export function printPlan(io: IO, plan: MigrationPlan): void {
  const zones = plan.inputs.latency.zones;
  const rtt = (zone: string, node: string | undefined) => {
    if (!node) return "-";
    const zi = zones.indexOf(zone);
    const ni = plan.inputs.latency.nodes.findIndex((n) => n.id === node);
    return zi < 0 || ni < 0 ? "-" : plan.inputs.latency.rttMs[zi][ni];
  };
  if (plan.scope.kind === "key") {
    const a = plan.assessments.find((x) => x.shard === (plan.scope as { shard: string }).shard);
    io.out.write(
      `key ${plan.scope.key} → segment ${plan.scope.segment}, shard ${plan.scope.shard}` +
        (a ? ` on ${a.node}` : "") +
        ` (map version ${plan.mapVersion}); horizon ${plan.inputs.horizonSeconds} s\n`,
    );
    if (a) {
      printTable(
        io,
        ["zone", "predicted", "baseline", `RTT now (${a.node}) ms`, `RTT at ${a.target ?? "target"} ms`],
        zones.map((z) => [
          z,
          a.predictedByZone[z] ?? 0,
          a.recentByZone[z] ?? 0,
          rtt(z, a.node),
          rtt(z, a.target),
        ]),
      );
      if (a.benefitMs !== undefined) {
        const c = a.costs!;
        printTable(
          io,
          [
            "mean ms now",
            "mean ms at target",
            "benefit ms",
            "copy",
            "pause",
            "load",
            "recent move",
            "risk",
            "net ms",
          ],
          [
            [
              a.currentMeanMs,
              a.targetMeanMs ?? 0,
              a.benefitMs,
              c.copyMs,
              c.pauseMs,
              c.loadMs,
              c.recentMoveMs,
              c.riskMs,
              a.netMs ?? 0,
            ],
          ],
        );
      }
    }
  } else {
    io.out.write(
      `plan for the whole cluster (map version ${plan.mapVersion}); horizon ${plan.inputs.horizonSeconds} s\n`,
    );
    if (plan.assessments.length) {
      printTable(
        io,
        ["shard", "node", "predicted", "mean ms now", "target", "mean ms there", "net ms", "decision"],
        plan.assessments.map((a) => [
          a.shard,
          a.node,
          zoneList(a.predictedByZone),
          a.currentMeanMs,
          a.target ?? "-",
          a.targetMeanMs ?? "-",
          a.netMs ?? "-",
          a.decision,
        ]),
      );
    }
  }
  for (const s of plan.steps) {
    if (s.kind === "split")
      io.out.write(
        `step: split segment ${s.segment} out of ${s.shard} onto new shard ${s.newShard} (on ${s.node})\n`,
      );
    else
      io.out.write(
        `step: move ${s.shard} ${s.source} → ${s.target} (${formatBytes(s.bytes)}, copy ${formatNumber(s.copySeconds)} s, net ${formatNumber(s.netMs)} ms)\n`,
      );
  }
  if (plan.scope.kind === "key") {
    const a = plan.assessments[0];
    if (a && plan.steps.length === 0) io.out.write(`nothing should move: ${a.reason}\n`);
    else if (a) io.out.write(`why: ${a.reason}\n`);
    else io.out.write(`${plan.summary}\n`);
  } else io.out.write(`${plan.summary}\n`);
}

export const registerPlan: RegisterCommand = (program: Command, ctx: CommandContext) => {
  const cmd = program
    .command("plan")
    .description("plan migrations by predicted access and latency (plan_migration); read-only")
    .option("-k, --key <key>", "plan for the shard holding this key")
    .option("--all", "plan for the whole cluster", false)
    .option("-o, --out <file>", "with --all: write the plan file (checksummed JSON)")
    .option(
      "--horizon <seconds>",
      `how far ahead to weigh predicted access (default ${DEFAULT_PLANNER_OPTIONS.horizonSeconds}; rounded to whole intervals of the access windows, at most a third of their span: a horizon rounded or cut gets a note)`,
    )
    .option(
      "-l, --latency <file>",
      'RTT matrix: JSON {"zones": [...], "rtt_ms": [[...], ...]} (default: what the agents measure, else 1 ms within, 50 ms between zones)',
    )
    .option(
      "--verify <file>",
      "check a plan file: intact (checksum), computed against the current map (its version and digest: this cluster's), and every step applicable to it (what migrate --apply checks first)",
    )
    .option("--json", "print the plan as JSON", false)
    .addHelpText("after", PLAN_HELP)
    .action(
      async (o: {
        key?: string;
        all: boolean;
        out?: string;
        horizon?: string;
        latency?: string;
        verify?: string;
        json: boolean;
      }) => {
        const config = ctx.config();
        if (o.verify) {
          if (o.key || o.all || o.out) throw new UsageError("--verify takes no other plan options");
          const source = await fileSource(config, o.latency, { measureRtts: false });
          try {
            const { plan, version } = await runVerify(o.verify, source);
            if (o.json)
              printJson(ctx.io, {
                ok: true,
                mapVersion: version,
                checksum: planChecksum(plan),
                steps: plan.steps.length,
              });
            else
              ctx.io.out.write(
                `${o.verify}: intact, computed against the current map version ${version}; ${plan.steps.length} step(s)\n`,
              );
          } finally {
            await source.close();
          }
          return;
        }
        if (o.out && !o.all) throw new UsageError("--out writes a whole-cluster plan: use it with --all");
        // a bad --out path is refused before planning, not after the plan is computed
        if (o.out) checkOutputPath(o.out);
        const horizonSeconds = o.horizon === undefined ? undefined : parsePositiveInt(o.horizon, "--horizon");
        const source = await fileSource(config, o.latency);
        let plan: MigrationPlan;
        try {
          plan = await runPlan({ key: o.key, all: o.all, horizonSeconds }, { config, source });
        } finally {
          await source.close();
        }
        for (const n of plan.inputs.notes) ctx.io.err.write(`note: ${n}\n`);
        if (o.out) {
          writeOutputFile(o.out, serialisePlanFile(plan));
          ctx.io.err.write(
            `wrote ${o.out}: ${plan.steps.length} step(s), checksum ${planChecksum(JSON.parse(JSON.stringify(plan)))}\n`,
          );
        }
        if (o.json) printJson(ctx.io, plan);
        else printPlan(ctx.io, plan);
      },
    );
  cmd.exitOverride();
};

const PLAN_HELP = `
For each shard with recorded access, the planner forecasts the access per
origin zone over the horizon: each segment's total access, split over the
zones by where its accesses came from at the same time of earlier seasons
(days, when the windows hold them; else the recent shares), counting the
accesses of every segment whose zone counts follow the same pattern (a χ²
test: a sparse segment's shares then rest on its group's). It then looks for
a reason to move: access from a zone far from the shard's node is predicted
to rise, or the node is short of resources. For such a shard it costs every
other node: the latency saved (predicted accesses x RTT difference) against
the copy time at the measured bandwidth, the write pause, the target's load,
a recent move (cooldown: never back and forth) and the uncertainty of the
zones' shares. Moves are ranked by net benefit under a budget of concurrent
migrations and bytes in flight. A plan records the map version it was
computed against and a digest of that map; applying it to a newer map is
refused (exit 3), and so is applying it to another cluster's map that happens
to be at the same version (a plan file made with another --data-dir, --store
or Consul address).

Inputs today: the map from the store, access windows from
the agents (or <dataDir>/access-windows.bin, \`shardctl record\`), the latency:
the matrix from --latency if given, else the round trips the agents measure
at plan time (\`shardctl rtt\` shows them) over 1 ms / 50 ms for what no
agent measured, as the output notes say; sizes assumed until agents report them.

Examples:
  $ shardctl plan --key user:42
  $ shardctl plan --key user:42 --latency rtt.json --horizon 1800 --json
  $ shardctl plan --all --out plan.json
  $ shardctl plan --verify plan.json`;
