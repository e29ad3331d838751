/** Snapshots built by hand and a recording source: fakes for the UI's pure logic only. */
import type { ShardInfo } from "../../../src/engine/location-map.js";
import { stripAnsi } from "../../../src/tui/ansi.js";
import type {
  DashboardSnapshot,
  DashboardSource,
  FocusTarget,
  ForecastView,
  MigrateResult,
  NodeView,
  OnMigrate,
  PlanView,
} from "../../../src/tui/source.js";

/** Digits become #, so that frames compare across rates and clocks. */
export function blank(frame: string | undefined): string {
  return stripAnsi(frame ?? "")
    .replace(/\d/g, "#")
    .split("\n")
    .map((l) => l.trimEnd())
    .join("\n");
}

export function plain(frame: string | undefined): string {
  return stripAnsi(frame ?? "");
}

/** The frame's lines without colour and without trailing blanks. */
export function plainLines(frame: string | undefined): string[] {
  return plain(frame)
    .split("\n")
    .map((l) => l.trimEnd());
}

export interface SnapshotSpec {
  segments?: number;
  shards?: number;
  columns?: number;
  /** segment → [reads/s, writes/s] in every column */
  rates?: Record<number, [number, number]>;
  unreachable?: string[];
}

export function nodeView(id: string, zone: string, over: Partial<NodeView> = {}): NodeView {
  return {
    id,
    zone,
    address: `127.0.0.1:${7400 + Number(id.replace(/\D/g, "") || 0)}`,
    health: "ok",
    shards: 2,
    accessRate: 12.5,
    cpuLoad: 0.25,
    memoryUsedBytes: 512 * 1024 * 1024,
    memoryTotalBytes: 2048 * 1024 * 1024,
    diskUsedBytes: 10,
    diskTotalBytes: 100,
    rttMs: ["a", "b", "c"].map((z) => (z === zone ? 1 : 50)),
    rttSource: "model",
    ...over,
  };
}

export function makeSnapshot(spec: SnapshotSpec = {}): DashboardSnapshot {
  const segments = spec.segments ?? 64;
  const nShards = spec.shards ?? 4;
  const columns = spec.columns ?? 10;
  const nodes = ["node-1", "node-2", "node-3"];
  const shards: ShardInfo[] = Array.from({ length: nShards }, (_, i) => ({
    id: `shard-${i + 1}`,
    node: nodes[i % nodes.length],
    epoch: 1,
    migrationTimestamp: 0,
    changedAt: 0,
    ranges: [[Math.floor((i * segments) / nShards), Math.floor(((i + 1) * segments) / nShards)]],
  }));
  const reads: Float32Array[] = [];
  const writes: Float32Array[] = [];
  for (let c = 0; c < columns; c++) {
    const r = new Float32Array(segments);
    const w = new Float32Array(segments);
    for (const [s, [rv, wv]] of Object.entries(spec.rates ?? {})) {
      r[Number(s)] = rv;
      w[Number(s)] = wv;
    }
    reads.push(r);
    writes.push(w);
  }
  const unreachable = new Set(spec.unreachable ?? []);
  return {
    takenAt: Date.UTC(2026, 0, 1, 12, 0, 0),
    mapVersion: 7,
    storeKind: "embedded",
    zones: ["a", "b", "c"],
    shards,
    nodes: nodes.map((id, i) =>
      unreachable.has(id)
        ? nodeView(id, "abc"[i], { health: "unreachable", problem: "connect ECONNREFUSED", accessRate: 0 })
        : nodeView(id, "abc"[i]),
    ),
    heat: {
      segmentCount: segments,
      intervalSeconds: 2,
      endMs: Date.UTC(2026, 0, 1, 12),
      reads,
      writes,
      origin: "fixture",
    },
    migrations: {
      available: true,
      inFlight: [
        {
          id: "m1",
          shard: "shard-2",
          source: "node-2",
          target: "node-3",
          phase: "copying",
          bytesCopied: 3 * 1024 * 1024,
          bytesTotal: 8 * 1024 * 1024,
          lagEntries: 120,
          startedAt: Date.UTC(2026, 0, 1, 11, 59, 30),
        },
      ],
      recent: [
        {
          id: "m0",
          shard: "shard-1",
          source: "node-1",
          target: "node-2",
          result: "committed",
          writePauseMs: 42,
          finishedAt: Date.UTC(2026, 0, 1, 11, 50),
        },
      ],
    },
    warnings: [...unreachable].map((id) => `node ${id} is UNREACHABLE: connect ECONNREFUSED`),
  };
}

export function makeForecast(target: FocusTarget): ForecastView {
  const zone = (z: string, level: number) => ({
    zone: z,
    model: "ets",
    recent: Array.from({ length: 30 }, (_, i) => level * (i / 30)),
    mean: Array.from({ length: 10 }, () => level),
    lower: Array.from({ length: 10 }, () => level * 0.5),
    upper: Array.from({ length: 10 }, () => level * 1.5),
  });
  return {
    target,
    intervalSeconds: 60,
    horizon: 10,
    intervalLevel: 0.8,
    zones: [zone("a", 600), zone("b", 60), zone("c", 0)],
  };
}

/**
 * A migration callback that records its calls and ends when the test says so
 * (`finish`/`fail`), reporting progress in between.
 */
export class RecordingMigrator {
  calls: string[] = [];
  private pending?: { resolve: (r: MigrateResult) => void; reject: (e: Error) => void };
  private report?: Parameters<OnMigrate>[2];
  readonly onMigrate: OnMigrate = (shard, target, report, plan) => {
    this.calls.push(`${shard} ${target} v${plan?.mapVersion}`);
    this.report = report;
    return new Promise((resolve, reject) => (this.pending = { resolve, reject }));
  };
  progress(phase: string, bytes: number, lag: number, bytesTotal?: number): void {
    this.report?.progress({ phase, bytes, lag, bytesTotal });
  }
  finish(r: MigrateResult): void {
    this.pending?.resolve(r);
  }
  fail(message: string): void {
    this.pending?.reject(new Error(message));
  }
}

/** A DashboardSource over fixed snapshots that records what the UI asked. */
export class FixtureSource implements DashboardSource {
  calls: string[] = [];
  snapshots = 0;
  constructor(
    public snap: DashboardSnapshot,
    public planTarget: string | undefined = "node-3",
  ) {}
  async snapshot(): Promise<DashboardSnapshot> {
    this.snapshots++;
    return this.snap;
  }
  async forecast(target: FocusTarget): Promise<ForecastView> {
    this.calls.push(`forecast ${target.kind === "segment" ? target.segment : target.shard}`);
    return makeForecast(target);
  }
  async plan(shard: string): Promise<PlanView> {
    this.calls.push(`plan ${shard}`);
    return {
      shard,
      mapVersion: 7,
      lines: [`decision: move → ${this.planTarget}`, "reason: zone c rising"],
      target: this.planTarget,
    };
  }
  segmentOf(key: string): number {
    if (key === "" || key.length > 1024) throw new Error("a key must be 1 to 1024 bytes");
    return key === "hot" ? 42 : 3;
  }
  async close(): Promise<void> {}
}
