/**
 * Idempotent writes below the server: the write id table, its records in
 * snapshots, and a shard that appends a write id once — sequential and
 * concurrent retries, inside one batch, after recovery from the log and from
 * a snapshot, and on a copy made from replicated entries.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { tempDirs } from "../../helpers/temp-dirs.js";
import { decodeEntry } from "../../../src/agent/log-format.js";
import { listLogFiles } from "../../../src/agent/shard-log.js";
import { opOfEntry, Shard, type ReplicatedEntry, type ShardOptions } from "../../../src/agent/shard.js";
import {
  decodeSnapshot,
  readSnapshot,
  readSnapshotWriteIds,
  snapshotFileName,
  SnapshotCorrupt,
  SnapshotDecoder,
  writeSnapshot,
} from "../../../src/agent/snapshot.js";
import {
  keyHash32,
  parseWriteIdHex,
  WRITE_ID_RECORD_BYTES,
  WriteIdTable,
} from "../../../src/agent/write-ids.js";
import { ApiError } from "../../../src/agent/http-util.js";

const tmp = tempDirs("shardctl-writeids-");

/** Ids that share a client prefix and differ in a counter, like the routing client's. */
function idOf(n: number, client = 0xc11e): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(client, 0);
  b.writeUInt32BE(n, 12);
  return b;
}

function opts(over: Partial<ShardOptions> = {}): ShardOptions {
  return { maxFileBytes: 4096, snapshotBytes: 1 << 30, warn: () => {}, ...over };
}

async function newShard(o = opts(), state: "owned" | "receiving" = "owned") {
  const dir = join(tmp(), "s");
  const shard = await Shard.create(dir, "shard-1", { epoch: 1, state, migrationTimestamp: 0 }, o);
  return { dir, shard };
}

/**
 * Rewrites a snapshot file as an agent from before key hashes wrote it: magic SCSNAP01, id records
 * of 25 bytes (without the key hash), the CRC-32 trailer recomputed.
 */
function toLegacySnapshot(file: string): void {
  const buf = readFileSync(file);
  expect(buf.subarray(0, 8).toString()).toBe("SCSNAP02");
  const hlen = buf.readUInt32LE(8);
  const header = JSON.parse(buf.toString("utf8", 12, 12 + hlen)) as { writeIds: number };
  const idsAt = 12 + hlen;
  const idsEnd = idsAt + header.writeIds * WRITE_ID_RECORD_BYTES;
  const records: Buffer[] = [];
  for (let off = idsAt; off < idsEnd; off += WRITE_ID_RECORD_BYTES)
    records.push(buf.subarray(off, off + WRITE_ID_RECORD_BYTES - 4));
  const body = Buffer.concat([
    Buffer.from("SCSNAP01"),
    buf.subarray(8, idsAt),
    ...records,
    buf.subarray(idsEnd, buf.length - 4),
  ]);
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32LE(crc32(body) >>> 0);
  writeFileSync(file, Buffer.concat([body, trailer]));
}

/** Every entry in the shard's log files, decoded. */
function logEntries(dir: string) {
  const out = [];
  for (const f of listLogFiles(dir)) {
    const buf = readFileSync(f.path);
    for (let off = 0; off < buf.length;) {
      const d = decodeEntry(buf, off);
      if (d.kind !== "entry") throw new Error(`bad entry at ${off}`);
      out.push({ ...d.entry, bytes: buf.subarray(off, off + d.length) });
      off += d.length;
    }
  }
  return out;
}

describe("WriteIdTable", () => {
  it("remembers the LSN and outcome of each id, and keeps the first LSN of an id added twice", () => {
    const t = new WriteIdTable(100);
    t.add(idOf(1), 10, "put");
    t.add(idOf(2), 11, "delete", true);
    t.add(idOf(3), 12, "delete", false);
    t.add(idOf(1), 99, "put");
    expect(t.get(idOf(1))).toEqual({ lsn: 10, op: "put", keyHash: 0 });
    expect(t.get(idOf(2))).toEqual({ lsn: 11, op: "delete", existed: true, keyHash: 0 });
    expect(t.get(idOf(3))).toEqual({ lsn: 12, op: "delete", existed: false, keyHash: 0 });
    expect(t.get(idOf(4))).toBeUndefined();
    expect(t.get(Buffer.alloc(15))).toBeUndefined();
    expect(t.size).toBe(3);
    expect(() => t.add(Buffer.alloc(8), 1, "put")).toThrow(/16 bytes/);
  });

  it("keeps each id's key hash through growth, eviction and its records", () => {
    const t = new WriteIdTable(3000);
    for (let i = 1; i <= 5000; i++) t.add(idOf(i), i, "put", false, `key-${i}`);
    expect(t.get(idOf(1000))).toBeUndefined(); // evicted
    for (const i of [2001, 3500, 5000]) expect(t.get(idOf(i))?.keyHash).toBe(keyHash32(`key-${i}`));
    t.add(idOf(6000), 6000, "delete", true);
    expect(t.get(idOf(6000))).toEqual({ lsn: 6000, op: "delete", existed: true, keyHash: 0 });
    const back = new WriteIdTable();
    back.addEncoded(t.encode());
    expect(back.get(idOf(5000))).toEqual({ lsn: 5000, op: "put", keyHash: keyHash32("key-5000") });
    expect(back.get(idOf(6000))).toEqual({ lsn: 6000, op: "delete", existed: true, keyHash: 0 });
    expect(keyHash32("")).not.toBe(0);
    expect(keyHash32("a")).not.toBe(keyHash32("b"));
  });

  it("hashes keys as it always will: the key hash is stored in id records (golden vectors)", () => {
    // FNV-1a 32 over UTF-16 code units: for ASCII keys, the published FNV-1a vectors
    expect(keyHash32("")).toBe(0x811c9dc5);
    expect(keyHash32("a")).toBe(0xe40c292c);
    expect(keyHash32("foobar")).toBe(0xbf9cf968);
    expect(keyHash32("user:42")).toBe(0x2f6b7b82);
    expect(keyHash32("é")).toBe(0x6c0b6c44);
    expect(keyHash32("😀")).toBe(0xcb31c4b8); // two code units
  });

  it("forgets the oldest ids once full, and grows its arrays only as ids arrive", () => {
    const t = new WriteIdTable(5000);
    const small = t.bytes;
    expect(small).toBeLessThan(40 * 1024);
    for (let i = 1; i <= 12_000; i++) t.add(idOf(i), i, "put");
    expect(t.size).toBe(5000);
    expect(t.bytes).toBeGreaterThan(small);
    const wrong: number[] = [];
    for (let i = 1; i <= 12_000; i++) if ((t.get(idOf(i))?.lsn ?? 0) !== (i > 7000 ? i : 0)) wrong.push(i);
    expect(wrong).toEqual([]);
  });

  it("answers like a map of the last `capacity` distinct ids, whatever the sequence (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.integer({ min: 0, max: 80 }), { maxLength: 400 }),
        (capacity, seq) => {
          const t = new WriteIdTable(capacity);
          const model = new Map<number, number>(); // id → lsn, in insertion order
          seq.forEach((n, lsn) => {
            if (model.has(n)) return t.add(idOf(n), lsn + 1, "put");
            if (model.size === capacity) model.delete(model.keys().next().value!);
            model.set(n, lsn + 1);
            t.add(idOf(n), lsn + 1, "put");
          });
          expect(t.size).toBe(model.size);
          for (let n = 0; n <= 80; n++) expect(t.get(idOf(n))?.lsn).toBe(model.get(n));
        },
      ),
    );
  });

  it("encodes its ids oldest first and reads them back; malformed records are refused", () => {
    const t = new WriteIdTable(3);
    for (let i = 1; i <= 5; i++) t.add(idOf(i), 2 ** 40 + i, i % 2 ? "put" : "delete", i === 4, `k${i}`);
    const frozen = t.freeze();
    t.add(idOf(6), 6, "put"); // later adds do not change a frozen copy (a snapshot being written)
    const rec = frozen.encode(0, frozen.count);
    expect(rec.length).toBe(3 * WRITE_ID_RECORD_BYTES);
    expect(Buffer.concat([frozen.encode(0, 1), frozen.encode(1, 2)]).equals(rec)).toBe(true);
    expect(t.encode().subarray(0, 16)).toEqual(idOf(4));
    expect(rec.subarray(0, 16)).toEqual(idOf(3));
    const u = new WriteIdTable(10);
    u.addEncoded(rec);
    expect(u.get(idOf(4))).toEqual({
      lsn: 2 ** 40 + 4,
      op: "delete",
      existed: true,
      keyHash: keyHash32("k4"),
    });
    expect(u.get(idOf(5))).toEqual({ lsn: 2 ** 40 + 5, op: "put", keyHash: keyHash32("k5") });
    expect(u.has(idOf(2))).toBe(false);
    // [id][u64 lsn][u8 outcome][u32 key hash], little-endian
    expect(rec.readUInt32LE(WRITE_ID_RECORD_BYTES + 25)).toBe(keyHash32("k4"));
    expect(() => u.addEncoded(rec.subarray(0, 30))).toThrow(/29 bytes each/);
    expect(() => u.addEncoded(rec.subarray(0, 25))).toThrow(/29 bytes each/);
    const badOutcome = Buffer.from(rec);
    badOutcome[24] = 9;
    expect(() => new WriteIdTable(10).addEncoded(badOutcome)).toThrow(/malformed/);
    const zeroLsn = Buffer.from(rec);
    zeroLsn.fill(0, 16, 24);
    expect(() => new WriteIdTable(10).addEncoded(zeroLsn)).toThrow(/malformed/);
  });

  it("remembers records another shard had at a given LSN of its own, and refuses malformed ones whole", () => {
    const src = new WriteIdTable(10);
    src.add(idOf(1), 5, "put");
    src.add(idOf(2), 6, "delete", true);
    const t = new WriteIdTable(10);
    t.add(idOf(2), 3, "put"); // known already: keeps its first answer
    t.addEncoded(src.encode(), 40);
    expect(t.get(idOf(1))).toEqual({ lsn: 40, op: "put", keyHash: 0 });
    expect(t.get(idOf(2))).toEqual({ lsn: 3, op: "put", keyHash: 0 });
    const bad = Buffer.concat([new WriteIdTable(10).encode(), src.encode()]);
    bad[WRITE_ID_RECORD_BYTES + 24] = 7;
    const u = new WriteIdTable(10);
    expect(() => u.addEncoded(bad, 1)).toThrow(/record 1 is malformed/);
    expect(u.size).toBe(0);
    expect(() => u.addEncoded(src.encode(), 0)).toThrow(/positive integer/);
  });

  it("parses only 32 hex digits as a write id", () => {
    expect(parseWriteIdHex("00112233445566778899AABBCCDDEEFF")).toEqual(
      Buffer.from("00112233445566778899aabbccddeeff", "hex"),
    );
    for (const bad of [
      "",
      "0011",
      "g".repeat(32),
      "0".repeat(31),
      "0".repeat(33),
      ` ${"0".repeat(31)}`,
      "0".repeat(16) + ", " + "0".repeat(14),
    ])
      expect(parseWriteIdHex(bad), JSON.stringify(bad)).toBeUndefined();
  });
});

describe("write ids in snapshots", () => {
  it("stores the ids before the state; every reader gets them; a snapshot without ids is the old format", async () => {
    const dir = tmp();
    const t = new WriteIdTable(100_000);
    // 1.45 MB of records: more than one chunk
    for (let i = 1; i <= 50_000; i++) t.add(idOf(i), i, "put", false, i % 7 ? `key-${i}` : undefined);
    const entries: [string, { value: Buffer; lsn: number; timestamp: number }][] = [
      ["a", { value: Buffer.from("1"), lsn: 49_999, timestamp: 1 }],
      ["b", { value: Buffer.from("2"), lsn: 50_000, timestamp: 2 }],
    ];
    const file = await writeSnapshot(dir, "shard-1", 50_000, entries, t.freeze());
    const buf = readFileSync(file);
    expect(buf.subarray(0, 8).toString()).toBe("SCSNAP02");
    const fromFile = new WriteIdTable(100_000);
    const keys: string[] = [];
    const header = await readSnapshot(
      file,
      (k) => keys.push(k),
      (r) => fromFile.addEncoded(r),
    );
    expect(header).toMatchObject({ lsn: 50_000, count: 2, writeIds: 50_000 });
    expect(keys).toEqual(["a", "b"]);
    expect(fromFile.size).toBe(50_000);
    expect(fromFile.get(idOf(777))?.lsn).toBe(777);
    expect(fromFile.get(idOf(778))?.keyHash).toBe(keyHash32("key-778"));
    expect(fromFile.get(idOf(777))?.keyHash).toBe(0); // added without its key
    expect(fromFile.encode().equals(t.encode())).toBe(true);
    // streamed in odd chunks (a migration target's upload)
    const streamed = new WriteIdTable(100_000);
    const d = new SnapshotDecoder(
      () => {},
      (r) => streamed.addEncoded(r),
    );
    for (let off = 0; off < buf.length; off += 9973) d.push(buf.subarray(off, off + 9973));
    expect(d.end().count).toBe(2);
    expect(streamed.encode().equals(fromFile.encode())).toBe(true); // (not toEqual: 1.25 MB element by element)
    // the ids alone, without reading the state
    const only = new WriteIdTable(100_000);
    expect(await readSnapshotWriteIds(file, (r) => only.addEncoded(r))).toBe(50_000);
    expect(only.encode().equals(fromFile.encode())).toBe(true);
    const whole = new WriteIdTable(100_000);
    decodeSnapshot(
      buf,
      () => {},
      (r) => whole.addEncoded(r),
    );
    expect(whole.encode().equals(fromFile.encode())).toBe(true);
    // as an agent from before key hashes wrote it: every reader gets the same ids, key hash 0
    const legacyFile = join(tmp(), snapshotFileName(50_000));
    writeFileSync(legacyFile, buf);
    toLegacySnapshot(legacyFile);
    const legacy = readFileSync(legacyFile);
    expect(legacy.length).toBe(buf.length - 4 * 50_000);
    const noHashes = new WriteIdTable(100_000);
    for (let i = 1; i <= 50_000; i++) noHashes.add(idOf(i), i, "put");
    const readers: [string, (add: (r: Buffer) => void) => Promise<unknown>][] = [
      ["readSnapshot", (add) => readSnapshot(legacyFile, () => {}, add)],
      ["readSnapshotWriteIds", (add) => readSnapshotWriteIds(legacyFile, add)],
      ["decodeSnapshot", async (add) => decodeSnapshot(legacy, () => {}, add)],
      [
        "SnapshotDecoder",
        async (add) => {
          const dec = new SnapshotDecoder(() => {}, add);
          for (let off = 0; off < legacy.length; off += 7919) dec.push(legacy.subarray(off, off + 7919));
          return dec.end();
        },
      ],
    ];
    for (const [name, read] of readers) {
      const got = new WriteIdTable(100_000);
      await read((r) => got.addEncoded(r));
      expect(got.encode().equals(noHashes.encode()), name).toBe(true);
    }
    // without ids: no writeIds field, the same bytes as before write ids existed
    const plain = readFileSync(
      await writeSnapshot(tmp(), "shard-1", 50_000, entries, new WriteIdTable(5).freeze()),
    );
    expect(plain.subarray(0, 8).toString()).toBe("SCSNAP01");
    expect(JSON.parse(plain.subarray(12, 12 + plain.readUInt32LE(8)).toString())).not.toHaveProperty(
      "writeIds",
    );
    const seen: string[] = [];
    expect(
      decodeSnapshot(
        plain,
        (k) => seen.push(k),
        () => {
          throw new Error("no ids expected");
        },
      ).count,
    ).toBe(2);
    expect(seen).toEqual(["a", "b"]);
  });

  it("refuses a snapshot whose id count is out of range or whose id records are cut short", async () => {
    const dir = tmp();
    const t = new WriteIdTable(10);
    t.add(idOf(1), 1, "put");
    const buf = readFileSync(await writeSnapshot(dir, "shard-1", 1, [], t.freeze()));
    const hlen = buf.readUInt32LE(8);
    const header = JSON.parse(buf.subarray(12, 12 + hlen).toString());
    for (const writeIds of [-1, 1.5, 2 ** 40, "7"]) {
      const h = Buffer.from(JSON.stringify({ ...header, writeIds }));
      const head = Buffer.alloc(12);
      buf.copy(head, 0, 0, 8);
      head.writeUInt32LE(h.length, 8);
      const body = Buffer.concat([head, h, buf.subarray(12 + hlen, buf.length - 4)]);
      const trailer = Buffer.alloc(4);
      trailer.writeUInt32LE(crc32(body) >>> 0, 0);
      const forged = Buffer.concat([body, trailer]);
      expect(() => decodeSnapshot(forged, () => {}), JSON.stringify(writeIds)).toThrow(SnapshotCorrupt);
      const d = new SnapshotDecoder(() => {});
      expect(() => {
        d.push(forged);
        d.end();
      }, JSON.stringify(writeIds)).toThrow(SnapshotCorrupt);
    }
    // records of today under the old magic (or another magic), the checksum made to match: refused
    for (const magic of ["SCSNAP01", "SCSNAP03"]) {
      const body = Buffer.concat([Buffer.from(magic), buf.subarray(8, buf.length - 4)]);
      const trailer = Buffer.alloc(4);
      trailer.writeUInt32LE(crc32(body) >>> 0, 0);
      const forged = Buffer.concat([body, trailer]);
      expect(() => decodeSnapshot(forged, () => {}), magic).toThrow(SnapshotCorrupt);
      const d = new SnapshotDecoder(() => {});
      expect(() => {
        d.push(forged);
        d.end();
      }, magic).toThrow(SnapshotCorrupt);
    }
  });
});

describe("Shard: a write id is appended once", () => {
  const put = (key: string, v: string, writeId?: Buffer) => ({
    op: "put" as const,
    key,
    value: Buffer.from(v),
    writeId,
  });

  it("answers a sequential retry with the original LSN, appends nothing, and keeps a delete's outcome", async () => {
    const { dir, shard } = await newShard();
    const [first] = await shard.write([put("k", "v1", idOf(1))]);
    expect(first).toEqual({ lsn: 1 });
    await shard.write([put("k", "v2")]);
    const [again] = await shard.write([put("k", "v1", idOf(1))]);
    expect(again).toEqual({ lsn: 1, duplicate: true });
    expect(shard.get("k")!.value.toString()).toBe("v2"); // the retry did not bring v1 back
    const [del] = await shard.write([{ op: "delete", key: "k", writeId: idOf(2) }]);
    expect(del).toEqual({ lsn: 3, existed: true });
    const [delAgain] = await shard.write([{ op: "delete", key: "k", writeId: idOf(2) }]);
    expect(delAgain).toEqual({ lsn: 3, existed: true, duplicate: true });
    expect(shard.lsn).toBe(3);
    await shard.close();
    expect(logEntries(dir).map((e) => [e.lsn, e.writeId?.toString("hex")])).toEqual([
      [1, idOf(1).toString("hex")],
      [2, undefined],
      [3, idOf(2).toString("hex")],
    ]);
  });

  it("lets a concurrent retry wait for the first write's fsync and answers it with that write's outcome", async () => {
    const { shard } = await newShard();
    // all submitted in one turn: the first is in flight (not durable) when the others arrive
    const answers = await Promise.all([
      shard.write([put("k", "a", idOf(7))]),
      shard.write([put("k", "a", idOf(7))]),
      shard.write([put("other", "x")]),
      shard.write([put("k", "a", idOf(7))]),
    ]);
    expect(answers.map(([r]) => r)).toEqual([
      { lsn: 1 },
      { lsn: 1, duplicate: true },
      { lsn: 2 },
      { lsn: 1, duplicate: true },
    ]);
    expect(shard.lsn).toBe(2);
    // an id repeated inside one batch is appended once too
    const batch = await shard.write([
      put("x", "1", idOf(8)),
      put("y", "2"),
      put("x", "1", idOf(8)),
      put("k", "a", idOf(7)),
    ]);
    expect(batch).toEqual([{ lsn: 3 }, { lsn: 4 }, { lsn: 3, duplicate: true }, { lsn: 1, duplicate: true }]);
    expect(shard.lsn).toBe(4);
    await shard.close();
  });

  it("refuses an id that names another key's or another operation's write, in the table, in flight or in the batch: 409 write-id-reused, nothing appended", async () => {
    const o = opts();
    const { dir, shard } = await newShard(o);
    await shard.write([put("k", "v", idOf(1))]);
    await shard.write([{ op: "delete", key: "gone", writeId: idOf(2) }]);
    const refused = async (ops: Parameters<typeof shard.write>[0], message: RegExp) => {
      const lsn = shard.lsn;
      const err = await shard.write(ops).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ApiError);
      expect(err).toMatchObject({ status: 409, code: "write-id-reused" });
      expect((err as Error).message).toMatch(message);
      expect(shard.lsn).toBe(lsn); // nothing appended, the batch's other writes neither
    };
    // known to the table
    await refused([put("other", "x", idOf(1))], /already names a put of another key \(applied at LSN 1\)/);
    await refused([{ op: "delete", key: "k", writeId: idOf(1) }], /a put of this key, not a delete/);
    await refused([put("gone", "x", idOf(2))], /a delete of this key, not a put/);
    await refused([put("fresh", "1"), put("other", "x", idOf(1))], /another key/);
    expect(shard.get("other")).toBeUndefined();
    expect(shard.get("fresh")).toBeUndefined();
    // twice in one batch, for two keys
    await refused([put("a", "1", idOf(3)), put("b", "2", idOf(3))], /another key \(not durable yet\)/);
    // in flight: the first not durable yet when the second arrives
    const [first, second] = await Promise.allSettled([
      shard.write([put("c", "1", idOf(4))]),
      shard.write([put("d", "2", idOf(4))]),
    ]);
    expect(first).toMatchObject({ status: "fulfilled", value: [{ lsn: 3 }] });
    expect(second).toMatchObject({ status: "rejected", reason: { code: "write-id-reused" } });
    // a true retry is still a duplicate
    expect(await shard.write([put("k", "v", idOf(1))])).toEqual([{ lsn: 1, duplicate: true }]);
    await shard.close();
    // after recovery from the log the keys are known again
    const reopened = await Shard.open(dir, "shard-1", o);
    await expect(reopened.write([put("other", "x", idOf(1))])).rejects.toMatchObject({
      code: "write-id-reused",
    });
    // and after the log is compacted behind a snapshot: its id records keep the key hashes
    const snapLsn = await reopened.snapshot();
    await reopened.close();
    expect(readdirSync(dir).filter((n) => n.startsWith("log-"))).toHaveLength(1); // the active file only
    const fromSnap = await Shard.open(dir, "shard-1", o);
    expect(fromSnap.rememberedWrite(idOf(1))?.keyHash).toBe(keyHash32("k"));
    await expect(fromSnap.write([put("other", "x", idOf(1))])).rejects.toThrow(
      /already names a put of another key \(applied at LSN 1\)/,
    );
    expect(await fromSnap.write([put("k", "v", idOf(1))])).toEqual([{ lsn: 1, duplicate: true }]);
    await fromSnap.close();
    // a snapshot of an agent from before key hashes (SCSNAP01, records without them): its ids have
    // none, so a reuse of those is answered as a duplicate, as those agents did
    toLegacySnapshot(join(dir, snapshotFileName(snapLsn!)));
    const fromOld = await Shard.open(dir, "shard-1", o);
    expect(fromOld.failed).toBeUndefined();
    expect(fromOld.rememberedWrite(idOf(1))?.keyHash).toBe(0);
    expect(await fromOld.write([put("other", "x", idOf(1))])).toEqual([{ lsn: 1, duplicate: true }]);
    // (the operation is in the records: another one is still refused)
    await expect(fromOld.write([{ op: "delete", key: "k", writeId: idOf(1) }])).rejects.toThrow(
      /already names a put, not a delete \(applied at LSN 1\)/,
    );
    await fromOld.close();
  });

  it("recognises acknowledged ids after recovery from the log, and from a snapshot once the log is compacted", async () => {
    const o = opts();
    const { dir, shard } = await newShard(o);
    for (let i = 1; i <= 300; i++) await shard.write([put(`k${i % 10}`, `v${i}`, idOf(i))]);
    await shard.write([{ op: "delete", key: "k3", writeId: idOf(1000) }]);
    await shard.close();
    const fromLog = await Shard.open(dir, "shard-1", o);
    expect(fromLog.snapshotLsn).toBe(0);
    expect(await fromLog.write([put("k5", "v5", idOf(5))])).toEqual([{ lsn: 5, duplicate: true }]);
    expect(await fromLog.write([{ op: "delete", key: "k3", writeId: idOf(1000) }])).toEqual([
      { lsn: 301, existed: true, duplicate: true },
    ]);
    const snap = await fromLog.snapshot();
    expect(snap).toBe(301);
    await fromLog.write([put("after", "x", idOf(2000))]);
    await fromLog.close();
    // the snapshot deleted the log files it covers: ids 1…300 now live only in the snapshot
    expect(logEntries(dir).every((e) => e.lsn > 1)).toBe(true);
    const fromSnap = await Shard.open(dir, "shard-1", o);
    expect(fromSnap.snapshotLsn).toBe(301);
    expect(fromSnap.writeIds.size).toBe(302);
    expect(await fromSnap.write([put("k1", "v1", idOf(1))])).toEqual([{ lsn: 1, duplicate: true }]);
    expect(await fromSnap.write([put("after", "x", idOf(2000))])).toEqual([{ lsn: 302, duplicate: true }]);
    expect(fromSnap.lsn).toBe(302);
    await fromSnap.close();
  });

  it("gives a copy made from replicated entries the source's ids, byte for byte", async () => {
    const src = await newShard();
    await src.shard.write([
      put("a", "1", idOf(1)),
      put("b", "2"),
      { op: "delete", key: "a", writeId: idOf(2) },
    ]);
    await src.shard.close();
    const copied: ReplicatedEntry[] = logEntries(src.dir).map((e) => ({
      bytes: e.bytes,
      lsn: e.lsn,
      timestamp: e.timestamp,
      op: opOfEntry(e),
    }));
    const dst = await newShard(opts(), "receiving");
    expect(await dst.shard.appendReplicated(copied)).toBe(3);
    expect(dst.shard.rememberedWrite(idOf(1))).toEqual({ lsn: 1, op: "put", keyHash: keyHash32("a") });
    expect(dst.shard.rememberedWrite(idOf(2))).toEqual({
      lsn: 3,
      op: "delete",
      existed: true,
      keyHash: keyHash32("a"),
    });
    dst.shard.setMeta({ state: "owned" });
    expect(await dst.shard.write([put("a", "1", idOf(1))])).toEqual([{ lsn: 1, duplicate: true }]);
    expect(dst.shard.lsn).toBe(3);
    await dst.shard.close();
    expect(readdirSync(dst.dir).some((f) => f.startsWith("log-"))).toBe(true);
    expect(Buffer.concat(logEntries(dst.dir).map((e) => e.bytes))).toEqual(
      Buffer.concat(copied.map((e) => e.bytes)),
    );
  });

  it("appends imported entries whose ids it knows (a split merged back), and remembers imported id records durably", async () => {
    const o = opts();
    const { dir, shard } = await newShard(o);
    await shard.write([put("k", "mine", idOf(1))]);
    // the same write comes back from a piece it was split into, after this shard purged the key
    await shard.write([{ op: "delete", key: "k" }]);
    const other = new WriteIdTable(10);
    other.add(idOf(7), 99, "delete", true);
    const r = await shard.appendImported([
      put("k", "mine", idOf(1)),
      { op: "write-ids", records: other.encode() },
    ]);
    expect(r).toEqual([{ lsn: 3 }, { lsn: 4 }]);
    expect(shard.get("k")?.value.toString()).toBe("mine");
    expect(shard.rememberedWrite(idOf(1))).toEqual({ lsn: 1, op: "put", keyHash: keyHash32("k") });
    expect(shard.rememberedWrite(idOf(7))).toEqual({ lsn: 4, op: "delete", existed: true, keyHash: 0 });
    await shard.close();
    // after a restart (the log replayed), then after a snapshot compacted the log
    const again = await Shard.open(dir, "shard-1", o);
    expect(await again.write([{ op: "delete", key: "k", writeId: idOf(7) }])).toEqual([
      { lsn: 4, existed: true, duplicate: true },
    ]);
    expect(await again.snapshot()).toBe(4);
    await again.close();
    // the snapshot holds them, at this shard's LSN: recovery, a move and a later export read them there
    const inSnap = new WriteIdTable(10);
    await readSnapshotWriteIds(join(dir, snapshotFileName(4)), (rec) => inSnap.addEncoded(rec));
    expect(inSnap.get(idOf(7))).toEqual({ lsn: 4, op: "delete", existed: true, keyHash: 0 });
    const fromSnap = await Shard.open(dir, "shard-1", o);
    expect(fromSnap.rememberedWrite(idOf(7))).toEqual({ lsn: 4, op: "delete", existed: true, keyHash: 0 });
    expect(fromSnap.get("k")?.value.toString()).toBe("mine");
    await fromSnap.close();
  });

  it("keeps only the configured number of ids (a retry older than that is appended again)", async () => {
    const { shard } = await newShard(opts({ writeIdCapacity: 4 }));
    for (let i = 1; i <= 6; i++) await shard.write([put("k", `v${i}`, idOf(i))]);
    expect(shard.writeIds.size).toBe(4);
    expect(await shard.write([put("k", "v6", idOf(6))])).toEqual([{ lsn: 6, duplicate: true }]);
    expect(await shard.write([put("k", "v1", idOf(1))])).toEqual([{ lsn: 7 }]);
    await shard.close();
  });
});
