/**
 * The latency model: round-trip times from every origin zone to every node,
 * and each node's resources and current load. Pure data and lookups.
 *
 * The base model is built from a zone × zone matrix
 * (`{"zones": [...], "rtt_ms": [[...], ...]}`): a node in zone y is reached
 * from zone x in rtt_ms[x][y]. The agents' measurements (src/cluster/rtt.ts)
 * then replace the (zone, node) cells they cover (`fromMeasurements`); the
 * planner only ever asks `rttMs`, so it does not know which is which.
 */
import { UsageError } from "../errors.js";
import { checkZoneNames, ZONE_NAME_PATTERN } from "./access-windows.js";

/** The matrix file's shape, validated. */
export interface ZoneMatrix {
  zones: string[];
  /** rtt_ms[i][j]: round trip from zone i to a node in zone j, milliseconds. */
  rttMs: number[][];
}

export interface NodeSite {
  id: string;
  zone: string;
}

export interface NodeCapacity {
  /** Cores (or any CPU unit the load uses). */
  cpu: number;
  memoryBytes: number;
  diskBytes: number;
  shardSlots: number;
}

export interface NodeLoad {
  cpu: number;
  memoryBytes: number;
  diskBytes: number;
  shards: number;
}

export interface NodeResources {
  capacity: NodeCapacity;
  load: NodeLoad;
}

/** Serialisable form of a latency model (recorded in plans as an input). */
export interface LatencySnapshot {
  zones: string[];
  nodes: NodeSite[];
  /** rttMs[zone][node] in the order of zones and nodes. */
  rttMs: number[][];
}

/**
 * Measured round trips, zones × nodes: rttMs[zone][node] in ms, or null
 * where nothing was measured (that cell keeps the base model's value).
 */
export interface MeasuredLatency {
  zones: string[];
  /** Node ids, in the order of each row. */
  nodes: string[];
  rttMs: (number | null)[][];
}

/**
 * Largest round trip a matrix may give. Any real one is far below; a huge
 * finite one (1e308) overflows to Infinity once summed over accesses, and the
 * outputs would hold NaN and null.
 */
export const MAX_RTT_MS = 3_600_000;

/**
 * Validates a parsed matrix file: distinct zone names, a square matrix of
 * finite, non-negative numbers the size of the zone list. `source` names the
 * file in messages.
 */
export function parseZoneMatrix(value: unknown, source = "the latency matrix"): ZoneMatrix {
  const hint =
    'expected JSON like {"zones": ["a","b"], "rtt_ms": [[1,50],[50,1]]}: square, finite, non-negative, at most 3600000 ms';
  const bad = (why: string): never => {
    throw new UsageError(`${source} is invalid: ${why}`, { hint });
  };
  if (!value || typeof value !== "object" || Array.isArray(value)) return bad("not a JSON object");
  const v = value as { zones?: unknown; rtt_ms?: unknown };
  if (!Array.isArray(v.zones) || v.zones.length === 0)
    return bad('"zones" must be a non-empty array of names');
  const zones: string[] = [];
  for (const z of v.zones) {
    // the names the config, the clients and the traces may use: a zone "A" here would match none of them
    if (typeof z !== "string" || !ZONE_NAME_PATTERN.test(z))
      return bad(
        `zone name ${JSON.stringify(z)} is not allowed (lower-case letters, digits, "-" and "_", at most 32, as in the config's zones)`,
      );
    checkZoneNames([z], `${source} is invalid: `, hint);
    if (zones.includes(z)) return bad(`zone ${z} appears twice`);
    zones.push(z);
  }
  if (!Array.isArray(v.rtt_ms)) return bad('"rtt_ms" must be an array of rows');
  if (v.rtt_ms.length !== zones.length) {
    return bad(`"rtt_ms" has ${v.rtt_ms.length} rows for ${zones.length} zones (it must be square)`);
  }
  const rttMs: number[][] = [];
  v.rtt_ms.forEach((row: unknown, i: number) => {
    if (!Array.isArray(row) || row.length !== zones.length) {
      bad(`row ${i} (${zones[i]}) must have ${zones.length} entries (the matrix is not square)`);
    }
    const out: number[] = [];
    (row as unknown[]).forEach((x, j) => {
      if (typeof x !== "number" || !Number.isFinite(x)) bad(`rtt_ms[${i}][${j}] is not a finite number`);
      if ((x as number) < 0) bad(`rtt_ms[${i}][${j}] is negative (${x as number})`);
      if ((x as number) > MAX_RTT_MS)
        bad(`rtt_ms[${i}][${j}] is ${x as number} ms; at most ${MAX_RTT_MS} ms (an hour) is accepted`);
      out.push(x as number);
    });
    rttMs.push(out);
  });
  return { zones, rttMs };
}

/** The default when no matrix is given: `intraMs` within a zone, `interMs` between zones. */
export function defaultZoneMatrix(zones: readonly string[], intraMs = 1, interMs = 50): ZoneMatrix {
  return {
    zones: [...zones],
    rttMs: zones.map((_, i) => zones.map((__, j) => (i === j ? intraMs : interMs))),
  };
}

/** One node per zone, named after the zone (the simulator's and the default layout). */
export function nodePerZone(zones: readonly string[]): NodeSite[] {
  return zones.map((z) => ({ id: z, zone: z }));
}

/** `count` nodes dealt round-robin over the zones: `<zone>-<n>`. */
export function nodesOverZones(zones: readonly string[], count: number): NodeSite[] {
  if (!Number.isInteger(count) || count < 1 || count > 4096) {
    throw new UsageError(`the node count must be an integer from 1 to 4096, got ${count}`);
  }
  const out: NodeSite[] = [];
  for (let i = 0; i < count; i++) {
    const zone = zones[i % zones.length];
    out.push({ id: `${zone}-${Math.floor(i / zones.length) + 1}`, zone });
  }
  return out;
}

export class LatencyModel {
  readonly zones: readonly string[];
  readonly nodes: readonly NodeSite[];
  /** [zone * nodeCount + node] → ms. */
  readonly rtt: Float64Array;
  private readonly zoneIdx = new Map<string, number>();
  private readonly nodeIdx = new Map<string, number>();

  constructor(zones: readonly string[], nodes: readonly NodeSite[], rtt: Float64Array) {
    if (rtt.length !== zones.length * nodes.length) throw new UsageError("latency table has the wrong size");
    this.zones = [...zones];
    this.nodes = nodes.map((n) => ({ ...n }));
    this.rtt = rtt;
    this.zones.forEach((z, i) => this.zoneIdx.set(z, i));
    this.nodes.forEach((n, i) => {
      if (this.nodeIdx.has(n.id)) throw new UsageError(`node ${n.id} appears twice in the latency model`);
      this.nodeIdx.set(n.id, i);
    });
  }

  /** Builds node RTTs from a zone matrix: every node sits in one of the matrix's zones. */
  static fromZoneMatrix(
    matrix: ZoneMatrix,
    nodes: readonly NodeSite[] = nodePerZone(matrix.zones),
  ): LatencyModel {
    const zi = new Map(matrix.zones.map((z, i) => [z, i]));
    const rtt = new Float64Array(matrix.zones.length * nodes.length);
    nodes.forEach((n, j) => {
      const nz = zi.get(n.zone);
      if (nz === undefined) {
        throw new UsageError(
          `node ${n.id} is in zone ${JSON.stringify(n.zone)}, which the latency matrix does not list`,
          {
            hint: `the matrix lists: ${matrix.zones.join(", ")}`,
          },
        );
      }
      for (let i = 0; i < matrix.zones.length; i++) rtt[i * nodes.length + j] = matrix.rttMs[i][nz];
    });
    return new LatencyModel(matrix.zones, nodes, rtt);
  }

  static fromSnapshot(s: LatencySnapshot): LatencyModel {
    const rtt = new Float64Array(s.zones.length * s.nodes.length);
    s.rttMs.forEach((row, i) => row.forEach((x, j) => (rtt[i * s.nodes.length + j] = x)));
    return new LatencyModel(s.zones, s.nodes, rtt);
  }

  /**
   * `base` with every (zone, node) cell that `measured` has a finite,
   * non-negative value for replaced by it; zones and nodes the base does not
   * know are ignored, unmeasured cells keep the base's value.
   */
  static fromMeasurements(base: LatencyModel, measured: MeasuredLatency): LatencyModel {
    const rtt = Float64Array.from(base.rtt);
    measured.zones.forEach((zone, i) => {
      const zi = base.zoneIdx.get(zone);
      const row = measured.rttMs[i];
      if (zi === undefined || !Array.isArray(row)) return;
      measured.nodes.forEach((node, j) => {
        const ni = base.nodeIdx.get(node);
        const x = row[j];
        if (ni === undefined || typeof x !== "number" || !Number.isFinite(x) || x < 0) return;
        rtt[zi * base.nodes.length + ni] = x;
      });
    });
    return new LatencyModel(base.zones, base.nodes, rtt);
  }

  zoneIndex(zone: string): number {
    const i = this.zoneIdx.get(zone);
    if (i === undefined)
      throw new UsageError(
        `unknown zone ${JSON.stringify(zone)}; the latency model lists ${this.zones.join(", ")}`,
      );
    return i;
  }

  nodeIndex(node: string): number {
    const i = this.nodeIdx.get(node);
    if (i === undefined) throw new UsageError(`the latency model has no node ${JSON.stringify(node)}`);
    return i;
  }

  hasNode(node: string): boolean {
    return this.nodeIdx.has(node);
  }

  rttMs(zone: string, node: string): number {
    return this.rtt[this.zoneIndex(zone) * this.nodes.length + this.nodeIndex(node)];
  }

  /** By indexes (the hot path). */
  rttAt(zoneIndex: number, nodeIndex: number): number {
    return this.rtt[zoneIndex * this.nodes.length + nodeIndex];
  }

  /** The smallest RTT from a zone to any node. */
  bestRttFrom(zoneIndex: number): number {
    let best = Infinity;
    for (let j = 0; j < this.nodes.length; j++) best = Math.min(best, this.rttAt(zoneIndex, j));
    return best;
  }

  /**
   * Σ_zone accesses[zone] × rtt(zone, node): the total latency (ms) the
   * given accesses would see if served from `nodeIndex`.
   */
  totalLatency(accessesByZone: ArrayLike<number>, nodeIndex: number): number {
    let sum = 0;
    for (let z = 0; z < this.zones.length; z++) sum += accessesByZone[z] * this.rttAt(z, nodeIndex);
    return sum;
  }

  snapshot(): LatencySnapshot {
    return {
      zones: [...this.zones],
      nodes: this.nodes.map((n) => ({ ...n })),
      rttMs: this.zones.map((_, i) => this.nodes.map((__, j) => this.rttAt(i, j))),
    };
  }
}

/** Highest utilisation over the node's resources (0..∞; 1 is full). */
export function utilisation(r: NodeResources): number {
  const ratio = (used: number, cap: number) => (cap > 0 ? used / cap : used > 0 ? Infinity : 0);
  return Math.max(
    ratio(r.load.cpu, r.capacity.cpu),
    ratio(r.load.memoryBytes, r.capacity.memoryBytes),
    ratio(r.load.diskBytes, r.capacity.diskBytes),
    ratio(r.load.shards, r.capacity.shardSlots),
  );
}

/** Utilisation after adding one shard of `bytes` to the node. */
export function utilisationWith(r: NodeResources, bytes: number): number {
  return utilisation({
    capacity: r.capacity,
    load: { ...r.load, diskBytes: r.load.diskBytes + bytes, shards: r.load.shards + 1 },
  });
}
