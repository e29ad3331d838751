/**
 * Round-trip probes from this agent to other agents (issue 8): a coordinator
 * (`shardctl rtt`, `plan`, the dashboard) asks every agent to time requests to
 * every other agent, and the planner's latency model takes the medians
 * instead of an assumed zone matrix (src/cluster/rtt.ts).
 *
 *   POST /v1/admin/probe {peers: [{id, address}], samples?, timeoutMs?}
 *   → 200 {nodeId, zone, measuredAt, samples, peers: [PeerRtt]}
 *
 * Per peer: a fresh keep-alive connection, one warm-up request (the TCP
 * connect and the first request, not counted; it also checks that the peer
 * is the agent the caller named), then `samples` sequential `GET /health`,
 * each timed from the request to the last byte of the answer. The median is
 * the figure to use; the minimum is the best the path can do.
 *
 * What this must not do: send the cluster token anywhere (`/health` needs
 * none, so a wrong address in a map leaks nothing), reach anything but the
 * addresses the caller named, or run unbounded: at most MAX_PEERS peers,
 * PROBE_CONCURRENCY at a time, each request at most `timeoutMs`, the whole
 * probe at most PROBE_BUDGET_MS; a peer that is down is a per-peer error in
 * the answer, never a failed request.
 *
 * The agent remembers the latest result per peer and reports it in
 * `GET /v1/node` as `rtt` (the dashboard's nodes panel reads it there).
 */
import { Agent as HttpAgent, request, type IncomingMessage, type ServerResponse } from "node:http";
import { NODE_ID_PATTERN } from "../engine/location-map.js";
import type { Agent } from "./agent.js";
import { ApiError, badRequest, readJson, sendJson } from "./http-util.js";

export const MAX_PEERS = 256;
export const MAX_SAMPLES = 50;
export const DEFAULT_SAMPLES = 5;
export const DEFAULT_TIMEOUT_MS = 1000;
const MIN_TIMEOUT_MS = 50;
const MAX_TIMEOUT_MS = 5000;
/** The whole probe, all peers: a caller waits at most this long (plus one request's slack). */
export const PROBE_BUDGET_MS = 10_000;
const PROBE_CONCURRENCY = 16;
const MAX_BODY = 256 * 1024;
/** A peer's /health answer larger than this is not an agent's. */
const MAX_HEALTH_BYTES = 16 * 1024;
/** Peers remembered (the oldest measurements are forgotten first). */
const MAX_REMEMBERED = 1024;

const ADDRESS = /^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]):(\d{1,5})$/;

export interface ProbePeer {
  id: string;
  address: string;
}

export interface ProbeRequest {
  peers: ProbePeer[];
  samples: number;
  timeoutMs: number;
}

/** One peer's measurement, as answered and as remembered. */
export interface PeerRtt {
  id: string;
  address: string;
  ok: boolean;
  /** Timed samples taken (fewer than asked when the peer failed midway). */
  samples: number;
  medianMs?: number;
  minMs?: number;
  maxMs?: number;
  /** Why there is no measurement: refused, timed out, not an agent, another node at that address. */
  error?: string;
  measuredAt: number;
}

export interface ProbeReport {
  nodeId: string;
  zone: string;
  /** When the newest of `peers` was measured. */
  measuredAt: number;
  peers: PeerRtt[];
}

/** Validates a probe body; every problem is a 400 naming the field. */
export function parseProbeRequest(body: unknown): ProbeRequest {
  if (!body || typeof body !== "object" || Array.isArray(body))
    throw badRequest('the body must be a JSON object {"peers": [{"id", "address"}], "samples"?}');
  const b = body as { peers?: unknown; samples?: unknown; timeoutMs?: unknown };
  if (!Array.isArray(b.peers) || b.peers.length === 0)
    throw badRequest("peers must be a non-empty array of {id, address}");
  if (b.peers.length > MAX_PEERS)
    throw badRequest(`at most ${MAX_PEERS} peers per probe, got ${b.peers.length}`);
  const seen = new Set<string>();
  const peers = b.peers.map((p: unknown, i: number): ProbePeer => {
    const q = p as { id?: unknown; address?: unknown } | null;
    if (!q || typeof q !== "object") throw badRequest(`peers[${i}] must be an object {id, address}`);
    if (typeof q.id !== "string" || !NODE_ID_PATTERN.test(q.id))
      throw badRequest(`peers[${i}].id must be a node id, got ${JSON.stringify(q.id)?.slice(0, 80)}`);
    if (seen.has(q.id)) throw badRequest(`peers[${i}].id ${q.id} appears twice`);
    seen.add(q.id);
    const m = typeof q.address === "string" ? ADDRESS.exec(q.address) : null;
    const port = m ? Number(m[1]) : 0;
    if (!m || port < 1 || port > 65535)
      throw badRequest(
        `peers[${i}].address must be host:port (port 1-65535), got ${JSON.stringify(q.address)?.slice(0, 80)}`,
      );
    return { id: q.id, address: q.address as string };
  });
  const int = (v: unknown, name: string, min: number, max: number, dflt: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
      throw badRequest(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return v;
  };
  return {
    peers,
    samples: int(b.samples, "samples", 1, MAX_SAMPLES, DEFAULT_SAMPLES),
    timeoutMs: int(b.timeoutMs, "timeoutMs", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS),
  };
}

function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  return { host: address.slice(0, i).replace(/^\[(.*)\]$/, "$1"), port: Number(address.slice(i + 1)) };
}

/** One GET /health over `pool`; resolves with the answer's nodeId, rejects on anything but a 200 from an agent. */
function healthOnce(pool: HttpAgent, address: string, limitMs: number): Promise<string | undefined> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | undefined, nodeId?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(nodeId);
    };
    // a hard limit: the socket timeout alone would let a peer that trickles bytes hold us forever
    const timer = setTimeout(() => {
      req.destroy();
      finish(new Error(`no answer within ${limitMs} ms`));
    }, limitMs);
    const req = request({ host, port, path: "/health", method: "GET", agent: pool }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_HEALTH_BYTES) {
          req.destroy();
          finish(new Error(`answered more than ${MAX_HEALTH_BYTES} bytes to /health: not an agent`));
        } else chunks.push(c);
      });
      res.on("end", () => {
        if (res.statusCode !== 200) return finish(new Error(`answered ${res.statusCode} to /health`));
        let nodeId: string | undefined;
        try {
          const v = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { nodeId?: unknown };
          nodeId = typeof v?.nodeId === "string" ? v.nodeId : undefined;
        } catch {
          return finish(new Error("answered /health with something that is not JSON: not an agent"));
        }
        finish(undefined, nodeId);
      });
      res.on("error", (e) => finish(e));
    });
    req.on("error", (e) => finish(e));
    req.end();
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** Times `samples` requests to one peer over one fresh keep-alive connection. */
async function probePeer(peer: ProbePeer, o: ProbeRequest, deadline: number): Promise<PeerRtt> {
  const pool = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i <= o.samples; i++) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the probe's ${PROBE_BUDGET_MS} ms budget ran out`);
      const t0 = performance.now();
      const nodeId = await healthOnce(pool, peer.address, Math.min(o.timeoutMs, left));
      const dt = performance.now() - t0;
      if (i === 0) {
        // the warm-up: connect, and make sure this is the node the caller meant
        if (nodeId !== peer.id)
          throw new Error(`the agent at ${peer.address} is ${JSON.stringify(nodeId)}, not ${peer.id}`);
        continue;
      }
      times.push(dt);
    }
    return {
      id: peer.id,
      address: peer.address,
      ok: true,
      samples: times.length,
      medianMs: round3(median(times)),
      minMs: round3(Math.min(...times)),
      maxMs: round3(Math.max(...times)),
      measuredAt: Date.now(),
    };
  } catch (err) {
    return {
      id: peer.id,
      address: peer.address,
      ok: false,
      samples: times.length,
      error: (err as Error)?.message ?? String(err),
      measuredAt: Date.now(),
    };
  } finally {
    pool.destroy();
  }
}

/** Probes every peer, PROBE_CONCURRENCY at a time, within PROBE_BUDGET_MS; never rejects. */
export async function probePeers(o: ProbeRequest): Promise<PeerRtt[]> {
  const deadline = Date.now() + PROBE_BUDGET_MS;
  const out: PeerRtt[] = new Array(o.peers.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < o.peers.length; i = next++) out[i] = await probePeer(o.peers[i], o, deadline);
  };
  await Promise.all(Array.from({ length: Math.min(PROBE_CONCURRENCY, o.peers.length) }, worker));
  return out;
}

const remembered = new WeakMap<Agent, Map<string, PeerRtt>>();

/** The latest measurement per peer this agent took, or undefined before its first probe. */
export function lastProbe(agent: Agent): ProbeReport | undefined {
  const peers = remembered.get(agent);
  if (!peers || peers.size === 0) return undefined;
  const list = [...peers.values()];
  return {
    nodeId: agent.opts.nodeId,
    zone: agent.opts.zone,
    measuredAt: Math.max(...list.map((p) => p.measuredAt)),
    peers: list,
  };
}

function remember(agent: Agent, results: PeerRtt[]): void {
  let peers = remembered.get(agent);
  if (!peers) remembered.set(agent, (peers = new Map()));
  for (const r of results) {
    peers.delete(r.id); // re-inserted: the map's order is oldest measurement first
    peers.set(r.id, r);
  }
  for (const id of peers.keys()) {
    if (peers.size <= MAX_REMEMBERED) break;
    peers.delete(id);
  }
}

/** POST /v1/admin/probe (the caller checked the token). */
export async function probeRequest(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
): Promise<void> {
  if (method !== "POST") throw new ApiError(405, "method-not-allowed", "probe with POST /v1/admin/probe");
  const o = parseProbeRequest(await readJson(req, MAX_BODY));
  const peers = await probePeers(o);
  remember(agent, peers);
  sendJson(res, 200, {
    nodeId: agent.opts.nodeId,
    zone: agent.opts.zone,
    measuredAt: Date.now(),
    samples: o.samples,
    peers,
  });
}
