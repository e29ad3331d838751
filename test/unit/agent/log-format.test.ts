import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeEntry, encodeEntry, type LogEntry } from "../../../src/agent/log-format.js";

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
