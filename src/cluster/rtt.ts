/**
 * Measured round-trip times between the agents (issue 8): every agent is
 * asked to probe every other (`POST /v1/admin/probe`, src/agent/probe.ts),
 * and the answers become the planner's latency input.
 *
 * The agent in zone z stands for the clients of zone z: the cell
 * (origin zone z, node n) is the median, over the agents of zone z other
 * than n itself, of their median round trip to n. A cell no agent measured
 * (a zone without an agent, a node's own zone when it is alone there, an
 * agent that did not answer) is null and keeps the configured or default
 * matrix value (LatencyModel.fromMeasurements).
 */
import type { Config } from "../config.js";
import type { MeasuredLatency } from "../engine/latency.js";
import type { LocationMap } from "../engine/location-map.js";
import { errorMessage } from "../errors.js";
import { AgentRpc } from "./agent-rpc.js";
import { resolveClientToken } from "./local.js";

/** Samples per peer unless the caller says otherwise. */
export const RTT_SAMPLES = 5;
/** The agents' probe budget (10 s) plus slack for the answer. */
const PROBE_CALL_TIMEOUT_MS = 13_000;
/**
 * An agent asked to probe must answer GET /health within this while it works: one that does not
 * (stopped, paused, cut off) is given up at once rather than after the whole probe budget.
 */
export const PROBE_LIVENESS_TIMEOUT_MS = 3000;

/** One agent→agent measurement as an agent reported it. */
export interface RttPair {
  from: string;
  to: string;
  ok: boolean;
  medianMs?: number;
  minMs?: number;
  error?: string;
}

export interface AgentProbeStatus {
  node: string;
  zone: string;
  ok: boolean;
  /** Why this agent measured nothing (did not answer, refused the token). */
  error?: string;
}

/** What the agents measured, shaped like the latency model (zones × nodes, null = not measured). */
export interface MeasuredRtts extends MeasuredLatency {
  measuredAt: number;
  samples: number;
  /** Cells with a measurement, of zones × nodes. */
  measuredCells: number;
  totalCells: number;
  agents: AgentProbeStatus[];
  pairs: RttPair[];
}

/** What one origin agent reported: its node id and its peers' results. */
export interface OriginReport {
  node: string;
  peers: RttPair[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The zones of the config followed by any other zone a node of the map is in. */
export function zonesOf(map: LocationMap, zones: readonly string[] = []): string[] {
  return [...new Set([...zones, ...map.nodes.map((n) => n.zone)])];
}

/**
 * Per (origin zone, node): the median of the measurements by the agents in
 * that zone (a node's measurement of itself never counts). Pure.
 */
export function aggregateRtts(
  map: LocationMap,
  zones: readonly string[],
  reports: readonly OriginReport[],
): MeasuredLatency & { measuredCells: number } {
  const zoneOfNode = new Map(map.nodes.map((n) => [n.id, n.zone]));
  const nodes = map.nodes.map((n) => n.id);
  const allZones = zonesOf(map, zones);
  const buckets = new Map<string, number[]>();
  for (const r of reports) {
    const zone = zoneOfNode.get(r.node);
    if (zone === undefined) continue;
    for (const p of r.peers) {
      if (!p.ok || p.to === r.node || !zoneOfNode.has(p.to)) continue;
      const x = p.medianMs;
      if (typeof x !== "number" || !Number.isFinite(x) || x < 0) continue;
      const key = `${zone}\u0000${p.to}`;
      const b = buckets.get(key);
      if (b) b.push(x);
      else buckets.set(key, [x]);
    }
  }
  let measuredCells = 0;
  const rttMs = allZones.map((z) =>
    nodes.map((n) => {
      const b = buckets.get(`${z}\u0000${n}`);
      if (!b) return null;
      measuredCells++;
      return Math.round(median(b) * 1000) / 1000;
    }),
  );
  return { zones: allZones, nodes, rttMs, measuredCells };
}

/** An agent's list of peer results, keeping only well-formed entries for the peers it was asked about. */
export function parsePeerResults(from: string, value: unknown, asked: ReadonlySet<string>): RttPair[] {
  const out: RttPair[] = [];
  if (!Array.isArray(value)) return out;
  for (const v of value as Record<string, unknown>[]) {
    if (!v || typeof v !== "object" || typeof v.id !== "string" || !asked.has(v.id)) continue;
    const num = (x: unknown) =>
      typeof x === "number" && Number.isFinite(x) && x >= 0 && x < 3_600_000 ? x : undefined;
    const medianMs = num(v.medianMs);
    const ok = v.ok === true && medianMs !== undefined;
    out.push({
      from,
      to: v.id,
      ok,
      medianMs: ok ? medianMs : undefined,
      minMs: ok ? num(v.minMs) : undefined,
      error: ok ? undefined : typeof v.error === "string" ? v.error.slice(0, 300) : "no measurement",
    });
  }
  return out;
}

/**
 * Asks every agent of the map to probe all the others, in parallel, and
 * aggregates the answers. Never throws for an agent that is down: it is
 * named in `agents` with its error, and its cells stay unmeasured.
 */
export async function measureRtts(
  map: LocationMap,
  rpc: AgentRpc,
  opts: {
    zones?: readonly string[];
    samples?: number;
    timeoutMs?: number;
    now?: () => number;
    /** How long an agent asked to probe may take to answer GET /health (default PROBE_LIVENESS_TIMEOUT_MS). */
    livenessTimeoutMs?: number;
  } = {},
): Promise<MeasuredRtts> {
  const samples = opts.samples ?? RTT_SAMPLES;
  const agents = map.nodes.filter((n) => n.address !== "");
  const statuses: AgentProbeStatus[] = [];
  const reports: OriginReport[] = [];
  await Promise.all(
    agents.map(async (origin) => {
      const others = agents.filter((n) => n.id !== origin.id);
      if (others.length === 0) {
        statuses.push({ node: origin.id, zone: origin.zone, ok: true });
        return;
      }
      // beside the probe, a liveness check: an agent that cannot even answer /health is given up
      // at once, instead of after the whole probe budget
      const giveUp = new AbortController();
      const liveMs = opts.livenessTimeoutMs ?? PROBE_LIVENESS_TIMEOUT_MS;
      let dead: string | undefined;
      const checked = rpc
        .request(origin.address, "GET", "/health", { auth: false, signal: AbortSignal.timeout(liveMs) })
        .then(
          () => undefined,
          (err: Error) =>
            err.name === "TimeoutError" || err.name === "AbortError"
              ? `no answer to GET /health within ${liveMs} ms (stopped, paused or cut off?)`
              : undefined, // refused or reset: the probe's own error says it
        )
        .then((why) => {
          if (why) {
            dead = why;
            giveUp.abort();
          }
        });
      try {
        const r = await rpc
          .json<{ peers?: unknown; error?: string; message?: string }>(
            origin.address,
            "POST",
            "/v1/admin/probe",
            {
              peers: others.map((n) => ({ id: n.id, address: n.address })),
              samples,
              ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
            },
            { signal: giveUp.signal },
          )
          .finally(() => giveUp.abort());
        if (r.status !== 200) {
          const why =
            r.status === 401
              ? "the agent refused our token (401)"
              : r.status === 404
                ? "the agent does not measure round trips (404: an older agent? upgrade it)"
                : `the agent answered ${r.status}: ${r.body?.message ?? r.body?.error ?? ""}`;
          statuses.push({ node: origin.id, zone: origin.zone, ok: false, error: why });
          return;
        }
        const asked = new Set(others.map((n) => n.id));
        reports.push({ node: origin.id, peers: parsePeerResults(origin.id, r.body?.peers, asked) });
        statuses.push({ node: origin.id, zone: origin.zone, ok: true });
      } catch (err) {
        await checked;
        statuses.push({ node: origin.id, zone: origin.zone, ok: false, error: dead ?? errorMessage(err) });
      }
    }),
  );
  const order = new Map(map.nodes.map((n, i) => [n.id, i]));
  statuses.sort((a, b) => order.get(a.node)! - order.get(b.node)!);
  reports.sort((a, b) => order.get(a.node)! - order.get(b.node)!);
  const agg = aggregateRtts(map, opts.zones ?? [], reports);
  return {
    ...agg,
    totalCells: agg.zones.length * agg.nodes.length,
    measuredAt: (opts.now ?? Date.now)(),
    samples,
    agents: statuses,
    pairs: reports.flatMap((r) => r.peers),
  };
}

/** measureRtts with the configured token and a connection pool of its own. */
export async function measureClusterRtts(
  config: Config,
  map: LocationMap,
  opts: { samples?: number } = {},
): Promise<MeasuredRtts> {
  const rpc = new AgentRpc({ token: resolveClientToken(config), timeoutMs: PROBE_CALL_TIMEOUT_MS });
  try {
    return await measureRtts(map, rpc, { zones: config.zones, samples: opts.samples });
  } finally {
    rpc.close();
  }
}

/** The note a plan or a panel shows for where its latency came from. */
export function latencyNote(m: MeasuredRtts | undefined, assumed: string, problem?: string): string {
  if (m && m.measuredCells > 0) {
    const down = m.agents.filter((a) => !a.ok).map((a) => a.node);
    return (
      `latency: measured by the agents (${m.measuredCells} of ${m.totalCells} zone→node round trips, median of ${m.samples} samples; ` +
      `the rest ${assumed})${down.length ? `; no measurement from ${down.join(", ")}` : ""}`
    );
  }
  return `latency: ${assumed}${problem ? ` (not measured: ${problem})` : ""}`;
}
