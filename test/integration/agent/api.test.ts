/**
 * The agent's API against real processes: hostile input (each a clear error,
 * no state changed), epochs and fencing, and the routing client following
 * redirects, fenced retries and stale epochs.
 */
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import {
  admin,
  get,
  http,
  put,
  rawHttp,
  startAgent,
  stopAgent,
  tempDir,
  TOKEN,
  type AgentProc,
} from "./harness.js";

let root: string;
let a: AgentProc;
let b: AgentProc;
const SEGMENTS = 64;

beforeAll(async () => {
  root = tempDir("api");
  const configFile = join(root, "shardctl.yaml");
  writeFileSync(configFile, "limits:\n  maxKeyBytes: 64\n  maxValueBytes: 4096\nzones: [a, b, c]\n");
  [a, b] = await Promise.all([
    startAgent({
      dataDir: join(root, "a", "data"),
      nodeId: "node-a",
      zone: "a",
      segments: SEGMENTS,
      configFile,
    }),
    startAgent({
      dataDir: join(root, "b", "data"),
      nodeId: "node-b",
      zone: "b",
      segments: SEGMENTS,
      configFile,
    }),
  ]);
  expect((await admin(a.port, "PUT", "shard-1", { epoch: 1, ranges: [[0, SEGMENTS]] })).status).toBe(201);
  expect((await put(a.port, "shard-1", "k", "original")).status).toBe(200);
});

afterAll(async () => {
  await Promise.all([stopAgent(a), stopAgent(b)]);
  rmSync(root, { recursive: true, force: true });
});

async function unchanged(): Promise<void> {
  const r = await get(a.port, "shard-1", "k");
  expect(r.status).toBe(200);
  expect(r.body.toString()).toBe("original");
  const inv = (await http(a.port, "GET", "/v1/shards/shard-1")).json();
  expect(inv.lsn).toBe(1);
}

describe("hostile input", () => {
  it("refuses a wrong or missing token with 401 and does nothing", async () => {
    const wrong = await http(a.port, "PUT", "/v1/shards/shard-1/keys/k", {
      body: "evil",
      token: "nope",
      headers: { "x-shard-epoch": "1" },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.json().error).toBe("unauthorized");
    const missing = await http(a.port, "PUT", "/v1/shards/shard-1/keys/k", {
      body: "evil",
      token: null,
      headers: { "x-shard-epoch": "1" },
    });
    expect(missing.status).toBe(401);
    expect(
      (await http(a.port, "PUT", "/v1/admin/shards/shard-9", { body: '{"epoch":1}', token: "x" })).status,
    ).toBe(401);
    expect((await http(a.port, "GET", "/v1/shards", { token: "x" })).status).toBe(401);
    await unchanged();
    // /health needs no token
    expect((await http(a.port, "GET", "/health", { token: null })).status).toBe(200);
  });

  it("refuses a duplicated Authorization header with 401, whichever copy holds the token", async () => {
    // node keeps the first copy and drops the rest: the agent must not take the request on it
    for (const [first, second] of [
      [TOKEN, "wrong"],
      ["wrong", TOKEN],
      [TOKEN, TOKEN],
    ]) {
      const r = await rawHttp(
        a.port,
        `PUT /v1/shards/shard-1/keys/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${first}\r\n` +
          `authorization: Bearer ${second}\r\nx-shard-epoch: 1\r\ncontent-length: 4\r\nconnection: close\r\n\r\nevil`,
      );
      expect(r.text, `${first} then ${second}`).toMatch(/^HTTP\/1\.1 401 /);
      expect(r.text).toMatch(/"error":"unauthorized"/);
    }
    await unchanged();
  });

  it("answers a request without the token 401 whatever its path, a bad percent-encoding included", async () => {
    for (const path of ["/v1/shards/shard-1/keys/%FF", "/v1/shards/shard-1/keys/%zz", "/%ED%A0%80/health"]) {
      const r = await http(a.port, "PUT", path, {
        body: "evil",
        token: null,
        headers: { "x-shard-epoch": "1" },
      });
      expect(r.status, path).toBe(401);
      expect(r.json().error).toBe("unauthorized");
    }
    await unchanged();
  });

  it("answers a request the HTTP parser refuses with a JSON error, then closes the connection", async () => {
    const head = `PUT /v1/shards/shard-1/keys/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\nx-shard-epoch: 1\r\n`;
    const cases: [string, number][] = [
      [`${head}content-length: 4\r\ncontent-length: 5\r\n\r\nevil!`, 400],
      [`${head}content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n4\r\nevil\r\n0\r\n\r\n`, 400],
      [`${head}content-length: -4\r\n\r\nevil`, 400],
      [`${head}transfer-encoding: chunked\r\n\r\nzz\r\nevil\r\n0\r\n\r\n`, 400],
      [`PUT /v1/shards/shard-1/keys/k?${"q".repeat(20_000)} HTTP/1.1\r\nhost: x\r\n\r\n`, 431],
      ["EVIL\r\n\r\n", 400],
    ];
    for (const [request, status] of cases) {
      const r = await rawHttp(a.port, request);
      expect(r.closed, JSON.stringify(request.slice(0, 120))).toBe(true);
      expect(r.text, JSON.stringify(request.slice(0, 120))).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      const body = r.text.slice(r.text.indexOf("\r\n\r\n") + 4);
      expect(JSON.parse(body)).toMatchObject({ error: expect.any(String), message: expect.any(String) });
      expect(r.text).toMatch(new RegExp(`content-length: ${body.length}\r\n`, "i"));
    }
    await unchanged();
  });

  it("answers the writes pipelined before a malformed request, then its error, then closes", async () => {
    expect((await admin(a.port, "PUT", "shard-5", { epoch: 1 })).status).toBe(201);
    const putOf = (key: string, value: string) =>
      `PUT /v1/shards/shard-5/keys/${key} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\n` +
      `x-shard-epoch: 1\r\ncontent-length: ${value.length}\r\n\r\n${value}`;
    // two writes, then bytes that are no request: both writes are applied, so both must be answered
    const r = await rawHttp(a.port, putOf("p1", "one") + putOf("p2", "two") + "EVIL\r\n\r\n");
    expect(r.closed).toBe(true);
    expect(r.text.match(/HTTP\/1\.1 \d+/g)).toEqual(["HTTP/1.1 200", "HTTP/1.1 200", "HTTP/1.1 400"]);
    expect(r.text).toMatch(/\{"lsn":1,"epoch":1\}.*\{"lsn":2,"epoch":1\}.*"error":"bad-request"/s);
    expect((await get(a.port, "shard-5", "p2")).body.toString()).toBe("two");
  });

  it("keeps a keep-alive connection open after an error answer to a request without a body", async () => {
    const next = "GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    for (const first of [
      "GET /v1/shards HTTP/1.1\r\nhost: x\r\n\r\n", // 401
      `POST /v1/shards/shard-1/keys/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\nx-shard-epoch: 1\r\n\r\n`, // 405
      `GET /v1/nowhere HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\n\r\n`, // 404
    ]) {
      const r = await rawHttp(a.port, first + next, 500);
      const answers = r.text.match(/HTTP\/1\.1 \d+/g) ?? [];
      expect(answers, first).toHaveLength(2);
      expect(answers[1]).toBe("HTTP/1.1 200");
      expect(r.closed).toBe(false);
    }
  });

  it("refuses an oversize key or value with 413 and a clear message", async () => {
    const bigKey = await put(a.port, "shard-1", "k".repeat(65), "v");
    expect(bigKey.status).toBe(413);
    expect(bigKey.json().message).toMatch(/the key is 65 bytes; the limit is 64/);
    const bigValue = await put(a.port, "shard-1", "k", Buffer.alloc(5000, 1));
    expect(bigValue.status).toBe(413);
    expect(bigValue.json().message).toMatch(/the value is 5000 bytes; the limit is 4096 bytes/);
    const batch = await http(a.port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1" },
      body: JSON.stringify({ ops: [{ op: "put", key: "k", value: Buffer.alloc(5000).toString("base64") }] }),
    });
    expect(batch.status).toBe(413);
    await unchanged();
  });

  it("refuses a batch whose gets' answer would be over the request limit: 413, the epoch not raised", async () => {
    expect((await admin(b.port, "PUT", "big-answers", { epoch: 1 })).status).toBe(201);
    expect((await put(b.port, "big-answers", "v", Buffer.alloc(4096, 7))).status).toBe(200);
    // 300 gets of a 4 KiB value: ~1.6 MB of base64 against 2 × 4096 + 1 MiB; a 1 MiB value and a few
    // hundred gets made 400 MB (seconds of a blocked agent), thousands a 500 after raising the epoch
    const ops = Array.from({ length: 300 }, () => ({ op: "get", key: "v" }));
    const big = await http(b.port, "POST", "/v1/shards/big-answers/batch", {
      headers: { "x-shard-epoch": "2" },
      body: JSON.stringify({ ops }),
    });
    expect(big.status).toBe(413);
    expect(big.json().message).toMatch(
      /the answer to this batch's 300 gets would be about \d+ bytes; the limit is 1056768 bytes/,
    );
    expect((await http(b.port, "GET", "/v1/shards/big-answers")).json()).toMatchObject({ epoch: 1, lsn: 1 });
    const fits = await http(b.port, "POST", "/v1/shards/big-answers/batch", {
      headers: { "x-shard-epoch": "1" },
      body: JSON.stringify({ ops: ops.slice(0, 100) }),
    });
    expect(fits.status).toBe(200);
    expect(fits.json().results).toHaveLength(100);
  });

  it("refuses malformed JSON, bad base64 and bad ops with 400", async () => {
    const bad = await http(a.port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1" },
      body: '{"ops": [',
    });
    expect(bad.status).toBe(400);
    expect(bad.json().error).toBe("bad-json");
    const b64 = await http(a.port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1" },
      body: JSON.stringify({ ops: [{ op: "put", key: "k2", value: "not base64!" }] }),
    });
    expect(b64.status).toBe(400);
    // one value, one spelling: "AB==" is not read as "AA==" (the bits the padding leaves over)
    for (const value of ["AB==", "AAB="]) {
      const loose = await http(a.port, "POST", "/v1/shards/shard-1/batch", {
        headers: { "x-shard-epoch": "1" },
        body: JSON.stringify({ ops: [{ op: "put", key: "k2", value }] }),
      });
      expect(loose.status, value).toBe(400);
      expect(loose.json().message).toMatch(/canonical base64/);
    }
    // one bad op refuses the whole batch: the good put before it is not applied
    const mixed = await http(a.port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1" },
      body: JSON.stringify({
        ops: [
          { op: "put", key: "k", value: "ZXZpbA==" },
          { op: "explode", key: "k" },
        ],
      }),
    });
    expect(mixed.status).toBe(400);
    const adminBad = await http(a.port, "POST", "/v1/admin/shards/shard-1/fence", { body: "{nope" });
    expect(adminBad.status).toBe(400);
    // an epoch past 2^53 (it would make every later epoch stale)
    const hugeEpoch = await admin(a.port, "POST", "shard-1/fence", { epoch: 1e300, migration: "m" });
    expect(hugeEpoch.status).toBe(400);
    expect(hugeEpoch.json().message).toMatch(/2\^53/);
    const noEpoch = await http(a.port, "PUT", "/v1/shards/shard-1/keys/k", { body: "evil" });
    expect(noEpoch.status).toBe(400);
    expect(noEpoch.json().message).toMatch(/x-shard-epoch/);
    const badZone = await put(a.port, "shard-1", "k", "evil", 1, { "x-origin-zone": "mars" });
    expect(badZone.status).toBe(400);
    const badUtf8 = await http(a.port, "PUT", "/v1/shards/shard-1/keys/%FF%FE", {
      body: "evil",
      headers: { "x-shard-epoch": "1" },
    });
    expect(badUtf8.status).toBe(400);
    await unchanged();
  });

  it("refuses a shard assignment from a map with another segment count", async () => {
    const r = await admin(a.port, "PUT", "shard-8", { epoch: 1, segmentCount: 4096 });
    expect(r.status).toBe(400);
    expect(r.json().message).toMatch(/4096 segments but this agent was started with 64/);
    expect((await http(a.port, "GET", "/v1/shards/shard-8")).status).toBe(404);
  });

  it("refuses a stale epoch with 409 and the current epoch", async () => {
    expect((await admin(a.port, "PUT", "shard-2", { epoch: 3 })).status).toBe(201);
    expect((await put(a.port, "shard-2", "x", "at-3", 3)).status).toBe(200);
    const stale = await put(a.port, "shard-2", "x", "at-2", 2);
    expect(stale.status).toBe(409);
    expect(stale.json()).toMatchObject({ error: "stale-epoch", epoch: 3 });
    expect((await get(a.port, "shard-2", "x", 3)).body.toString()).toBe("at-3");
    // a higher epoch is recorded durably before it is served; the old one is refused from then on
    expect((await put(a.port, "shard-2", "x", "at-4", 4)).status).toBe(200);
    expect((await put(a.port, "shard-2", "x", "at-3-again", 3)).status).toBe(409);
    expect((await http(a.port, "GET", "/v1/shards/shard-2")).json().epoch).toBe(4);
  });

  it("answers an unknown shard with 404 and path traversal in a shard id with 400, touching nothing", async () => {
    const unknown = await put(a.port, "shard-77", "k", "v");
    expect(unknown.status).toBe(404);
    expect(unknown.json().error).toBe("unknown-shard");
    for (const id of ["..%2F..%2Fetc", "..", "%2E%2E", "shard-1%2F..%2F..%2Fx", "Shard-1", "a%00b"]) {
      const r = await http(a.port, "PUT", `/v1/shards/${id}/keys/k`, {
        body: "v",
        headers: { "x-shard-epoch": "1" },
      });
      expect(r.status, id).toBe(400);
      const c = await http(a.port, "PUT", `/v1/admin/shards/${id}`, { body: JSON.stringify({ epoch: 1 }) });
      expect(c.status, id).toBe(400);
    }
    const raw = await http(a.port, "PUT", "/v1/shards/../../x/keys/k", {
      body: "v",
      headers: { "x-shard-epoch": "1" },
    });
    expect(raw.status).toBe(404);
    expect(readdirSync(join(a.dataDir, "shards")).sort()).toEqual(["shard-1", "shard-2", "shard-5"]);
    expect(existsSync(join(a.dataDir, "x"))).toBe(false);
    await unchanged();
  });

  it("an HTTP/1.1 request without a Host header gets a JSON 400 that says so, and changes nothing", async () => {
    const ask = async (text: string) => {
      const s = connect(a.port, "127.0.0.1");
      s.on("error", () => {});
      let got = "";
      s.on("data", (c: Buffer) => (got += c.toString()));
      const closed = new Promise<void>((r) => s.once("close", () => r()));
      s.write(text);
      await closed;
      return got;
    };
    const put = await ask(
      `PUT /v1/shards/shard-1/keys/no-host HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\r\nx-shard-epoch: 1\r\ncontent-length: 1\r\n\r\nv`,
    );
    expect(put).toMatch(/^HTTP\/1\.1 400 /);
    expect(put).toMatch(/connection: close/i);
    expect(put).toMatch(/"message":"an HTTP\/1\.1 request needs a Host header/);
    expect((await get(a.port, "shard-1", "no-host")).status).toBe(404);
    expect(await ask("GET /health HTTP/1.1\r\n\r\n")).toMatch(/^HTTP\/1\.1 400 [^]*Host header/);
    // HTTP/1.0 has no Host header to require
    expect(await ask("GET /health HTTP/1.0\r\n\r\n")).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("a body cut off by the client, or over the limit and still arriving, changes nothing and is no internal error", async () => {
    const open = async () => {
      const s = connect(a.port, "127.0.0.1");
      await new Promise<void>((r) => s.once("connect", () => r()));
      let got = "";
      s.on("data", (c: Buffer) => (got += c.toString()));
      s.on("error", () => {});
      const closed = new Promise<void>((r) => s.once("close", () => r()));
      return { s, answer: () => got, closed };
    };
    const head = (extra: string) =>
      `PUT /v1/shards/shard-1/keys/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\nx-shard-epoch: 1\r\n${extra}\r\n`;
    // half of a declared body, then the connection is gone
    const cut = await open();
    cut.s.write(head("content-length: 100\r\n") + "0123456789");
    await new Promise((r) => setTimeout(r, 200));
    cut.s.destroy();
    // a chunked body that goes over the value limit (4096) a little at a time: refused once over it,
    // and the connection closed rather than read to its end
    const slow = await open();
    slow.s.write(head("transfer-encoding: chunked\r\n"));
    for (let i = 0; i < 12 && !slow.answer(); i++) {
      slow.s.write(`400\r\n${"z".repeat(0x400)}\r\n`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await slow.closed;
    expect(slow.answer()).toMatch(/^HTTP\/1\.1 413 /);
    expect(slow.answer()).toMatch(/connection: close/i);
    await new Promise((r) => setTimeout(r, 200));
    // a client going away is not the agent's fault: no stack trace in its log, no 500 counted
    expect(a.stderr()).not.toMatch(/internal error/);
    expect((await http(a.port, "GET", "/metrics")).body.toString()).not.toMatch(
      /shardctl_agent_requests_total\{op="put",status="500"\}/,
    );
    await unchanged();
  });
});

describe("HTTP pipelining", () => {
  it("answers a read pipelined after writes on one connection with what they wrote", async () => {
    expect((await admin(b.port, "PUT", "pipelined", { epoch: 1 })).status).toBe(201);
    expect((await put(b.port, "pipelined", "k", "old")).status).toBe(200);
    const h = `Host: x\r\nAuthorization: Bearer ${TOKEN}\r\nx-shard-epoch: 1\r\n`;
    const b64 = Buffer.from("in-batch").toString("base64");
    const batch = JSON.stringify({
      ops: [
        { op: "get", key: "k" },
        { op: "put", key: "k", value: b64 },
      ],
    });
    // before: the GET answered "old" after the PUT before it was acknowledged
    const { text } = await rawHttp(
      b.port,
      `PUT /v1/shards/pipelined/keys/k HTTP/1.1\r\n${h}Content-Length: 4\r\n\r\nnew1` +
        `GET /v1/shards/pipelined/keys/k HTTP/1.1\r\n${h}\r\n` +
        `POST /v1/shards/pipelined/batch HTTP/1.1\r\n${h}Content-Type: application/json\r\nContent-Length: ${batch.length}\r\n\r\n${batch}` +
        `GET /v1/shards/pipelined/keys/k HTTP/1.1\r\n${h}Connection: close\r\n\r\n`,
      5000,
    );
    const bodies = text.split(/HTTP\/1\.1 /).slice(1);
    expect(bodies.map((r) => r.slice(0, 3))).toEqual(["200", "200", "200", "200"]);
    expect(bodies[0]).toMatch(/\{"lsn":2,"epoch":1\}$/);
    expect(bodies[1]).toMatch(/x-lsn: 2\r\n[\s\S]*\r\n\r\nnew1$/);
    expect(bodies[2]).toContain(
      `"results":[{"found":true,"value":"${Buffer.from("new1").toString("base64")}","lsn":2},{"lsn":3}]`,
    );
    expect(bodies[3]).toMatch(/x-lsn: 3\r\n[\s\S]*\r\n\r\nin-batch$/);
  });
});

describe("batches", () => {
  it("answers each get with the state at its place in the batch: the writes before it, none after", async () => {
    expect((await admin(b.port, "PUT", "in-order", { epoch: 1 })).status).toBe(201);
    expect((await put(b.port, "in-order", "k", "before")).status).toBe(200);
    const b64 = (v: string) => Buffer.from(v).toString("base64");
    const r = await http(b.port, "POST", "/v1/shards/in-order/batch", {
      headers: { "x-shard-epoch": "1" },
      body: JSON.stringify({
        ops: [
          { op: "get", key: "k" },
          { op: "put", key: "k", value: b64("first") }, // the same length: the stored entry is updated in place
          { op: "get", key: "k" },
          { op: "put", key: "k", value: b64("second") },
          { op: "delete", key: "k" },
          { op: "get", key: "k" },
          { op: "get", key: "other" },
        ],
      }),
    });
    expect(r.status).toBe(200);
    const [g0, p1, g2, p3, d4, g5, g6] = r.json().results as unknown[];
    expect(g0).toEqual({ found: true, value: b64("before"), lsn: 1 });
    expect(p1).toEqual({ lsn: 2 });
    expect(g2).toEqual({ found: true, value: b64("first"), lsn: 2 });
    expect(p3).toEqual({ lsn: 3 });
    expect(d4).toEqual({ lsn: 4, existed: true });
    expect(g5).toEqual({ found: false });
    expect(g6).toEqual({ found: false });
    expect((await get(b.port, "in-order", "k")).status).toBe(404);
  });
});

describe("epochs and fencing", () => {
  it("fences writes with 503 + Retry-After, still serves reads, and unfences", async () => {
    expect((await admin(a.port, "PUT", "shard-3", { epoch: 1 })).status).toBe(201);
    expect((await put(a.port, "shard-3", "f", "before")).status).toBe(200);
    const fenced = await admin(a.port, "POST", "shard-3/fence", { epoch: 1 });
    expect(fenced.status).toBe(200);
    expect(fenced.json()).toMatchObject({ state: "fenced", lsn: 1 });
    const w = await put(a.port, "shard-3", "f", "during");
    expect(w.status).toBe(503);
    expect(w.headers["retry-after"]).toBe("1");
    expect((await get(a.port, "shard-3", "f")).body.toString()).toBe("before");
    expect((await admin(a.port, "POST", "shard-3/unfence", { epoch: 1 })).status).toBe(200);
    expect((await put(a.port, "shard-3", "f", "after")).status).toBe(200);
  });

  it("refuses admin calls at an older epoch", async () => {
    const r = await admin(a.port, "POST", "shard-2/fence", { epoch: 1 });
    expect(r.status).toBe(409);
    expect((await http(a.port, "GET", "/v1/shards/shard-2")).json().state).toBe("owned");
  });
});

describe("the routing client", () => {
  it("routes by the map, follows a redirect hint, retries a fenced write and refreshes a stale epoch", async () => {
    const store = new EmbeddedStore(join(root, "store"));
    // one shard over every segment, owned by node-a at epoch 1
    const map = initialLayout(SEGMENTS, [{ id: "node-a", address: a.address, zone: "a" }], {
      now: Date.now(),
      shardsPerNode: 1,
    });
    map.nodes.push({ id: "node-b", address: b.address, zone: "b" });
    expect((await store.compareAndSet(0, map)).ok).toBe(true);
    const client = new ShardClient({
      store,
      token: TOKEN,
      originZone: "b",
      maxKeyBytes: 64,
      baseBackoffMs: 20,
      deadlineMs: 8000,
    });
    try {
      await client.put("c1", "one");
      expect((await client.get("c1"))!.value.toString()).toBe("one");
      expect(await client.get("missing")).toBeNull();
      expect(await client.delete("c1")).toMatchObject({ existed: true });
      expect(await client.get("c1")).toBeNull();

      // fenced: the put waits and succeeds once the shard is unfenced
      await admin(a.port, "POST", "shard-1/fence", { epoch: 1 });
      const pending = client.put("c2", "after-fence");
      setTimeout(() => void admin(a.port, "POST", "shard-1/unfence", { epoch: 1 }), 400);
      await pending;
      expect(client.stats.retries).toBeGreaterThan(0);
      expect((await get(a.port, "shard-1", "c2")).body.toString()).toBe("after-fence");

      // moved: node-b owns shard-1 at epoch 2, node-a redirects; the client's map still says node-a at 1
      expect((await admin(b.port, "PUT", "shard-1", { epoch: 2, ranges: [[0, SEGMENTS]] })).status).toBe(201);
      expect(
        (
          await admin(a.port, "POST", "shard-1/release", {
            epoch: 1,
            redirect: { node: "node-b", address: b.address, epoch: 2 },
          })
        ).status,
      ).toBe(200);
      await client.put("c3", "on-b");
      expect(client.stats.redirects).toBeGreaterThan(0);
      expect((await get(b.port, "shard-1", "c3", 2)).body.toString()).toBe("on-b");
      expect((await get(a.port, "shard-1", "c3", 2)).status).toBe(421);

      // stale: node-b moved on to epoch 3; the map is updated and the client refreshes on 409
      await admin(b.port, "PUT", "shard-1", { epoch: 3 });
      const cur = (await store.load())!;
      const next = structuredClone(cur.map);
      next.shards[0] = { ...next.shards[0], node: "node-b", epoch: 3 };
      expect((await store.compareAndSet(cur.version, next)).ok).toBe(true);
      const refreshes = client.stats.refreshes;
      await client.put("c4", "epoch-3");
      expect(client.stats.refreshes).toBeGreaterThan(refreshes);
      expect((await get(b.port, "shard-1", "c4", 3)).body.toString()).toBe("epoch-3");

      // the origin zone was counted in the access windows
      const access = (await http(b.port, "GET", "/v1/access?window=60")).json() as {
        segments: { byZone: number[] }[];
      };
      expect(access.segments.some((s) => s.byZone[1] > 0)).toBe(true);

      // bad input is refused before any request
      await expect(client.put("", "x")).rejects.toThrow(/empty/);
      await expect(client.put("k".repeat(65), "x")).rejects.toThrow(/64 bytes/);
    } finally {
      client.close();
    }
  });

  it("exposes node resources and access series to the engine", async () => {
    const node = (await http(a.port, "GET", "/v1/node")).json() as Record<string, Record<string, number>>;
    expect(node.cpu.cores).toBeGreaterThan(0);
    expect(node.memory.totalBytes).toBeGreaterThan(0);
    expect(node.disk.availableBytes).toBeGreaterThan(0);
    expect(node.shards).toBeGreaterThan(0);
    const access = (await http(a.port, "GET", "/v1/access")).json() as { segments: { segment: number }[] };
    expect(access.segments.length).toBeGreaterThan(0);
    const seg = access.segments[0].segment;
    const series = (await http(a.port, "GET", `/v1/access/${seg}/series?level=0&which=writes`)).json() as {
      series: number[];
    };
    expect(series.series).toHaveLength(10);
    const exported = (await http(a.port, "GET", `/v1/access/${seg}/export`)).json();
    expect(exported.segment).toBe(seg);
    // every segment's windows at once, as bytes (the windows file's form), for collectors
    const bulk = await http(a.port, "GET", "/v1/access/export");
    expect(bulk.status).toBe(200);
    expect(bulk.headers["content-type"]).toBe("application/octet-stream");
    expect(Number(bulk.headers["x-now-ms"])).toBeGreaterThan(0);
    const all = AccessWindows.deserialize(bulk.body);
    expect([...all.activeSegments()]).toEqual(access.segments.map((x) => x.segment));
    expect(all.exportSegment(seg)).toEqual(exported);
    expect((await http(a.port, "GET", "/v1/access/export", { token: null })).status).toBe(401);
    expect((await http(a.port, "POST", "/v1/access/export")).status).toBe(405);
    expect((await http(a.port, "GET", `/v1/access/99999/series`)).status).toBe(400);
    // a window is a decimal number of seconds the windows can answer for (48 h by default), nothing else
    expect((await http(a.port, "GET", "/v1/access?window=172800")).status).toBe(200);
    expect((await http(a.port, "GET", "/v1/access?window=2.5")).status).toBe(200);
    for (const bad of [
      "0",
      "0.5",
      "-5",
      "0x10",
      "1e3",
      "%205",
      "",
      "172801",
      "9".repeat(30),
      "NaN",
      "Infinity",
    ]) {
      const r = await http(a.port, "GET", `/v1/access?window=${bad}`);
      expect(r.status, bad).toBe(400);
      expect(r.json().message).toMatch(/window must be a number of seconds from 1 to 172800/);
    }
  });
});

describe("keys as long as a raised limits.maxKeyBytes", () => {
  it("are served over HTTP too (the header limit makes room for them), byte for byte", async () => {
    // Given an agent whose key limit is raised to the most the config allows
    const configFile = join(root, "long-keys.yaml");
    writeFileSync(configFile, "limits:\n  maxKeyBytes: 65535\nzones: [a, b, c]\n");
    const c = await startAgent({ dataDir: join(root, "long", "data"), segments: SEGMENTS, configFile });
    try {
      expect((await admin(c.port, "PUT", "shard-1", { epoch: 1, ranges: [[0, SEGMENTS]] })).status).toBe(201);
      // When keys of 20,000 ASCII bytes and of 65,535 bytes of 3-byte characters (196,605 characters
      // percent-encoded in the path) are written and read over HTTP
      for (const key of ["k".repeat(20_000), "€".repeat(21_845)]) {
        const w = await put(c.port, "shard-1", key, `value of ${key.length}`);
        // Then both are taken and read back (before: 431 past 16 KiB of request line)
        expect(w.status, w.body.toString().slice(0, 200)).toBe(200);
        const r = await get(c.port, "shard-1", key);
        expect(r.status).toBe(200);
        expect(r.body.toString()).toBe(`value of ${key.length}`);
      }
      // and one byte over the limit is still the limit's refusal, not the header's
      const over = await put(c.port, "shard-1", "€".repeat(21_845) + "k", "x");
      expect(over.status).toBe(413);
    } finally {
      await stopAgent(c);
    }
  });
});
