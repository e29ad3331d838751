/**
 * Live migration of shards whose log was compacted behind a snapshot (issue 8,
 * snapshot transfer), with two real agents started with a small
 * --snapshot-bytes so that their shards compact after a few dozen KiB: the
 * migration streams the snapshot, then the log after it, under a steady
 * writer; every acknowledged write is there afterwards, also after the new
 * owner restarts. Hostile: snapshot uploads with a wrong checksum, a flipped
 * byte, a cut connection, another shard's snapshot, a wrong epoch — each is
 * refused and nothing is installed; a source that lies about its snapshot's
 * checksum makes the migration abort with the shard still served.
 */
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeSnapshot } from "../../../src/agent/snapshot.js";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { executeMigration } from "../../../src/cluster/migrate.js";
import { executeLayoutChange } from "../../../src/cluster/reshape.js";
import type { SegmentRange } from "../../../src/engine/location-map.js";
import { systemClock } from "../../../src/engine/ports.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { cli as runShardctl } from "../../helpers/cli.js";
import {
  admin,
  http,
  startAgent,
  startingMap,
  stopAgent,
  tempDir,
  TOKEN,
  type AgentProc,
} from "../agent/harness.js";

const SEGMENTS = 64;
/** Small files and snapshots: a shard compacts after 64 KiB of log. */
const COMPACT_FAST = ["--snapshot-bytes", "65536", "--max-file-bytes", "16384"];
const RANGES: Record<string, SegmentRange> = {
  "shard-1": [0, 16],
  "shard-2": [16, 32],
  "shard-3": [32, 48],
  "shard-4": [48, 64],
};

let dir: string;
let src: AgentProc;
let dst: AgentProc;
const env: NodeJS.ProcessEnv = {
  ...process.env,
  SHARDCTL_TOKEN: TOKEN,
  SHARDCTL_SEGMENTS: String(SEGMENTS),
  SHARDCTL_ZONES: "a,b,c",
};
delete env.SHARDCTL_DATA_DIR;
delete env.SHARDCTL_STORE;
delete env.SHARDCTL_CONFIG;

const cli = (...args: string[]) => runShardctl(["--data-dir", dir, ...args], env);
const segmenter = new Segmenter(SEGMENTS);

/** Keys `${prefix}-<n>` that fall into the shard's segments. */
function* keysOf(shard: string, prefix: string): Generator<string> {
  const [a, b] = RANGES[shard];
  for (let n = 0; ; n++) {
    const k = `${prefix}-${n}`;
    const s = segmenter.segmentOf(k);
    if (s >= a && s < b) yield k;
  }
}

function client(): ShardClient {
  return new ShardClient({
    store: new EmbeddedStore(dir),
    token: TOKEN,
    deadlineMs: 20_000,
    baseBackoffMs: 5,
  });
}

async function inventory(p: AgentProc, shard: string) {
  const r = await http(p.port, "GET", `/v1/shards/${shard}`);
  return { status: r.status, ...(r.status === 200 ? r.json() : {}) } as Record<string, unknown> & {
    status: number;
  };
}

/** Writes `count` values of `bytes` bytes to the shard's keys, 8 at a time; returns what was acknowledged. */
async function fill(c: ShardClient, shard: string, prefix: string, count: number, bytes: number) {
  const acked = new Map<string, string>();
  const keys = keysOf(shard, prefix);
  const todo = Array.from({ length: count }, () => keys.next().value as string);
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = w; i < todo.length; i += 8) {
        const v = `${todo[i]}:${"f".repeat(bytes)}`;
        await c.put(todo[i], v);
        acked.set(todo[i], v);
      }
    }),
  );
  return acked;
}

/** One sequential writer of unique keys into one shard; remembers every acknowledged write. */
function startWriter(c: ShardClient, shard: string, prefix: string) {
  const acked = new Map<string, string>();
  let stop = false;
  let errors = 0;
  const keys = keysOf(shard, prefix);
  const done = (async () => {
    while (!stop) {
      const key = keys.next().value as string;
      const value = `${key}:${"w".repeat(200)}`;
      try {
        await c.put(key, value);
        acked.set(key, value);
      } catch {
        errors++;
      }
    }
  })();
  return {
    acked,
    errors: () => errors,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

async function expectAllReadable(acked: Map<string, string>): Promise<void> {
  const reader = client();
  try {
    for (const [k, v] of acked) expect((await reader.get(k))?.value.toString(), k).toBe(v);
  } finally {
    reader.close();
  }
}

beforeAll(async () => {
  dir = tempDir("migrate-snapshot");
  [src, dst] = await Promise.all([
    startAgent({
      dataDir: join(dir, "node-1"),
      nodeId: "node-1",
      zone: "a",
      segments: SEGMENTS,
      extra: COMPACT_FAST,
    }),
    startAgent({
      dataDir: join(dir, "node-2"),
      nodeId: "node-2",
      zone: "b",
      segments: SEGMENTS,
      extra: COMPACT_FAST,
    }),
  ]);
  for (const [id, range] of Object.entries(RANGES)) {
    const r = await admin(src.port, "PUT", id, { epoch: 1, ranges: [range], segmentCount: SEGMENTS });
    expect(r.status, r.body.toString()).toBe(201);
  }
  const map = startingMap(
    SEGMENTS,
    [
      { id: "node-1", address: src.address, zone: "a" },
      { id: "node-2", address: dst.address, zone: "b" },
    ],
    Object.entries(RANGES).map(([id, range]) => [id, "node-1", range] as const),
    5,
  );
  const cas = await new EmbeddedStore(dir).compareAndSet(0, map);
  expect(cas.ok).toBe(true);
}, 120_000);

afterAll(async () => {
  await Promise.all([src && stopAgent(src), dst && stopAgent(dst)]);
  rmSync(dir, { recursive: true, force: true });
});

describe("migrating a compacted shard", () => {
  it("streams the snapshot, then the log after it, under a writer; every acknowledged write survives, also a restart", async () => {
    const c = client();
    // Given: shard-1 holds ~400 KiB written in 1 KiB values, so it has compacted several times
    const filled = await fill(c, "shard-1", "fill", 400, 1000);
    const inv = await inventory(src, "shard-1");
    expect(inv.snapshotLsn).toBeGreaterThan(0);
    expect((await http(src.port, "GET", "/v1/shards/shard-1/log?from=1")).json().error).toBe("compacted");
    // When: it migrates while a writer keeps writing to it
    const writer = startWriter(c, "shard-1", "live");
    while (writer.acked.size < 30) await new Promise((r) => setTimeout(r, 10));
    const r = await cli("migrate", "--shard", "shard-1", "--to", "node-2", "--apply", "--json");
    expect(r.code, r.err).toBe(0);
    const rec = JSON.parse(r.out).migrations[0];
    const targetLsn = async () => (await inventory(dst, "shard-1")).lsn as number;
    for (let i = 0; i < 200 && (await targetLsn()) <= rec.fencedLsn; i++)
      await new Promise((res) => setTimeout(res, 25));
    await writer.stop();
    process.stderr.write(
      `snapshot migration: ${rec.bytesCopied} bytes, ${rec.entriesCopied} entries, ${rec.rounds} rounds, pause ${rec.writePauseMs} ms\n`,
    );
    // Then: the move is done, the snapshot was copied (not the log from LSN 1), progress went to stderr only
    expect(rec.phase).toBe("done");
    expect(r.err).toMatch(/copying its snapshot at LSN \d+/);
    expect(r.err).toMatch(/shard-1 copying( \(snapshot\))?: .* copied, lag \d+ entries/);
    expect(r.out.trim().startsWith("{")).toBe(true);
    expect(await targetLsn()).toBeGreaterThan(rec.fencedLsn);
    const moved = await inventory(dst, "shard-1");
    expect(moved).toMatchObject({ state: "owned", epoch: 2 });
    expect(moved.snapshotLsn).toBeGreaterThan(0);
    expect(writer.errors()).toBe(0);
    expect(writer.acked.size).toBeGreaterThan(30);
    await expectAllReadable(new Map([...filled, ...writer.acked]));
    c.close();
    // And: the new owner recovers the installed snapshot plus the log after it
    await stopAgent(dst);
    dst = await startAgent({
      dataDir: join(dir, "node-2"),
      port: dst.port,
      nodeId: "node-2",
      zone: "b",
      segments: SEGMENTS,
      extra: COMPACT_FAST,
    });
    expect(await inventory(dst, "shard-1")).toMatchObject({ state: "owned", epoch: 2 });
    await expectAllReadable(new Map([...filled, ...writer.acked]));
  }, 120_000);

  it("refuses a bad snapshot upload (wrong checksum, flipped byte, cut connection, other shard, wrong epoch) and installs nothing", async () => {
    const c = client();
    await fill(c, "shard-2", "h", 120, 1000);
    c.close();
    expect((await admin(src.port, "POST", "shard-2/snapshot", { epoch: 1 })).status).toBe(200);
    const snap = await http(src.port, "GET", "/v1/shards/shard-2/snapshot");
    expect(snap.status).toBe(200);
    const lsn = snap.headers["x-snapshot-lsn"] as string;
    const sum = snap.headers["x-snapshot-checksum"] as string;
    expect(sum).toMatch(new RegExp(`^[0-9a-f]{8}-${snap.body.length}$`));
    // the target copy, receiving
    expect((await admin(dst.port, "POST", "shard-2/receive", { epoch: 1, migration: "m-snap" })).status).toBe(
      201,
    );
    expect((await http(dst.port, "GET", "/v1/shards/shard-2/snapshot")).json().error).toBe("no-snapshot");
    const put = (body: Buffer, headers: Record<string, string> = {}) =>
      http(dst.port, "PUT", "/v1/admin/shards/shard-2/snapshot", {
        body,
        headers: { "x-shard-epoch": "1", "x-snapshot-lsn": lsn, "x-snapshot-checksum": sum, ...headers },
      });
    const shardDir = join(dst.dataDir, "shards", "shard-2");
    const nothingInstalled = async () => {
      expect(await inventory(dst, "shard-2")).toMatchObject({ state: "receiving", lsn: 0, snapshotLsn: 0 });
      expect(readdirSync(shardDir).filter((f) => f.startsWith("snapshot-") || f.includes("tmp"))).toEqual([]);
    };
    // an upload of another migration (a coordinator whose copy the receive of m-snap replaced), and a
    // malformed migration id
    const another = await put(snap.body, { "x-migration": "m-other" });
    expect(another.status).toBe(409);
    expect(another.json()).toMatchObject({ error: "another-migration", migration: "m-snap" });
    await nothingInstalled();
    expect((await put(snap.body, { "x-migration": "m other/../x" })).status).toBe(400);
    await nothingInstalled();
    // a wrong checksum
    const wrongSum = await put(snap.body, { "x-snapshot-checksum": `00000000-${snap.body.length}` });
    expect(wrongSum.status).toBe(400);
    expect(wrongSum.json().error).toBe("checksum-mismatch");
    await nothingInstalled();
    // a flipped byte (the announced checksum is the original's)
    const flipped = Buffer.from(snap.body);
    flipped[Math.floor(flipped.length / 2)] ^= 0x40;
    const bad = await put(flipped);
    expect(bad.status).toBe(400);
    expect(bad.json().error).toMatch(/snapshot-corrupt|checksum-mismatch/);
    await nothingInstalled();
    // a size that does not match the announced one, and missing headers
    expect((await put(snap.body.subarray(0, 100))).status).toBe(400);
    expect((await put(snap.body, { "x-snapshot-lsn": "x" })).status).toBe(400);
    // the wrong epoch, and an owned shard (not a migration target)
    expect((await put(snap.body, { "x-shard-epoch": "7" })).json().error).toBe("stale-epoch");
    const owned = await http(src.port, "PUT", "/v1/admin/shards/shard-3/snapshot", {
      body: snap.body,
      headers: { "x-shard-epoch": "1", "x-snapshot-lsn": lsn, "x-snapshot-checksum": sum },
    });
    expect(owned.json().error).toBe("not-receiving");
    // another shard's snapshot, with its own correct checksum
    const foreignFile = await writeSnapshot(dir, "shard-9", Number(lsn), [
      ["k", { value: Buffer.from("v"), lsn: 1, timestamp: 1 }],
    ]);
    const foreign = readFileSync(foreignFile);
    rmSync(foreignFile);
    const fsum = `${foreign
      .readUInt32LE(foreign.length - 4)
      .toString(16)
      .padStart(8, "0")}-${foreign.length}`;
    const other = await put(foreign, { "x-snapshot-checksum": fsum });
    expect(other.status).toBe(400);
    expect(other.json().message).toMatch(/shard-9/);
    await nothingInstalled();
    // a connection cut in the middle of the upload
    await new Promise<void>((resolve, reject) => {
      const s = connect(dst.port, "127.0.0.1", () => {
        s.write(
          `PUT /v1/admin/shards/shard-2/snapshot HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\n` +
            `x-shard-epoch: 1\r\nx-snapshot-lsn: ${lsn}\r\nx-snapshot-checksum: ${sum}\r\ncontent-length: ${snap.body.length}\r\n\r\n`,
        );
        s.write(snap.body.subarray(0, Math.floor(snap.body.length / 2)), () =>
          setTimeout(() => s.destroy(), 100),
        );
      });
      s.on("close", () => resolve());
      s.on("error", reject);
    });
    for (let i = 0; i < 50 && readdirSync(shardDir).some((f) => f.includes("tmp")); i++)
      await new Promise((r) => setTimeout(r, 20));
    await nothingInstalled();
    // Then the genuine upload installs; sent twice at once (an old and a new coordinator), one
    // installs and the other is refused, never both writing the same file
    const both = await Promise.all([put(snap.body), put(snap.body)]);
    expect(both.map((r) => r.status).sort()).toEqual([200, 409]);
    expect(both.find((r) => r.status === 409)!.json().error).toBe("installing");
    const ok = both.find((r) => r.status === 200)!;
    expect(ok.json()).toMatchObject({ state: "receiving", lsn: Number(lsn), snapshotLsn: Number(lsn) });
    expect((await admin(dst.port, "DELETE", "shard-2", { epoch: 1 })).status).toBe(200);
  }, 60_000);

  it("aborts when the source lies about its snapshot's checksum: the shard stays served with all its data", async () => {
    const c = client();
    const filled = await fill(c, "shard-4", "lie", 150, 1000);
    expect((await http(src.port, "GET", "/v1/shards/shard-4/log?from=1")).json().error).toBe("compacted");
    class LyingRpc extends AgentRpc {
      override async stream(...args: Parameters<AgentRpc["stream"]>) {
        const r = await super.stream(...args);
        if (args[1] === "GET" && args[2].endsWith("/snapshot"))
          r.headers["x-snapshot-checksum"] = `deadbeef-${r.headers["content-length"]}`;
        return r;
      }
    }
    const rpc = new LyingRpc({ token: TOKEN });
    const store = new EmbeddedStore(dir);
    const before = await store.load();
    await expect(
      executeMigration(
        { shard: "shard-4", target: "node-2" },
        { store, rpc, clock: systemClock, log: () => {} },
      ),
    ).rejects.toThrow(/aborted.*checksum-mismatch/);
    rpc.close();
    expect((await store.load())?.map).toEqual(before?.map);
    expect(await inventory(src, "shard-4")).toMatchObject({ state: "owned", epoch: 1 });
    expect((await inventory(dst, "shard-4")).status).toBe(404);
    await expectAllReadable(filled);
    const [key] = keysOf("shard-4", "after-abort");
    await c.put(key, "ok");
    expect((await c.get(key))?.value.toString()).toBe("ok");
    c.close();
  }, 60_000);

  it("splits a compacted shard onto another node: the piece gets the snapshot's records, then the log after it", async () => {
    const c = client();
    const filled = await fill(c, "shard-4", "split", 150, 1000);
    expect((await http(src.port, "GET", "/v1/shards/shard-4/log?from=1")).json().error).toBe("compacted");
    const w = startWriter(c, "shard-4", "split-live");
    while (w.acked.size < 20) await new Promise((r) => setTimeout(r, 10));
    const rpc = new AgentRpc({ token: TOKEN });
    const logs: string[] = [];
    const rec = await executeLayoutChange(
      {
        op: {
          kind: "split",
          shard: "shard-4",
          node: "node-1",
          reason: "hot-segment",
          pieces: [
            { id: "shard-4", ranges: [[48, 56]], load: 0 },
            { id: "shard-5", ranges: [[56, 64]], load: 0 },
          ],
        },
        pieceNodes: { "shard-5": "node-2" },
      },
      { store: new EmbeddedStore(dir), rpc, clock: systemClock, log: (m) => logs.push(m) },
    );
    await new Promise((r) => setTimeout(r, 100));
    await w.stop();
    rpc.close();
    expect(rec.phase, logs.join("\n")).toBe("done");
    expect(await inventory(dst, "shard-5")).toMatchObject({ state: "owned", epoch: 1, ranges: [[56, 64]] });
    expect(await inventory(src, "shard-4")).toMatchObject({ state: "owned", epoch: 2, ranges: [[48, 56]] });
    await expectAllReadable(filled);
    await expectAllReadable(w.acked);
    // keys of the moved half are refused by the old owner at its new epoch
    const moved = [...filled.keys()].find((k) => segmenter.segmentOf(k) >= 56)!;
    const r = await http(src.port, "GET", `/v1/shards/shard-4/keys/${encodeURIComponent(moved)}`, {
      headers: { "x-shard-epoch": "2" },
    });
    expect(r.status).toBe(409);
    c.close();
  });
});
