/** The binary protocol against a real agent: the same answers and checks as HTTP, and hostile frames. */
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  decodeAnswer,
  encodeRequest,
  MAGIC,
  OP_DELETE,
  OP_GET,
  OP_PUT,
  STATUS_ERROR,
  STATUS_NOT_FOUND,
  STATUS_OK,
  type DecodedAnswer,
} from "../../../src/agent/binary.js";
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
let agent: AgentProc;
let binPort: number;

beforeAll(async () => {
  root = tempDir("binary");
  binPort = await freePort();
  agent = await startAgent({
    dataDir: join(root, "data"),
    extra: ["--listen-binary", `127.0.0.1:${binPort}`],
  });
  expect((await admin(agent.port, "PUT", "shard-1", { epoch: 2 })).status).toBe(201);
});

afterAll(async () => {
  await stopAgent(agent);
  rmSync(root, { recursive: true, force: true });
});

/** A test client: collects answers by id; `closed` resolves when the agent closes the connection. */
class Client {
  answers = new Map<number, DecodedAnswer>();
  private buf: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  helloStatus?: number;
  closed: Promise<void>;
  constructor(readonly socket: Socket) {
    this.closed = new Promise((r) => socket.on("close", () => r()));
    socket.on("error", () => {});
    socket.on("data", (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      if (this.helloStatus === undefined) {
        if (this.buf.length < 5) return;
        this.helloStatus = this.buf[4];
        this.buf = this.buf.subarray(5);
      }
      for (let d = decodeAnswer(this.buf); d; d = decodeAnswer(this.buf)) {
        this.answers.set(d.answer.id, d.answer);
        this.buf = this.buf.subarray(d.length);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async open(token = TOKEN): Promise<Client> {
    const s = await new Promise<Socket>((resolve, reject) => {
      const sock = connect(binPort, "127.0.0.1", () => resolve(sock));
      sock.once("error", reject);
    });
    const c = new Client(s);
    const t = Buffer.from(token);
    const hello = Buffer.alloc(6);
    MAGIC.copy(hello);
    hello.writeUInt16LE(t.length, 4);
    s.write(Buffer.concat([hello, t]));
    return c;
  }
  async answer(id: number): Promise<DecodedAnswer> {
    const deadline = Date.now() + 10_000;
    while (!this.answers.has(id)) {
      if (Date.now() > deadline) throw new Error(`no answer ${id}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.answers.get(id)!;
  }
  async call(id: number, op: number, key: string, epoch = 2, value?: Buffer, shard = "shard-1", zone = "a") {
    this.socket.write(encodeRequest(id, op, shard, key, epoch, zone, value));
    return this.answer(id);
  }
}

const put_ = (value: Buffer) =>
  http(agent.port, "PUT", "/v1/shards/shard-1/keys/bp", { body: value, headers: { "x-shard-epoch": "2" } });

const errorOf = (a: DecodedAnswer) => JSON.parse(a.payload.toString()) as { error: string; message: string };

function helloFrame(token = TOKEN): Buffer {
  const t = Buffer.from(token);
  const hello = Buffer.alloc(6);
  MAGIC.copy(hello);
  hello.writeUInt16LE(t.length, 4);
  return Buffer.concat([hello, t]);
}

/** The agent's count of answers to binary gets with HTTP status 200, from its metrics. */
async function binaryGets(): Promise<number> {
  const text = (await http(agent.port, "GET", "/metrics")).body.toString();
  return Number(/shardctl_agent_requests_total\{op="binary-get",status="200"\} (\d+)/.exec(text)?.[1] ?? 0);
}

describe("binary protocol", () => {
  it("puts, gets and deletes with the same semantics as HTTP, pipelined", async () => {
    const c = await Client.open();
    const puts = Array.from({ length: 20 }, (_, i) =>
      c.call(i + 1, OP_PUT, `k${i}`, 2, Buffer.from(`v${i}`)),
    );
    const answers = await Promise.all(puts);
    expect(answers.every((a) => a.status === STATUS_OK && a.httpStatus === 200)).toBe(true);
    expect(answers.map((a) => a.lsn).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    const g = await c.call(100, OP_GET, "k7");
    expect(g.status).toBe(STATUS_OK);
    expect(g.payload.toString()).toBe("v7");
    // what the binary protocol wrote, HTTP reads
    expect((await get(agent.port, "shard-1", "k7", 2)).body.toString()).toBe("v7");
    const d = await c.call(101, OP_DELETE, "k7");
    expect(d.payload[0]).toBe(1);
    expect((await c.call(102, OP_GET, "k7")).status).toBe(STATUS_NOT_FOUND);
    c.socket.destroy();
  });

  it("refuses a wrong token at hello and closes", async () => {
    const c = await Client.open("wrong-token-of-same-len");
    await c.closed;
    expect(c.helloStatus).toBe(1);
  });

  it("after refusing a hello, reads nothing more and closes, even from a peer that keeps sending", async () => {
    const s = connect({ port: binPort, host: "127.0.0.1", allowHalfOpen: true });
    await new Promise<void>((r) => s.once("connect", () => r()));
    let gone = false;
    const done = new Promise<void>((r) => {
      s.on("close", () => ((gone = true), r()));
      s.on("error", () => {});
    });
    const hello = Buffer.alloc(6);
    MAGIC.copy(hello);
    hello.writeUInt16LE(3, 4);
    s.write(Buffer.concat([hello, Buffer.from("bad")]));
    const junk = Buffer.alloc(1 << 20, 0x5a);
    let sent = 0;
    // before, the agent only half-closed and kept every byte that followed in memory
    while (!gone && sent < 256 << 20) {
      if (!s.write(junk)) await new Promise((r) => setTimeout(r, 5));
      sent += junk.length;
    }
    await done;
    expect(gone).toBe(true);
    expect(sent).toBeLessThan(256 << 20);
    expect((await http(agent.port, "GET", "/health")).status).toBe(200);
  });

  it("takes a large value sent in many small pieces", async () => {
    const c = await Client.open();
    const value = Buffer.alloc(3 << 20);
    for (let i = 0; i < value.length; i++) value[i] = (i * 31) & 0xff;
    const frame = encodeRequest(1, OP_PUT, "shard-1", "big", 2, "a", value);
    for (let o = 0; o < frame.length; o += 16 * 1024) c.socket.write(frame.subarray(o, o + 16 * 1024));
    expect((await c.answer(1)).status).toBe(STATUS_OK);
    expect((await c.call(2, OP_GET, "big")).payload.equals(value)).toBe(true);
    c.socket.destroy();
  });

  it("answers stale epoch, unknown shard, bad shard id, oversize key/value with the HTTP codes, changing nothing", async () => {
    const c = await Client.open();
    expect((await c.call(1, OP_PUT, "x", 2, Buffer.from("good"))).status).toBe(STATUS_OK);
    const stale = await c.call(2, OP_PUT, "x", 1, Buffer.from("evil"));
    expect(stale.status).toBe(STATUS_ERROR);
    expect(stale.httpStatus).toBe(409);
    expect(stale.epoch).toBe(2);
    expect((await c.call(3, OP_PUT, "x", 2, Buffer.from("evil"), "shard-404")).httpStatus).toBe(404);
    const traversal = await c.call(4, OP_PUT, "x", 2, Buffer.from("evil"), "../../etc");
    expect(traversal.httpStatus).toBe(400);
    expect(errorOf(traversal).message).toMatch(/bad shard id/);
    expect((await c.call(5, OP_PUT, "k".repeat(2000), 2, Buffer.from("v"))).httpStatus).toBe(413);
    // a key of 400 bytes that are not UTF-8 is refused as such, not as an oversize key of what
    // decoding made of it (each bad byte becomes a 3-byte U+FFFD: 1,200 bytes)
    const badKey = encodeRequest(10, OP_PUT, "shard-1", "x".repeat(400), 2, "a", Buffer.from("v"));
    badKey.fill(0xff, 22 + "shard-1".length, 22 + "shard-1".length + 400);
    c.socket.write(badKey);
    const bad = await c.answer(10);
    expect(bad.httpStatus).toBe(400);
    expect(errorOf(bad).message).toMatch(
      /holds U\+FFFD, the replacement character: bytes that are not UTF-8 turn into it/,
    );
    expect((await c.call(6, OP_PUT, "x", 2, Buffer.from("v"), "shard-1", "mars")).httpStatus).toBe(400);
    expect((await c.call(7, 9, "x", 2)).httpStatus).toBe(400);
    expect((await c.call(8, OP_GET, "x", 0)).httpStatus).toBe(400);
    expect((await c.call(9, OP_GET, "x")).payload.toString()).toBe("good");
    expect((await http(agent.port, "GET", "/v1/shards/shard-1")).json().epoch).toBe(2);
    c.socket.destroy();
  });

  it("answers every request of a stream split at any byte, the hello included, pipelined across shards", async () => {
    expect((await admin(agent.port, "PUT", "shard-2", { epoch: 2 })).status).toBe(201);
    const stream = Buffer.concat([
      helloFrame(),
      encodeRequest(1, OP_PUT, "shard-1", "split-a", 2, "a", Buffer.from("value-a")),
      encodeRequest(2, OP_PUT, "shard-2", "split-b", 2, "b", Buffer.from("value-b")),
      encodeRequest(3, OP_GET, "shard-1", "k0", 2, "c"),
    ]);
    for (let cut = 1; cut < stream.length; cut++) {
      const s = await new Promise<Socket>((resolve, reject) => {
        const sock = connect(binPort, "127.0.0.1", () => resolve(sock));
        sock.once("error", reject);
      });
      s.setNoDelay(true);
      const c = new Client(s);
      s.write(stream.subarray(0, cut));
      // the first part arrives on its own
      await new Promise((r) => setTimeout(r, 5));
      s.write(stream.subarray(cut));
      const [a1, a2, a3] = [await c.answer(1), await c.answer(2), await c.answer(3)];
      expect([a1.httpStatus, a2.httpStatus, a3.httpStatus], `cut at byte ${cut}`).toEqual([200, 200, 200]);
      expect(a3.payload.toString()).toBe("v0");
      s.destroy();
    }
    expect((await get(agent.port, "shard-2", "split-b", 2)).body.toString()).toBe("value-b");
  });

  it("answers every request of a client that half-closes after sending them", async () => {
    const s = connect({ port: binPort, host: "127.0.0.1", allowHalfOpen: true });
    await new Promise<void>((r) => s.once("connect", () => r()));
    const c = new Client(s);
    const puts = Array.from({ length: 5 }, (_, i) =>
      encodeRequest(i + 1, OP_PUT, "shard-1", `half-${i}`, 2, "a", Buffer.from(`half-value-${i}`)),
    );
    // everything at once, then the end of the stream (as `nc -N` or a batch job's client does)
    s.end(Buffer.concat([helloFrame(), ...puts, encodeRequest(9, OP_GET, "shard-1", "k0", 2)]));
    await c.closed;
    expect([...c.answers.keys()].sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 9]);
    for (let i = 0; i < 5; i++) {
      expect(c.answers.get(i + 1)!.httpStatus).toBe(200);
      expect((await get(agent.port, "shard-1", `half-${i}`, 2)).body.toString()).toBe(`half-value-${i}`);
    }
    expect(c.answers.get(9)!.payload.toString()).toBe("v0");

    // half a frame, then the end of the stream: the whole frames are answered, the half is dropped
    const h = connect({ port: binPort, host: "127.0.0.1", allowHalfOpen: true });
    await new Promise<void>((r) => h.once("connect", () => r()));
    const hc = new Client(h);
    const whole = encodeRequest(1, OP_PUT, "shard-1", "half-whole", 2, "a", Buffer.from("w"));
    const cut = encodeRequest(2, OP_PUT, "shard-1", "half-cut", 2, "a", Buffer.from("c"));
    h.end(Buffer.concat([helloFrame(), whole, cut.subarray(0, cut.length - 1)]));
    await hc.closed;
    expect([...hc.answers.keys()]).toEqual([1]);
    expect((await get(agent.port, "shard-1", "half-whole", 2)).status).toBe(200);
    expect((await get(agent.port, "shard-1", "half-cut", 2)).status).toBe(404);
  });

  it("stops reading from a client that does not read its answers, and answers everything once it does", async () => {
    const value = Buffer.alloc(512 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 7) & 0xff;
    expect((await put_(value)).status).toBe(200);
    const n = 400; // 200 MiB of answers
    const s = connect({ port: binPort, host: "127.0.0.1" });
    await new Promise<void>((r) => s.once("connect", () => r()));
    s.pause(); // reads nothing for now
    const before = await binaryGets();
    const gets = Array.from({ length: n }, (_, i) => encodeRequest(i + 1, OP_GET, "shard-1", "bp", 2));
    s.write(Buffer.concat([helloFrame(), ...gets]));
    await new Promise((r) => setTimeout(r, 1500));
    // the agent answered only what the connection's buffers hold, and read no more requests:
    // before, it answered all of them at once into memory (each answer a copy of the value)
    const answeredUnread = (await binaryGets()) - before;
    expect(answeredUnread).toBeLessThan(n / 4);

    // the client reads now: every answer comes, whole; only headers are kept
    const seen = new Set<number>();
    let pending = Buffer.alloc(0);
    let skip = 0;
    let helloSeen = false;
    const done = new Promise<void>((resolve, reject) => {
      s.on("error", reject);
      s.on("data", (chunk: Buffer) => {
        let c = chunk;
        while (c.length > 0) {
          if (skip > 0) {
            const k = Math.min(skip, c.length);
            skip -= k;
            c = c.subarray(k);
            continue;
          }
          pending = Buffer.concat([pending, c]);
          c = Buffer.alloc(0);
          if (!helloSeen) {
            if (pending.length < 5) break;
            helloSeen = true;
            pending = pending.subarray(5);
          }
          while (pending.length >= 4 + 32) {
            const len = pending.readUInt32LE(0);
            const id = pending.readUInt32LE(4);
            if (pending.readUInt16LE(10) !== 200 || len !== 28 + value.length)
              return reject(new Error(`answer ${id}: status ${pending.readUInt16LE(10)}, ${len} bytes`));
            // the first bytes of the value, and the rest skipped
            if (!pending.subarray(32, 36).equals(value.subarray(0, 4)))
              return reject(new Error(`answer ${id}: wrong value`));
            seen.add(id);
            const inHand = Math.min(pending.length, 4 + len);
            skip = 4 + len - inHand;
            pending = pending.subarray(inHand);
            if (skip > 0) break;
          }
          if (skip > 0 && pending.length > 0) {
            c = pending;
            pending = Buffer.alloc(0);
          }
          if (seen.size === n) resolve();
        }
        if (seen.size === n) resolve();
      });
    });
    s.resume();
    await done;
    expect((await binaryGets()) - before).toBe(n);
    s.destroy();
  });

  it("closes the connection on an oversize or malformed frame", async () => {
    const big = await Client.open();
    const header = Buffer.alloc(4);
    header.writeUInt32LE(1 << 30, 0); // a 1 GiB frame announced
    big.socket.write(header);
    await big.closed;
    const a = big.answers.get(0)!;
    expect(a.httpStatus).toBe(413);
    const bad = await Client.open();
    const frame = encodeRequest(1, OP_PUT, "shard-1", "x", 2, "", Buffer.from("v"));
    frame[9] = 200; // shard id length beyond the frame
    bad.socket.write(frame);
    await bad.closed;
    expect(bad.answers.get(0)!.httpStatus).toBe(400);
    expect((await get(agent.port, "shard-1", "x", 2)).body.toString()).toBe("good");
  });

  it("answers the writes read before a malformed frame, then its error, then closes", async () => {
    // Given a put and a delete, then a frame whose lengths do not add up, in one write
    expect((await put(agent.port, "shard-1", "before-bad-2", "old", 2)).status).toBe(200);
    const c = await Client.open();
    const bad = encodeRequest(3, OP_GET, "shard-1", "x", 2);
    bad[9] = 200; // shard id length beyond the frame
    c.socket.write(
      Buffer.concat([
        encodeRequest(1, OP_PUT, "shard-1", "before-bad-1", 2, "a", Buffer.from("written")),
        encodeRequest(2, OP_DELETE, "shard-1", "before-bad-2", 2),
        bad,
      ]),
    );
    await c.closed;
    // Then the writes were applied, and their answers came before the connection closed (before,
    // the error answer closed it at once and the answers of the writes in flight were dropped)
    expect(c.answers.get(1)?.httpStatus).toBe(200);
    expect(c.answers.get(2)?.httpStatus).toBe(200);
    expect(c.answers.get(2)?.payload[0]).toBe(1);
    expect(c.answers.get(0)?.httpStatus).toBe(400);
    expect((await get(agent.port, "shard-1", "before-bad-1", 2)).body.toString()).toBe("written");
    expect((await get(agent.port, "shard-1", "before-bad-2", 2)).status).toBe(404);
  });
});
