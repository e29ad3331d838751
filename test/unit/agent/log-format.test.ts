import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { crc32 } from "node:zlib";
import {
  decodeEntry,
  encodeEntry,
  OP_DELETE,
  OP_DELETE_WITH_ID,
  OP_PUT,
  OP_PUT_WITH_ID,
  OP_LEGACY_WRITE_IDS,
  OP_WRITE_IDS,
  WRITE_ID_BYTES,
  LEGACY_WRITE_ID_RECORD_BYTES,
  WRITE_ID_RECORD_BYTES,
  type LogEntry,
} from "../../../src/agent/log-format.js";
import { scanLog } from "../../../src/agent/scan.js";

const entry = (over: Partial<LogEntry> = {}): LogEntry => ({
  lsn: 7,
  timestamp: 1_700_000_000_123.5,
  migrationTimestamp: 42,
  op: "put",
  shardId: "shard-3",
  key: "user:42",
  value: Buffer.from("hello"),
  ...over,
});

describe("log entry format", () => {
  it("round-trips every field", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.double({ noNaN: true }),
        fc.double({ noNaN: true }),
        fc.constantFrom<"put" | "delete">("put", "delete"),
        fc.string({ minLength: 1, maxLength: 40 }).filter((s) => s.isWellFormed()),
        fc.uint8Array({ maxLength: 300 }),
        (lsn, ts, mts, op, key, value) => {
          const e = entry({
            lsn,
            timestamp: ts,
            migrationTimestamp: mts,
            op,
            key,
            value: Buffer.from(value),
          });
          const buf = encodeEntry(e);
          const r = decodeEntry(buf, 0);
          expect(r.kind).toBe("entry");
          if (r.kind !== "entry") return;
          expect(r.length).toBe(buf.length);
          expect(r.entry).toEqual({ ...e, value: op === "put" ? Buffer.from(value) : Buffer.alloc(0) });
        },
      ),
    );
  });

  it.each([
    ["U+FEFF alone", "\uFEFF"],
    ["U+FEFF then text", "\uFEFFbom"],
    ["two U+FEFF then text", "\uFEFF\uFEFFtwo"],
    ["text then U+FEFF", "a\uFEFF"],
  ])("round-trips the key %s: a leading U+FEFF is kept, not taken for a byte-order mark", (_, key) => {
    const r = decodeEntry(encodeEntry(entry({ key })), 0);
    expect(r.kind === "entry" && r.entry.key).toBe(key);
  });

  it("decodes an entry at an offset inside a larger buffer", () => {
    const a = encodeEntry(entry({ lsn: 1 }));
    const b = encodeEntry(entry({ lsn: 2, key: "second" }));
    const r = decodeEntry(Buffer.concat([a, b]), a.length);
    expect(r.kind === "entry" && r.entry.key).toBe("second");
  });

  it("reports a cut-short entry as short, at every cut point", () => {
    const buf = encodeEntry(entry());
    for (let cut = 1; cut < buf.length; cut++) {
      expect(decodeEntry(buf.subarray(0, cut), 0).kind, `cut at ${cut}`).toBe("short");
    }
  });

  it("reports any single flipped bit as invalid (never as a different entry)", () => {
    const buf = encodeEntry(entry());
    for (let i = 0; i < buf.length; i++) {
      for (const bit of [0x01, 0x80]) {
        const bad = Buffer.from(buf);
        bad[i] ^= bit;
        const r = decodeEntry(bad, 0);
        expect(r.kind, `byte ${i} bit ${bit}`).not.toBe("entry");
      }
    }
  });

  it("refuses an unknown op and lengths that do not add up", () => {
    const buf = encodeEntry(entry());
    const op = Buffer.from(buf);
    op[32] = 9;
    expect(decodeEntry(op, 0)).toMatchObject({ kind: "invalid", why: "unknown op 9" });
    const len = Buffer.from(buf);
    len.writeUInt16LE(3, 34);
    expect(decodeEntry(len, 0)).toMatchObject({ kind: "invalid", why: "lengths do not add up" });
  });
});

describe("log entries with a write id (ops 3 and 4)", () => {
  const id = Buffer.from("00112233445566778899aabbccddeeff", "hex");

  it("round-trips a put and a delete with a write id, and encodes them with the new ops", () => {
    for (const op of ["put", "delete"] as const) {
      const e = entry({ op, writeId: id, value: op === "put" ? Buffer.from("v") : Buffer.alloc(0) });
      const buf = encodeEntry(e);
      expect(buf[32]).toBe(op === "put" ? OP_PUT_WITH_ID : OP_DELETE_WITH_ID);
      expect(buf.length).toBe(encodeEntry({ ...e, writeId: undefined }).length + WRITE_ID_BYTES);
      const r = decodeEntry(buf, 0);
      expect(r.kind).toBe("entry");
      if (r.kind === "entry") {
        expect(r.entry).toEqual(e);
        expect(r.length).toBe(buf.length);
      }
    }
  });

  it("still decodes entries without an id (ops 1 and 2, the format before write ids) byte for byte", () => {
    // an entry as the agent wrote it before write ids existed: built by hand, not by encodeEntry
    const shard = Buffer.from("shard-3");
    const key = Buffer.from("user:42");
    const value = Buffer.from("hello");
    const old = Buffer.alloc(40 + shard.length + key.length + value.length);
    old.writeUInt32LE(old.length - 8, 0);
    old.writeUInt32LE(7, 8);
    old.writeDoubleLE(1_700_000_000_123.5, 16);
    old.writeDoubleLE(42, 24);
    old[32] = OP_PUT;
    old[33] = shard.length;
    old.writeUInt16LE(key.length, 34);
    old.writeUInt32LE(value.length, 36);
    Buffer.concat([shard, key, value]).copy(old, 40);
    old.writeUInt32LE(crc32(old.subarray(8)) >>> 0, 4);
    const r = decodeEntry(old, 0);
    expect(r).toMatchObject({ kind: "entry", entry: entry() });
    expect(r.kind === "entry" && "writeId" in r.entry).toBe(false);
    // and encodeEntry without an id still writes exactly these bytes
    expect(encodeEntry(entry())).toEqual(old);
    const del = encodeEntry(entry({ op: "delete" }));
    expect(del[32]).toBe(OP_DELETE);
    expect(decodeEntry(del, 0)).toMatchObject({ kind: "entry", entry: { op: "delete" } });
  });

  it("refuses an id entry whose id is not 16 bytes, even with a checksum that matches", () => {
    const good = encodeEntry(entry({ writeId: id }));
    for (const idBytes of [0, 8, 15, 17, 32]) {
      // rebuild the entry with an id of the wrong length and a correct CRC: only the lengths can catch it
      const body = Buffer.concat([
        good.subarray(8, 40),
        Buffer.alloc(idBytes, 0xab),
        good.subarray(40 + WRITE_ID_BYTES),
      ]);
      const bad = Buffer.alloc(8 + body.length);
      bad.writeUInt32LE(body.length, 0);
      bad.writeUInt32LE(crc32(body) >>> 0, 4);
      body.copy(bad, 8);
      expect(decodeEntry(bad, 0), `id of ${idBytes} bytes`).toMatchObject({
        kind: "invalid",
        why: "lengths do not add up",
      });
    }
    expect(() => encodeEntry(entry({ writeId: Buffer.alloc(15) }))).toThrow(/16 bytes/);
  });

  it("reports any single flipped bit of an id entry as invalid, and an op byte turned 1↔3 or 2↔4 too", () => {
    const buf = encodeEntry(entry({ writeId: id }));
    for (let i = 0; i < buf.length; i++) {
      for (const bit of [0x01, 0x02, 0x80]) {
        const bad = Buffer.from(buf);
        bad[i] ^= bit;
        expect(decodeEntry(bad, 0).kind, `byte ${i} bit ${bit}`).not.toBe("entry");
      }
    }
    const old = Buffer.from(encodeEntry(entry()));
    old[32] = OP_PUT_WITH_ID;
    expect(decodeEntry(old, 0)).toMatchObject({ kind: "invalid", why: "lengths do not add up" });
    const op7 = Buffer.from(buf);
    op7[32] = 7;
    expect(decodeEntry(op7, 0)).toMatchObject({ kind: "invalid", why: "unknown op 7" });
  });

  it("is found by recovery's scan in a mix of old and new entries, and a torn id entry is a torn tail", () => {
    const a = encodeEntry(entry({ lsn: 1 }));
    const b = encodeEntry(entry({ lsn: 2, writeId: id }));
    const c = encodeEntry(entry({ lsn: 3, op: "delete", writeId: Buffer.alloc(16, 7) }));
    const seen: (string | undefined)[] = [];
    const r = scanLog(Buffer.concat([a, b, c]), 0, (e) => seen.push(e.writeId?.toString("hex")));
    expect(r).toMatchObject({ lastLsn: 3, entries: 3 });
    expect(r.problem).toBeUndefined();
    expect(seen).toEqual([undefined, id.toString("hex"), "07".repeat(16)]);
    // a flipped byte in b, followed by the valid c: corruption in the middle, found by findValidEntry
    const mid = Buffer.concat([a, b, c]);
    mid[a.length + 45] ^= 0xff;
    expect(scanLog(mid, 0, () => {}).problem).toMatchObject({
      kind: "corrupt",
      validEntryAt: a.length + b.length,
    });
    const torn = scanLog(Buffer.concat([a, b.subarray(0, 50)]), 0, () => {});
    expect(torn.problem).toMatchObject({ kind: "torn-tail", offset: a.length });
  });
});

/**
 * `n` well-formed write id records: ids 1…n, LSN 10 + i, outcomes 0, 1, 2 in turn, key hash
 * 0xabc00000 + i (0, "not known", for every fourth); `legacy`: without the key hash, as op 5 holds them.
 */
function records(n: number, legacy = false): Buffer {
  const size = legacy ? LEGACY_WRITE_ID_RECORD_BYTES : WRITE_ID_RECORD_BYTES;
  const out = Buffer.alloc(n * size);
  for (let i = 0; i < n; i++) {
    const off = i * size;
    out.writeUInt32LE(i + 1, off);
    out.writeUInt32LE(10 + i, off + 16);
    out[off + 24] = i % 3;
    if (!legacy) out.writeUInt32LE(i % 4 ? 0xabc00000 + i : 0, off + 25);
  }
  return out;
}

/** `e` encoded, then its body changed by `edit` and its checksum made right again: only the format checks can tell. */
function forged(e: LogEntry, edit: (body: Buffer) => Buffer): Buffer {
  const body = edit(Buffer.from(encodeEntry(e).subarray(8)));
  const out = Buffer.alloc(8 + body.length);
  out.writeUInt32LE(body.length, 0);
  out.writeUInt32LE(crc32(body) >>> 0, 4);
  body.copy(out, 8);
  return out;
}

describe("log entry format: write id records (op 6)", () => {
  const ids = (n: number) => entry({ op: "write-ids", key: "", value: records(n) });

  it("round-trips, with no key and the records as its value", () => {
    for (const n of [1, 2, 4096]) {
      const buf = encodeEntry(ids(n));
      expect(buf[32]).toBe(OP_WRITE_IDS);
      expect(buf.readUInt16LE(34)).toBe(0);
      const r = decodeEntry(buf, 0);
      expect(r).toMatchObject({ kind: "entry", length: buf.length, entry: ids(n) });
    }
  });

  it("cannot be written with a key, a write id or records that are not whole and well-formed", () => {
    expect(() => encodeEntry(ids(1))).not.toThrow();
    expect(() => encodeEntry({ ...ids(1), key: "k" })).toThrow(/no key/);
    expect(() => encodeEntry({ ...ids(1), writeId: Buffer.alloc(WRITE_ID_BYTES) })).toThrow(/no write id/);
    expect(() => encodeEntry({ ...ids(1), value: Buffer.alloc(0) })).toThrow(/29 bytes each/);
    expect(() => encodeEntry({ ...ids(1), value: records(2).subarray(0, 30) })).toThrow(/29 bytes each/);
    // records without key hashes are read from old logs, never written
    expect(() => encodeEntry({ ...ids(1), value: records(1, true) })).toThrow(/29 bytes each/);
  });

  it("decodes as invalid when its key, record length, LSN or outcome is wrong, even with a right checksum", () => {
    const withLength = (n: number) => (b: Buffer) => {
      const shardLen = b[25];
      const v = Buffer.concat([b.subarray(0, 32 + shardLen), records(2).subarray(0, n)]);
      v.writeUInt32LE(n, 28);
      return v;
    };
    for (const n of [0, 24, 25, 28, 30, 57])
      expect(decodeEntry(forged(ids(1), withLength(n)), 0), `${n} bytes`).toMatchObject({ kind: "invalid" });
    const at = (rec: number, off: number, v: number) => (b: Buffer) => {
      b[32 + b[25] + rec * WRITE_ID_RECORD_BYTES + off] = v;
      return b;
    };
    expect(decodeEntry(forged(ids(3), at(1, 24, 3)), 0)).toMatchObject({
      kind: "invalid",
      why: "write id record 1 is malformed",
    });
    const zeroLsn = (b: Buffer) => {
      b.fill(0, 32 + b[25] + 16, 32 + b[25] + 24);
      return b;
    };
    expect(decodeEntry(forged(ids(1), zeroLsn), 0)).toMatchObject({ kind: "invalid" });
    // a key where none may be: the lengths are made to add up, the op byte says 6 (or 5)
    for (const op of [OP_WRITE_IDS, OP_LEGACY_WRITE_IDS]) {
      const put = encodeEntry(entry({ value: records(1, op === OP_LEGACY_WRITE_IDS) }));
      const keyed = Buffer.from(put);
      keyed[32] = op;
      keyed.writeUInt32LE(crc32(keyed.subarray(8)) >>> 0, 4);
      expect(decodeEntry(keyed, 0)).toMatchObject({ kind: "invalid", why: "write id records with a key" });
    }
  });

  it("reads op 5, the records of agents from before key hashes, as records with the key hash 0", () => {
    const asOp5 = (recs: Buffer) => (b: Buffer) => {
      b[24] = OP_LEGACY_WRITE_IDS;
      const v = Buffer.concat([b.subarray(0, 32 + b[25]), recs]);
      v.writeUInt32LE(recs.length, 28);
      return v;
    };
    const old = forged({ ...ids(3), lsn: 2 }, asOp5(records(3, true)));
    const d = decodeEntry(old, 0);
    expect(d).toMatchObject({ kind: "entry", length: old.length, entry: { op: "write-ids", key: "" } });
    const value = (d as { entry: LogEntry }).entry.value;
    const want = records(3);
    for (let i = 0; i < 3; i++) want.writeUInt32LE(0, i * WRITE_ID_RECORD_BYTES + 25);
    expect(value).toEqual(want);
    // written again (an import, a re-encode): op 6, the widened records
    expect(encodeEntry((d as { entry: LogEntry }).entry)[32]).toBe(OP_WRITE_IDS);
    // op 5 with records of today's size, cut or malformed ones: not an entry
    for (const recs of [
      records(1),
      records(2, true).subarray(0, 30),
      Buffer.alloc(LEGACY_WRITE_ID_RECORD_BYTES),
    ])
      expect(decodeEntry(forged(ids(1), asOp5(recs)), 0)).toMatchObject({ kind: "invalid" });
    // found by recovery's scan among today's entries
    const seen: string[] = [];
    const r = scanLog(
      Buffer.concat([encodeEntry(entry({ lsn: 1 })), old, encodeEntry({ ...ids(1), lsn: 3 })]),
      0,
      (e) => seen.push(`${e.op}:${e.value.length}`),
    );
    expect(r.problem).toBeUndefined();
    expect(seen).toEqual([
      "put:5",
      `write-ids:${3 * WRITE_ID_RECORD_BYTES}`,
      `write-ids:${WRITE_ID_RECORD_BYTES}`,
    ]);
  });

  it("is replayed by recovery's scan among puts and deletes", () => {
    const a = encodeEntry(entry({ lsn: 1 }));
    const b = encodeEntry({ ...ids(2), lsn: 2 });
    const c = encodeEntry(entry({ lsn: 3, op: "delete" }));
    const seen: string[] = [];
    const r = scanLog(Buffer.concat([a, b, c]), 0, (e) => seen.push(e.op));
    expect(r).toMatchObject({ lastLsn: 3, entries: 3 });
    expect(seen).toEqual(["put", "write-ids", "delete"]);
  });
});
