/**
 * Idempotent writes against real agent processes: a write id sent twice —
 * one after the other, concurrently, in a batch, over the binary protocol —
 * is appended once and the retry gets the original answer; an acknowledged
 * write is still recognised after the agent is killed with SIGKILL and
 * restarted (from its log, and from its snapshot once the log is compacted)
 * and on the node a migration moved its shard to; the routing client retries
 * a put whose answer a proxy cut off and the agent applies it once. Hostile:
 * malformed write ids are refused with 400 and nothing is written.
 */
import { rmSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  decodeAnswer,
  encodeRequest,
  FLAG_WRITE_ID,
  MAGIC,
  OP_DELETE,
  OP_GET,
  OP_PUT,
  STATUS_ERROR,
  STATUS_OK,
  type DecodedAnswer,
} from "../../../src/agent/binary.js";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { executeMigration } from "../../../src/cluster/migrate.js";
import type { LocationMap, SegmentRange } from "../../../src/engine/location-map.js";
import { systemClock } from "../../../src/engine/ports.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import {
  freePort,
  get,
  admin,
  http,
  put,
  startAgent,
  startingMap,
  stopAgent,
  tempDir,
  TOKEN,
  type AgentProc,
  type HttpResult,
} from "./harness.js";

const SEGMENTS = 64;
const RANGES: Record<string, SegmentRange> = { "shard-1": [0, 32], "shard-2": [32, 64] };
const segmenter = new Segmenter(SEGMENTS);

let root: string;
let n1: AgentProc;
let n2: AgentProc;
let binPort: number;
/** node-1 is started with small log files, so that a forced snapshot compacts its log. */
const N1_EXTRA = () => ["--max-file-bytes", "4096", "--listen-binary", `127.0.0.1:${binPort}`];

/** Keys `${prefix}-<n>` that fall into the shard's segments. */
function* keysOf(shard: string, prefix: string): Generator<string> {
  const [a, b] = RANGES[shard];
  for (let n = 0; ; n++) {
    const k = `${prefix}-${n}`;
    const s = segmenter.segmentOf(k);
    if (s >= a && s < b) yield k;
  }
}
const keyOf = (shard: string, prefix: string) => keysOf(shard, prefix).next().value as string;

let idSeq = 0;
/** A fresh write id, 32 hex digits. */
function newId(): string {
  return (0xabc00000 + ++idSeq).toString(16).padStart(32, "0");
}

async function lsnOf(p: AgentProc, shard: string): Promise<number> {
  const r = await http(p.port, "GET", `/v1/shards/${shard}`);
  expect(r.status, r.body.toString()).toBe(200);
  return r.json().lsn as number;
}

function putWithId(p: AgentProc, shard: string, key: string, value: string, id: string, epoch = 1) {
  return put(p.port, shard, key, value, epoch, { "x-write-id": id });
}

/** An embedded store under `dir` whose map has `nodes` and both shards on node-1. */
async function storeWithMap(dir: string, nodes: LocationMap["nodes"]): Promise<EmbeddedStore> {
  const store = new EmbeddedStore(dir);
  const shards = Object.entries(RANGES).map(([id, range]) => [id, "node-1", range] as const);
  expect((await store.compareAndSet(0, startingMap(SEGMENTS, nodes, shards, 3))).ok).toBe(true);
  return store;
}

/** A routing client whose map puts both shards on node-1 at `address`. */
async function routingClient(dir: string, address: string): Promise<ShardClient> {
  const store = await storeWithMap(dir, [{ id: "node-1", address, zone: "a" }]);
  return new ShardClient({ store, token: TOKEN, deadlineMs: 10_000, baseBackoffMs: 5 });
}

function expectWrite(r: HttpResult, lsn: number, duplicate: boolean): void {
  expect(r.status, r.body.toString()).toBe(200);
  expect(r.json().lsn).toBe(lsn);
  expect(r.headers["x-write-duplicate"]).toBe(duplicate ? "true" : undefined);
}

beforeAll(async () => {
  root = tempDir("write-ids");
  binPort = await freePort();
  [n1, n2] = await Promise.all([
    startAgent({
      dataDir: join(root, "n1"),
      nodeId: "node-1",
      zone: "a",
      segments: SEGMENTS,
      extra: N1_EXTRA(),
    }),
    startAgent({ dataDir: join(root, "n2"), nodeId: "node-2", zone: "b", segments: SEGMENTS }),
  ]);
  for (const [id, range] of Object.entries(RANGES)) {
    const r = await admin(n1.port, "PUT", id, { epoch: 1, ranges: [range], segmentCount: SEGMENTS });
    expect(r.status, r.body.toString()).toBe(201);
  }
}, 120_000);

afterAll(async () => {
  await Promise.all([n1 && stopAgent(n1, "SIGKILL"), n2 && stopAgent(n2, "SIGKILL")]);
  rmSync(root, { recursive: true, force: true });
});

describe("idempotent writes over HTTP", () => {
  it("appends a put or delete sent twice in a row once; the retry gets the original LSN and says it is a duplicate", async () => {
    const key = keyOf("shard-1", "seq");
    const before = await lsnOf(n1, "shard-1");
    const id = newId();
    const first = await putWithId(n1, "shard-1", key, "one", id);
    expectWrite(first, before + 1, false);
    expectWrite(await putWithId(n1, "shard-1", key, "one", id.toUpperCase()), before + 1, true);
    // another writer overwrites the key; a late retry of the first write does not bring "one" back
    expect((await put(n1.port, "shard-1", key, "two")).status).toBe(200);
    expectWrite(await putWithId(n1, "shard-1", key, "one", id), before + 1, true);
    expect((await get(n1.port, "shard-1", key)).body.toString()).toBe("two");
    const delId = newId();
    const del = () =>
      http(n1.port, "DELETE", `/v1/shards/shard-1/keys/${key}`, {
        headers: { "x-shard-epoch": "1", "x-write-id": delId },
      });
    const d1 = await del();
    expectWrite(d1, before + 3, false);
    expect(d1.json().existed).toBe(true);
    const d2 = await del();
    expectWrite(d2, before + 3, true);
    expect(d2.json()).toEqual({ lsn: before + 3, existed: true, epoch: 1 }); // the original answer, not "existed: false"
    expect(await lsnOf(n1, "shard-1")).toBe(before + 3);
  });

  it("appends a write id sent concurrently once; every copy is answered with the first one's LSN", async () => {
    const key = keyOf("shard-1", "conc");
    const before = await lsnOf(n1, "shard-1");
    const id = newId();
    // ten connections at once (no pool): the retries arrive while the first waits for its fsync
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => putWithId(n1, "shard-1", key, "same", id)),
    );
    for (const r of answers) expect(r.status, r.body.toString()).toBe(200);
    expect(new Set(answers.map((r) => r.json().lsn))).toEqual(new Set([before + 1]));
    expect(answers.filter((r) => r.headers["x-write-duplicate"] === undefined)).toHaveLength(1);
    expect(await lsnOf(n1, "shard-1")).toBe(before + 1);
  });

  it("applies a batch's write ids once, also when the whole batch is retried", async () => {
    const [k1, k2] = [keyOf("shard-1", "b1"), keyOf("shard-1", "b2")];
    const before = await lsnOf(n1, "shard-1");
    const [i1, i2] = [newId(), newId()];
    const batch = () =>
      http(n1.port, "POST", "/v1/shards/shard-1/batch", {
        headers: { "x-shard-epoch": "1", "content-type": "application/json" },
        body: JSON.stringify({
          ops: [
            { op: "put", key: k1, value: Buffer.from("x").toString("base64"), writeId: i1 },
            { op: "delete", key: k2, writeId: i2 },
            { op: "get", key: k1 },
          ],
        }),
      });
    const r1 = await batch();
    expect(r1.status, r1.body.toString()).toBe(200);
    expect(r1.json().results).toEqual([
      { lsn: before + 1 },
      { lsn: before + 2, existed: false },
      { found: true, value: "eA==", lsn: before + 1 },
    ]);
    const r2 = await batch();
    expect(r2.json().results).toEqual([
      { lsn: before + 1, duplicate: true },
      { lsn: before + 2, existed: false, duplicate: true },
      { found: true, value: "eA==", lsn: before + 1 },
    ]);
    expect(await lsnOf(n1, "shard-1")).toBe(before + 2);
  });
});

/** A binary-protocol connection that collects answers by request id. */
class BinaryClient {
  private buf = Buffer.alloc(0);
  private readonly answers = new Map<number, DecodedAnswer>();
  private waiters: (() => void)[] = [];
  readonly closed: Promise<void>;
  constructor(private readonly socket: Socket) {
    this.closed = new Promise((r) => socket.on("close", () => r()));
    socket.on("error", () => {});
    let hello = false;
    socket.on("data", (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      if (!hello) {
        if (this.buf.length < 5) return;
        hello = true;
        this.buf = this.buf.subarray(5);
      }
      for (let d = decodeAnswer(this.buf); d; d = decodeAnswer(this.buf)) {
        this.answers.set(d.answer.id, d.answer);
        this.buf = this.buf.subarray(d.length);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async open(): Promise<BinaryClient> {
    const s = await new Promise<Socket>((resolve, reject) => {
      const sock = connect(binPort, "127.0.0.1", () => resolve(sock));
      sock.once("error", reject);
    });
    const t = Buffer.from(TOKEN);
    const hello = Buffer.alloc(6);
    MAGIC.copy(hello);
    hello.writeUInt16LE(t.length, 4);
    s.write(Buffer.concat([hello, t]));
    return new BinaryClient(s);
  }
  send(frame: Buffer): void {
    this.socket.write(frame);
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
  close(): void {
    this.socket.destroy();
  }
}

describe("idempotent writes over the binary protocol", () => {
  it("appends a write id once, sequentially and pipelined, and flags the duplicate answers", async () => {
    const c = await BinaryClient.open();
    try {
      const key = keyOf("shard-1", "bin");
      const before = await lsnOf(n1, "shard-1");
      const id = Buffer.from(newId(), "hex");
      c.send(encodeRequest(1, OP_PUT, "shard-1", key, 1, "a", Buffer.from("v"), id));
      const a1 = await c.answer(1);
      expect(a1).toMatchObject({ status: STATUS_OK, lsn: before + 1, duplicate: false });
      // pipelined: three more with the same id and one delete with its own id, twice
      const delId = Buffer.from(newId(), "hex");
      for (let i = 2; i <= 4; i++)
        c.send(encodeRequest(i, OP_PUT, "shard-1", key, 1, "a", Buffer.from("v"), id));
      c.send(encodeRequest(5, OP_DELETE, "shard-1", key, 1, "a", undefined, delId));
      c.send(encodeRequest(6, OP_DELETE, "shard-1", key, 1, "a", undefined, delId));
      for (let i = 2; i <= 4; i++)
        expect(await c.answer(i)).toMatchObject({ lsn: before + 1, duplicate: true });
      const d5 = await c.answer(5);
      const d6 = await c.answer(6);
      expect(d5).toMatchObject({ status: STATUS_OK, lsn: before + 2, duplicate: false });
      expect(d6).toMatchObject({ status: STATUS_OK, lsn: before + 2, duplicate: true });
      expect([d5.payload[0], d6.payload[0]]).toEqual([1, 1]);
      expect(await lsnOf(n1, "shard-1")).toBe(before + 2);
    } finally {
      c.close();
    }
  });
});

describe("hostile write ids", () => {
  it("refuses a malformed x-write-id, a malformed batch writeId and a binary frame with bad flags: 400, nothing written", async () => {
    const key = keyOf("shard-1", "hostile");
    const before = await lsnOf(n1, "shard-1");
    const bad = [
      "",
      "xyz",
      "0".repeat(31),
      "0".repeat(33),
      "g".repeat(32),
      `${"0".repeat(32)}, ${"1".repeat(32)}`,
      "../../etc/passwd",
    ];
    for (const id of bad) {
      const r = await putWithId(n1, "shard-1", key, "evil", id);
      expect(r.status, JSON.stringify(id)).toBe(400);
      expect(r.json().message).toMatch(/x-write-id must be a write id: 32 hex digits/);
    }
    // the same header twice (node joins them with ", ")
    const twice = await new Promise<number>((resolve, reject) => {
      const s = connect(n1.port, "127.0.0.1", () =>
        s.write(
          `PUT /v1/shards/shard-1/keys/${key} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\n` +
            `x-shard-epoch: 1\r\nx-write-id: ${newId()}\r\nx-write-id: ${newId()}\r\ncontent-length: 4\r\nconnection: close\r\n\r\nevil`,
        ),
      );
      let out = "";
      s.on("data", (c) => (out += c.toString()));
      s.on("end", () => resolve(Number(out.split(" ")[1])));
      s.on("error", reject);
    });
    expect(twice).toBe(400);
    const delBad = await http(n1.port, "DELETE", `/v1/shards/shard-1/keys/${key}`, {
      headers: { "x-shard-epoch": "1", "x-write-id": "nope" },
    });
    expect(delBad.status).toBe(400);
    const batch = (ops: unknown[]) =>
      http(n1.port, "POST", "/v1/shards/shard-1/batch", {
        headers: { "x-shard-epoch": "1", "content-type": "application/json" },
        body: JSON.stringify({ ops }),
      });
    const evil = Buffer.from("evil").toString("base64");
    for (const writeId of [12, "abc", null, ["0".repeat(32)], "0".repeat(30)]) {
      const r = await batch([
        { op: "put", key, value: evil, writeId: newId() },
        { op: "put", key, value: evil, writeId },
      ]);
      expect(r.status, JSON.stringify(writeId)).toBe(400);
      expect(r.json().message).toMatch(/ops\[1\]\.writeId must be a write id/);
    }
    expect((await batch([{ op: "get", key, writeId: newId() }])).status).toBe(400);
    // binary: unknown flag bits, and a write id on a get
    const c = await BinaryClient.open();
    try {
      const f = encodeRequest(1, OP_PUT, "shard-1", key, 1, "a", Buffer.from("evil"));
      f[13] = 0x82;
      c.send(f);
      expect(await c.answer(1)).toMatchObject({ status: STATUS_ERROR, httpStatus: 400 });
      c.send(encodeRequest(2, OP_GET, "shard-1", key, 1, "a", undefined, Buffer.alloc(16)));
      expect(await c.answer(2)).toMatchObject({ status: STATUS_ERROR, httpStatus: 400 });
      // the id flag on a frame too short to hold an id: the framing is broken, the connection is closed
      const short = encodeRequest(3, OP_DELETE, "shard-1", "k", 1, "");
      short[13] = FLAG_WRITE_ID;
      c.send(short);
      expect(await c.answer(0)).toMatchObject({ status: STATUS_ERROR, httpStatus: 400 });
      await c.closed;
    } finally {
      c.close();
    }
    expect(() => encodeRequest(1, OP_PUT, "shard-1", key, 1, "a", undefined, Buffer.alloc(5))).toThrow(
      /16 bytes/,
    );
    // nothing was written by any of it
    expect(await lsnOf(n1, "shard-1")).toBe(before);
    expect((await get(n1.port, "shard-1", key)).status).toBe(404);
  });
});

describe("a write id reused for another write", () => {
  it("is refused over HTTP, in a batch and over the binary protocol (409 write-id-reused, nothing written), and the routing client says so at once", async () => {
    const keys = keysOf("shard-1", "reused");
    const [k1, k2] = [keys.next().value as string, keys.next().value as string];
    const id = newId();
    const before = (await lsnOf(n1, "shard-1")) + 1;
    expectWrite(await putWithId(n1, "shard-1", k1, "first", id), before, false);
    const other = await putWithId(n1, "shard-1", k2, "second", id);
    expect(other.status, other.body.toString()).toBe(409);
    expect(other.json()).toMatchObject({ error: "write-id-reused", op: "put", lsn: before });
    expect(other.json().message).toMatch(/already names a put of another key .*Nothing was written/);
    const del = await http(n1.port, "DELETE", `/v1/shards/shard-1/keys/${k1}`, {
      headers: { "x-shard-epoch": "1", "x-write-id": id },
    });
    expect(del.status).toBe(409);
    expect(del.json().message).toMatch(/a put of this key, not a delete/);
    const batch = await http(n1.port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1", "content-type": "application/json" },
      body: JSON.stringify({
        ops: [
          { op: "put", key: k2, value: Buffer.from("x").toString("base64") },
          { op: "put", key: k2, value: Buffer.from("y").toString("base64"), writeId: id },
        ],
      }),
    });
    expect(batch.status).toBe(409);
    const c = await BinaryClient.open();
    try {
      c.send(encodeRequest(1, OP_PUT, "shard-1", k2, 1, "a", Buffer.from("z"), Buffer.from(id, "hex")));
      expect(await c.answer(1)).toMatchObject({ status: STATUS_ERROR, httpStatus: 409 });
    } finally {
      c.close();
    }
    // nothing of it was written; the true retry is still answered as a duplicate
    expect(await lsnOf(n1, "shard-1")).toBe(before);
    expect((await get(n1.port, "shard-1", k2)).status).toBe(404);
    expectWrite(await putWithId(n1, "shard-1", k1, "first", id), before, true);
    // the routing client: a usage error at once, no retries until its deadline
    const dir = tempDir("write-ids-reused");
    const client = await routingClient(dir, n1.address);
    try {
      const t0 = Date.now();
      await expect(client.put(k2, "second", { writeId: Buffer.from(id, "hex") })).rejects.toMatchObject({
        exitCode: 2,
        message: expect.stringMatching(/refused the write: write id .* already names a put of another key/),
      });
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(client.stats.retries).toBe(0);
    } finally {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await lsnOf(n1, "shard-1")).toBe(before);
  });
});

describe("write ids survive a crash, compaction and a migration", () => {
  it("recognises acknowledged writes after SIGKILL and a restart, from the log and from a compacted snapshot, then on the migration target", async () => {
    // Given: writes with ids on shard-1 (some covered by a snapshot that compacts the log) and shard-2
    const keys = keysOf("shard-1", "crash");
    const early: { key: string; id: string; lsn: number }[] = [];
    for (let i = 0; i < 60; i++) {
      const key = keys.next().value as string;
      const id = newId();
      const r = await putWithId(n1, "shard-1", key, `early-${i}-${"x".repeat(100)}`, id);
      expect(r.status).toBe(200);
      early.push({ key, id, lsn: r.json().lsn as number });
    }
    const snap = await admin(n1.port, "POST", "shard-1/snapshot", { epoch: 1 });
    expect(snap.status, snap.body.toString()).toBe(200);
    expect(snap.json().snapshotLsn).toBe(early[early.length - 1].lsn);
    // the log before the snapshot is gone: those ids now live only in the snapshot
    expect((await http(n1.port, "GET", "/v1/shards/shard-1/log?from=1")).json().error).toBe("compacted");
    const late = { key: keys.next().value as string, id: newId(), lsn: 0 };
    const r = await putWithId(n1, "shard-1", late.key, "late", late.id);
    late.lsn = r.json().lsn as number;
    const lsnBefore = await lsnOf(n1, "shard-1");

    // When: node-1 is killed with SIGKILL and started again
    await stopAgent(n1, "SIGKILL");
    n1 = await startAgent({
      dataDir: n1.dataDir,
      port: n1.port,
      nodeId: "node-1",
      zone: "a",
      segments: SEGMENTS,
      extra: N1_EXTRA(),
    });

    // Then: retries of writes acknowledged before the crash are answered as duplicates, nothing appended
    for (const w of [early[0], early[37], early[early.length - 1], late])
      expectWrite(await putWithId(n1, "shard-1", w.key, "retry", w.id), w.lsn, true);
    expect(await lsnOf(n1, "shard-1")).toBe(lsnBefore);
    expect((await http(n1.port, "GET", "/v1/shards/shard-1")).json().writeIds).toBeGreaterThanOrEqual(
      early.length + 1,
    );
    // an id known only from the snapshot's records still names its write: reused for another key, refused
    const reuse = async (p: AgentProc, epoch: number) => {
      const r = await putWithId(p, "shard-1", keys.next().value as string, "other", early[3].id, epoch);
      expect(r.status, r.body.toString()).toBe(409);
      expect(r.json()).toMatchObject({ error: "write-id-reused", lsn: early[3].lsn });
      expect(r.json().message).toMatch(/another key/);
      expect(await lsnOf(p, "shard-1")).toBe(lsnBefore);
    };
    await reuse(n1, 1);

    // When: shard-1 migrates to node-2 (its snapshot, then the log after it)
    const store = await storeWithMap(join(root, "store"), [
      { id: "node-1", address: n1.address, zone: "a" },
      { id: "node-2", address: n2.address, zone: "b" },
    ]);
    const rpc = new AgentRpc({ token: TOKEN });
    const logs: string[] = [];
    try {
      const rec = await executeMigration(
        { shard: "shard-1", target: "node-2" },
        { store, rpc, clock: systemClock, log: (m) => logs.push(m) },
      );
      expect(rec.phase, logs.join("\n")).toBe("done");
    } finally {
      rpc.close();
    }
    expect(logs.join("\n")).toMatch(/copying its snapshot at LSN/);

    // Then: the target knows every id, those from the snapshot and those from the log after it
    const moved = (await http(n2.port, "GET", "/v1/shards/shard-1")).json();
    expect(moved).toMatchObject({ state: "owned", epoch: 2, lsn: lsnBefore });
    for (const w of [early[0], early[59], late])
      expectWrite(await putWithId(n2, "shard-1", w.key, "retry", w.id, 2), w.lsn, true);
    expect(await lsnOf(n2, "shard-1")).toBe(lsnBefore);
    await reuse(n2, 2);
    // the old owner redirects; the routing client follows the map to node-2 and gets the original answer
    expect((await putWithId(n1, "shard-1", late.key, "retry", late.id)).status).toBe(421);
    const client = new ShardClient({ store, token: TOKEN, deadlineMs: 10_000, baseBackoffMs: 5 });
    try {
      const again = await client.put(early[5].key, "retry", { writeId: Buffer.from(early[5].id, "hex") });
      expect(again).toEqual({ lsn: early[5].lsn, duplicate: true });
      const fresh = await client.put(early[5].key, "fresh");
      expect(fresh).toEqual({ lsn: lsnBefore + 1 });
    } finally {
      client.close();
    }
    expect((await get(n2.port, "shard-1", early[5].key, 2)).body.toString()).toBe("fresh");
  }, 120_000);
});

/**
 * A TCP proxy that forwards requests to `upstream` but cuts off the answer of
 * the first `dropAnswers` connections: the agent has done the write, the
 * client never hears of it.
 */
async function lossyProxy(
  upstream: number,
  dropAnswers: number,
): Promise<{ server: Server; port: number; dropped: () => number }> {
  let dropped = 0;
  const server = createServer((client) => {
    const up = connect(upstream, "127.0.0.1");
    const drop = dropped < dropAnswers;
    client.on("error", () => up.destroy());
    up.on("error", () => client.destroy());
    client.pipe(up);
    if (drop) {
      up.once("data", () => {
        dropped++;
        up.destroy();
        client.destroy();
      });
    } else up.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { server, port: (server.address() as { port: number }).port, dropped: () => dropped };
}

describe("the routing client", () => {
  it("retries a put whose answer was lost with the same write id, and the agent applies it once", async () => {
    // Given: shard-2 on node-1, reached through a proxy that loses the first answer
    const proxy = await lossyProxy(n1.port, 1);
    const dir = tempDir("write-ids-client");
    const client = await routingClient(dir, `127.0.0.1:${proxy.port}`);
    try {
      const key = keyOf("shard-2", "lost");
      const before = await lsnOf(n1, "shard-2");
      // When: the put's first answer is lost
      const r = await client.put(key, "once");
      // Then: the retry was recognised: one append, the original LSN, and the value is there
      expect(proxy.dropped()).toBe(1);
      expect(client.stats.retries).toBeGreaterThanOrEqual(1);
      expect(r).toEqual({ lsn: before + 1, duplicate: true });
      expect(client.stats.duplicates).toBe(1);
      expect(await lsnOf(n1, "shard-2")).toBe(before + 1);
      expect((await get(n1.port, "shard-2", key)).body.toString()).toBe("once");
      // and a delete through the same client: its own id, applied once
      const d = await client.delete(key);
      expect(d).toEqual({ lsn: before + 2, existed: true });
    } finally {
      client.close();
      proxy.server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
