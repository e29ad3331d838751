/**
 * An agent under a low limit on open files (prlimit), against real agent processes: idle
 * connections must not take the file descriptors its shards need (a log moving on to its next
 * file, a shard being created), and an agent whose limit cannot hold its shards refuses to start
 * before it opens any.
 */
import { request, Agent as HttpAgent } from "node:http";
import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { connectionLimit, openFileLimit } from "../../../src/agent/agent.js";
import { admin, startAgent, stopAgent, tempDir, TOKEN, type AgentProc } from "./harness.js";

const live: AgentProc[] = [];
const sockets: Socket[] = [];

afterAll(async () => {
  for (const s of sockets) s.destroy();
  for (const p of live) await stopAgent(p, "SIGKILL");
});

/** A request on one kept-alive connection (opened before the flood of idle ones): its status and body. */
function call(
  agent: HttpAgent,
  port: number,
  method: string,
  path: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent,
        port,
        host: "127.0.0.1",
        method,
        path,
        headers: { authorization: `Bearer ${TOKEN}`, ...headers },
      },
      (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const put = async (agent: HttpAgent, port: number, key: string, value: string) =>
  (await call(agent, port, "PUT", `/v1/shards/shard-1/keys/${key}`, value, { "x-shard-epoch": "1" })).status;

describe("the open-file limit", () => {
  it("reads the soft limit from /proc/self/limits and leaves the shards their files", () => {
    const text =
      "Limit                     Soft Limit           Hard Limit           Units\nMax open files            256                  4096                 files\n";
    expect(openFileLimit(text)).toBe(256);
    expect(
      openFileLimit("Max open files            unlimited            unlimited            files\n"),
    ).toBeUndefined();
    expect(openFileLimit("nothing here")).toBeUndefined();
    expect(openFileLimit()).toBeGreaterThan(0); // this process's
    // 256 − 64 reserved − 2 per shard, shared by the listeners; never above the configured limit
    expect(connectionLimit({ configured: 1024, fdLimit: 256, shards: 1, listeners: 1 })).toBe(190);
    expect(connectionLimit({ configured: 1024, fdLimit: 256, shards: 1, listeners: 2 })).toBe(95);
    expect(connectionLimit({ configured: 50, fdLimit: 256, shards: 1, listeners: 1 })).toBe(50);
    expect(connectionLimit({ configured: 1024, fdLimit: 100, shards: 40, listeners: 1 })).toBe(1);
    expect(connectionLimit({ configured: 1024, fdLimit: undefined, shards: 9, listeners: 2 })).toBe(1024);
  });

  it("idle connections past the limit do not fail a shard whose log moves on to its next file", async () => {
    const root = tempDir("fd-limit");
    const p = await startAgent({
      dataDir: `${root}/data`,
      openFiles: 256,
      extra: ["--max-file-bytes", "4096", "--windows-save-seconds", "0"],
    });
    live.push(p);
    expect(p.stderr()).toMatch(
      /the open-file limit \(256\) leaves room for 192 connection\(s\) per listener beside 0 shard/,
    );
    expect((await admin(p.port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
    const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    try {
      expect(await put(keepAlive, p.port, "first", "x")).toBe(200);
      // 300 connections that say nothing (past the descriptors the agent has): before, the agent
      // took them until EMFILE, and the next log file could not be opened — the shard then refused
      // every request until a restart
      for (let i = 0; i < 300; i++) {
        const s = connect(p.port, "127.0.0.1");
        s.on("error", () => undefined);
        sockets.push(s);
      }
      await sleep(500);
      for (let i = 0; i < 60; i++)
        expect(await put(keepAlive, p.port, `k${i}`, "v".repeat(500)), `put ${i}`).toBe(200);
      // a shard made meanwhile is whole (before: 201 with a shard that refused everything)
      // (on the kept-alive connection: a new one is closed as it arrives, the agent being at its limit)
      const created = await call(keepAlive, p.port, "PUT", "/v1/admin/shards/shard-2", '{"epoch":1}', {
        "content-type": "application/json",
      });
      expect(created.status, created.body).toBe(201);
      expect(JSON.parse(created.body).state).toBe("owned");
    } finally {
      keepAlive.destroy();
    }
    expect(p.stderr()).not.toMatch(/EMFILE|log write failed|internal error/);
  });

  it("an agent whose limit cannot hold its shards' files refuses to start, before it opens any", async () => {
    const root = tempDir("fd-limit-start");
    const p = await startAgent({ dataDir: `${root}/data`, extra: ["--windows-save-seconds", "0"] });
    for (let i = 1; i <= 80; i++)
      expect((await admin(p.port, "PUT", `shard-${i}`, { epoch: 1 })).status).toBe(201);
    await stopAgent(p);
    // 64 + 2 × 80 + 2 = 226 descriptors needed: before, shards failed at random with EMFILE (their
    // files called damaged), then the listener with an internal error and a stack
    const err = await startAgent({ dataDir: `${root}/data`, openFiles: 200 }).then(
      (q) => {
        live.push(q);
        return "";
      },
      (e: Error) => e.message,
    );
    expect(err).toMatch(
      /the open-file limit is 200, too low for this agent's 80 shard\(s\): it needs at least 226 file descriptors/,
    );
    expect(err).not.toMatch(/REFUSED|internal error/);
    const again = await startAgent({ dataDir: `${root}/data`, openFiles: 400 });
    live.push(again);
    expect(again.stderr()).toMatch(/, 80 shards/);
    expect(again.stderr()).not.toMatch(/REFUSED/);
  });
});
