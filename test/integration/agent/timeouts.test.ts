/**
 * Connections that hold the agent's resources without finishing a request, against a real agent
 * (configured with short timeouts): HTTP headers sent in part (slowloris) are cut at the headers
 * timeout, connections beyond limits.maxConnections are closed as they arrive, a binary frame sent in
 * part is cut at the frame timeout — while a slow but flowing upload still succeeds.
 */
import { rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeAnswer, encodeRequest, MAGIC, OP_GET, OP_PUT } from "../../../src/agent/binary.js";
import {
  admin,
  freePort,
  get,
  http,
  put,
  startAgent,
  stopAgent,
  tempDir,
  TOKEN,
  type AgentProc,
} from "./harness.js";

let root: string;
let a: AgentProc;
let binaryPort: number;
const MAX_CONNECTIONS = 6;

beforeAll(async () => {
  root = tempDir("timeouts");
  const configFile = join(root, "shardctl.yaml");
  writeFileSync(
    configFile,
    `limits:\n  maxConnections: ${MAX_CONNECTIONS}\nagent:\n  headersTimeoutSeconds: 1\n  idleTimeoutSeconds: 2\n  frameTimeoutSeconds: 1\n`,
  );
  binaryPort = await freePort();
  a = await startAgent({
    dataDir: join(root, "data"),
    configFile,
    extra: ["--listen-binary", `127.0.0.1:${binaryPort}`, "--windows-save-seconds", "0"],
  });
  expect((await admin(a.port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
});

afterAll(async () => {
  await stopAgent(a);
  rmSync(root, { recursive: true, force: true });
});

/** Connects; resolves with what the peer sent and how long until it closed, or "open" after `ms`. */
function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
}

function closedWithin(s: Socket, ms: number): Promise<{ closed: boolean; after: number; data: Buffer }> {
  const t0 = Date.now();
  const chunks: Buffer[] = [];
  s.on("data", (c: Buffer) => chunks.push(c));
  s.on("error", () => {});
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ closed: false, after: ms, data: Buffer.concat(chunks) }), ms);
    s.once("close", () => {
      clearTimeout(timer);
      resolve({ closed: true, after: Date.now() - t0, data: Buffer.concat(chunks) });
    });
  });
}

describe("connections that do not finish a request", () => {
  it("HTTP headers sent in part are cut at the headers timeout (slowloris)", async () => {
    const s = await open(a.port);
    s.write(`GET /v1/shards HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\nx-slow: `);
    // and a byte now and then, as a slowloris client does, which must not keep it open
    const drip = setInterval(() => s.writable && s.write("a"), 200);
    const r = await closedWithin(s, 8000);
    clearInterval(drip);
    s.destroy();
    expect(r.closed, "the connection is still open after 8 s").toBe(true);
    expect(r.after).toBeLessThan(4000);
    expect(r.data.toString()).toMatch(/^HTTP\/1\.1 408/);
  });

  it("a body that stops flowing is cut at the idle timeout", async () => {
    const s = await open(a.port);
    s.write(
      `PUT /v1/shards/shard-1/keys/stalled HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\n` +
        `x-shard-epoch: 1\r\ncontent-length: 100\r\n\r\nhalf`,
    );
    const r = await closedWithin(s, 8000);
    s.destroy();
    expect(r.closed, "the connection is still open after 8 s").toBe(true);
    expect((await get(a.port, "shard-1", "stalled")).status).toBe(404);
  });

  it("a slow upload that keeps flowing outlasts the headers and idle timeouts and is stored", async () => {
    const s = await open(a.port);
    const value = Buffer.alloc(4000, "s");
    s.write(
      `PUT /v1/shards/shard-1/keys/slow HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\n` +
        `x-shard-epoch: 1\r\ncontent-length: ${value.length}\r\nconnection: close\r\n\r\n`,
    );
    const answer = closedWithin(s, 15_000);
    // 3.2 s in all: longer than both timeouts, a chunk every 400 ms
    for (let i = 0; i < 8; i++) {
      await sleep(400);
      s.write(value.subarray(i * 500, (i + 1) * 500));
    }
    const r = await answer;
    expect(r.data.toString()).toMatch(/^HTTP\/1\.1 200/);
    expect((await get(a.port, "shard-1", "slow")).body).toEqual(value);
  });

  it("connections beyond limits.maxConnections are closed as they arrive; the agent serves again once they go", async () => {
    const held: Socket[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) held.push(await open(a.port));
    // one more: accepted by the kernel, closed by the agent at once
    const extra = await open(a.port);
    const r = await closedWithin(extra, 700);
    extra.destroy();
    for (const s of held) s.destroy();
    expect(r.closed, "a connection over the limit was kept").toBe(true);
    await sleep(100);
    expect((await http(a.port, "GET", "/health")).status).toBe(200);
  });

  it("a binary hello trickled a byte at a time is cut at the headers timeout (slowloris)", async () => {
    const s = await open(binaryPort);
    const hello = Buffer.concat([MAGIC, Buffer.from([200, 0]), Buffer.alloc(200, 0x61)]);
    let i = 0;
    // one byte every 200 ms: never idle for the timeout, never a whole hello within it
    const drip = setInterval(() => s.writable && i < hello.length && s.write(hello.subarray(i, ++i)), 200);
    const r = await closedWithin(s, 6000);
    clearInterval(drip);
    s.destroy();
    expect(r.closed).toBe(true);
    expect(r.after).toBeLessThan(3000);
  });

  it("a binary hello that does not begin with the protocol's magic is refused at its first wrong byte", async () => {
    for (const start of ["G", "SCX", "\x16"]) {
      const s = await open(binaryPort);
      s.write(start);
      const r = await closedWithin(s, 3000);
      s.destroy();
      expect(r.closed, JSON.stringify(start)).toBe(true);
      expect(r.after).toBeLessThan(500);
      expect(r.data.equals(Buffer.concat([MAGIC, Buffer.from([1])]))).toBe(true);
    }
  });

  it("a binary frame sent in part is cut at the frame timeout, with an answer saying so", async () => {
    const s = await open(binaryPort);
    const token = Buffer.from(TOKEN);
    const hello = Buffer.alloc(6);
    MAGIC.copy(hello);
    hello.writeUInt16LE(token.length, 4);
    s.write(Buffer.concat([hello, token]));
    // a whole put, then half of another (a large one: the agent would keep what came, and wait)
    const whole = encodeRequest(1, OP_PUT, "shard-1", "b1", 1, "", Buffer.from("one"));
    const big = encodeRequest(2, OP_PUT, "shard-1", "b2", 1, "", Buffer.alloc(3000, "x"));
    s.write(Buffer.concat([whole, big.subarray(0, 1000)]));
    const r = await closedWithin(s, 8000);
    s.destroy();
    expect(r.closed, "the connection is still open after 8 s").toBe(true);
    expect(r.after).toBeLessThan(4000);
    expect(r.data.subarray(0, 5)).toEqual(Buffer.concat([MAGIC, Buffer.from([0])]));
    const first = decodeAnswer(r.data.subarray(5))!;
    expect(first.answer).toMatchObject({ id: 1, httpStatus: 200 });
    const last = decodeAnswer(r.data.subarray(5 + first.length))!;
    expect(last.answer).toMatchObject({ id: 0, httpStatus: 408 });
    expect(JSON.parse(last.answer.payload.toString())).toMatchObject({ error: "frame-timeout" });
    expect((await get(a.port, "shard-1", "b1")).body.toString()).toBe("one");
    expect((await get(a.port, "shard-1", "b2")).status).toBe(404);
  });

  it("a frame sent in part while the agent waits for its answers to be read is cut at the frame timeout once they are", async () => {
    // Given a large value, and a client that reads nothing for now
    const value = Buffer.alloc(12 << 20, "v");
    expect((await put(a.port, "shard-1", "huge", value)).status).toBe(200);
    const s = await open(binaryPort);
    s.pause();
    const token = Buffer.from(TOKEN);
    const hello = Buffer.alloc(6);
    MAGIC.copy(hello);
    hello.writeUInt16LE(token.length, 4);
    // When it asks for the value (an answer the connection cannot send at once), then sends the first
    // bytes of a frame, and more of it once the agent has stopped reading for the answer to go out
    const cut = encodeRequest(2, OP_PUT, "shard-1", "never", 1, "", Buffer.from("x"));
    s.write(
      Buffer.concat([hello, token, encodeRequest(1, OP_GET, "shard-1", "huge", 1), cut.subarray(0, 2)]),
    );
    await sleep(200);
    s.write(cut.subarray(2, 12));
    // and reads its answers only after the frame timeout (1 s) has passed
    await sleep(1500);
    const r = closedWithin(s, 8000);
    s.resume();
    // Then the frame is cut, its clock restarted when the agent read again (before, the timeout that
    // fired while the agent was not reading was dropped, and the connection held the frame for ever)
    const { closed, data } = await r;
    s.destroy();
    expect(closed, "the connection is still open 8 s after the answers were read").toBe(true);
    const first = decodeAnswer(data.subarray(5))!;
    expect(first.answer).toMatchObject({ id: 1, httpStatus: 200 });
    const last = decodeAnswer(data.subarray(5 + first.length))!;
    expect(last.answer).toMatchObject({ id: 0, httpStatus: 408 });
  });
});
