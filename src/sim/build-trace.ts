/**
 * Trace builders: turn real load series (or a real request log) into a
 * workload trace with origin zones, for the simulator. Pure and
 * deterministic for a seed; the command reads the files.
 *
 * From series ("follow the sun"):
 *  - keys are dealt over the series; each series drives its keys' access
 *    rates: the expected accesses of a key in a series' interval are
 *    proportional to the series' value there (normalised by the series' mean)
 *    times the key's weight (uniform in [0.5, 1.5));
 *  - each key's dominant origin zone follows the phase of its series' season:
 *    in phase φ ∈ [0, 1) the dominant zone is zones[floor(φ·Z)], receiving
 *    `dominantShare` of the accesses; the rest are spread evenly over the
 *    other zones. φ = (i mod season)/season for a seasonal series, and the
 *    time of day of the real timestamp for a series without a season;
 *  - each series contributes its last `days` days, re-based to start at
 *    `startMs`, so series from different years share one clock;
 *  - an access is a write with probability `writeFraction`.
 *
 * From a request log (timestamp,key[,…]): the real keys and times, with the
 * origin zone assigned by the same follow-the-sun rule on the time of day.
 */
import { checkZoneNames, ZONE_NAME_PATTERN } from "../engine/access-windows.js";
import { UsageError } from "../errors.js";
import { seededRandom } from "../forecast/stats.js";
import { csvField } from "./trace.js";

export interface SeriesSource {
  name: string;
  values: Float64Array;
  /** Epoch ms of values[0]. */
  startMs: number;
  intervalSeconds: number;
  /** Season in points; ≤ 1 means none. */
  season: number;
}

export interface BuildOptions {
  keys: number;
  zones: readonly string[];
  events: number;
  seed: number;
  /** Days of each series used, counted back from its end (default 7). */
  days?: number;
  /** Share of a key's accesses from its dominant zone (default 0.7). */
  dominantShare?: number;
  writeFraction?: number;
  /** Trace clock origin (default 2024-01-01T00:00:00Z). */
  startMs?: number;
}

export interface RequestRow {
  t: number;
  key: string;
}

export interface RequestBuildOptions {
  zones: readonly string[];
  seed: number;
  dominantShare?: number;
  writeFraction?: number;
  /** Keep only the most requested `keys` keys (default: all). */
  keys?: number;
  /** Length of the rotation in seconds (default 86,400: the day). */
  seasonSeconds?: number;
}

export const DEFAULT_TRACE_START = Date.UTC(2024, 0, 1);
const DAY_MS = 86_400_000;

/** mulberry32 (the forecasting library's seeded PRNG), uniform in [0, 1); seed 0 stands for 0x9e3779b9. */
export function rng(seed: number): () => number {
  return seededRandom(seed >>> 0 || 0x9e3779b9);
}

function checkCommon(
  zones: readonly string[],
  dominantShare: number,
  writeFraction: number,
  seed: number,
): void {
  if (zones.length < 1) throw new UsageError("give at least one zone");
  if (new Set(zones).size !== zones.length) throw new UsageError("zones must be distinct");
  // the config's rule: a trace's zones name the cluster's zones
  for (const z of zones) {
    if (!ZONE_NAME_PATTERN.test(z))
      throw new UsageError(`zone name ${JSON.stringify(z)} is not allowed`, {
        hint: "zone names are 1-32 of a-z, 0-9, _ and -, starting with a letter or digit (as in the config's zones)",
      });
  }
  checkZoneNames(zones);
  if (!(dominantShare > 0 && dominantShare <= 1))
    throw new UsageError("the dominant share must be in (0, 1]");
  if (!(writeFraction >= 0 && writeFraction <= 1))
    throw new UsageError("the write fraction must be in [0, 1]");
  if (!Number.isInteger(seed)) throw new UsageError(`the seed must be an integer, got ${seed}`);
}

/** Picks the origin zone: the dominant one with probability share, else one of the others evenly. */
function pickZone(dominant: number, zoneCount: number, share: number, u: number): number {
  if (zoneCount === 1 || u < share) return dominant;
  const k = Math.min(zoneCount - 2, Math.floor(((u - share) / (1 - share)) * (zoneCount - 1)));
  return k >= dominant ? k + 1 : k;
}

interface Events {
  t: Float64Array;
  key: Int32Array;
  zone: Uint8Array;
  write: Uint8Array;
  n: number;
}

function toCsv(ev: Events, keys: readonly string[], zones: readonly string[]): string {
  const order = new Uint32Array(ev.n);
  for (let i = 0; i < ev.n; i++) order[i] = i;
  order.sort((a, b) => ev.t[a] - ev.t[b] || a - b);
  const quoted = keys.map(csvField);
  const parts: string[] = ["timestamp,key,op,zone"];
  for (let j = 0; j < ev.n; j++) {
    const i = order[j];
    parts.push(
      `${new Date(ev.t[i]).toISOString()},${quoted[ev.key[i]]},${ev.write[i] ? "write" : "read"},${zones[ev.zone[i]]}`,
    );
  }
  return parts.join("\n") + "\n";
}

/** Builds a follow-the-sun trace (CSV text) from series. */
export function buildTraceFromSeries(series: readonly SeriesSource[], opts: BuildOptions): string {
  const dominantShare = opts.dominantShare ?? 0.7;
  const writeFraction = opts.writeFraction ?? 0.2;
  const days = opts.days ?? 7;
  const start = opts.startMs ?? DEFAULT_TRACE_START;
  checkCommon(opts.zones, dominantShare, writeFraction, opts.seed);
  if (series.length === 0) throw new UsageError("no series to build a trace from");
  if (!Number.isInteger(opts.keys) || opts.keys < 1 || opts.keys > 1_000_000) {
    throw new UsageError(`--keys must be an integer from 1 to 1000000, got ${opts.keys}`);
  }
  if (!Number.isInteger(opts.events) || opts.events < 1 || opts.events > 50_000_000) {
    throw new UsageError(`--events must be an integer from 1 to 50000000, got ${opts.events}`);
  }
  if (!(days > 0)) throw new UsageError("--days must be > 0");
  const rand = rng(opts.seed);
  const Z = opts.zones.length;

  // The window of each series and its normalised values.
  const windows = series.map((s) => {
    if (!(s.intervalSeconds > 0)) throw new UsageError(`series ${s.name} has no interval`);
    const pts = Math.min(s.values.length, Math.max(1, Math.ceil((days * 86400) / s.intervalSeconds)));
    const first = s.values.length - pts;
    let mean = 0;
    for (let i = first; i < s.values.length; i++) mean += Math.max(0, s.values[i]);
    mean /= pts;
    return { s, first, pts, mean };
  });
  const usable = windows.filter((w) => w.mean > 0 && Number.isFinite(w.mean));
  if (usable.length === 0)
    throw new UsageError("every series is zero or empty over the window; no trace can be built");

  const keyNames: string[] = [];
  const keySeries: number[] = [];
  const keyWeight: number[] = [];
  for (let k = 0; k < opts.keys; k++) {
    const w = usable[k % usable.length];
    keyNames.push(`${w.s.name}/k${String(k).padStart(5, "0")}`);
    keySeries.push(k % usable.length);
    keyWeight.push(0.5 + rand());
  }
  // Σ over keys and points of weight × normalised value: the scale that makes the expected total `events`.
  const seriesWeight = new Float64Array(usable.length);
  keySeries.forEach((si, k) => (seriesWeight[si] += keyWeight[k]));
  let mass = 0;
  usable.forEach((w, si) => (mass += seriesWeight[si] * w.pts)); // Σ_j v_j/mean = pts
  const scale = opts.events / mass;

  const cap = Math.ceil(opts.events * 1.1 + 1000);
  let ev: Events = {
    t: new Float64Array(cap),
    key: new Int32Array(cap),
    zone: new Uint8Array(cap),
    write: new Uint8Array(cap),
    n: 0,
  };
  const push = (t: number, key: number, zone: number, isWrite: boolean) => {
    if (ev.n === ev.t.length) ev = grow(ev);
    ev.t[ev.n] = t;
    ev.key[ev.n] = key;
    ev.zone[ev.n] = zone;
    ev.write[ev.n] = isWrite ? 1 : 0;
    ev.n++;
  };
  const keysOf: number[][] = usable.map(() => []);
  keySeries.forEach((si, k) => keysOf[si].push(k));
  usable.forEach((w, si) => {
    const iv = w.s.intervalSeconds * 1000;
    for (let j = 0; j < w.pts; j++) {
      const idx = w.first + j;
      const v = Math.max(0, w.s.values[idx]) / w.mean;
      if (!(v > 0)) continue;
      let phase: number;
      if (w.s.season > 1) phase = (idx % Math.round(w.s.season)) / Math.round(w.s.season);
      else phase = ((((w.s.startMs + idx * iv) % DAY_MS) + DAY_MS) % DAY_MS) / DAY_MS;
      const dominant = Math.min(Z - 1, Math.floor(phase * Z));
      const t0 = start + j * iv;
      for (const k of keysOf[si]) {
        const expected = v * keyWeight[k] * scale;
        let count = Math.floor(expected);
        if (rand() < expected - count) count++;
        for (let c = 0; c < count; c++) {
          push(
            t0 + Math.floor(rand() * iv),
            k,
            pickZone(dominant, Z, dominantShare, rand()),
            rand() < writeFraction,
          );
        }
      }
    }
  });
  if (ev.n === 0) throw new UsageError("the series produced no events; raise --events");
  return toCsv(ev, keyNames, opts.zones);
}

function grow(ev: Events): Events {
  const cap = ev.t.length * 2;
  const t = new Float64Array(cap);
  t.set(ev.t);
  const key = new Int32Array(cap);
  key.set(ev.key);
  const zone = new Uint8Array(cap);
  zone.set(ev.zone);
  const write = new Uint8Array(cap);
  write.set(ev.write);
  return { t, key, zone, write, n: ev.n };
}

/** Builds a follow-the-sun trace (CSV text) from a real request log. */
export function buildTraceFromRequests(rows: readonly RequestRow[], opts: RequestBuildOptions): string {
  const dominantShare = opts.dominantShare ?? 0.7;
  const writeFraction = opts.writeFraction ?? 0.2;
  const seasonMs = (opts.seasonSeconds ?? 86400) * 1000;
  checkCommon(opts.zones, dominantShare, writeFraction, opts.seed);
  if (!(seasonMs > 0)) throw new UsageError("the season must be > 0 seconds");
  if (rows.length === 0) throw new UsageError("the request log holds no rows");
  let keep: Set<string> | undefined;
  if (opts.keys !== undefined) {
    if (!Number.isInteger(opts.keys) || opts.keys < 1)
      throw new UsageError(`--keys must be a positive integer, got ${opts.keys}`);
    const counts = new Map<string, number>();
    for (const r of rows) counts.set(r.key, (counts.get(r.key) ?? 0) + 1);
    keep = new Set(
      [...counts.entries()]
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
        .slice(0, opts.keys)
        .map(([k]) => k),
    );
  }
  const rand = rng(opts.seed);
  const Z = opts.zones.length;
  const keyIdx = new Map<string, number>();
  const keys: string[] = [];
  const ev: Events = {
    t: new Float64Array(rows.length),
    key: new Int32Array(rows.length),
    zone: new Uint8Array(rows.length),
    write: new Uint8Array(rows.length),
    n: 0,
  };
  for (const r of rows) {
    if (keep && !keep.has(r.key)) continue;
    let k = keyIdx.get(r.key);
    if (k === undefined) {
      k = keys.length;
      keys.push(r.key);
      keyIdx.set(r.key, k);
    }
    const phase = (((r.t % seasonMs) + seasonMs) % seasonMs) / seasonMs;
    const dominant = Math.min(Z - 1, Math.floor(phase * Z));
    ev.t[ev.n] = r.t;
    ev.key[ev.n] = k;
    ev.zone[ev.n] = pickZone(dominant, Z, dominantShare, rand());
    ev.write[ev.n] = rand() < writeFraction ? 1 : 0;
    ev.n++;
  }
  return toCsv(ev, keys, opts.zones);
}
