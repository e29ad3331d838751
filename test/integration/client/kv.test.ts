/**
 * `shardctl put`, `get` and `delete` against real agent processes, routed by the real embedded
 * store: what --json reports of a value is the value, a bad zone or key is refused before the value
 * is read, a value argument that was not UTF-8 is refused rather than stored changed, --json says
 * when a write was a retry the agent had already applied, and agents that redirect in a cycle end
 * the command at once with exit 3.
 */
import { PassThrough, Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { runDelete, runGet, runPut, type KvDeps } from "../../../src/commands/kv.js";
import { defaultConfig } from "../../../src/config.js";
import { UsageError } from "../../../src/errors.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { cli } from "../../helpers/cli.js";
import { startDelayProxy, type DelayProxy } from "../../helpers/delay-proxy.js";
import { admin, get, put, TOKEN, type AgentProc } from "../agent/harness.js";
import { createShard, inventory, oneShardMap, realAgent, requestCount, scratch, SHARD } from "./real.js";

const proxies: DelayProxy[] = [];
afterEach(async () => {
  for (const p of proxies.splice(0)) await p.close();
});

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

/** A data dir whose embedded store routes every key to `agent` (or to the address given). */
async function deps(
  agent: AgentProc | string,
  stdin?: PassThrough,
): Promise<KvDeps & { out: Collect; err: Collect }> {
  const config = defaultConfig();
  config.dataDir = scratch("kv");
  config.agent.token = TOKEN;
  const store = new EmbeddedStore(config.dataDir);
  const address = typeof agent === "string" ? agent : agent.address;
  expect((await store.compareAndSet(0, oneShardMap(address))).ok).toBe(true);
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
      /value argument holds U\+FFFD, the replacement character: bytes that are not UTF-8 turn into it/,
    );
    // a real U+FFFD looks the same once decoded: refused with the same words (not called "not UTF-8")
    await expect(runPut("k", "\ufffd", {}, d)).rejects.toThrow(/value argument holds U\+FFFD/);
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

describe("shardctl put/delete --json: duplicate", () => {
  it("is false for a write applied by its first attempt", async () => {
    const agent = await agentWithShard();
    const d = await deps(agent);
    await runPut("k", "v", { json: true }, d);
    expect(JSON.parse(d.out.bytes.toString())).toEqual({
      key: "k",
      lsn: 1,
      bytes: 1,
      duplicate: false,
      writeId: expect.stringMatching(/^[0-9a-f]{32}$/),
    });
    const d2 = await deps(agent);
    await runDelete("k", { json: true }, d2);
    expect(JSON.parse(d2.out.bytes.toString())).toEqual({
      key: "k",
      existed: true,
      lsn: 2,
      duplicate: false,
      writeId: expect.stringMatching(/^[0-9a-f]{32}$/),
    });
  });

  it("is true when the agent applied an attempt whose answer was lost, and the retry got the original", async () => {
    const agent = await agentWithShard();
    // the map routes through a proxy that holds each chunk 300 ms: there is time to cut the
    // connection after the agent applied the write and before its answer comes back
    const proxy = await startDelayProxy(agent.port, 300);
    proxies.push(proxy);
    /** Runs `op`, cuts the connection once the agent's LSN reaches `lsn`, and returns the JSON printed. */
    const lostAnswer = async (lsn: number, op: (d: KvDeps) => Promise<void>) => {
      const d = await deps(proxy.address);
      const run = op(d);
      while ((await inventory(agent)).lsn !== lsn) await sleep(5);
      proxy.cut(0);
      await run;
      return JSON.parse(d.out.bytes.toString()) as Record<string, unknown>;
    };
    expect(await lostAnswer(1, (d) => runPut("k", "v", { json: true }, d))).toEqual({
      key: "k",
      lsn: 1,
      bytes: 1,
      duplicate: true,
      writeId: expect.stringMatching(/^[0-9a-f]{32}$/),
    });
    expect(await lostAnswer(2, (d) => runDelete("k", { json: true }, d))).toEqual({
      key: "k",
      existed: true,
      lsn: 2,
      duplicate: true,
      writeId: expect.stringMatching(/^[0-9a-f]{32}$/),
    });
    // each write was applied once: the retries appended nothing
    expect((await inventory(agent)).lsn).toBe(2);
    expect(await requestCount(agent, "put", 200)).toBe(2);
    expect(await requestCount(agent, "delete", 200)).toBe(2);
  });
});

describe("shardctl get/put with agents that redirect in a cycle", () => {
  it("exits 3 at once, naming the nodes and what to do", async () => {
    const [a, b] = await Promise.all([realAgent("node-1"), realAgent("node-2")]);
    await Promise.all([createShard(a), createShard(b)]);
    for (const [from, to, node] of [
      [a, b, "node-2"],
      [b, a, "node-1"],
    ] as const) {
      const r = await admin(from.port, "POST", `${SHARD}/release`, {
        epoch: 1,
        redirect: { node, address: to.address, epoch: 2 },
      });
      expect(r.status, r.body.toString()).toBe(200);
    }
    const d = await deps(a);
    for (const args of [
      ["get", "k"],
      ["put", "k", "v"],
      ["delete", "k"],
    ]) {
      const t0 = Date.now();
      const r = await cli(["--data-dir", d.config.dataDir, ...args], { SHARDCTL_TOKEN: TOKEN });
      expect(r.code, r.err).toBe(3);
      expect(r.err).toContain(`node-1 at ${a.address} → node-2 at ${b.address} → node-1 at ${a.address}`);
      expect(r.err).toMatch(/shardctl status/);
      expect(Date.now() - t0).toBeLessThan(5000); // the client's deadline is 10 s
    }
    expect(await requestCount(a, "put", 200)).toBe(0);
    expect(await requestCount(b, "put", 200)).toBe(0);
  });
});

describe("shardctl put/delete --write-id", () => {
  const ID = "00112233445566778899aabbccddeeff";

  it("retries a write with the id given: the agent answers a duplicate, and the value is not changed", async () => {
    const agent = await agentWithShard();
    const first = await deps(agent);
    await runPut("k", "v1", { json: true, writeId: ID }, first);
    expect(JSON.parse(first.out.bytes.toString())).toEqual({
      key: "k",
      lsn: 1,
      bytes: 2,
      duplicate: false,
      writeId: ID,
    });
    // the retry of a write whose answer was lost: same id (in capitals too), even with another value
    const retry = await deps(agent);
    await runPut("k", "v2", { json: true, writeId: ID.toUpperCase() }, retry);
    expect(JSON.parse(retry.out.bytes.toString())).toEqual({
      key: "k",
      lsn: 1,
      bytes: 2,
      duplicate: true,
      writeId: ID,
    });
    expect((await get(agent.port, SHARD, "k")).body.toString()).toBe("v1");
    expect((await inventory(agent)).lsn).toBe(1);

    const del = "ffeeddccbbaa99887766554433221100";
    const d1 = await deps(agent);
    await runDelete("k", { json: true, writeId: del }, d1);
    expect(JSON.parse(d1.out.bytes.toString())).toEqual({
      key: "k",
      existed: true,
      lsn: 2,
      duplicate: false,
      writeId: del,
    });
    const d2 = await deps(agent);
    await runDelete("k", { json: true, writeId: del }, d2);
    expect(JSON.parse(d2.out.bytes.toString())).toEqual({
      key: "k",
      existed: true,
      lsn: 2,
      duplicate: true,
      writeId: del,
    });
    expect((await inventory(agent)).lsn).toBe(2);
  });

  it("prints the write id it made up with --json, so that the write can be retried with it", async () => {
    const agent = await agentWithShard();
    const d = await deps(agent);
    await runPut("k", "v", { json: true }, d);
    const j = JSON.parse(d.out.bytes.toString()) as { writeId: string };
    expect(j.writeId).toMatch(/^[0-9a-f]{32}$/);
    const again = await deps(agent);
    await runPut("k", "other", { json: true, writeId: j.writeId }, again);
    expect(JSON.parse(again.out.bytes.toString())).toMatchObject({ duplicate: true, lsn: 1 });
    const d2 = await deps(agent);
    await runDelete("k", { json: true }, d2);
    expect((JSON.parse(d2.out.bytes.toString()) as { writeId: string }).writeId).toMatch(/^[0-9a-f]{32}$/);
  });

  it("says in plain text when a write was already applied by an earlier attempt", async () => {
    const agent = await agentWithShard();
    const note = "(already applied by an earlier attempt; nothing written again)";
    const p1 = await deps(agent);
    await runPut("k", "v", { writeId: ID }, p1);
    expect(p1.err.bytes.toString()).toBe("stored k (1 bytes, lsn 1)\n");
    const p2 = await deps(agent);
    await runPut("k", "v", { writeId: ID }, p2);
    expect(p2.err.bytes.toString()).toBe(`stored k (1 bytes, lsn 1) ${note}\n`);
    const del = "ffeeddccbbaa99887766554433221100";
    const d1 = await deps(agent);
    await runDelete("k", { writeId: del }, d1);
    expect(d1.err.bytes.toString()).toBe("deleted k\n");
    const d2 = await deps(agent);
    await runDelete("k", { writeId: del }, d2);
    expect(d2.err.bytes.toString()).toBe(`deleted k ${note}\n`);
  });

  it("refuses a write id that is not 32 hex digits with exit 2, before the value is read, and sends nothing", async () => {
    const agent = await agentWithShard();
    const hostile = [
      "",
      " ",
      "abc",
      ID.slice(1), // 31 digits
      ID + "0", // 33
      ID + ID,
      "g" + ID.slice(1),
      " " + ID.slice(1),
      ID.slice(1) + "\n",
      "0x" + ID.slice(2),
      "-" + ID.slice(1),
      "\u0660".repeat(32), // Arabic-Indic zeros: digits, not hex digits
      "０".repeat(32), // fullwidth zeros
      ID.slice(0, 16) + "\u0000" + ID.slice(17),
      "é".repeat(16), // 16 characters, 32 bytes
    ];
    const stdin = new PassThrough(); // never ends: the write id must be refused before it is read
    for (const writeId of hostile) {
      const d = await deps(agent, stdin);
      const within = <T>(p: Promise<T>) =>
        Promise.race([p, sleep(2000).then(() => Promise.reject(new Error("still reading standard input")))]);
      await expect(within(runPut("k", undefined, { writeId }, d)), JSON.stringify(writeId)).rejects.toThrow(
        /--write-id .*32 hex digits/,
      );
      await expect(runDelete("k", { writeId }, d), JSON.stringify(writeId)).rejects.toThrow(UsageError);
    }
    stdin.destroy();
    const d = await deps(agent);
    for (const args of [
      ["put", "k", "v", "--write-id", "zz"],
      ["put", "k", "v", "--write-id", ""],
      ["delete", "k", "--write-id", ID.slice(2)],
    ]) {
      const r = await cli(["--data-dir", d.config.dataDir, ...args], { SHARDCTL_TOKEN: TOKEN });
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(/--write-id/);
    }
    expect(await dataRequests(agent)).toBe(0);
  });
});
