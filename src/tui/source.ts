/**
 * The one interface through which the dashboard reads the cluster. The UI
 * never talks to a store, an agent or a file itself: it asks a
 * DashboardSource, so that the same components render a live cluster, the
 * embedded fallback, a recorded fixture in tests and a synthetic 100,000
 * segment cluster in the benchmark.
 *
 * Everything here is plain, immutable data. A source must never throw from
 * snapshot() because one node is down: it marks that node unreachable and
 * carries on (the UI says so). It may throw a UserError when nothing at all
 * can be read (no layout in the store).
 */
import type { ShardInfo } from "../engine/location-map.js";
import type { LayoutOp } from "../engine/assigner.js";
import type { MigrationPhase, MigrationRecord } from "../engine/migration.js";

export type { MigrationPhase };

/** Where the access history came from. */
export type HeatOrigin = "agents" | "embedded-windows" | "fixture";

/**
 * Access rates per segment over time: column k holds, for every segment, the
 * mean accesses/s over [endMs - (columns - k) * intervalSeconds, ... + intervalSeconds).
 * Columns are oldest first. Arrays are dense (length segmentCount); a segment
 * that saw nothing is 0.
 */
export interface HeatHistory {
  segmentCount: number;
  intervalSeconds: number;
  /** End of the newest column (ms since the Unix epoch). */
  endMs: number;
  reads: Float32Array[];
  writes: Float32Array[];
  origin: HeatOrigin;
}

export type NodeHealth = "ok" | "degraded" | "unreachable" | "no-agent";

export interface NodeView {
  id: string;
  zone: string;
  address: string;
  health: NodeHealth;
  /** Why the node is not ok (the transport error, the agent's own report). */
  problem?: string;
  /** Shards the map places on the node. */
  shards: number;
  /** Accesses/s to the node's segments over the newest column. */
  accessRate: number;
  /** 1-minute load average / cores, 0..∞ (undefined when unknown). */
  cpuLoad?: number;
  memoryUsedBytes?: number;
  memoryTotalBytes?: number;
  diskUsedBytes?: number;
  diskTotalBytes?: number;
  /**
   * Round-trip time between each zone and the node (ms), in the snapshot's
   * zone order: what the planner uses for a client of that zone.
   */
  rttMs: (number | undefined)[];
  /** "measured" when the agents measured at least one of rttMs, "model" when all come from the zone matrix. */
  rttSource: "measured" | "model";
  /** Per zone: true where rttMs is a measurement (the agents' probes), false where it is the model's. */
  rttMeasured?: boolean[];
  /** When the newest of those measurements was taken (ms since the epoch). */
  rttMeasuredAt?: number;
}

export interface MigrationInFlight {
  id: string;
  shard: string;
  source: string;
  target: string;
  /** What a split or merge does ("split shard-3 → shard-3+shard-13 on node-1"); absent for a move. */
  label?: string;
  phase: MigrationPhase;
  bytesCopied: number;
  bytesTotal?: number;
  /** Entries the target is behind the source, at the coordinator's last report. */
  lagEntries?: number;
  startedAt: number;
  /** Something recovery must act on (a roll-forward pending after the commit point, a roll-back an abort left). */
  problem?: string;
}

export interface MigrationDone {
  id: string;
  shard: string;
  source: string;
  target: string;
  /** As MigrationInFlight.label. */
  label?: string;
  result: "committed" | "aborted" | "failed";
  writePauseMs?: number;
  finishedAt: number;
  /** Why it was aborted or failed (the journal's error). */
  reason?: string;
}

export interface MigrationsView {
  /** False when this source has no migration journal to read; `note` says why. */
  available: boolean;
  note?: string;
  inFlight: MigrationInFlight[];
  recent: MigrationDone[];
}

export interface DashboardSnapshot {
  takenAt: number;
  /** The location map's store version, and which store it came from. */
  mapVersion: number;
  storeKind: string;
  zones: string[];
  shards: ShardInfo[];
  nodes: NodeView[];
  heat: HeatHistory;
  migrations: MigrationsView;
  /** Problems the UI must show (an unreachable node, a corrupt windows file, ...). */
  warnings: string[];
}

export type FocusTarget = { kind: "segment"; segment: number } | { kind: "shard"; shard: string };

export interface ZoneSeriesForecast {
  zone: string;
  model: string;
  /** Observed accesses per interval, oldest first. */
  recent: number[];
  mean: number[];
  lower: number[];
  upper: number[];
}

export interface ForecastView {
  target: FocusTarget;
  intervalSeconds: number;
  horizon: number;
  /** Central coverage of lower..upper (e.g. 0.8). */
  intervalLevel: number;
  zones: ZoneSeriesForecast[];
  /** Set when the forecast could not be made (no history, node down). */
  note?: string;
}

export interface PlanView {
  shard: string;
  mapVersion: number;
  /** One line per thing the plan says about the shard (decision, reason, target, benefit, cost). */
  lines: string[];
  /** The target node the plan would move the shard to, if it would. */
  target?: string;
}

export interface MigrateResult {
  ok: boolean;
  message: string;
}

/** What a running migration reports while it copies (shown on the status line). */
export interface MigrateProgress {
  phase: MigrationPhase | string;
  bytes: number;
  /** An estimate of the bytes to copy in all. */
  bytesTotal?: number;
  lag: number;
}

/**
 * Runs one migration after the operator confirmed it, reporting progress and
 * log lines; resolves with what to say when it ended. The dashboard command
 * supplies it (src/commands/dashboard-migrate.ts); without one, `m` explains
 * that it cannot migrate here.
 */
export type OnMigrate = (
  shard: string,
  target: string,
  report: { progress: (p: MigrateProgress) => void; log: (line: string) => void },
  /** The plan behind the move: the coordinator refuses it if the map has moved on since (re-plan). */
  plan?: { mapVersion: number },
) => Promise<MigrateResult>;

export interface DashboardSource {
  /** A consistent picture of the cluster now. Never fails because one node is down. */
  snapshot(): Promise<DashboardSnapshot>;
  /** Recent access and the prediction with its interval, per origin zone. */
  forecast(target: FocusTarget): Promise<ForecastView>;
  /** What the planner would do with one shard. */
  plan(shard: string): Promise<PlanView>;
  /**
   * @deprecated The dashboard migrates through its `onMigrate` prop and never
   * calls this; it stays optional only so that existing sources still compile.
   */
  migrate?(shard: string, target: string): Promise<MigrateResult>;
  /** The segment of a key; throws a UsageError for a malformed key. */
  segmentOf(key: string): number;
  close(): Promise<void>;
}

/**
 * What a split or merge does, for the migrations pane ("split shard-3 →
 * shard-3+shard-13 on node-1", "merge shard-6+shard-7 on node-2"); undefined
 * for a whole-shard move, or when the record's layout is not readable.
 */
export function layoutLabel(r: MigrationRecord): string | undefined {
  const op = r.layout?.op as Partial<LayoutOp> | undefined;
  const on = r.source === r.target ? r.source : `${r.source}→${r.target}`;
  const ids = (xs: unknown) =>
    Array.isArray(xs) && xs.length > 0 && xs.every((x) => typeof x === "string")
      ? (xs as string[])
      : undefined;
  if (op?.kind === "split") {
    const pieces = ids(
      Array.isArray(op.pieces) ? op.pieces.map((p) => (p as { id?: unknown })?.id) : undefined,
    );
    return pieces ? `split ${r.shard} → ${pieces.join("+")} on ${on}` : undefined;
  }
  if (op?.kind === "merge") {
    const shards = ids(op.shards);
    return shards ? `merge ${shards.join("+")} on ${on}` : undefined;
  }
  return undefined;
}
