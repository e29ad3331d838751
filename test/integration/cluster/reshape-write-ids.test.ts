/**
 * Write ids across splits and merges, on real agent processes: a write the
 * old shard applied (its answer lost) and that the client retries with the
 * same write id at the shard's new owner is answered as a duplicate with the
 * original outcome, and is not applied again. Whether the old shard's log was
 * compacted (the ids live only in its snapshot) or not; for a split, a merge
 * of two shards into a third, a split undone by a merge, a target killed with
 * SIGKILL mid-import and after the commit, a later move of the target, and a
 * retry sent while the source is fenced. Hostile: malformed write id entries sent to the import endpoint
 * are refused with 4xx and nothing is written.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeEntry } from "../../../src/agent/log-format.js";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AgentRpc, type AgentResponse } from "../../../src/cluster/agent-rpc.js";
import { executeMigration } from "../../../src/cluster/migrate.js";
import { executeLayoutChange } from "../../../src/cluster/reshape.js";
import type { LayoutOp } from "../../../src/engine/assigner.js";
import type { LocationMap, SegmentRange } from "../../../src/engine/location-map.js";
import { systemClock } from "../../../src/engine/ports.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import {
  admin,
  get,
  http,
  put,
  startAgent,
  startingMap,
  stopAgent,
  tempDir,
  TOKEN,
  type AgentProc,
  type HttpResult,
} from "../agent/harness.js";

const SEGMENTS = 64;
const segmenter = new Segmenter(SEGMENTS);
/** Small log files, so that a forced snapshot leaves a log that no longer starts at LSN 1. */
const EXTRA = ["--max-file-bytes", "4096"];

let root: string;
const nodes: Record<string, AgentProc> = {};
let store: EmbeddedStore;

async function start(node: string, port?: number): Promise<void> {
  nodes[node] = await startAgent({
    dataDir: join(root, node),
    port,
    nodeId: node,
    zone: node === "node-1" ? "a" : "b",
    segments: SEGMENTS,
    extra: EXTRA,
  });
}

/** Kills `node` with SIGKILL and starts it again on the same port and data. */
async function crashAndRestart(node: string): Promise<void> {
  const p = nodes[node];
  await stopAgent(p, "SIGKILL");
  await start(node, p.port);
}

const map = async (): Promise<LocationMap> => (await store.load())!.map;
const shardIn = async (id: string) => (await map()).shards.find((s) => s.id === id)!;

/** Keys `${prefix}<n>` whose segment is in `ranges`. */
function keysIn(ranges: SegmentRange[], prefix: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    const k = `${prefix}${i}`;
    const s = segmenter.segmentOf(k);
    if (ranges.some(([a, b]) => s >= a && s < b)) out.push(k);
  }
  return out;
}

let idSeq = 0;
function newId(): string {
  return (0x5e000000 + ++idSeq).toString(16).padStart(32, "0");
}

async function shardInfo(node: string, shard: string): Promise<Record<string, unknown>> {
  const r = await http(nodes[node].port, "GET", `/v1/shards/${shard}`);
  expect(r.status, r.body.toString()).toBe(200);
  return r.json();
}

function putId(node: string, shard: string, key: string, value: string, id: string, epoch: number) {
  return put(nodes[node].port, shard, key, value, epoch, { "x-write-id": id });
}

/** A put of another key of the shard with write id `id` (of an applied put) is refused: 409 write-id-reused, nothing written. */
async function expectReuseRefused(node: string, shard: string, id: string, epoch: number): Promise<void> {
  const { lsn, ranges } = (await shardInfo(node, shard)) as { lsn: number; ranges: SegmentRange[] };
  const [other] = keysIn(ranges, `reuse-${id}-`, 1);
  const r = await putId(node, shard, other, "other", id, epoch);
  expect(r.status, r.body.toString()).toBe(409);
  expect(r.json()).toMatchObject({ error: "write-id-reused", op: "put" });
  expect(r.json().message).toMatch(/another key/);
  expect((await shardInfo(node, shard)).lsn).toBe(lsn);
  expect((await get(nodes[node].port, shard, other, epoch)).status).toBe(404);
}

function delId(node: string, shard: string, key: string, id: string, epoch: number) {
  return http(nodes[node].port, "DELETE", `/v1/shards/${shard}/keys/${encodeURIComponent(key)}`, {
    headers: { "x-shard-epoch": String(epoch), "x-write-id": id },
  });
}

function ok(r: HttpResult): Record<string, unknown> {
  expect(r.status, r.body.toString()).toBe(200);
  return r.json();
}

/**
 * Writes whose answers a client "lost", on `shard`, with keys in `ranges`:
 * a put later overwritten by another writer, a delete of a key that existed
 * and was put back since, a delete of a key that never existed.
 */
interface LostWrites {
  put: { key: string; id: string; value: string; now: string };
  delExisting: { key: string; id: string; now: string };
  delMissing: { key: string; id: string };
  /** A put nothing overwrote since: its value is the key's. */
  last: { key: string; id: string; value: string };
}

async function lostWrites(
  node: string,
  shard: string,
  ranges: SegmentRange[],
  prefix: string,
  epoch: number,
): Promise<LostWrites> {
  const [pk, dk, mk, lk] = keysIn(ranges, prefix, 4);
  const w: LostWrites = {
    put: { key: pk, id: newId(), value: "original", now: "overwritten" },
    delExisting: { key: dk, id: newId(), now: "put-back" },
    delMissing: { key: mk, id: newId() },
    last: { key: lk, id: newId(), value: `last-${lk}` },
  };
  ok(await putId(node, shard, pk, w.put.value, w.put.id, epoch));
  ok(await put(nodes[node].port, shard, pk, w.put.now, epoch));
  ok(await put(nodes[node].port, shard, dk, "doomed", epoch));
  expect(ok(await delId(node, shard, dk, w.delExisting.id, epoch))).toMatchObject({ existed: true });
  ok(await put(nodes[node].port, shard, dk, w.delExisting.now, epoch));
  expect(ok(await delId(node, shard, mk, w.delMissing.id, epoch))).toMatchObject({ existed: false });
  ok(await putId(node, shard, lk, w.last.value, w.last.id, epoch));
  return w;
}

/** Fills `shard`'s log with writes outside `avoid`'s keys and snapshots it, so its log no longer starts at 1. */
async function compact(node: string, shard: string, ranges: SegmentRange[], epoch: number): Promise<void> {
  for (const k of keysIn(ranges, `fill-${shard}-`, 60))
    ok(await put(nodes[node].port, shard, k, "f".repeat(100), epoch));
  const snap = await admin(nodes[node].port, "POST", `${shard}/snapshot`, { epoch });
  expect(snap.status, snap.body.toString()).toBe(200);
  const log = await http(nodes[node].port, "GET", `/v1/shards/${shard}/log?from=1`);
  expect(log.json().error, "the log was compacted").toBe("compacted");
}

/**
 * Retries every lost write at `node`/`shard` (its owner now) and expects each
 * to be answered as a duplicate with the original outcome, nothing appended,
 * and the values as the later writers left them.
 */
async function expectRecognised(node: string, shard: string, w: LostWrites, epoch: number): Promise<void> {
  const lsn = (await shardInfo(node, shard)).lsn;
  const p = await putId(node, shard, w.put.key, w.put.value, w.put.id, epoch);
  expect(p.status, p.body.toString()).toBe(200);
  expect(p.headers["x-write-duplicate"], `put retry of ${w.put.key} at ${shard}`).toBe("true");
  const d = await delId(node, shard, w.delExisting.key, w.delExisting.id, epoch);
  expect(d.status, d.body.toString()).toBe(200);
  expect(d.headers["x-write-duplicate"], `delete retry of ${w.delExisting.key} at ${shard}`).toBe("true");
  expect(d.json().existed).toBe(true);
  const m = await delId(node, shard, w.delMissing.key, w.delMissing.id, epoch);
  expect(m.headers["x-write-duplicate"], `delete retry of ${w.delMissing.key} at ${shard}`).toBe("true");
  expect(m.json().existed).toBe(false);
  const l = await putId(node, shard, w.last.key, w.last.value, w.last.id, epoch);
  expect(l.headers["x-write-duplicate"], `put retry of ${w.last.key} at ${shard}`).toBe("true");
  expect((await get(nodes[node].port, shard, w.put.key, epoch)).body.toString()).toBe(w.put.now);
  expect((await get(nodes[node].port, shard, w.delExisting.key, epoch)).body.toString()).toBe(
    w.delExisting.now,
  );
  expect((await get(nodes[node].port, shard, w.delMissing.key, epoch)).status).toBe(404);
  expect((await get(nodes[node].port, shard, w.last.key, epoch)).body.toString()).toBe(w.last.value);
  expect((await shardInfo(node, shard)).lsn, "nothing appended by the retries").toBe(lsn);
}

/** The coordinator's RPC, noting which sources exported their snapshot (a compacted log) rather than their log. */
class WatchingRpc extends AgentRpc {
  readonly snapshotExports = new Set<string>();
  constructor() {
    super({ token: TOKEN });
  }
  override async request(...args: Parameters<AgentRpc["request"]>): Promise<AgentResponse> {
    const r = await super.request(...args);
    const m = /^\/v1\/shards\/([^/]+)\/export\?/.exec(args[2]);
    if (m && r.headers["x-snapshot-lsn"] !== undefined) this.snapshotExports.add(m[1]);
    return r;
  }
}

function client(): ShardClient {
  return new ShardClient({ store, token: TOKEN, deadlineMs: 20_000, baseBackoffMs: 5 });
}

/** Runs a split or merge with the coordinator in this process; `rpc` may watch or interfere. */
async function reshape(
  op: LayoutOp,
  rpc: AgentRpc = new WatchingRpc(),
  pieceNodes?: Record<string, string>,
  batchEntries?: number,
) {
  const logs: string[] = [];
  try {
    const rec = await executeLayoutChange(
      { op, pieceNodes, batchEntries },
      { store, rpc, clock: systemClock, log: (m) => logs.push(m) },
    );
    expect(rec.phase, logs.join("\n")).toBe("done");
  } finally {
    rpc.close();
  }
}

function splitOp(
  shard: string,
  node: string,
  ranges: SegmentRange[],
  piece: string,
  pieceRanges: SegmentRange[],
): LayoutOp {
  return {
    kind: "split",
    shard,
    node,
    reason: "hot-segment",
    pieces: [
      { id: shard, ranges, load: 0 },
      { id: piece, ranges: pieceRanges, load: 0 },
    ],
  };
}

beforeAll(async () => {
  root = tempDir("reshape-write-ids");
  await Promise.all([start("node-1"), start("node-2")]);
  store = new EmbeddedStore(join(root, "store"));
  const layout: [string, string, SegmentRange][] = [
    ["shard-1", "node-1", [0, 16]],
    ["shard-2", "node-1", [16, 32]],
    ["shard-3", "node-2", [32, 48]],
    ["shard-4", "node-2", [48, 64]],
  ];
  for (const [id, node, range] of layout) {
    const r = await admin(nodes[node].port, "PUT", id, { epoch: 1, ranges: [range], segmentCount: SEGMENTS });
    expect(r.status, r.body.toString()).toBe(201);
  }
  const m = startingMap(
    SEGMENTS,
    ["node-1", "node-2"].map((id) => ({ id, address: nodes[id].address, zone: id === "node-1" ? "a" : "b" })),
    layout,
    5,
  );
  expect((await store.compareAndSet(0, m)).ok).toBe(true);
}, 120_000);

afterAll(async () => {
  await Promise.all(Object.values(nodes).map((p) => stopAgent(p, "SIGKILL")));
  rmSync(root, { recursive: true, force: true });
});

describe("write ids across splits and merges", () => {
  it("a split of a compacted shard: the new piece answers retries of the old shard's writes as duplicates, also after a SIGKILL mid-import, after the commit and after a move", async () => {
    // Given: lost writes on shard-1 in segment 0, covered by a snapshot that compacted the log, and more after
    // it; before them, 5000 writes with ids outside segment 0 (more than one export entry of id records)
    const many = keysIn([[1, 16]], "many-", 5000).map((key, i) => ({
      op: "put",
      key,
      value: Buffer.from(`m${i}`).toString("base64"),
      writeId: newId(),
    }));
    const batch = await http(nodes["node-1"].port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1", "content-type": "application/json" },
      body: JSON.stringify({ ops: many }),
    });
    expect(batch.status, batch.body.toString()).toBe(200);
    const inSnapshot = await lostWrites("node-1", "shard-1", [[0, 1]], "snap-", 1);
    await compact("node-1", "shard-1", [[1, 16]], 1);
    const inLog = await lostWrites("node-1", "shard-1", [[0, 1]], "log-", 1);

    // When: segment 0 is split out into shard-5 on node-2, one entry per export page (the first page: the
    // first 4096 id records), and node-2's agent is killed after the first import page
    let killed = false;
    class KillTargetMidImport extends WatchingRpc {
      override async request(...args: Parameters<AgentRpc["request"]>): Promise<AgentResponse> {
        const r = await super.request(...args);
        if (!killed && args[2].endsWith("/shard-5/import")) {
          killed = true;
          await crashAndRestart("node-2");
        }
        return r;
      }
    }
    const rpc = new KillTargetMidImport();
    await reshape(
      splitOp("shard-1", "node-1", [[1, 16]], "shard-5", [[0, 1]]),
      rpc,
      { "shard-5": "node-2" },
      1,
    );
    expect(killed).toBe(true);
    expect([...rpc.snapshotExports]).toEqual(["shard-1"]);
    // every id went, those imported before the kill too (they were not sent again)
    expect((await shardInfo("node-2", "shard-5")).writeIds).toBeGreaterThanOrEqual(many.length + 8);
    expect(await shardIn("shard-5")).toMatchObject({ node: "node-2", epoch: 1, ranges: [[0, 1]] });

    // Then: every retry at shard-5 is a duplicate with the original outcome; the values stay
    await expectRecognised("node-2", "shard-5", inSnapshot, 1);
    await expectRecognised("node-2", "shard-5", inLog, 1);
    // and an id of the old shard's snapshot names its write only (its record brought the key's hash):
    // reused for another key it is refused, nothing written
    await expectReuseRefused("node-2", "shard-5", inSnapshot.put.id, 1);
    // and the routing client, retrying with the same id, is told so too
    const c = client();
    try {
      const again = await c.put(inSnapshot.put.key, inSnapshot.put.value, {
        writeId: Buffer.from(inSnapshot.put.id, "hex"),
      });
      expect(again.duplicate).toBe(true);
    } finally {
      c.close();
    }

    // When: the new owner is killed after the commit; Then: it still knows the ids
    await crashAndRestart("node-2");
    await expectRecognised("node-2", "shard-5", inSnapshot, 1);
    await expectRecognised("node-2", "shard-5", inLog, 1);

    // When: shard-5 moves to node-1 (its log, id records entries included, copied byte for byte)
    const moveRpc = new AgentRpc({ token: TOKEN });
    try {
      const rec = await executeMigration(
        { shard: "shard-5", target: "node-1" },
        { store, rpc: moveRpc, clock: systemClock, log: () => {} },
      );
      expect(rec.phase).toBe("done");
    } finally {
      moveRpc.close();
    }
    // Then: the new node knows them too
    const moved = await shardIn("shard-5");
    expect(moved.node).toBe("node-1");
    await expectRecognised("node-1", "shard-5", inSnapshot, moved.epoch);
    await expectRecognised("node-1", "shard-5", inLog, moved.epoch);
    await expectReuseRefused("node-1", "shard-5", inSnapshot.put.id, moved.epoch);
  }, 120_000);

  it("a merge of two shards into a third, one compacted and one not: the kept shard answers both's retries as duplicates, also those sent while the sources were fenced", async () => {
    // Given: lost writes on shard-2 (node-1, compacted) and shard-4 (node-2, not compacted); shard-3 is kept
    const fromTwo = await lostWrites("node-1", "shard-2", [[16, 32]], "two-", 1);
    await compact("node-1", "shard-2", [[16, 32]], 1);
    const fromFour = await lostWrites("node-2", "shard-4", [[48, 64]], "four-", 1);
    const own = await lostWrites("node-2", "shard-3", [[32, 48]], "three-", 1);

    // When: shard-2 + shard-4 are merged into shard-3; a retry of a shard-2 write comes while it is fenced
    let fencedAnswer: HttpResult | undefined;
    let lateRetry: Promise<{ duplicate?: boolean }> | undefined;
    const c = client();
    class RetryWhileFenced extends WatchingRpc {
      override async request(...args: Parameters<AgentRpc["request"]>): Promise<AgentResponse> {
        const r = await super.request(...args);
        if (!fencedAnswer && args[2].endsWith("/shard-2/fence")) {
          fencedAnswer = await putId(
            "node-1",
            "shard-2",
            fromTwo.put.key,
            fromTwo.put.value,
            fromTwo.put.id,
            1,
          );
          // the routing client keeps retrying (backoff) until the merge commits
          lateRetry = c.put(fromTwo.put.key, fromTwo.put.value, {
            writeId: Buffer.from(fromTwo.put.id, "hex"),
          });
        }
        return r;
      }
    }
    const rpc = new RetryWhileFenced();
    await reshape(
      {
        kind: "merge",
        shards: ["shard-3", "shard-2", "shard-4"],
        node: "node-2",
        ranges: [[16, 64]],
        load: 0,
      },
      rpc,
    );
    expect([...rpc.snapshotExports]).toEqual(["shard-2"]);

    // Then: the fenced source refused the retry without applying it; the client's retry got the original outcome
    expect(fencedAnswer?.status).toBe(503);
    expect((await lateRetry)?.duplicate).toBe(true);
    c.close();
    const epoch = (await shardIn("shard-3")).epoch;
    await expectRecognised("node-2", "shard-3", fromTwo, epoch);
    await expectRecognised("node-2", "shard-3", fromFour, epoch);
    await expectRecognised("node-2", "shard-3", own, epoch);
    await crashAndRestart("node-2");
    await expectRecognised("node-2", "shard-3", fromTwo, epoch);
  }, 120_000);

  it("a split of an uncompacted shard undone by a merge: every value and every write id comes back", async () => {
    // Given: shard-3 (not compacted) holds writes with ids of its own in segment 16, and ids it imported
    const epoch = (await shardIn("shard-3")).epoch;
    const own = await lostWrites("node-2", "shard-3", [[16, 17]], "back-", epoch);
    const log = await http(nodes["node-2"].port, "GET", "/v1/shards/shard-3/log?from=1");
    expect(log.status, "shard-3's log still starts at 1").toBe(200);

    // When: segment 16 is split out onto node-1, then merged back (both from logs that start at 1)
    const rpc = new WatchingRpc();
    await reshape(splitOp("shard-3", "node-2", [[17, 64]], "shard-6", [[16, 17]]), rpc, {
      "shard-6": "node-1",
    });
    await expectRecognised("node-1", "shard-6", own, 1);
    const back = new WatchingRpc();
    await reshape(
      { kind: "merge", shards: ["shard-3", "shard-6"], node: "node-2", ranges: [[16, 64]], load: 0 },
      back,
    );
    expect([...rpc.snapshotExports, ...back.snapshotExports]).toEqual([]);

    // Then: the values are all there and the retries are duplicates
    await expectRecognised("node-2", "shard-3", own, (await shardIn("shard-3")).epoch);
  }, 120_000);
});

describe("hostile write id entries on the import endpoint", () => {
  it("refuses malformed id records, a truncated body and a wrong migration id with 4xx; nothing is written", async () => {
    const sh = await shardIn("shard-3");
    const source = await shardIn("shard-1");
    const node = nodes[sh.node];
    const before = await shardInfo(sh.node, sh.id);
    const begin = await admin(node.port, "POST", `${sh.id}/import-begin`, {
      epoch: sh.epoch,
      source: source.id,
      migration: "m-hostile-ids",
      ranges: source.ranges,
    });
    expect(begin.status, begin.body.toString()).toBe(201);
    const send = (body: Buffer, migration = "m-hostile-ids", extra: Record<string, string> = {}) =>
      http(node.port, "POST", `/v1/admin/shards/${sh.id}/import`, {
        body,
        headers: {
          "content-type": "application/octet-stream",
          "x-source-shard": source.id,
          "x-migration": migration,
          "x-from": "1",
          "x-scanned-through": "5",
          ...extra,
        },
      });
    const record = (lsn: number, outcome: number) => {
      const r = Buffer.alloc(29, 0x11); // [id][u64 lsn][u8 outcome][u32 key hash]
      r.writeUInt32LE(lsn, 16);
      r.writeUInt32LE(0, 20);
      r[24] = outcome;
      return r;
    };
    const idEntry = (records: Buffer, lsn = 1, shardId = source.id) =>
      encodeEntry({
        lsn,
        timestamp: Date.now(),
        migrationTimestamp: 0,
        op: "write-ids",
        shardId,
        key: "",
        value: records,
      });
    /** An id entry with its value replaced and the checksum made right again: only the format checks can catch it. */
    const forged = (value: Buffer) => {
      const good = idEntry(record(1, 0));
      const body = Buffer.concat([
        good.subarray(8, 40),
        good.subarray(40, 40 + Buffer.byteLength(source.id)),
        value,
      ]);
      body.writeUInt32LE(value.length, 28);
      const out = Buffer.alloc(8 + body.length);
      out.writeUInt32LE(body.length, 0);
      out.writeUInt32LE(crc32(body) >>> 0, 4);
      body.copy(out, 8);
      return out;
    };
    const cases: [string, Buffer, number][] = [
      ["a record of 24 bytes", forged(record(1, 0).subarray(0, 24)), 400],
      ["no records", forged(Buffer.alloc(0)), 400],
      ["a record with LSN 0", forged(record(0, 0)), 400],
      ["a record with outcome 3", forged(record(1, 3)), 400],
      ["a truncated entry", idEntry(record(1, 0)).subarray(0, 50), 400],
      ["an entry of another shard", idEntry(record(1, 0), 1, "shard-999"), 400],
      ["an entry past x-scanned-through", idEntry(record(1, 0), 9), 400],
      [
        "a good entry, then a cut one",
        Buffer.concat([idEntry(record(1, 0)), idEntry(record(2, 0), 2).subarray(0, 45)]),
        400,
      ],
    ];
    for (const [what, body, status] of cases) {
      const r = await send(body);
      expect(r.status, `${what}: ${r.body.toString()}`).toBe(status);
      expect(r.json().message, what).toMatch(/nothing was imported/);
    }
    // a snapshot page whose id entry is not at the snapshot's LSN
    const offSnapshot = await send(idEntry(record(1, 0), 1), "m-hostile-ids", {
      "x-snapshot-lsn": "5",
      "x-snapshot-skip": "0",
      "x-scanned-through": "0",
    });
    expect(offSnapshot.status, offSnapshot.body.toString()).toBe(400);
    const wrongMigration = await send(idEntry(record(1, 0)), "m-other");
    expect(wrongMigration.status).toBe(409);
    expect(wrongMigration.json().error).toBe("another-migration");
    // nothing was written: the LSN, the ids and the import's progress are as before
    const after = await shardInfo(sh.node, sh.id);
    expect(after.lsn).toBe(before.lsn);
    expect(after.writeIds).toBe(before.writeIds);
    const again = await admin(node.port, "POST", `${sh.id}/import-begin`, {
      epoch: sh.epoch,
      source: source.id,
      migration: "m-hostile-ids",
      ranges: source.ranges,
    });
    expect(again.json().import).toEqual({
      migration: "m-hostile-ids",
      ranges: source.ranges,
      through: 0,
      crc: 0,
      entries: 0,
    });
    const abort = await admin(node.port, "POST", `${sh.id}/import-abort`, {
      epoch: 1,
      migration: "m-hostile-ids",
    });
    expect(abort.status).toBe(200);
    expect(abort.json()).toMatchObject({ purged: 0 });
  });
});
