/**
 * Streaming snapshots (issue 8, snapshot transfer): the decoder gives the
 * same records whatever the chunking, and refuses a flipped byte, a cut file
 * and trailing bytes; a shard installs a snapshot in place of its copy; the
 * log read by the copy checksum is read in blocks, not whole files.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirs } from "../../helpers/temp-dirs.js";
import { copyChecksum, scanEntries } from "../../../src/agent/replication.js";
import { Shard, type ShardOptions } from "../../../src/agent/shard.js";
import {
  decodeSnapshot,
  SnapshotCorrupt,
  SnapshotDecoder,
  snapshotFileChecksum,
  snapshotRecords,
  writeSnapshot,
  type StateValue,
} from "../../../src/agent/snapshot.js";

const tmp = tempDirs("shardctl-snapstream-");

function opts(): ShardOptions {
  return { maxFileBytes: 64 * 1024, snapshotBytes: 1 << 30, warn: () => {} };
}

async function sampleSnapshot(records: number, valueBytes: (i: number) => number): Promise<Buffer> {
  const dir = tmp();
  const entries: [string, StateValue][] = [];
  for (let i = 0; i < records; i++)
    entries.push([
      `key-${i}`,
      { value: Buffer.alloc(valueBytes(i), i % 251), lsn: i + 1, timestamp: 1000 + i },
    ]);
  const file = await writeSnapshot(dir, "shard-7", records, entries);
  return readFileSync(file);
}

const sizeOf = (i: number) => (i % 7 === 0 ? 70_000 : 10);

function decodeChunked(buf: Buffer, sizes: () => number): { keys: string[]; lsn: number } {
  const keys: string[] = [];
  const d = new SnapshotDecoder((k, v) => {
    keys.push(k);
    expect(v.value.length).toBe(sizeOf(Number(k.slice(4))));
    expect(v.value[0]).toBe(Number(k.slice(4)) % 251);
  });
  for (let off = 0; off < buf.length;) {
    const n = Math.max(1, Math.min(buf.length - off, sizes()));
    d.push(buf.subarray(off, off + n));
    off += n;
  }
  return { keys, lsn: d.end().lsn };
}

describe("SnapshotDecoder", () => {
  it("decodes the same records as the whole-buffer decoder, whatever the chunk sizes", async () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (const [records, sizes] of [
      [15, () => 1],
      [15, () => 3],
      [300, () => 4096],
      [300, () => 1 << 20],
      [300, () => 1 + Math.floor(rnd() * 100_000)],
    ] as const) {
      const buf = await sampleSnapshot(records, sizeOf);
      const whole: string[] = [];
      decodeSnapshot(buf, (k) => whole.push(k));
      const r = decodeChunked(buf, sizes);
      expect(r.keys).toEqual(whole);
      expect(r.keys).toHaveLength(records);
      expect(r.lsn).toBe(records);
    }
  });

  it("refuses a flipped byte, a cut file and trailing bytes", async () => {
    const buf = await sampleSnapshot(50, sizeOf);
    const flipped = Buffer.from(buf);
    flipped[flipped.length - 100] ^= 1;
    expect(() => decodeChunked(flipped, () => 1000)).toThrow(/checksum/);
    expect(() => decodeChunked(buf.subarray(0, buf.length - 1), () => 1000)).toThrow(/checksum|short|cut/);
    expect(() => decodeChunked(buf.subarray(0, 5000), () => 1000)).toThrow();
    expect(() => decodeChunked(Buffer.concat([buf, Buffer.from("x")]), () => 1000)).toThrow();
    const garbage = Buffer.alloc(64, 7);
    expect(() => new SnapshotDecoder(() => {}).push(garbage)).toThrow(/magic/);
  });

  it("gives the file checksum from the trailer, equal to the decoder's", async () => {
    const dir = tmp();
    const file = await writeSnapshot(dir, "shard-1", 2, [
      ["a", { value: Buffer.from("1"), lsn: 1, timestamp: 1 }],
      ["b", { value: Buffer.from("2"), lsn: 2, timestamp: 2 }],
    ]);
    const d = new SnapshotDecoder(() => {});
    const buf = readFileSync(file);
    d.push(buf);
    d.end();
    expect(await snapshotFileChecksum(file)).toBe(`${d.bodyCrc.toString(16).padStart(8, "0")}-${buf.length}`);
  });
});

describe("writeSnapshot", () => {
  it("writes the state given as two arrays (keys, values) as it writes the same [key, value] pairs", async () => {
    const pairs: [string, StateValue][] = Array.from({ length: 300 }, (_, i) => [
      `k${i}`,
      { value: Buffer.alloc(i % 5, i), lsn: i + 1, timestamp: 5000 + i },
    ]);
    const columns = { keys: pairs.map((p) => p[0]), values: pairs.map((p) => p[1]) };
    const read = async (state: typeof columns | typeof pairs) => {
      const got: [string, StateValue][] = [];
      const file = await writeSnapshot(tmp(), "shard-2", 300, state);
      const header = decodeSnapshot(readFileSync(file), (k, v) => got.push([k, v]));
      return { header, got };
    };
    const a = await read(pairs);
    const b = await read(columns);
    expect(b.header.count).toBe(300);
    expect(b.got).toEqual(a.got);
    expect(b.got[7]).toEqual(pairs[7]);
  });

  it("refuses keys and values that do not pair up, and writes no file", async () => {
    const dir = tmp();
    const v: StateValue = { value: Buffer.from("x"), lsn: 1, timestamp: 1 };
    await expect(writeSnapshot(dir, "shard-2", 1, { keys: ["a", "b"], values: [v] })).rejects.toThrow(
      /2 keys was given 1 values/,
    );
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe("snapshotRecords", () => {
  it("gives the records one at a time, as the decoder does, and the header at the end", async () => {
    const buf = await sampleSnapshot(60, sizeOf);
    const file = join(tmp(), "s.snap");
    writeFileSync(file, buf);
    const want: string[] = [];
    decodeSnapshot(buf, (k) => want.push(k));
    const got: string[] = [];
    const records = snapshotRecords(file);
    let r = await records.next();
    for (; !r.done; r = await records.next()) {
      if ("key" in r.value) {
        got.push(r.value.key);
        expect(r.value.value.value.length).toBe(sizeOf(Number(r.value.key.slice(4))));
      }
    }
    expect(got).toEqual(want);
    expect(r.value.count).toBe(60);
  });

  it("checks the whole file before the first record: a corrupt or cut file gives none", async () => {
    const buf = await sampleSnapshot(60, sizeOf);
    for (const [name, bytes] of [
      ["flipped", Buffer.from(buf).fill(buf[buf.length - 100] ^ 1, buf.length - 100, buf.length - 99)],
      ["cut", buf.subarray(0, buf.length - 50)],
      ["tiny", buf.subarray(0, 10)],
    ] as const) {
      const file = join(tmp(), `${name}.snap`);
      writeFileSync(file, bytes);
      const got: unknown[] = [];
      await expect(
        (async () => {
          for await (const rec of snapshotRecords(file)) got.push(rec);
        })(),
      ).rejects.toThrow(/checksum mismatch|too short/);
      expect(got, name).toEqual([]);
    }
  });
});

describe("a decoder whose caller verified the checksum (snapshotRecords)", () => {
  it("does not sum the bytes again, and still checks their structure", async () => {
    const buf = await sampleSnapshot(60, sizeOf);
    const decode = (bytes: Buffer) => {
      const keys: string[] = [];
      const d = new SnapshotDecoder((k) => keys.push(k), undefined, true);
      for (let off = 0; off < bytes.length; off += 777) d.push(bytes.subarray(off, off + 777));
      return { count: d.end().count, keys };
    };
    expect(decode(buf)).toEqual({ count: 60, keys: Array.from({ length: 60 }, (_, i) => `key-${i}`) });
    // the trailer is not compared: the caller did that against the same bytes
    const otherTrailer = Buffer.from(buf);
    otherTrailer[buf.length - 1] ^= 1;
    expect(decode(otherTrailer).count).toBe(60);
    // the structure is: a record cut short, bytes after the last record, a bad magic
    const cut = Buffer.concat([buf.subarray(0, buf.length - 30), buf.subarray(buf.length - 4)]);
    const longer = Buffer.concat([
      buf.subarray(0, buf.length - 4),
      Buffer.alloc(9),
      buf.subarray(buf.length - 4),
    ]);
    const magic = Buffer.concat([Buffer.from("SCSNAP99"), buf.subarray(8)]);
    for (const [name, bytes] of [
      ["cut", cut],
      ["longer", longer],
      ["magic", magic],
    ] as const)
      expect(() => decode(bytes), name).toThrow(SnapshotCorrupt);
  });
});

describe("installing a snapshot into a receiving copy", () => {
  it("replaces the copy, continues the log after it and recovers the same state", async () => {
    const root = tmp();
    // Given: a source shard with a snapshot at LSN 40 and 10 entries after it
    const src = await Shard.create(
      join(root, "src"),
      "shard-1",
      { epoch: 3, state: "owned", migrationTimestamp: 0 },
      opts(),
    );
    for (let i = 0; i < 40; i++)
      await src.write([{ op: "put", key: `k${i % 13}`, value: Buffer.from(`v${i}`) }]);
    expect(await src.snapshot()).toBe(40);
    for (let i = 40; i < 50; i++)
      await src.write([{ op: "put", key: `k${i % 13}`, value: Buffer.from(`v${i}`) }]);
    // And: a receiving target that already copied a few entries of an older base
    const dst = await Shard.create(
      join(root, "dst"),
      "shard-1",
      { epoch: 3, state: "receiving", migrationTimestamp: 0 },
      opts(),
    );
    await dst.write([{ op: "put", key: "stale", value: Buffer.from("x") }]);
    // When: the snapshot file is installed, then the entries after it are appended
    const snapName = readdirSync(join(root, "src")).find((n) => n.startsWith("snapshot-"))!;
    const tmpFile = join(root, "dst", "incoming-snapshot.tmp");
    writeFileSync(tmpFile, readFileSync(join(root, "src", snapName)));
    const state = new Map<string, StateValue>();
    const d = new SnapshotDecoder((k, v) => state.set(k, v));
    d.push(readFileSync(tmpFile));
    d.end();
    await dst.installSnapshot(tmpFile, 40, state);
    expect(dst.lsn).toBe(40);
    expect(dst.get("stale")).toBeUndefined();
    const tail: { lsn: number; bytes: Buffer }[] = [];
    await scanEntries(src, 41, 50, (lsn, b) => void tail.push({ lsn, bytes: Buffer.from(b) }));
    await dst.appendReplicated(
      tail.map((t, i) => ({
        bytes: t.bytes,
        lsn: t.lsn,
        timestamp: 1,
        op: { op: "put" as const, key: `k${(40 + i) % 13}`, value: Buffer.from(`v${40 + i}`) },
      })),
    );
    // Then: both sides compute the same copy checksum from their own files
    expect(await copyChecksum(dst, 50, dst.snapshotLsn)).toBe(await copyChecksum(src, 50, 40));
    expect(await copyChecksum(dst, 50, 40)).toMatch(/^[0-9a-f]{8}-\d+@40\+[0-9a-f]{8}-\d+$/);
    for (let i = 0; i < 13; i++) expect(dst.get(`k${i}`)?.value).toEqual(src.get(`k${i}`)?.value);
    await dst.close();
    const again = await Shard.open(join(root, "dst"), "shard-1", opts());
    expect(again.failed).toBeUndefined();
    expect(again.lsn).toBe(50);
    expect(again.snapshotLsn).toBe(40);
    for (let i = 0; i < 13; i++) expect(again.get(`k${i}`)?.value).toEqual(src.get(`k${i}`)?.value);
    await again.close();
    await src.close();
  });

  it("reads a log of many files in blocks: an entry at any LSN is found, across files", async () => {
    const root = tmp();
    const s = await Shard.create(
      join(root, "s"),
      "shard-1",
      { epoch: 1, state: "owned", migrationTimestamp: 0 },
      opts(),
    );
    for (let i = 0; i < 300; i++) await s.write([{ op: "put", key: `k${i}`, value: Buffer.alloc(1000, i) }]);
    expect(s.logFiles).toBeGreaterThan(3);
    const seen: number[] = [];
    await scanEntries(s, 1, 300, (lsn) => void seen.push(lsn));
    expect(seen).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    const mid: number[] = [];
    await scanEntries(s, 137, 212, (lsn) => void mid.push(lsn));
    expect(mid[0]).toBe(137);
    expect(mid.at(-1)).toBe(212);
    // a scan stopped by its caller (a full chunk) ends at the last entry it delivered
    let taken = 0;
    expect(await scanEntries(s, 10, 300, () => ++taken < 5)).toBe(14);
    // an entry larger than a read block (4 MiB) is read whole
    await s.write([{ op: "put", key: "big", value: Buffer.alloc(5 * 1024 * 1024, 7) }]);
    await s.write([{ op: "put", key: "after", value: Buffer.from("x") }]);
    const sizes: number[] = [];
    expect(await scanEntries(s, 299, 302, (_l, b) => void sizes.push(b.length))).toBe(302);
    expect(sizes[2]).toBeGreaterThan(5 * 1024 * 1024);
    expect(sizes[3]).toBeLessThan(100);
    // the running checksum equals a fresh scan's
    const a = await copyChecksum(s, 150);
    const b = await copyChecksum(s, 302);
    expect(a).not.toBe(b);
    expect(await copyChecksum(s, 302)).toBe(b);
    await s.close();
  });
});
