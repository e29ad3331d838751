/**
 * LiveSource: the dashboard's data from the location store and the node
 * agents (docs/AGENT.md), falling back to the embedded access windows
 * (<dataDir>/access-windows.bin) when no agent answers.
 *
 * Agent endpoints read:
 *   GET /v1/node                       zone, shard count, CPU/memory/disk
 *   GET /v1/access?window=S            per active segment: reads/writes/total per second
 *   GET /v1/access/:seg/series?level=L&which=<zone>   counts per slot, oldest first
 *
 * Heat from agents: every snapshot adds one column (the rate over the last
 * max(5 s, refresh) seconds, sampled at each refresh), up to `historyColumns`;
 * the history therefore builds up while the dashboard runs. The first column
 * is the rate over the last two minutes (the agents' minute level), so that
 * `--once` and the first frame show what just happened, not only the last 5 s. Heat from the
 * embedded windows: the minute level's slots (60 × 60 s by default).
 *
 * A node that does not answer is marked unreachable with the transport
 * error, and its segments show no access; the snapshot never fails for it.
 *
 * Round trips: `/v1/node` carries each agent's last probe results (`rtt`,
 * src/agent/probe.ts); they are aggregated per (zone, node) like the
 * planner's (src/cluster/rtt.ts) and shown instead of the zone matrix where
 * measured. When the newest measurement is older than `probeEverySeconds`,
 * the source asks the agents to measure again, in the background (the next
 * snapshots show the result). `--once` does not probe: it shows what the
 * agents last measured.
 *
 * Migrations: the journal in the location store (`listMigrations`), read at
 * every snapshot: records in a non-terminal phase are in flight, ended ones
 * are the recent history.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { AgentRpc } from "../cluster/agent-rpc.js";
import { resolveClientToken } from "../cluster/local.js";
import {
  aggregateRtts,
  latencyNote,
  measureRtts,
  parsePeerResults,
  type OriginReport,
} from "../cluster/rtt.js";
import type { Config } from "../config.js";
import { AccessWindows } from "../engine/access-windows.js";
import { defaultZoneMatrix, LatencyModel, type MeasuredLatency } from "../engine/latency.js";
import {
  checkSegmentCount,
  RoutingTable,
  type LocationMap,
  type ShardInfo,
  type VersionedMap,
} from "../engine/location-map.js";
import { computePlan, DEFAULT_PLANNER_OPTIONS } from "../engine/planner.js";
import { formatSpan } from "./format.js";
import { isTerminal, pendingRecovery, type MigrationRecord } from "../engine/migration.js";
import type { LocationStore } from "../engine/ports.js";
import { Segmenter } from "../engine/segmenter.js";
import { errorMessage, PreconditionError, UsageError } from "../errors.js";
import {
  completeNewest,
  completeNewestEach,
  elapsedFraction,
  predictAccessPatternSteps,
} from "../forecast/index.js";
import { demandSteps, type SegmentZoneSeries } from "../commands/plan.js";
import { runInSlices } from "../slices.js";
import { windowsPath } from "../store/windows-file.js";
import {
  type DashboardSnapshot,
  type DashboardSource,
  type FocusTarget,
  type ForecastView,
  type HeatHistory,
  type MigrationDone,
  type MigrationInFlight,
  type MigrationsView,
  type NodeView,
  type PlanView,
  type ZoneSeriesForecast,
  layoutLabel,
} from "./source.js";
import { HISTORY_COLUMNS } from "./view-model.js";

export interface LiveSourceOptions {
  config: Config;
  store: LocationStore;
  /** Seconds between snapshots (the spacing of live heat columns). */
  refreshSeconds: number;
  historyColumns?: number;
  /** Per-request timeout for agents; an agent slower than this is unreachable. */
  agentTimeoutMs?: number;
  /**
   * Ask the agents to measure their round trips again when the newest
   * measurement is older than this (default 60 s); 0: never (`--once`).
   */
  probeEverySeconds?: number;
  now?: () => number;
}

/** An agent's answer to a token it does not know. */
const TOKEN_REFUSED = "the agent refused our token (401)";

/** What one agent told us in one snapshot. */
interface AgentReading {
  ok: boolean;
  problem?: string;
  node?: {
    cpu?: { cores?: number; loadAvg1?: number };
    memory?: { totalBytes?: number; freeBytes?: number };
    disk?: { totalBytes?: number; availableBytes?: number };
    /** The agent's last round-trip probes (src/agent/probe.ts), null before the first. */
    rtt?: { measuredAt?: unknown; peers?: unknown } | null;
  };
  segments?: { segment: number; reads: number; writes: number }[];
}

/** Forecasting: the minute level, a quarter of an hour ahead. */
const FORECAST_HORIZON = 15;
/** A shard's forecast and plan use its hottest segments only (each costs an agent round trip per zone). */
const MAX_SEGMENTS_PER_SHARD = 16;
const ASSUMED_SEGMENT_BYTES = 1024 * 1024;
/** The first live column: the current and the previous minute slot. */
const FIRST_WINDOW_SECONDS = 120;

/** Ended migrations shown, newest first. */
const MAX_RECENT_MIGRATIONS = 20;
const DEFAULT_PROBE_EVERY_SECONDS = 60;
/** The agents' probe budget (10 s) plus slack. */
const PROBE_CALL_TIMEOUT_MS = 13_000;
const ASSUMED_LATENCY = "assumed: 1 ms within a zone, 50 ms between zones";

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/**
 * An agent's answer to GET /v1/access/:segment/series: the counts (negative or
 * non-numeric ones read as 0) and their interval. The interval divides every
 * count into a rate, so an answer without a whole number of seconds ≥ 1 is
 * refused, not turned into Infinity or NaN further on.
 */
export function seriesAnswer(
  agent: string,
  segment: number,
  body: { series?: unknown; resolutionSeconds?: unknown } | undefined,
): { series: Float64Array; intervalSeconds: number } {
  if (!Array.isArray(body?.series))
    throw new Error(`${agent} answered segment ${segment}'s series without a list of counts`);
  const res = num(body.resolutionSeconds);
  if (res === undefined || !Number.isInteger(res) || res < 1) {
    throw new Error(
      `${agent} answered segment ${segment}'s series with resolutionSeconds ${JSON.stringify(body.resolutionSeconds) ?? "missing"}, not a whole number of seconds ≥ 1`,
    );
  }
  return {
    series: Float64Array.from(body.series as unknown[], (x) => Math.max(0, num(x) ?? 0)),
    intervalSeconds: res,
  };
}

export class LiveSource implements DashboardSource {
  private readonly config: Config;
  private readonly store: LocationStore;
  private readonly rpc?: AgentRpc;
  private readonly tokenProblem?: string;
  private readonly segmenter: Segmenter;
  private readonly historyColumns: number;
  private readonly refreshSeconds: number;
  private readonly now: () => number;
  private readonly probeEveryMs: number;
  private probeRpc?: AgentRpc;
  /** The background probe in flight, if any, and when the last one started. */
  private probing?: Promise<void>;
  private lastProbeStart = -Infinity;
  /** The agents' round trips as of the last snapshot (for plan()). */
  private measured?: MeasuredLatency & { measuredCells: number; totalCells: number; measuredAt?: number };
  private reads: Float32Array[] = [];
  /** When each column of `reads` was taken (ms): columns are as far apart as the snapshots took. */
  private columnTimes: number[] = [];
  private writes: Float32Array[] = [];
  private lastMap?: VersionedMap;
  private embedded?: { mtimeMs: number; size: number; windows: AccessWindows };
  /** The heat built from the embedded windows, until the file changes or the minute slot rolls. */
  private embeddedHeat?: { windows: AccessWindows; slot: number; heat: HeatHistory };

  constructor(opts: LiveSourceOptions) {
    this.config = opts.config;
    this.store = opts.store;
    this.segmenter = new Segmenter(opts.config.segments, opts.config.limits.maxKeyBytes);
    this.historyColumns = opts.historyColumns ?? HISTORY_COLUMNS;
    this.refreshSeconds = Math.max(0.1, opts.refreshSeconds);
    this.now = opts.now ?? Date.now;
    this.probeEveryMs = Math.max(0, opts.probeEverySeconds ?? DEFAULT_PROBE_EVERY_SECONDS) * 1000;
    try {
      const token = resolveClientToken(opts.config);
      this.rpc = new AgentRpc({ token, timeoutMs: opts.agentTimeoutMs ?? 2000, maxSockets: 8 });
    } catch (err) {
      this.tokenProblem = errorMessage(err);
    }
  }

  segmentOf(key: string): number {
    return this.segmenter.segmentOf(key);
  }

  private async loadMap(): Promise<VersionedMap> {
    const vm = await this.store.load();
    if (!vm) {
      throw new PreconditionError(`the ${this.store.kind} store holds no layout yet`, {
        hint: "run `shardctl init` or `shardctl up --local` (with the same store), then start the dashboard again",
      });
    }
    // the same version is the same map: keep its objects, so that the UI's per-column caches keep hitting
    if (this.lastMap && this.lastMap.version === vm.version) return this.lastMap;
    checkSegmentCount(vm.map, this.config.segments);
    this.lastMap = vm;
    return vm;
  }

  private async readAgent(address: string, windowSeconds: number): Promise<AgentReading> {
    if (!this.rpc) return { ok: false, problem: this.tokenProblem };
    try {
      const [node, access] = await Promise.all([
        this.rpc.json<AgentReading["node"] & { error?: string; message?: string }>(
          address,
          "GET",
          "/v1/node",
        ),
        this.rpc.json<{ segments?: unknown; message?: string }>(
          address,
          "GET",
          `/v1/access?window=${windowSeconds}`,
        ),
      ]);
      if (node.status === 401 || access.status === 401) return { ok: false, problem: TOKEN_REFUSED };
      if (node.status !== 200 || access.status !== 200) {
        return { ok: false, problem: `the agent answered ${node.status}/${access.status}` };
      }
      const segments: AgentReading["segments"] = [];
      if (Array.isArray(access.body?.segments)) {
        for (const s of access.body.segments as Record<string, unknown>[]) {
          const seg = num(s?.segment);
          if (seg === undefined || !Number.isInteger(seg) || seg < 0 || seg >= this.config.segments) continue;
          segments.push({
            segment: seg,
            reads: Math.max(0, num(s.reads) ?? 0),
            writes: Math.max(0, num(s.writes) ?? 0),
          });
        }
      }
      return { ok: true, node: node.body, segments };
    } catch (err) {
      return { ok: false, problem: errorMessage(err) };
    }
  }

  /** The embedded windows file, re-read only when it changed; undefined when there is none. */
  private embeddedWindows(warnings: string[]): AccessWindows | undefined {
    const file = windowsPath(this.config.dataDir);
    if (!existsSync(file)) return undefined;
    try {
      const st = statSync(file);
      if (this.embedded && this.embedded.mtimeMs === st.mtimeMs && this.embedded.size === st.size)
        return this.embedded.windows;
      const windows = AccessWindows.deserialize(readFileSync(file));
      if (windows.segmentCount !== this.config.segments) {
        warnings.push(
          `${file} was recorded for ${windows.segmentCount} segments, not ${this.config.segments}: ignored`,
        );
        return undefined;
      }
      // counts by zone in another order (or of other zones) would be drawn as the wrong zones'
      if (windows.zones.join(",") !== this.config.zones.join(",")) {
        warnings.push(
          `${file} was recorded for zones ${windows.zones.join(",")}, not ${this.config.zones.join(",")}: ignored`,
        );
        return undefined;
      }
      this.embedded = { mtimeMs: st.mtimeMs, size: st.size, windows };
      return windows;
    } catch (err) {
      warnings.push(`cannot read ${file}: ${errorMessage(err)}`);
      return undefined;
    }
  }

  private heatFromWindows(w: AccessWindows, now: number): HeatHistory {
    const level = Math.min(1, w.levels.length - 1);
    const slots = w.levels[level].slots;
    const res = w.levels[level].resolutionSeconds;
    const slot = Math.floor(now / (res * 1000));
    if (this.embeddedHeat && this.embeddedHeat.windows === w && this.embeddedHeat.slot === slot)
      return this.embeddedHeat.heat;
    const reads = Array.from({ length: slots }, () => new Float32Array(w.segmentCount));
    const writes = Array.from({ length: slots }, () => new Float32Array(w.segmentCount));
    for (const s of w.activeSegments()) {
      const r = w.series(s, level, now, "reads");
      const wr = w.series(s, level, now, "writes");
      for (let k = 0; k < slots; k++) {
        reads[k][s] = r[k] / res;
        writes[k][s] = wr[k] / res;
      }
    }
    const heat: HeatHistory = {
      segmentCount: w.segmentCount,
      intervalSeconds: res,
      endMs: now,
      reads,
      writes,
      origin: "embedded-windows",
    };
    this.embeddedHeat = { windows: w, slot, heat };
    return heat;
  }

  /**
   * The mean time between the columns shown, in seconds: the refresh interval, or more when a
   * snapshot takes longer (an agent that does not answer is waited for), so that the time axis and
   * the legend stay true. Before a second column, the refresh interval.
   */
  private columnSpacingSeconds(): number {
    const t = this.columnTimes;
    if (t.length < 2) return this.refreshSeconds;
    const mean = (t[t.length - 1] - t[0]) / (t.length - 1) / 1000;
    return mean > 0 ? mean : this.refreshSeconds;
  }

  async snapshot(): Promise<DashboardSnapshot> {
    const now = this.now();
    const { map, version } = await this.loadMap();
    const warnings: string[] = [];
    const windowSeconds =
      this.reads.length === 0 ? FIRST_WINDOW_SECONDS : Math.max(5, Math.ceil(this.refreshSeconds));
    const withAgent = map.nodes.filter((n) => n.address !== "");
    const readings = new Map<string, AgentReading>();
    await Promise.all(
      withAgent.map(async (n) => readings.set(n.id, await this.readAgent(n.address, windowSeconds))),
    );
    const answered = [...readings.values()].filter((r) => r.ok).length;

    let heat: HeatHistory;
    if (answered > 0) {
      const reads = new Float32Array(map.segmentCount);
      const writes = new Float32Array(map.segmentCount);
      // each segment's accesses from its owner in the map only: a node a shard moved away from keeps
      // windows of its segments (the migration copies them to the new owner), which would count twice
      const table = new RoutingTable({ map, version });
      for (const [nodeId, r] of readings) {
        for (const s of r.segments ?? []) {
          if (!(s.segment >= 0 && s.segment < map.segmentCount) || table.nodeOfSegment(s.segment) !== nodeId)
            continue;
          reads[s.segment] += s.reads;
          writes[s.segment] += s.writes;
        }
      }
      this.reads.push(reads);
      this.writes.push(writes);
      this.columnTimes.push(now);
      if (this.reads.length > this.historyColumns) {
        this.reads.shift();
        this.writes.shift();
        this.columnTimes.shift();
      }
      heat = {
        segmentCount: map.segmentCount,
        intervalSeconds: this.columnSpacingSeconds(),
        endMs: now,
        reads: [...this.reads],
        writes: [...this.writes],
        origin: "agents",
      };
    } else {
      const w = this.embeddedWindows(warnings);
      if (withAgent.length > 0) {
        const showing = w ? "; showing the embedded access windows" : "";
        // every agent answered, refusing the token: the cluster is up, the token is wrong
        const refused = [...readings.values()].every((r) => r.problem === TOKEN_REFUSED);
        warnings.push(
          refused
            ? `every agent refused our token (401)${showing}: is the token right? (SHARDCTL_TOKEN, agent.token in the config, or <data-dir>/local/token)`
            : `no agent answered (${withAgent.length} configured)${showing}: is the cluster up? (shardctl up --local)`,
        );
      }
      heat = w
        ? this.heatFromWindows(w, now)
        : {
            segmentCount: map.segmentCount,
            intervalSeconds: 60,
            endMs: now,
            reads: [],
            writes: [],
            origin: "embedded-windows",
          };
      if (!w && withAgent.length === 0)
        warnings.push(`no agents and no ${windowsPath(this.config.dataDir)}: no access to show yet`);
    }

    this.measured = this.measuredRtts(map, readings);
    this.maybeProbe(map, readings, now);
    const nodes = this.nodeViews(map, readings, heat, warnings);
    const migrations = await this.migrationsView(warnings);
    return {
      takenAt: now,
      mapVersion: version,
      storeKind: this.store.kind,
      zones: [...this.config.zones],
      shards: map.shards,
      nodes,
      heat,
      migrations,
      warnings,
    };
  }

  /** The journal: in flight (non-terminal phases, oldest first) and the recent ended ones (newest first). */
  private async migrationsView(warnings: string[]): Promise<MigrationsView> {
    let got: Awaited<ReturnType<LocationStore["listMigrations"]>>;
    try {
      got = await this.store.listMigrations();
    } catch (err) {
      return {
        available: false,
        note: `cannot read the migration journal: ${errorMessage(err)}`,
        inFlight: [],
        recent: [],
      };
    }
    if (got.unreadable.length)
      warnings.push(
        `${got.unreadable.length} migration journal record(s) could not be read: ${got.unreadable.slice(0, 3).join(", ")}`,
      );
    const inFlight: MigrationInFlight[] = [];
    const recent: MigrationDone[] = [];
    for (const { record: r } of got.records) {
      const base = { id: r.id, shard: r.shard, source: r.source, target: r.target, label: layoutLabel(r) };
      if (isTerminal(r.phase)) {
        recent.push({
          ...base,
          result: r.phase === "done" ? "committed" : "aborted",
          writePauseMs: num(r.writePauseMs),
          finishedAt: num(r.endedAt) ?? num(r.phaseAt?.[r.phase]) ?? r.startedAt,
          reason: typeof r.error === "string" && r.error !== "" ? r.error : undefined,
        });
      } else {
        inFlight.push({
          ...base,
          phase: r.phase,
          bytesCopied: num(r.bytesCopied) ?? 0,
          bytesTotal: num(r.bytesTotal),
          lagEntries: num(r.lagEntries),
          startedAt: r.startedAt,
          problem: pendingProblem(r),
        });
      }
    }
    inFlight.sort((a, b) => a.startedAt - b.startedAt);
    recent.sort((a, b) => b.finishedAt - a.finishedAt);
    return { available: true, inFlight, recent: recent.slice(0, MAX_RECENT_MIGRATIONS) };
  }

  /** The agents' last probes, aggregated per (zone, node) as the planner does. */
  private measuredRtts(map: LocationMap, readings: Map<string, AgentReading>): LiveSource["measured"] {
    const reports: OriginReport[] = [];
    const known = new Set(map.nodes.map((n) => n.id));
    let measuredAt: number | undefined;
    for (const [node, r] of readings) {
      const rtt = r.ok ? r.node?.rtt : undefined;
      if (!rtt || typeof rtt !== "object") continue;
      reports.push({ node, peers: parsePeerResults(node, rtt.peers, known) });
      const at = num(rtt.measuredAt);
      if (at !== undefined) measuredAt = Math.max(measuredAt ?? at, at);
    }
    const agg = aggregateRtts(map, this.config.zones, reports);
    return { ...agg, totalCells: agg.zones.length * agg.nodes.length, measuredAt };
  }

  /** Starts a background probe when the measurements are missing or stale (one at a time). */
  private maybeProbe(map: LocationMap, readings: Map<string, AgentReading>, now: number): void {
    if (this.probeEveryMs === 0 || this.probing || !this.rpc) return;
    const answering = map.nodes.filter((n) => readings.get(n.id)?.ok);
    if (answering.length < 2) return;
    const newest = this.measured?.measuredAt ?? -Infinity;
    if (now - newest < this.probeEveryMs || now - this.lastProbeStart < this.probeEveryMs) return;
    this.lastProbeStart = now;
    try {
      this.probeRpc ??= new AgentRpc({
        token: resolveClientToken(this.config),
        timeoutMs: PROBE_CALL_TIMEOUT_MS,
        maxSockets: 4,
      });
    } catch {
      return; // the token went away since the start: the model stays
    }
    // only the agents that answer are asked, and only about each other
    const probeMap: LocationMap = { ...map, nodes: answering };
    this.probing = measureRtts(probeMap, this.probeRpc, { zones: this.config.zones })
      .then(() => undefined)
      .catch(() => undefined) // a failed probe leaves the model in place; the next refresh tries again later
      .finally(() => {
        this.probing = undefined;
      });
  }

  private nodeViews(
    map: LocationMap,
    readings: Map<string, AgentReading>,
    heat: HeatHistory,
    warnings: string[],
  ): NodeView[] {
    const zones = this.config.zones;
    const matrix = defaultZoneMatrix(zones);
    const measured = this.measured;
    const latest = { r: heat.reads[heat.reads.length - 1], w: heat.writes[heat.writes.length - 1] };
    return map.nodes.map((n) => {
      const shards = map.shards.filter((s) => s.node === n.id);
      let rate = 0;
      if (latest.r && latest.w)
        for (const sh of shards)
          for (const [a, b] of sh.ranges) for (let s = a; s < b; s++) rate += latest.r[s] + latest.w[s];
      const zi = zones.indexOf(n.zone);
      const col = measured ? measured.nodes.indexOf(n.id) : -1;
      const cell = (i: number): number | null => {
        const mz = measured && col >= 0 ? measured.zones.indexOf(zones[i]) : -1;
        return mz >= 0 ? measured!.rttMs[mz][col] : null;
      };
      const rttMeasured = zones.map((_, i) => cell(i) !== null);
      const rttMs = zones.map((_, i) => cell(i) ?? (zi < 0 ? undefined : matrix.rttMs[i][zi]));
      const anyMeasured = rttMeasured.some(Boolean);
      const base: NodeView = {
        id: n.id,
        zone: n.zone,
        address: n.address,
        health: "no-agent",
        shards: shards.length,
        accessRate: rate,
        rttMs,
        rttSource: anyMeasured ? "measured" : "model",
        rttMeasured,
        rttMeasuredAt: anyMeasured ? measured?.measuredAt : undefined,
      };
      if (n.address === "") return base;
      const r = readings.get(n.id);
      if (!r || !r.ok) {
        warnings.push(`node ${n.id} (${n.address}) is UNREACHABLE: ${r?.problem ?? "no answer"}`);
        return { ...base, health: "unreachable", problem: r?.problem, accessRate: 0 };
      }
      const cores = num(r.node?.cpu?.cores);
      const load1 = num(r.node?.cpu?.loadAvg1);
      const memTotal = num(r.node?.memory?.totalBytes);
      const memFree = num(r.node?.memory?.freeBytes);
      const diskTotal = num(r.node?.disk?.totalBytes);
      const diskAvail = num(r.node?.disk?.availableBytes);
      return {
        ...base,
        health: "ok",
        cpuLoad: cores && load1 !== undefined ? load1 / cores : undefined,
        memoryTotalBytes: memTotal,
        memoryUsedBytes: memTotal !== undefined && memFree !== undefined ? memTotal - memFree : undefined,
        diskTotalBytes: diskTotal,
        diskUsedBytes: diskTotal !== undefined && diskAvail !== undefined ? diskTotal - diskAvail : undefined,
      };
    });
  }

  /** The segments a focus target stands for: the segment, or a shard's hottest ones. */
  private focusSegments(target: FocusTarget, map: LocationMap): { segments: number[]; shard?: ShardInfo } {
    if (target.kind === "segment") {
      if (!Number.isInteger(target.segment) || target.segment < 0 || target.segment >= map.segmentCount) {
        throw new UsageError(`segment ${target.segment} is outside 0..${map.segmentCount - 1}`);
      }
      return {
        segments: [target.segment],
        shard: map.shards.find((s) => s.ranges.some(([a, b]) => target.segment >= a && target.segment < b)),
      };
    }
    const shard = map.shards.find((s) => s.id === target.shard);
    if (!shard) throw new UsageError(`no shard ${JSON.stringify(target.shard)} in the layout`);
    const totals: [number, number][] = [];
    for (const [a, b] of shard.ranges) {
      for (let s = a; s < b; s++) {
        let t = 0;
        for (let k = 0; k < this.reads.length; k++) t += this.reads[k][s] + this.writes[k][s];
        if (this.embedded) t += this.embedded.windows.rate(s, 3600, this.now()).total;
        if (t > 0) totals.push([s, t]);
      }
    }
    totals.sort((x, y) => y[1] - x[1]);
    return { segments: totals.slice(0, MAX_SEGMENTS_PER_SHARD).map(([s]) => s), shard };
  }

  /** Per-zone counts per minute-level slot for one segment, from its owner agent or the embedded windows. */
  private async zoneSeries(
    segment: number,
    shard: ShardInfo | undefined,
    map: LocationMap,
    withTotals = false,
  ): Promise<{
    series: Record<string, Float64Array>;
    intervalSeconds: number;
    writes?: Float64Array;
    totals?: Float64Array;
  }> {
    const owner = shard ? map.nodes.find((n) => n.id === shard.node) : undefined;
    if (owner && owner.address !== "" && this.rpc) {
      const series: Record<string, Float64Array> = {};
      let intervalSeconds = 60;
      const which = withTotals ? [...this.config.zones, "writes", "total"] : this.config.zones;
      for (const zone of which) {
        const r = await this.rpc.json<{ series?: unknown; resolutionSeconds?: unknown; message?: string }>(
          owner.address,
          "GET",
          `/v1/access/${segment}/series?level=1&which=${encodeURIComponent(zone)}`,
        );
        if (r.status !== 200) {
          throw new Error(
            `${owner.id} answered ${r.status} for segment ${segment}'s series: ${r.body?.message ?? ""}`,
          );
        }
        const answer = seriesAnswer(owner.id, segment, r.body);
        series[zone] = answer.series;
        intervalSeconds = answer.intervalSeconds;
      }
      const { writes, total, ...zones } = series;
      return withTotals
        ? { series: zones, intervalSeconds, writes, totals: total }
        : { series, intervalSeconds };
    }
    const w = this.embedded?.windows ?? this.embeddedWindows([]);
    if (!w) return { series: {}, intervalSeconds: 60 };
    const level = Math.min(1, w.levels.length - 1);
    const now = this.now();
    const series: Record<string, Float64Array> = {};
    for (const zone of w.zones) series[zone] = w.series(segment, level, now, zone);
    const intervalSeconds = w.levels[level].resolutionSeconds;
    return withTotals
      ? {
          series,
          intervalSeconds,
          writes: w.series(segment, level, now, "writes"),
          totals: w.series(segment, level, now, "total"),
        }
      : { series, intervalSeconds };
  }

  /** Sums the per-zone series of several segments. */
  private async summedSeries(
    segments: number[],
    map: LocationMap,
  ): Promise<{ series: Record<string, Float64Array>; intervalSeconds: number }> {
    const sum: Record<string, Float64Array> = {};
    let intervalSeconds = 60;
    for (const s of segments) {
      const shard = map.shards.find((sh) => sh.ranges.some(([a, b]) => s >= a && s < b));
      const one = await this.zoneSeries(s, shard, map);
      intervalSeconds = one.intervalSeconds;
      for (const [zone, xs] of Object.entries(one.series)) {
        const acc = (sum[zone] ??= new Float64Array(xs.length));
        for (let i = 0; i < Math.min(acc.length, xs.length); i++) acc[i] += xs[i];
      }
    }
    return { series: sum, intervalSeconds };
  }

  async forecast(target: FocusTarget): Promise<ForecastView> {
    const map = (this.lastMap ?? (await this.loadMap())).map;
    const { segments } = this.focusSegments(target, map);
    const empty = (note: string): ForecastView => ({
      target,
      intervalSeconds: 60,
      horizon: FORECAST_HORIZON,
      intervalLevel: 0.8,
      zones: [],
      note,
    });
    if (segments.length === 0) return empty("no access recorded for this shard yet");
    let got;
    try {
      got = await this.summedSeries(segments, map);
    } catch (err) {
      return empty(`cannot read the access history: ${errorMessage(err)}`);
    }
    const total = Object.values(got.series).reduce((t, xs) => t + xs.reduce((a, b) => a + b, 0), 0);
    if (total === 0) return empty("no access recorded for this target in the minute windows yet");
    // the newest interval is still running: forecast from its expected whole count
    const elapsed = elapsedFraction(this.now(), got.intervalSeconds);
    // a model selection per zone, a fit at a time: the dashboard keeps drawing meanwhile
    const f = await runInSlices(
      predictAccessPatternSteps(completeNewestEach(got.series, elapsed), {
        intervalSeconds: got.intervalSeconds,
        horizon: FORECAST_HORIZON,
      }),
    );
    const zones: ZoneSeriesForecast[] = Object.keys(got.series).map((zone) => ({
      zone,
      model: f.zones[zone]?.model ?? "-",
      recent: Array.from(got.series[zone]),
      mean: f.zones[zone]?.mean ?? [],
      lower: f.zones[zone]?.lower ?? [],
      upper: f.zones[zone]?.upper ?? [],
    }));
    return {
      target,
      intervalSeconds: got.intervalSeconds,
      horizon: f.horizon,
      intervalLevel: f.intervalLevel,
      zones,
    };
  }

  async plan(shardId: string): Promise<PlanView> {
    const vm = await this.loadMap();
    const { map } = vm;
    const { segments, shard } = this.focusSegments({ kind: "shard", shard: shardId }, map);
    const zones = [...this.config.zones];
    const base = LatencyModel.fromZoneMatrix(
      defaultZoneMatrix(zones),
      map.nodes.map((n) => ({ id: n.id, zone: n.zone })),
    );
    const measured = this.measured?.measuredCells ? this.measured : undefined;
    const latency = measured ? LatencyModel.fromMeasurements(base, measured) : base;
    const series: SegmentZoneSeries[] = [];
    let intervalSeconds = 60;
    for (const s of segments) {
      const owner = map.shards.find((sh) => sh.ranges.some(([a, b]) => s >= a && s < b));
      const got = await this.zoneSeries(s, owner, map, true);
      if (Object.keys(got.series).length === 0) continue;
      intervalSeconds = got.intervalSeconds;
      // the newest interval is still running: forecast from its expected whole count
      const elapsed = elapsedFraction(this.now(), got.intervalSeconds);
      series.push({
        segment: s,
        perZone: completeNewestEach(got.series, elapsed),
        writes: got.writes && completeNewest(got.writes, elapsed),
        totals: got.totals && completeNewest(got.totals, elapsed),
      });
    }
    // the same demand as `shardctl plan`: each segment's total forecast, split by the zones' share profile
    // (a step at a time: the dashboard keeps drawing and reading keys meanwhile)
    const { demand } = await runInSlices(
      demandSteps(series, zones, intervalSeconds, FORECAST_HORIZON * intervalSeconds),
    );
    const seg = segments[0] ?? shard!.ranges[0][0];
    const plan = computePlan(
      {
        map,
        mapVersion: vm.version,
        latency,
        demand,
        segmentBytes: () => ASSUMED_SEGMENT_BYTES,
        notes: [
          measured
            ? `latency: measured by the agents (${measured.measuredCells} of ${measured.totalCells} zone→node round trips; the rest ${ASSUMED_LATENCY})`
            : latencyNote(undefined, `not measured by the agents yet; ${ASSUMED_LATENCY}`),
          "segment size unknown: 1 MiB assumed per segment",
        ],
      },
      { ...DEFAULT_PLANNER_OPTIONS, horizonSeconds: FORECAST_HORIZON * intervalSeconds },
      this.now(),
      { kind: "key", key: `segment:${seg}`, segment: seg, shard: shardId },
    );
    const a = plan.assessments.find((x) => x.shard === shardId);
    const lines: string[] = [];
    let target: string | undefined;
    if (a) {
      const moving = a.decision === "move" || a.decision === "split-move";
      // a target beside "stay" is the best other node the planner weighed, not where it goes
      lines.push(
        `decision: ${a.decision}${a.target ? (moving ? ` → ${a.target}` : ` (best other node: ${a.target})`) : ""}`,
      );
      lines.push(`reason: ${a.reason}`);
      if (a.candidateReasons.length) lines.push(`why considered: ${a.candidateReasons.join("; ")}`);
      lines.push(`now ${a.node}: mean ${a.currentMeanMs.toFixed(1)} ms per access`);
      if (a.targetMeanMs !== undefined)
        lines.push(`at ${a.target}: mean ${a.targetMeanMs.toFixed(1)} ms per access`);
      if (a.netMs !== undefined)
        lines.push(
          `benefit ${Math.round(a.benefitMs ?? 0)} ms − cost ${Math.round(a.costMs ?? 0)} ms = net ${Math.round(a.netMs)} ms`,
        );
      const zonesLine = Object.entries(a.predictedByZone)
        .map(([z, v]) => `${z} ${Math.round(v)}`)
        .join(", ");
      lines.push(
        `predicted accesses next ${formatSpan(FORECAST_HORIZON * intervalSeconds)} by zone: ${zonesLine || "none"}`,
      );
      if (a.decision === "move" || a.decision === "split-move") target = a.target;
    } else lines.push("the planner did not assess this shard (no demand)");
    for (const st of plan.steps) {
      if (st.kind === "move" && st.shard === shardId) target = st.target;
      lines.push(
        st.kind === "move"
          ? `step: move ${st.shard} ${st.source} → ${st.target} (${Math.round(st.copySeconds)} s copy)`
          : `step: split segment ${st.segment} of ${st.shard} into ${st.newShard}`,
      );
    }
    lines.push(...plan.inputs.notes.map((n) => `note: ${n}`));
    return { shard: shardId, mapVersion: vm.version, lines, target };
  }

  async close(): Promise<void> {
    this.rpc?.close();
    this.probeRpc?.close();
  }
}

/** "roll-back pending: …" for a record recovery must finish; undefined otherwise (or when not a string). */
function pendingProblem(r: MigrationRecord): string | undefined {
  const pending = pendingRecovery(r);
  return pending && typeof pending.why === "string" ? `${pending.kind} pending: ${pending.why}` : undefined;
}
