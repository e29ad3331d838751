/**
 * What the routing client's tests stand on: real agent processes (test/integration/agent/harness.ts),
 * each one stopped after its test (resumed first if the test paused it), and the real EmbeddedStore
 * holding a map written by initialLayout + compareAndSet.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, expect } from "vitest";
import { initialLayout, type LocationMap } from "../../../src/engine/location-map.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import {
  admin,
  http,
  startAgent,
  stopAgent,
  tempDir,
  type AgentProc,
  type StartOptions,
} from "../agent/harness.js";

export const SEGMENTS = 64;
/** The one shard of oneShardMap, over every segment. */
export const SHARD = "shard-1";

const started: AgentProc[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const p of started.splice(0).reverse()) {
    // a paused agent cannot act on SIGTERM: resume it first
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGCONT");
    await stopAgent(p);
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh temporary directory, removed after the test. */
export function scratch(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

/** A real agent process (node `nodeId`, 64 segments), stopped after the test. */
export async function realAgent(
  nodeId = "node-1",
  opts: Omit<StartOptions, "dataDir" | "nodeId" | "segments"> = {},
): Promise<AgentProc> {
  const root = scratch(`client-${nodeId}`);
  const p = await startAgent({ dataDir: join(root, "data"), nodeId, segments: SEGMENTS, ...opts });
  started.push(p);
  return p;
}

/** Pauses a real agent: the kernel still accepts its connections, and nothing answers them. */
export function pause(p: AgentProc): void {
  process.kill(p.child.pid!, "SIGSTOP");
}

export function resume(p: AgentProc): void {
  process.kill(p.child.pid!, "SIGCONT");
}

/** Creates the shard of oneShardMap on a real agent at `epoch`. */
export async function createShard(p: AgentProc, epoch = 1): Promise<void> {
  const r = await admin(p.port, "PUT", SHARD, { epoch, ranges: [[0, SEGMENTS]], segmentCount: SEGMENTS });
  expect(r.status, r.body.toString()).toBe(201);
}

/** One shard over all 64 segments, owned at epoch 1 by node-1 at `address`. */
export function oneShardMap(address: string): LocationMap {
  return initialLayout(SEGMENTS, [{ id: "node-1", address, zone: "a" }], { shardsPerNode: 1, now: 0 });
}

/** The real embedded store in a fresh directory, holding `map` (version 1). */
export async function storeWith(map: LocationMap): Promise<EmbeddedStore> {
  const store = new EmbeddedStore(scratch("client-map"));
  expect((await store.compareAndSet(0, map)).ok).toBe(true);
  return store;
}

/**
 * How many requests of `op` (get, put, delete, …) the agent has counted, with `status` or with
 * any status: what its /metrics says (shardctl_agent_requests_total).
 */
export async function requestCount(p: AgentProc, op: string, status?: number): Promise<number> {
  const r = await http(p.port, "GET", "/metrics");
  expect(r.status).toBe(200);
  let n = 0;
  const line = /^shardctl_agent_requests_total\{([^}]*)\} (\d+)$/gm;
  for (const m of r.body.toString().matchAll(line)) {
    const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (labels.op === op && (status === undefined || labels.status === String(status))) n += Number(m[2]);
  }
  return n;
}

/** The shard's inventory on a real agent (lsn, epoch, state, writeIds, …). */
export async function inventory(p: AgentProc, shard = SHARD): Promise<Record<string, unknown>> {
  const r = await http(p.port, "GET", `/v1/shards/${shard}`);
  expect(r.status, r.body.toString()).toBe(200);
  return r.json();
}
