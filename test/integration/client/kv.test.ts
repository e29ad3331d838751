/**
 * `shardctl put` and `get` against a real agent process, routed by the real embedded store: what
 * --json reports of a value is the value, a bad zone or key is refused before the value is read,
 * and a value argument that was not UTF-8 is refused rather than stored changed.
 */
import { PassThrough, Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { runGet, runPut, type KvDeps } from "../../../src/commands/kv.js";
import { defaultConfig } from "../../../src/config.js";
import { UsageError } from "../../../src/errors.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { get, put, TOKEN, type AgentProc } from "../agent/harness.js";
import { createShard, oneShardMap, realAgent, requestCount, scratch, SHARD } from "./real.js";

class Collect extends Writable {
  bytes = Buffer.alloc(0);
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.bytes = Buffer.concat([this.bytes, chunk]);
    cb();
  }
}

/** A real agent that owns the one shard of oneShardMap. */
async function agentWithShard(): Promise<AgentProc> {
  const agent = await realAgent();
  await createShard(agent);
  return agent;
}

/** A data dir whose embedded store routes every key to `agent`. */
async function deps(agent: AgentProc, stdin?: PassThrough): Promise<KvDeps & { out: Collect; err: Collect }> {
  const config = defaultConfig();
  config.dataDir = scratch("kv");
  config.agent.token = TOKEN;
  const store = new EmbeddedStore(config.dataDir);
  expect((await store.compareAndSet(0, oneShardMap(agent.address))).ok).toBe(true);
  await store.close();
  const out = new Collect();
  const err = new Collect();
  return { io: { out, err }, config, stdin, out, err };
}

/** Every key request the agent has counted (get, put, delete, batch). */
async function dataRequests(agent: AgentProc): Promise<number> {
  let n = 0;
  for (const op of ["get", "put", "delete", "batch"]) n += await requestCount(agent, op);
  return n;
}

describe("shardctl get --json", () => {
  it("reports a value that starts with a byte-order mark byte for byte", async () => {
    const agent = await agentWithShard();
    const d = await deps(agent);
    const value = Buffer.from([0xef, 0xbb, 0xbf, 0x68, 0x69]); // BOM, "hi"
    expect((await put(agent.port, SHARD, "bom", value)).status).toBe(200);
    await runGet("bom", { json: true }, d);
    const j = JSON.parse(d.out.bytes.toString("utf8")) as { value: string; encoding: string };
    expect(j.encoding).toBe("utf8");
    expect(Buffer.from(j.value, "utf8")).toEqual(value);

    // not UTF-8: base64 of the exact bytes
    expect((await put(agent.port, SHARD, "bin", Buffer.from([0xff, 0x00, 0xfe]))).status).toBe(200);
    const d2 = await deps(agent);
    await runGet("bin", { json: true }, d2);
    expect(JSON.parse(d2.out.bytes.toString("utf8"))).toMatchObject({ value: "/wD+", encoding: "base64" });
  });
});

describe("shardctl put", () => {
  it("refuses a bad --zone or key before it reads the value from standard input", async () => {
    const agent = await agentWithShard();
    const stdin = new PassThrough(); // a terminal nobody types into: never ends
    const d = await deps(agent, stdin);
    const within = <T>(p: Promise<T>) =>
      Promise.race([p, sleep(2000).then(() => Promise.reject(new Error("still reading standard input")))]);
    await expect(within(runPut("k", undefined, { zone: "zz" }, d))).rejects.toThrow(
      /--zone zz is not one of the configured zones/,
    );
    await expect(within(runPut("", undefined, {}, d))).rejects.toThrow(/the key is empty/);
    await expect(within(runPut("k".repeat(1025), undefined, {}, d))).rejects.toThrow(UsageError);
    expect(await dataRequests(agent)).toBe(0);
    stdin.destroy();
  });

  it("refuses a value argument that was not UTF-8, and stores binary from standard input unchanged", async () => {
    const agent = await agentWithShard();
    // what node makes of the argument bytes 0x6b 0xff: "k" and U+FFFD
    const d = await deps(agent);
    await expect(runPut("k", Buffer.from([0x6b, 0xff]).toString("utf8"), {}, d)).rejects.toThrow(
      /value argument is not valid UTF-8/,
    );
    expect(await dataRequests(agent)).toBe(0);

    const value = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00]), Buffer.alloc(3 * 1024 * 1024, 7)]);
    const stdin = new PassThrough();
    stdin.end(value);
    await runPut("bin", undefined, { json: true }, await deps(agent, stdin));
    const stored = await get(agent.port, SHARD, "bin");
    expect(stored.status).toBe(200);
    expect(stored.body.equals(value)).toBe(true); // (toEqual walks 3 MB byte by byte)
  });
});
