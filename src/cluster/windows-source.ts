/**
 * Where the engine's access windows come from: the agents that serve the
 * shards (each counts the accesses to the segments it holds), or — on the
 * embedded default with no agents — the windows file `shardctl record` writes.
 * A node that does not answer, or answers with windows that cannot be used
 * (another segment count, zones or levels than the config's; a body that is
 * not an agent's), is reported, not fatal: its segments simply have no history
 * in this collection, none of it half. Slot numbers are times on the clock of
 * the agent that counted them; each agent's are moved onto this machine's
 * clock, so that an agent whose clock is off does not look idle or stale.
 * Each agent is asked for all its windows in one binary answer (GET
 * /v1/access/export, the windows file's checksummed form); an agent from
 * before that endpoint is asked segment by segment.
 */
import type { Config } from "../config.js";
import { AccessWindows, type SegmentWindows, type WindowLevel } from "../engine/access-windows.js";
import { RoutingTable, type NodeInfo, type VersionedMap } from "../engine/location-map.js";
import { errorMessage } from "../errors.js";
import { loadWindows, newWindows } from "../store/windows-file.js";
import { AgentRpc, readAll } from "./agent-rpc.js";
import { resolveClientToken } from "./local.js";
import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import { runInSlices } from "../slices.js";

export interface CollectedWindows {
  windows: AccessWindows;
  /** "agents" or "file". */
  source: "agents" | "file";
  /**
   * Nodes whose windows are not in the collection (no answer, or one that could not be used), with
   * why; `tokenRefused` when the agent answered that it does not know our token (401).
   */
  unreachable: { node: string; error: string; tokenRefused?: true }[];
}

/** An agent that refused our token: the cluster is up, the token is wrong. */
class TokenRefusedError extends Error {}

/** An agent's GET /v1/access answer, as far as the collection reads it. */
interface AccessList {
  nowMs: number;
  segmentCount: number;
  zones: string[];
  levels: WindowLevel[];
  segments: { segment: number }[];
}

/**
 * A clock difference up to this beyond what the request's own round trip
 * leaves uncertain is taken as none (a second is the finest resolution).
 */
export const CLOCK_TOLERANCE_MS = 1000;

/**
 * Segments copied between the event loop's turns: a cluster's windows (100,000 segments: seconds of
 * work) are gathered without holding it, so an autopilot's leader heartbeat keeps going meanwhile.
 */
const YIELD_SEGMENTS = 1024;

/**
 * How far an agent's clock is ahead of this machine's (negative: behind),
 * from the time it puts in an answer against the middle of the request's
 * round trip, and how uncertain that is (half the round trip).
 */
export async function agentClock(
  rpc: AgentRpc,
  node: NodeInfo,
): Promise<{ offsetMs: number; uncertaintyMs: number }> {
  const sent = Date.now();
  const res = await rpc.json<{ nowMs?: unknown }>(node.address, "GET", "/v1/access/0/series");
  const received = Date.now();
  const nowMs = res.body?.nowMs;
  if (res.status !== 200 || typeof nowMs !== "number" || !Number.isFinite(nowMs)) {
    throw new Error(`${node.id} did not say its time (GET /v1/access/0/series answered HTTP ${res.status})`);
  }
  return { offsetMs: nowMs - (sent + received) / 2, uncertaintyMs: (received - sent) / 2 };
}

/**
 * Collects the windows of every segment from the node that owns it in the map.
 * With nodes unreachable the collection is incomplete: callers must not
 * commit decisions on it (see layoutChangeBlocker).
 */
export interface CollectOptions {
  /**
   * Ask each agent segment by segment (GET /v1/access/:segment/export) instead of for all its
   * windows in one binary answer (GET /v1/access/export); for the benchmark's baseline. Agents from
   * before the bulk export are asked this way anyway.
   */
  perSegment?: boolean;
}

export async function collectWindows(
  config: Config,
  vm: VersionedMap | null,
  timeoutMs = 5000,
  opts: CollectOptions = {},
): Promise<CollectedWindows> {
  const nodes = vm?.map.nodes.filter((n) => n.address) ?? [];
  if (!vm || nodes.length === 0) return { windows: loadWindows(config), source: "file", unreachable: [] };
  let token: string;
  try {
    token = resolveClientToken(config);
  } catch (err) {
    const error = errorMessage(err);
    return {
      windows: newWindows(config),
      source: "agents",
      unreachable: nodes.map((n) => ({ node: n.id, error })),
    };
  }
  const rpc = new AgentRpc({ token, timeoutMs });
  const table = new RoutingTable(vm);
  const windows = newWindows(config);
  const unreachable: CollectedWindows["unreachable"] = [];
  try {
    await Promise.all(
      nodes.map(async (node) => {
        try {
          // Only the owner's history counts: a former owner may still hold a stale copy.
          const owned = (s: number) => table.nodeOfSegment(s) === node.id;
          const staged = await nodeWindows(rpc, node, config, owned, opts);
          // all of a node's windows or none: a bad answer halfway leaves no half of its history
          let n = 0;
          for (const s of staged.activeSegments()) {
            windows.copySegment(staged, s);
            if (++n % YIELD_SEGMENTS === 0) await nextTurn();
          }
        } catch (err) {
          unreachable.push({
            node: node.id,
            error: errorMessage(err),
            ...(err instanceof TokenRefusedError ? { tokenRefused: true as const } : {}),
          });
        }
      }),
    );
  } finally {
    rpc.pool.destroy();
  }
  return { windows, source: "agents", unreachable };
}

/**
 * One node's windows of the segments `owned` accepts, on this machine's clock
 * (the agent's clock may differ: its answer says its time). Throws, saying
 * what to do, on an answer that is not an agent's, on windows counted with
 * other segments, zones or levels than the config's, and on a segment that
 * could not be read (a 404 is a segment with no windows any more).
 */
async function nodeWindows(
  rpc: AgentRpc,
  node: NodeInfo,
  config: Config,
  owned: (segment: number) => boolean,
  opts: CollectOptions = {},
): Promise<AccessWindows> {
  const sent = Date.now();
  const res = await rpc.json<unknown>(node.address, "GET", "/v1/access?window=1");
  const received = Date.now();
  if (res.status === 401)
    throw new TokenRefusedError(`the agent refused our token (GET /v1/access answered ${answerText(res)})`);
  if (res.status !== 200) throw new Error(`GET /v1/access answered ${answerText(res)}`);
  const list = accessList(res.body, node);
  const staged = newWindows(config);
  if (list.segmentCount !== staged.segmentCount || list.zones.join(",") !== staged.zones.join(",")) {
    throw new Error(
      `it counts ${list.segmentCount} segments with zones ${list.zones.join(",")}, but the config says ${staged.segmentCount} and ${staged.zones.join(",")}: its windows would be read as other segments' or zones'; start it with the cluster's config (shardctl deploy), or correct the config`,
    );
  }
  if (JSON.stringify(list.levels) !== JSON.stringify(staged.levels)) {
    throw new Error(
      `it keeps window levels ${shape(list.levels)}, but the config says ${shape(staged.levels)}; start it with the cluster's config (shardctl deploy), or correct the config`,
    );
  }
  // its time when it answered, against the middle of the round trip here
  const offset = list.nowMs - (sent + received) / 2;
  const clockOffset = Math.abs(offset) > (received - sent) / 2 + CLOCK_TOLERANCE_MS ? offset : 0;
  if (!opts.perSegment) {
    let bulk = await rpc.stream(node.address, "GET", "/v1/access/export");
    // an agent writes a few exports at once and refuses more for a moment (503 busy): wait for one
    for (let wait = 250; bulk.status === 503 && wait <= 2000; wait *= 2) {
      await readAll(bulk.body);
      await sleep(wait);
      bulk = await rpc.stream(node.address, "GET", "/v1/access/export");
    }
    if (bulk.status === 200) {
      // read as it arrives, a few segments at a time between other work, straight into the staging
      // store (dropped whole if the answer turns out cut short or altered): never the whole answer
      // in memory (234 MB for 100,000 active segments), nor a second store of all its windows
      const what = "GET /v1/access/export";
      const reader = staged.importStream({ keep: owned, clockOffsetMs: clockOffset });
      try {
        for await (const piece of bulk.body as AsyncIterable<Buffer>) await runInSlices(reader.push(piece));
        reader.finish();
      } catch (err) {
        bulk.body.destroy();
        const message = errorMessage(err);
        throw new Error(
          message.startsWith("the windows are of")
            ? `${what}: ${message}: not what its access list said`
            : `${what}: the answer is not an agent's windows (${message})`,
        );
      }
      return staged;
    }
    const refused = await readAll(bulk.body);
    // an agent from before the bulk export answers 400 (no such segment) or 404: ask segment by segment
    if (bulk.status !== 400 && bulk.status !== 404) {
      throw new Error(
        `GET /v1/access/export answered ${answerText({ status: bulk.status, body: jsonOf(refused) })}`,
      );
    }
  }
  for (const { segment } of list.segments) {
    if (!owned(segment)) continue;
    const exp = await rpc.json<SegmentWindows>(node.address, "GET", `/v1/access/${segment}/export`);
    if (exp.status === 404) continue; // no windows any more (not an error: nothing to count)
    if (exp.status !== 200) {
      throw new Error(`segment ${segment}: GET /v1/access/${segment}/export answered ${answerText(exp)}`);
    }
    const body = exp.body;
    if (typeof body !== "object" || body === null || "error" in body) {
      throw new Error(`segment ${segment}: the answer is not an agent's windows (${answerText(exp)})`);
    }
    if (body.segment !== segment) {
      throw new Error(`segment ${segment}: the answer holds the windows of segment ${String(body.segment)}`);
    }
    try {
      staged.importSegment(body, clockOffset);
    } catch (err) {
      throw new Error(`segment ${segment}: ${errorMessage(err)}`);
    }
  }
  return staged;
}

/** An access list's fields, checked: anything else (a proxy's page, another service) is refused. */
function accessList(body: unknown, node: NodeInfo): AccessList {
  const b = body as Partial<AccessList> | undefined;
  if (
    typeof b !== "object" ||
    b === null ||
    !Number.isFinite(b.nowMs) ||
    !Number.isInteger(b.segmentCount) ||
    !Array.isArray(b.zones) ||
    !Array.isArray(b.levels) ||
    !Array.isArray(b.segments) ||
    b.segments.some((s) => !Number.isInteger(s?.segment))
  ) {
    throw new Error(
      `the answer to GET /v1/access is not an access list of a shardctl agent; is ${node.address} the agent's address (not a proxy or another service)?`,
    );
  }
  return b as AccessList;
}

/** A body as JSON, when it is JSON (for the message of an error answer). */
function jsonOf(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
}

/** A status and, when the body says it, why. */
function answerText(res: { status: number; body: unknown }): string {
  const message = (res.body as { message?: unknown } | undefined)?.message;
  return `HTTP ${res.status}${typeof message === "string" && message ? `: ${message.slice(0, 200)}` : ""}`;
}

function shape(levels: readonly WindowLevel[]): string {
  return levels.map((l) => `${l.resolutionSeconds}s×${l.slots}`).join(", ");
}
