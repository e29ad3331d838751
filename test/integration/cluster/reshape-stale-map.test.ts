/**
 * A location map restored from a backup (older than the agents) must not let
 * a merge bring back a shard copy an agent had released: the audit's repro,
 * on real agents with the embedded store. shard-5 moves node-2 → node-3
 * (epoch 2; node-2's copy is not-owned, redirecting to node-3); the old map
 * (shard-5 on node-2 at epoch 1) is written back; a put routed by the old map
 * is redirected to node-3 and acknowledged there. Then a merge of shard-5 +
 * shard-6 "into shard-5 on node-2" is refused by node-2 (409, nothing changed
 * on any agent), a plain move with the same map is refused too, each
 * coordinator's message says what node-2 answered (not "still served by
 * node-2 at epoch 1"), and every acknowledged write is still readable.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { executeMigration } from "../../../src/cluster/migrate.js";
import { executeLayoutChange } from "../../../src/cluster/reshape.js";
import type { LocationMap, SegmentRange } from "../../../src/engine/location-map.js";
import { systemClock } from "../../../src/engine/ports.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { UserError } from "../../../src/errors.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import {
  admin,
  get,
  http,
  startAgent,
  startingMap,
  stopAgent,
  tempDir,
  TOKEN,
  type AgentProc,
} from "../agent/harness.js";

const SEGMENTS = 16;
const segmenter = new Segmenter(SEGMENTS);
const NODES = ["node-1", "node-2", "node-3"];
const LAYOUT: [string, string, SegmentRange][] = [
  ["shard-5", "node-2", [0, 8]],
  ["shard-6", "node-1", [8, 16]],
];

let root: string;
const nodes: Record<string, AgentProc> = {};
let store: EmbeddedStore;

function keysIn(ranges: SegmentRange[], prefix: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    const k = `${prefix}${i}`;
    const s = segmenter.segmentOf(k);
    if (ranges.some(([a, b]) => s >= a && s < b)) out.push(k);
  }
  return out;
}

async function shardInfo(node: string, shard: string): Promise<Record<string, unknown>> {
  const r = await http(nodes[node].port, "GET", `/v1/shards/${shard}`);
  expect(r.status, r.body.toString()).toBe(200);
  return r.json();
}

/** What every agent says of every shard it holds (state, epoch, redirect, ranges, LSN, keys). */
async function agentsView(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const node of NODES) {
    const r = await http(nodes[node].port, "GET", "/v1/shards");
    expect(r.status).toBe(200);
    for (const s of r.json().shards as Record<string, unknown>[]) {
      const { id, epoch, state, redirect, ranges, lsn, keys } = s;
      out[`${node}/${String(id)}`] = { epoch, state, redirect, ranges, lsn, keys };
    }
  }
  return out;
}

beforeAll(async () => {
  root = tempDir("reshape-stale-map");
  await Promise.all(
    NODES.map(async (node, i) => {
      nodes[node] = await startAgent({
        dataDir: join(root, node),
        nodeId: node,
        zone: ["a", "b", "c"][i],
        segments: SEGMENTS,
      });
    }),
  );
  store = new EmbeddedStore(join(root, "store"));
  for (const [id, node, range] of LAYOUT) {
    const r = await admin(nodes[node].port, "PUT", id, { epoch: 1, ranges: [range], segmentCount: SEGMENTS });
    expect(r.status, r.body.toString()).toBe(201);
  }
  const m = startingMap(
    SEGMENTS,
    NODES.map((id, i) => ({ id, address: nodes[id].address, zone: ["a", "b", "c"][i] })),
    LAYOUT,
    7,
  );
  expect((await store.compareAndSet(0, m)).ok).toBe(true);
}, 120_000);

afterAll(async () => {
  await Promise.all(Object.values(nodes).map((p) => stopAgent(p, "SIGKILL")));
  rmSync(root, { recursive: true, force: true });
});

describe("a merge with a location map older than the agents", () => {
  it("is refused by the agent that released the kept shard; nothing changes and every acknowledged write stays readable", async () => {
    const c = new ShardClient({ store, token: TOKEN, deadlineMs: 20_000, baseBackoffMs: 5 });
    const rpc = new AgentRpc({ token: TOKEN });
    const logs: string[] = [];
    const deps = { store, rpc, clock: systemClock, log: (m: string) => logs.push(m) };
    try {
      // Given: writes on both shards, and the map saved while shard-5 is on node-2 at epoch 1
      const acked = new Map<string, string>();
      const [k5a, k5b, key6] = keysIn([[0, 8]], "five-", 3);
      const [k6] = keysIn([[8, 16]], "six-", 1);
      for (const [k, v] of [
        [k5a, "a-1"],
        [k5b, "b-1"],
        [key6, "oldval6"],
        [k6, "six-1"],
      ]) {
        await c.put(k, v);
        acked.set(k, v);
      }
      const backup = (await store.load())!.map;

      // shard-5 moves to node-3: node-2's copy is not-owned, redirecting to node-3 at epoch 2
      const moved = await executeMigration({ shard: "shard-5", target: "node-3" }, deps);
      expect(moved.phase, logs.join("\n")).toBe("done");
      expect(await shardInfo("node-2", "shard-5")).toMatchObject({
        state: "not-owned",
        epoch: 2,
        redirect: { node: "node-3", epoch: 2 },
      });

      // the operator restores the backup: shard-5 on node-2 at epoch 1 again
      const now = (await store.load())!;
      const restored: LocationMap = { ...backup, updatedAt: Date.now() };
      expect((await store.compareAndSet(now.version, restored)).ok).toBe(true);
      expect((await store.load())!.map.shards.find((s) => s.id === "shard-5")).toMatchObject({
        node: "node-2",
        epoch: 1,
      });

      // a put routed by the old map: node-2 redirects to node-3, which accepts it
      await c.put(key6, "newval6");
      acked.set(key6, "newval6");
      const direct = await get(nodes["node-3"].port, "shard-5", key6, 2);
      expect(direct.body.toString()).toBe("newval6");

      const before = await agentsView();
      const mapBefore = await store.load();

      // When: shard-5 + shard-6 are merged "into shard-5 (node-2)", as the old map says
      const merge = executeLayoutChange(
        {
          op: { kind: "merge", shards: ["shard-5", "shard-6"], node: "node-2", ranges: [[0, 16]], load: 0 },
        },
        deps,
      );

      // Then: node-2 refuses (its copy of shard-5 was released at epoch 2); the coordinator says so
      const err = await merge.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, logs.join("\n")).toBeInstanceOf(UserError);
      const merr = err as UserError;
      expect(merr.message).toMatch(/aborted/);
      expect(merr.message).toMatch(/import-begin.*409 (stale-epoch|not-owner)/);
      expect(merr.hint).toMatch(/shard-5 is not-owned at epoch 2 on node-2/);
      expect(merr.hint).toMatch(/redirecting to node-3/);
      expect(merr.hint).not.toMatch(/served as before/);

      // nothing changed on any agent, nor in the map (but the journal record)
      expect(await agentsView()).toEqual(before);
      expect((await store.load())!.map.shards).toEqual(mapBefore!.map.shards);

      // a plain move with the same map is refused as well, and says what node-2 answered
      const move = await executeMigration({ shard: "shard-5", target: "node-1" }, deps).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(move).toBeInstanceOf(UserError);
      const hint = (move as UserError).hint ?? "";
      expect(hint).not.toMatch(/still served by node-2 at epoch 1/);
      expect(hint).toMatch(/shard-5 is not-owned at epoch 2 on node-2/);
      expect(await agentsView()).toEqual(before);

      // every acknowledged write is readable, by the routing client (old map, redirected) and at node-3
      for (const [k, v] of acked) expect((await c.get(k))?.value.toString(), k).toBe(v);
      for (const k of [k5a, k5b, key6])
        expect((await get(nodes["node-3"].port, "shard-5", k, 2)).body.toString(), k).toBe(acked.get(k));
    } finally {
      c.close();
      rpc.close();
    }
  }, 120_000);
});
