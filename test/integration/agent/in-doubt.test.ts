/**
 * Shards in doubt after a crash (src/agent/in-doubt.ts), against a real agent
 * process started with --map-dir: it was killed (-9) with shards fenced in the
 * middle of migrations; on restart it reads the location map and acts only
 * where the map is unambiguous. A map that cannot be read changes nothing.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initialLayout, type LocationMap } from "../../../src/engine/location-map.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { admin, get, put, startAgent, stopAgent, tempDir, type AgentProc } from "./harness.js";

const SEGMENTS = 64;
let root: string;
let mapDir: string;
let dataDir: string;
let agent: AgentProc | undefined;
let map: LocationMap;
/** shard id → a key of that shard, written before the crash */
const keyOf = new Map<string, string>();

function start(): Promise<AgentProc> {
  return startAgent({ dataDir, nodeId: "node-a", segments: SEGMENTS, extra: ["--map-dir", mapDir] });
}

beforeAll(async () => {
  root = tempDir("in-doubt");
  mapDir = join(root, "map");
  dataDir = join(root, "a", "data");
  map = initialLayout(
    SEGMENTS,
    [
      { id: "node-a", address: "127.0.0.1:1", zone: "a" },
      { id: "node-b", address: "127.0.0.1:2", zone: "b" },
    ],
    { now: 0, shardsPerNode: 2 },
  );
  // every shard on node-a for a start
  for (const s of map.shards) s.node = "node-a";
  expect((await new EmbeddedStore(mapDir).compareAndSet(0, map)).ok).toBe(true);
  agent = await start();
  const seg = new Segmenter(SEGMENTS);
  for (const s of map.shards) {
    expect((await admin(agent.port, "PUT", s.id, { epoch: 1, ranges: s.ranges })).status).toBe(201);
    let i = 0;
    for (;;) {
      const key = `k-${i++}`;
      const g = seg.segmentOf(key);
      if (s.ranges.some(([a, b]) => g >= a && g < b)) {
        keyOf.set(s.id, key);
        break;
      }
    }
    expect((await put(agent.port, s.id, keyOf.get(s.id)!, `value of ${s.id}`)).status).toBe(200);
  }
});

afterAll(async () => {
  if (agent) await stopAgent(agent);
  rmSync(root, { recursive: true, force: true });
});

describe("shards in doubt after a crash", () => {
  it("serves a shard the map gives this node at a higher epoch, redirects one it gives elsewhere, leaves the rest fenced", async () => {
    const [moved, committedHere, undecided, untouched] = map.shards.map((s) => s.id);
    for (const id of [moved, committedHere, undecided]) {
      expect((await admin(agent!.port, "POST", `${id}/fence`, { epoch: 1, migration: "m-1" })).status).toBe(
        200,
      );
    }
    await stopAgent(agent!, "SIGKILL");
    agent = undefined;

    // what the coordinator committed meanwhile
    const store = new EmbeddedStore(mapDir);
    const cur = (await store.load())!;
    const next = structuredClone(cur.map);
    for (const s of next.shards) {
      if (s.id === moved) Object.assign(s, { node: "node-b", epoch: 2 });
      if (s.id === committedHere) s.epoch = 2;
    }
    expect((await store.compareAndSet(cur.version, next)).ok).toBe(true);

    agent = await start();
    const log = agent.stderr();
    expect(log).toMatch(new RegExp(`shard ${moved} \\(fenced, in a migration\\): redirected`));
    expect(log).toMatch(new RegExp(`shard ${committedHere} \\(fenced, in a migration\\): serving`));
    expect(log).toMatch(new RegExp(`shard ${undecided} \\(fenced, in a migration\\): unchanged`));
    expect(log).not.toMatch(new RegExp(`shard ${untouched} `));

    // moved: a redirect hint to node-b at epoch 2
    const r = await get(agent.port, moved, keyOf.get(moved)!, 2);
    expect(r.status).toBe(421);
    expect(r.json()).toMatchObject({ redirect: { node: "node-b", epoch: 2 } });
    // committed here: served at epoch 2, with its data, and writable
    expect((await get(agent.port, committedHere, keyOf.get(committedHere)!, 2)).body.toString()).toBe(
      `value of ${committedHere}`,
    );
    expect((await put(agent.port, committedHere, keyOf.get(committedHere)!, "after", 2)).status).toBe(200);
    expect((await get(agent.port, committedHere, keyOf.get(committedHere)!, 1)).status).toBe(409);
    // undecided: still fenced, still readable
    expect((await put(agent.port, undecided, keyOf.get(undecided)!, "x")).status).toBe(503);
    expect((await get(agent.port, undecided, keyOf.get(undecided)!)).body.toString()).toBe(
      `value of ${undecided}`,
    );
    // never in a migration: untouched
    expect((await put(agent.port, untouched, keyOf.get(untouched)!, "y")).status).toBe(200);
  });

  it("changes nothing when the map cannot be read, and says why", async () => {
    const undecided = map.shards[2].id;
    await stopAgent(agent!, "SIGKILL");
    agent = undefined;
    writeFileSync(join(mapDir, "location-map.json"), '{"truncated');
    agent = await start();
    expect(agent.stderr()).toMatch(
      new RegExp(
        `shard ${undecided} \\(fenced, in a migration\\): unchanged: the location store cannot be read`,
      ),
    );
    expect((await put(agent.port, undecided, keyOf.get(undecided)!, "x")).status).toBe(503);
    expect((await get(agent.port, undecided, keyOf.get(undecided)!)).body.toString()).toBe(
      `value of ${undecided}`,
    );
  });
});
