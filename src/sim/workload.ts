/**
 * What every simulated policy shares: the trace cut into decision intervals
 * with its counts per (segment, zone, interval), and the latency accounting of
 * one replay (src/sim/simulate.ts describes the model).
 */
import { UsageError } from "../errors.js";
import type { LatencyModel } from "../engine/latency.js";
import { Segmenter } from "../engine/segmenter.js";
import type { PolicyResult, SimOptions } from "./simulate.js";
import type { Trace } from "./trace.js";

/** The most (segment, zone, interval) counts a replay holds: each is 8 bytes in ~5 arrays (2 GB at the bound). */
export const MAX_COUNT_CELLS = 50_000_000;
/** The most decision intervals a replay spans. */
export const MAX_INTERVALS = 5_000_000;
const SIZE_HINT =
  "use a longer --interval, or a trace over a shorter span (a stray timestamp far from the others stretches it) or with fewer keys";

/**
 * Refuses a replay whose counts would not fit: they are dense over (segment, zone, interval), and
 * each planned policy keeps a copy, so a trace of a few events years apart must be refused, not take
 * gigabytes.
 */
function checkCountCells(segments: number, zones: number, intervals: number, intervalSeconds: number): void {
  const cells = segments * zones * intervals;
  if (cells > MAX_COUNT_CELLS)
    throw new UsageError(
      `the trace needs ${cells.toLocaleString("en-US")} counts (${segments} active segments × ${zones} zones × ${intervals.toLocaleString("en-US")} intervals of ${intervalSeconds} s); the simulator holds at most ${MAX_COUNT_CELLS.toLocaleString("en-US")}`,
      { hint: SIZE_HINT },
    );
}

/** The first boundary at or before the trace's start, and the intervals from it to the end (refused past MAX_INTERVALS). */
function intervalsOf(trace: Trace, intervalSeconds: number): { t0: number; nI: number } {
  const dt = intervalSeconds * 1000;
  const t0 = Math.floor(trace.t[0] / dt) * dt;
  const nI = Math.floor((trace.t[trace.length - 1] - t0) / dt) + 1;
  if (nI > MAX_INTERVALS)
    throw new UsageError(
      `the trace spans ${nI.toLocaleString("en-US")} intervals of ${intervalSeconds} s; the simulator replays at most ${MAX_INTERVALS.toLocaleString("en-US")}`,
      { hint: SIZE_HINT },
    );
  return { t0, nI };
}

/**
 * What the Workload constructor checks before it allocates, for a trace `simulate` has not read yet
 * (build-trace checks what it is about to write against simulate's defaults).
 */
export function checkReplaySize(
  trace: Trace,
  zones: number,
  opts: Pick<SimOptions, "intervalSeconds" | "segmentCount">,
): void {
  const { nI } = intervalsOf(trace, opts.intervalSeconds);
  const segmenter = new Segmenter(opts.segmentCount);
  const active = new Set(trace.keys.map((k) => segmenter.segmentOf(k)));
  checkCountCells(active.size, zones, nI, opts.intervalSeconds);
}

/** Nearest-rank percentile of unsorted values (sorts a copy). */
export function percentileOf(values: Float64Array, p: number): number {
  if (values.length === 0) return 0;
  const sorted = values.slice().sort();
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

/** What every policy shares: the trace cut into intervals, counts per (segment, zone, interval). */
export class Workload {
  readonly Z: number;
  readonly N: number;
  readonly t0: number;
  readonly dt: number;
  readonly nI: number;
  readonly segOfEvent: Int32Array;
  /** Active (accessed) segments, ascending, and their index. */
  readonly active: number[];
  readonly activeIdx: Int32Array;
  /** counts[(a·Z + z)·nI + j] */
  readonly counts: Float64Array;
  /** writes[a·nI + j] */
  readonly writes: Float64Array;
  /** partial[(a·Z + z)·nI + j]: the accesses of interval j before its decision time b_{j+1} − lead. */
  readonly partial: Float64Array;
  /** First event index of each interval (length nI + 1). */
  readonly eventStart: Int32Array;
  readonly segBytes: Float64Array;
  readonly rtt: Float64Array;

  constructor(
    readonly trace: Trace,
    readonly latency: LatencyModel,
    readonly opts: SimOptions,
  ) {
    this.Z = latency.zones.length;
    this.N = latency.nodes.length;
    this.rtt = latency.rtt;
    this.dt = opts.intervalSeconds * 1000;
    ({ t0: this.t0, nI: this.nI } = intervalsOf(trace, opts.intervalSeconds));
    const segmenter = new Segmenter(opts.segmentCount);
    const segOfKey = trace.keys.map((k) => segmenter.segmentOf(k));
    this.segBytes = new Float64Array(opts.segmentCount);
    for (const s of segOfKey) this.segBytes[s] += opts.keyBytes;
    this.segOfEvent = new Int32Array(trace.length);
    const seen = new Uint8Array(opts.segmentCount);
    for (let e = 0; e < trace.length; e++) {
      const s = segOfKey[trace.key[e]];
      this.segOfEvent[e] = s;
      seen[s] = 1;
    }
    this.active = [];
    this.activeIdx = new Int32Array(opts.segmentCount).fill(-1);
    for (let s = 0; s < opts.segmentCount; s++) {
      if (seen[s]) {
        this.activeIdx[s] = this.active.length;
        this.active.push(s);
      }
    }
    const A = this.active.length;
    checkCountCells(A, this.Z, this.nI, opts.intervalSeconds);
    this.counts = new Float64Array(A * this.Z * this.nI);
    this.writes = new Float64Array(A * this.nI);
    this.partial = new Float64Array(A * this.Z * this.nI);
    const leadMs = opts.leadSeconds * 1000;
    this.eventStart = new Int32Array(this.nI + 1);
    let j = 0;
    for (let e = 0; e < trace.length; e++) {
      const ij = Math.floor((trace.t[e] - this.t0) / this.dt);
      while (j < ij) this.eventStart[++j] = e;
      const a = this.activeIdx[this.segOfEvent[e]];
      this.counts[(a * this.Z + trace.zone[e]) * this.nI + ij] += 1;
      if (trace.t[e] < this.boundary(ij + 1) - leadMs)
        this.partial[(a * this.Z + trace.zone[e]) * this.nI + ij] += 1;
      if (trace.write[e]) this.writes[a * this.nI + ij] += 1;
    }
    while (j < this.nI) this.eventStart[++j] = trace.length;
  }

  boundary(j: number): number {
    return this.t0 + j * this.dt;
  }

  /** Σ counts of active segment a, zone z, over intervals [from, to) (of `counts`, laid out as this.counts). */
  sum(a: number, z: number, from: number, to: number, counts: Float64Array = this.counts): number {
    const base = (a * this.Z + z) * this.nI;
    let s = 0;
    for (let j = Math.max(0, from); j < to; j++) s += counts[base + j];
    return s;
  }

  writeSum(a: number, from: number, to: number): number {
    let s = 0;
    for (let j = Math.max(0, from); j < to; j++) s += this.writes[a * this.nI + j];
    return s;
  }
}

/** Latency accounting shared by every policy: one replay of an interval under a placement. */
export class Replay {
  readonly lat: Float64Array;
  total = 0;
  migrations = 0;
  bytes = 0;
  splits = 0;
  reshardOps = 0;

  constructor(private readonly w: Workload) {
    this.lat = new Float64Array(w.trace.length);
  }

  /**
   * Replays interval j with segments on `cur` (node index per segment); a
   * segment whose `next` differs cuts over at b_{j+1}, so its writes in the
   * fenced tail wait until then and are served by the new node.
   */
  interval(j: number, cur: Int32Array, next: Int32Array): void {
    const w = this.w;
    const tr = w.trace;
    const N = w.N;
    const rtt = w.rtt;
    const end = w.boundary(j + 1);
    const pauseStart = end - w.opts.writePauseMs;
    for (let e = w.eventStart[j]; e < w.eventStart[j + 1]; e++) {
      const s = w.segOfEvent[e];
      const z = tr.zone[e];
      const n = cur[s];
      let l: number;
      const m = next[s];
      if (m !== n && tr.write[e] && tr.t[e] >= pauseStart) l = end - tr.t[e] + rtt[z * N + m];
      else l = rtt[z * N + n];
      this.lat[e] = l;
      this.total += l;
    }
  }

  result(): PolicyResult {
    const n = this.lat.length;
    return {
      mean_ms: n ? this.total / n : 0,
      p99_ms: percentileOf(this.lat, 99),
      migrations: this.migrations,
      bytes_moved: this.bytes,
      splits: this.splits,
      reshard_ops: this.reshardOps,
    };
  }
}
