/**
 * The agent's own writes and a fence, against a real agent process: after a
 * reshape the agent deletes the keys that moved away in the background; a
 * fence that comes meanwhile waits for those deletes, so the fenced LSN is
 * the shard's last and the next owner gets every one of them.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { admin, http, startAgent, stopAgent, tempDir, type AgentProc } from "./harness.js";

const SEGMENTS = 64;
const KEYS = 40_000;
let root: string;
let agent: AgentProc;

beforeAll(async () => {
  root = tempDir("purge-fence");
  agent = await startAgent({ dataDir: join(root, "data"), segments: SEGMENTS });
  expect((await admin(agent.port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
}, 30_000);

afterAll(async () => {
  await stopAgent(agent);
  rmSync(root, { recursive: true, force: true });
});

const shardInfo = async () =>
  (await http(agent.port, "GET", "/v1/shards/shard-1")).json() as { lsn: number; keys: number };

describe("a fence during the purge after a reshape", () => {
  it("waits for the purge: nothing is written after the fenced LSN", async () => {
    for (let b = 0; b < KEYS; b += 2000) {
      const ops = Array.from({ length: 2000 }, (_, i) => ({ op: "put", key: `p${b + i}`, value: "dg==" }));
      const r = await http(agent.port, "POST", "/v1/shards/shard-1/batch", {
        headers: { "x-shard-epoch": "1" },
        body: JSON.stringify({ ops }),
      });
      expect(r.status, r.body.toString()).toBe(200);
    }
    const seg = new Segmenter(SEGMENTS);
    let inside = 0;
    for (let i = 0; i < KEYS; i++) if (seg.segmentOf(`p${i}`) < 32) inside++;
    expect(inside).toBeGreaterThan(KEYS / 4);
    expect(inside).toBeLessThan((KEYS * 3) / 4);

    expect((await admin(agent.port, "POST", "shard-1/fence", { epoch: 1, migration: "m1" })).status).toBe(
      200,
    );
    const reshaped = await admin(agent.port, "POST", "shard-1/reshape", {
      epoch: 2,
      migration: "m1",
      ranges: [[0, 32]],
    });
    expect(reshaped.status, reshaped.body.toString()).toBe(200);
    // at once, while the deletes of the ~half that moved away are being written
    const fenced = await admin(agent.port, "POST", "shard-1/fence", { epoch: 2, migration: "m2" });
    expect(fenced.status, fenced.body.toString()).toBe(200);
    const atFence = fenced.json() as { lsn: number; keys: number };
    expect(atFence.keys).toBe(inside);
    expect(atFence.lsn).toBe(KEYS + (KEYS - inside));
    await new Promise((r) => setTimeout(r, 500));
    expect(await shardInfo()).toMatchObject({ lsn: atFence.lsn, keys: inside });
  }, 60_000);
});
