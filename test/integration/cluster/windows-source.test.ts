/**
 * Collecting the access windows from real agents (collectWindows, what
 * reshard, predict, plan and the autopilot decide on): an agent whose clock is
 * ten minutes ahead, one started with another segment count than the CLI's
 * config, and a misbehaving peer in front of a healthy agent.
 *
 * The skewed clock is the agent's own process with Date.now moved on by an
 * --import (a host whose clock is off, without touching this machine's). The
 * misbehaving peer is a small HTTP proxy in front of a real agent that spoils
 * its answers (HTML, a 502, a cut-off body, counts no agent writes, another
 * segment's windows): the point is a peer that answers badly, which a real
 * agent never does.
 */
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { collectWindows } from "../../../src/cluster/windows-source.js";
import type { Config } from "../../../src/config.js";
import {
  initialLayout,
  type LocationMap,
  type SegmentRange,
  type VersionedMap,
} from "../../../src/engine/location-map.js";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import {
  admin,
  agentsConfig,
  put,
  startAgent,
  stopAgent,
  tempDir,
  type AgentProc,
} from "../agent/harness.js";

const SEGMENTS = 64;
const AHEAD_MS = 10 * 60_000;
/** Writes to each node's segments. */
const WRITES = 6;

let root: string;
let agents: AgentProc[] = [];
let proxy: Server | undefined;
let map: LocationMap;
let config: Config;
/** The segments each node's writes went to (in the CLI's segment space). */
const written = new Map<string, number[]>();
/** How the proxy spoils node-1's answers. */
let spoil: (path: string, status: number, body: Buffer, exportN: number) => [number, string | Buffer] = (
  _p,
  s,
  b,
) => [s, b];

/** The first keys of `prefix` whose segments (of `segmenter`) are in `ranges`, one per segment. */
function keysInDistinctSegments(segmenter: Segmenter, ranges: SegmentRange[], n: number): string[] {
  const seen = new Set<number>();
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    const k = `key-${i}`;
    const s = segmenter.segmentOf(k);
    if (seen.has(s) || !ranges.some(([a, b]) => s >= a && s < b)) continue;
    seen.add(s);
    out.push(k);
  }
  return out;
}

function vm(addresses: Record<string, string> = {}): VersionedMap {
  return {
    version: 1,
    map: { ...map, nodes: map.nodes.map((n) => ({ ...n, address: addresses[n.id] ?? n.address })) },
  };
}

/** Each of the node's written segments' count over the last 10 minutes on this machine's clock. */
function counts(w: Awaited<ReturnType<typeof collectWindows>>["windows"], node: string): number[] {
  const now = Date.now();
  return written.get(node)!.map((s) => w.series(s, 1, now).reduce((a, b) => a + b, 0));
}

beforeAll(async () => {
  root = tempDir("windows-source");
  agents = await Promise.all([
    startAgent({ dataDir: join(root, "n1"), nodeId: "node-1", zone: "a", segments: SEGMENTS }),
    startAgent({
      dataDir: join(root, "n2"),
      nodeId: "node-2",
      zone: "b",
      segments: SEGMENTS,
      nodeArgs: ["--import", `data:text/javascript,const now=Date.now;Date.now=()=>now()+${AHEAD_MS};`],
    }),
    // started with another segment count than the config below: its segment 50 is other keys
    startAgent({ dataDir: join(root, "n3"), nodeId: "node-3", zone: "c", segments: SEGMENTS * 2 }),
  ]);
  map = initialLayout(
    SEGMENTS,
    agents.map((a, i) => ({ id: `node-${i + 1}`, address: a.address, zone: "abc"[i] })),
    { shardsPerNode: 1, now: Date.now() },
  );
  for (const [i, shard] of map.shards.entries()) {
    const a = agents[i];
    expect((await admin(a.port, "PUT", shard.id, { epoch: 1, ranges: shard.ranges })).status).toBe(201);
    // node-3 places keys by its own segment count, so its keys are picked by that count
    const own = new Segmenter(i === 2 ? SEGMENTS * 2 : SEGMENTS);
    const keys = keysInDistinctSegments(own, shard.ranges, WRITES);
    for (const k of keys) expect((await put(a.port, shard.id, k, "v")).status).toBe(200);
    written.set(
      shard.node,
      keys.map((k) => own.segmentOf(k)),
    );
  }
  config = agentsConfig(root, SEGMENTS);
  // the proxy in front of node-1
  proxy = createServer((req, res) => {
    const up = request(
      { host: "127.0.0.1", port: agents[0].port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        const chunks: Buffer[] = [];
        answer.on("data", (c: Buffer) => chunks.push(c));
        answer.on("end", () => {
          const path = req.url ?? "";
          if (path === "/v1/access/export") {
            bulkCount++;
            // an agent from before the bulk export answers 404: the collector asks segment by segment
            if (legacy) return void res.writeHead(404).end('{"error":"no-route"}');
            const [status, body] = spoilBulk(answer.statusCode ?? 0, Buffer.concat(chunks));
            if (cutBulk) {
              // the whole length announced, half of it sent, then the connection cut (a killed agent)
              const whole = Buffer.from(body);
              res.writeHead(status, {
                "content-type": "application/octet-stream",
                "content-length": whole.length,
              });
              res.write(whole.subarray(0, whole.length >> 1), () => res.socket?.destroy());
              return;
            }
            return void res.writeHead(status, { "content-type": "application/octet-stream" }).end(body);
          }
          const n = path.endsWith("/export") ? ++exportCount : 0;
          const [status, body] = spoil(path, answer.statusCode ?? 0, Buffer.concat(chunks), n);
          res.writeHead(status, { "content-type": "application/json" }).end(body);
        });
      },
    );
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy!.listen(0, "127.0.0.1", r));
}, 120_000);

let exportCount = 0;
let bulkCount = 0;
/** The proxy answers GET /v1/access/export with 404, as an agent from before it. */
let legacy = false;
/** The proxy cuts the connection halfway through node-1's bulk export. */
let cutBulk = false;
/** How the proxy spoils node-1's bulk export. */
let spoilBulk: (status: number, body: Buffer) => [number, Buffer | string] = (s, b) => [s, b];

afterAll(async () => {
  await new Promise((r) => (proxy ? proxy.close(r) : r(undefined)));
  await Promise.all(agents.map((a) => stopAgent(a)));
  rmSync(root, { recursive: true, force: true });
});

describe("collectWindows from real agents", () => {
  it("puts the counts of an agent whose clock is ahead in the minutes they happened in", async () => {
    const c = await collectWindows(config, vm());
    expect(c.unreachable.find((u) => u.node === "node-2")).toBeUndefined();
    // one write per segment on each node, counted in the last minutes on this machine's clock
    expect(counts(c.windows, "node-1")).toEqual(new Array(WRITES).fill(1));
    expect(counts(c.windows, "node-2")).toEqual(new Array(WRITES).fill(1));
    expect(c.windows.loads(600, Date.now()).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });

  it("refuses the windows of an agent counting another number of segments, naming both counts", async () => {
    const c = await collectWindows(config, vm());
    const n3 = c.unreachable.find((u) => u.node === "node-3");
    expect(n3?.error).toMatch(/128 segments.*64/);
    // nothing of it is read as the config's segments
    for (const s of written.get("node-3")!.filter((x) => x < SEGMENTS)) {
      expect(c.windows.exportSegment(s)).toBeUndefined();
    }
    // the other nodes are still used
    expect(counts(c.windows, "node-1")).toEqual(new Array(WRITES).fill(1));
  });

  const json = (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>;
  const spoilers: [string, typeof spoil, RegExp][] = [
    ["HTML from a proxy", () => [200, "<html><body>502 Bad Gateway</body></html>"], /not an access list/],
    [
      "HTML in place of the second segment's windows",
      (p, s, b, n) => (n === 2 ? [200, "<html>oops</html>"] : [s, b]),
      /segment \d+: .*not .*windows/,
    ],
    ["a 502 for the second segment", (p, s, b, n) => (n === 2 ? [502, "bad gateway"] : [s, b]), /502/],
    [
      "the second segment's windows cut off",
      (p, s, b, n) => (n === 2 ? [s, b.subarray(0, b.length >> 1)] : [s, b]),
      /segment \d+: .*not .*windows/,
    ],
    [
      "counts no agent writes (1e300, null)",
      (p, s, b, n) => {
        if (n !== 2) return [s, b];
        const body = json(b) as { cells: unknown[] };
        body.cells[0] = 1e300;
        body.cells[1] = null;
        return [s, JSON.stringify(body)];
      },
      /segment \d+: .*whole number/,
    ],
    [
      "another node's segment in place of the one asked for",
      (p, s, b, n) =>
        n === 2 ? [s, JSON.stringify({ ...json(b), segment: written.get("node-2")![0] })] : [s, b],
      /segment \d+: .*segment \d+/,
    ],
  ];
  it("takes all of an agent's windows in one binary answer, or segment by segment from an agent without it", async () => {
    spoil = (_p, s, b) => [s, b];
    spoilBulk = (s, b) => [s, b];
    const addr = proxy!.address() as AddressInfo;
    for (const old of [false, true]) {
      legacy = old;
      exportCount = 0;
      bulkCount = 0;
      const c = await collectWindows(config, vm({ "node-1": `127.0.0.1:${addr.port}` }));
      expect(c.unreachable.map((u) => u.node)).toEqual(["node-3"]); // its segment count differs
      expect(counts(c.windows, "node-1")).toEqual(new Array(WRITES).fill(1));
      expect(counts(c.windows, "node-2")).toEqual(new Array(WRITES).fill(1));
      expect(bulkCount).toBe(1);
      expect(exportCount).toBe(old ? WRITES : 0);
    }
    legacy = false;
  });

  it("waits for an agent writing as many exports as it takes at once (503 busy), then reads its windows; reports one that stays busy", async () => {
    const busy = (): [number, string] => [
      503,
      JSON.stringify({ error: "busy", message: "4 exports of the access windows are being written" }),
    ];
    let refusals = 2;
    spoilBulk = (s, b) => (refusals-- > 0 ? busy() : [s, b]);
    legacy = false;
    bulkCount = 0;
    const addr = proxy!.address() as AddressInfo;
    const c = await collectWindows(config, vm({ "node-1": `127.0.0.1:${addr.port}` }));
    expect(c.unreachable.map((u) => u.node)).toEqual(["node-3"]);
    expect(counts(c.windows, "node-1")).toEqual(new Array(WRITES).fill(1));
    expect(bulkCount).toBe(3);
    spoilBulk = busy;
    bulkCount = 0;
    const d = await collectWindows(config, vm({ "node-1": `127.0.0.1:${addr.port}` }));
    expect(d.unreachable.find((u) => u.node === "node-1")?.error).toMatch(/503.*4 exports/);
    for (const seg of written.get("node-1")!) expect(d.windows.exportSegment(seg)).toBeUndefined();
    expect(bulkCount).toBe(5);
    spoilBulk = (st, b) => [st, b];
  }, 30_000);

  it("reports a peer whose bulk export breaks off mid-answer (the connection cut), and keeps none of its windows", async () => {
    spoilBulk = (st, b) => [st, b];
    legacy = false;
    cutBulk = true;
    try {
      const addr = proxy!.address() as AddressInfo;
      const c = await collectWindows(config, vm({ "node-1": `127.0.0.1:${addr.port}` }));
      expect(c.unreachable.find((u) => u.node === "node-1")?.error).toMatch(
        /access\/export: the answer is not an agent's windows/,
      );
      for (const seg of written.get("node-1")!) expect(c.windows.exportSegment(seg)).toBeUndefined();
      expect(counts(c.windows, "node-2")).toEqual(new Array(WRITES).fill(1));
    } finally {
      cutBulk = false;
    }
  });

  const bulkSpoilers: [string, typeof spoilBulk, RegExp][] = [
    [
      "HTML in place of the windows",
      () => [200, "<html>oops</html>"],
      /access\/export: .*not an agent's windows/,
    ],
    ["a 502", () => [502, '{"message":"bad gateway"}'], /access\/export answered HTTP 502: bad gateway/],
    ["the windows cut off", (s, b) => [s, b.subarray(0, b.length >> 1)], /not an agent's windows .*corrupt/],
    [
      "a byte flipped in the windows",
      (s, b) => {
        const c = Buffer.from(b);
        c[c.length >> 1] ^= 0x40;
        return [s, c];
      },
      /checksum mismatch/,
    ],
    [
      "the windows of another segment count than its access list said",
      (s) => [
        s,
        Buffer.from(new AccessWindows({ segmentCount: SEGMENTS * 2, zones: ["a", "b", "c"] }).serialize()),
      ],
      /the windows are of 128 segments .*not what its access list said/,
    ],
  ];
  for (const [what, fn, message] of bulkSpoilers) {
    it(`reports a peer whose bulk export is ${what}, keeps none of its windows and uses the others`, async () => {
      spoilBulk = fn;
      legacy = false;
      const addr = proxy!.address() as AddressInfo;
      const c = await collectWindows(config, vm({ "node-1": `127.0.0.1:${addr.port}` }));
      expect(c.unreachable.find((u) => u.node === "node-1")?.error).toMatch(message);
      for (const s of written.get("node-1")!) expect(c.windows.exportSegment(s)).toBeUndefined();
      expect(counts(c.windows, "node-2")).toEqual(new Array(WRITES).fill(1));
      spoilBulk = (st, b) => [st, b];
    });
  }

  for (const [what, fn, message] of spoilers) {
    it(`reports a peer answering with ${what}, keeps none of its windows and uses the others`, async () => {
      spoil = fn;
      // the per-segment answers are those of an agent from before the bulk export
      legacy = true;
      exportCount = 0;
      const addr = proxy!.address() as AddressInfo;
      const c = await collectWindows(config, vm({ "node-1": `127.0.0.1:${addr.port}` }));
      const n1 = c.unreachable.find((u) => u.node === "node-1");
      expect(n1?.error).toMatch(message);
      // none of node-1's segments, not even those answered well before the bad one
      for (const s of written.get("node-1")!) expect(c.windows.exportSegment(s)).toBeUndefined();
      // node-2's windows are whole (a forged segment number did not overwrite them)
      expect(counts(c.windows, "node-2")).toEqual(new Array(WRITES).fill(1));
    });
  }
});
