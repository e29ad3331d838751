/**
 * A migration copies the moving segments' access windows from the source
 * agent to the target (transferWindows). Slot numbers are times on the clock
 * that counted them: between agents whose clocks differ, the copy must land
 * on the target's clock, or the moved history reads as future (dropped) or
 * stale there. Real agents; the source's clock is ten minutes ahead (Date.now
 * moved on by an --import in its own process, as a host whose clock is off).
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { collectWindows } from "../../../src/cluster/windows-source.js";
import { transferWindows } from "../../../src/cluster/windows-transfer.js";
import type { Config } from "../../../src/config.js";
import { initialLayout, type LocationMap } from "../../../src/engine/location-map.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import {
  admin,
  agentsConfig,
  put,
  startAgent,
  stopAgent,
  tempDir,
  TOKEN,
  type AgentProc,
} from "../agent/harness.js";

const SEGMENTS = 64;
const AHEAD_MS = 10 * 60_000;

let root: string;
let agents: AgentProc[] = [];
let map: LocationMap;
let config: Config;
const segments: number[] = [];

beforeAll(async () => {
  root = tempDir("windows-transfer");
  const skew = (ms: number) => [
    "--import",
    `data:text/javascript,const now=Date.now;Date.now=()=>now()+${ms};`,
  ];
  agents = await Promise.all([
    startAgent({
      dataDir: join(root, "src"),
      nodeId: "node-1",
      zone: "a",
      segments: SEGMENTS,
      nodeArgs: skew(AHEAD_MS),
    }),
    startAgent({ dataDir: join(root, "dst"), nodeId: "node-2", zone: "b", segments: SEGMENTS }),
  ]);
  map = initialLayout(
    SEGMENTS,
    agents.map((a, i) => ({ id: `node-${i + 1}`, address: a.address, zone: "ab"[i] })),
    { shardsPerNode: 1, now: Date.now() },
  );
  const shard = map.shards[0];
  expect((await admin(agents[0].port, "PUT", shard.id, { epoch: 1, ranges: shard.ranges })).status).toBe(201);
  const segmenter = new Segmenter(SEGMENTS);
  for (let i = 0; segments.length < 5; i++) {
    const k = `key-${i}`;
    const s = segmenter.segmentOf(k);
    if (segments.includes(s) || !shard.ranges.some(([a, b]) => s >= a && s < b)) continue;
    segments.push(s);
    expect((await put(agents[0].port, shard.id, k, "v")).status).toBe(200);
  }
  config = agentsConfig(root, SEGMENTS);
}, 60_000);

afterAll(async () => {
  await Promise.all(agents.map((a) => stopAgent(a)));
  rmSync(root, { recursive: true, force: true });
});

describe("windows copied between agents whose clocks differ", () => {
  it("land on the target's clock: the target reports the moved accesses as recent", async () => {
    const rpc = new AgentRpc({ token: TOKEN });
    try {
      const shard = map.shards[0];
      const r = await transferWindows(rpc, map.nodes[0], map.nodes[1], shard.ranges);
      expect(r.problems).toEqual([]);
      expect(r.segments).toBe(segments.length);
      // the map after the move: node-2 owns the shard; its windows are read at its (true) time
      const moved: LocationMap = {
        ...map,
        shards: map.shards.map((s, i) => (i === 0 ? { ...s, node: "node-2" } : s)),
      };
      const got = await collectWindows(config, { version: 2, map: moved });
      expect(got.unreachable).toEqual([]);
      const now = Date.now();
      const counts = segments.map((s) => got.windows.series(s, 1, now).reduce((a, b) => a + b, 0));
      expect(counts).toEqual(segments.map(() => 1));
    } finally {
      rpc.close();
    }
  }, 60_000);
});
