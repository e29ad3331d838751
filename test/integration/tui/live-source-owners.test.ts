/**
 * LiveSource against two real agents: a shard that moved from one to the
 * other leaves its former owner holding windows of its segments (the
 * migration copies them to the new owner, it does not delete them). The
 * heatmap counts each segment's accesses from the node the map says owns it,
 * not from both.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { LiveSource } from "../../../src/tui/live-source.js";
import { admin, put, startAgent, stopAgent, tempDir, TOKEN, type AgentProc } from "../agent/harness.js";

const SEGMENTS = 64;
let root: string;
let a: AgentProc;
let b: AgentProc;

beforeAll(async () => {
  root = tempDir("tui-owners");
  [a, b] = await Promise.all([
    startAgent({ dataDir: join(root, "a", "data"), nodeId: "node-a", zone: "a", segments: SEGMENTS }),
    startAgent({ dataDir: join(root, "b", "data"), nodeId: "node-b", zone: "b", segments: SEGMENTS }),
  ]);
}, 120_000);

afterAll(async () => {
  await Promise.all([stopAgent(a), stopAgent(b)]);
  rmSync(root, { recursive: true, force: true });
});

describe("LiveSource over agents", () => {
  it("counts a moved shard's accesses from its owner in the map, not also from the node it left", async () => {
    // Given a map whose one shard is owned by node-b (at epoch 2)
    const dataDir = join(root, "ctl");
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(root, "shardctl.yaml"), `segments: ${SEGMENTS}\nzones: [a, b, c]\n`);
    const env = {
      SHARDCTL_DATA_DIR: dataDir,
      SHARDCTL_CONFIG: join(root, "shardctl.yaml"),
      SHARDCTL_TOKEN: TOKEN,
    };
    const { config } = loadConfig({ file: env.SHARDCTL_CONFIG, env });
    const store = new EmbeddedStore(config.dataDir);
    const nodeA = { id: "node-a", address: a.address, zone: "a" };
    const nodeB = { id: "node-b", address: b.address, zone: "b" };
    const map = initialLayout(SEGMENTS, [nodeB], { shardsPerNode: 1, now: Date.now() });
    map.nodes = [nodeA, nodeB];
    map.shards[0] = { ...map.shards[0], epoch: 2 };
    const id = map.shards[0].id;
    expect((await store.compareAndSet(0, map)).ok).toBe(true);
    // and the shard written 5 times on node-a, its owner before, then 3 times on node-b
    const all = [[0, SEGMENTS]];
    expect((await admin(a.port, "PUT", id, { epoch: 1, ranges: all })).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await put(a.port, id, "k", `a${i}`)).status).toBe(200);
    expect((await admin(b.port, "PUT", id, { epoch: 2, ranges: all })).status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await put(b.port, id, "k", `b${i}`, 2)).status).toBe(200);
    const live = new LiveSource({
      config,
      store,
      refreshSeconds: 1,
      agentTimeoutMs: 2000,
      probeEverySeconds: 0,
    });
    try {
      // When the dashboard takes its first snapshot (a 120 s window)
      const snap = await live.snapshot();
      // Then the segment's writes are node-b's 3, not 3 + node-a's stale 5
      const seg = new Segmenter(SEGMENTS).segmentOf("k");
      expect(snap.heat.origin).toBe("agents");
      const last = snap.heat.writes[snap.heat.writes.length - 1];
      expect(last[seg] * 120).toBeCloseTo(3, 4);
      expect(snap.warnings.filter((w) => /agent/.test(w))).toEqual([]);
    } finally {
      await live.close();
    }
  }, 60_000);
});
