import { describe, expect, it } from "vitest";
import { encodeEntry, type LogEntry } from "../../../src/agent/log-format.js";
import { scanLog } from "../../../src/agent/scan.js";

function log(n: number, first = 1): { buf: Buffer; ends: number[] } {
  const parts: Buffer[] = [];
  const ends: number[] = [];
  let off = 0;
  for (let i = 0; i < n; i++) {
    const b = encodeEntry({
      lsn: first + i,
      timestamp: 1,
      migrationTimestamp: 0,
      op: "put",
      shardId: "s",
      key: `k${i}`,
      value: Buffer.alloc(10 + i, i),
    });
    parts.push(b);
    off += b.length;
    ends.push(off);
  }
  return { buf: Buffer.concat(parts), ends };
}

const collect = (buf: Buffer, prev = 0) => {
  const seen: LogEntry[] = [];
  const r = scanLog(buf, prev, (e) => seen.push(e));
  return { r, seen };
};

describe("scanLog (recovery)", () => {
  it("reads a clean log to its end", () => {
    const { buf } = log(5);
    const { r, seen } = collect(buf);
    expect(r).toEqual({ validEnd: buf.length, lastLsn: 5, entries: 5 });
    expect(seen.map((e) => e.lsn)).toEqual([1, 2, 3, 4, 5]);
  });

  it("treats a cut anywhere in the last entry as a torn tail ending at the previous entry", () => {
    const { buf, ends } = log(4);
    for (let cut = ends[2] + 1; cut < ends[3]; cut++) {
      const { r, seen } = collect(buf.subarray(0, cut));
      expect(r.problem?.kind, `cut at ${cut}`).toBe("torn-tail");
      expect(r.validEnd).toBe(ends[2]);
      expect(r.lastLsn).toBe(3);
      expect(seen).toHaveLength(3);
      if (r.problem?.kind === "torn-tail") expect(r.problem.droppedBytes).toBe(cut - ends[2]);
    }
  });

  it("treats a zero-filled tail (zeros written ahead, or a size extended before its data landed) as torn, all zero", () => {
    const { buf, ends } = log(3);
    const { r } = collect(Buffer.concat([buf, Buffer.alloc(4096)]));
    expect(r.problem).toMatchObject({ kind: "torn-tail", allZero: true, droppedBytes: 4096 });
    expect(r.validEnd).toBe(ends[2]);
    // part of an entry before the zeros: a torn write, not only zeros
    const cut = buf.subarray(0, ends[2] - 5);
    const torn = collect(Buffer.concat([cut, Buffer.alloc(4096)])).r;
    expect(torn.problem).toMatchObject({ kind: "torn-tail", allZero: false });
    expect(torn.validEnd).toBe(ends[1]);
  });

  it("detects a flipped byte in the middle as corruption, pointing at the next valid entry", () => {
    const { buf, ends } = log(6);
    for (const at of [ends[1] + 3, ends[1] + 20, ends[2] - 1]) {
      const bad = Buffer.from(buf);
      bad[at] ^= 0xff;
      const { r } = collect(bad);
      expect(r.problem?.kind, `flip at ${at}`).toBe("corrupt");
      expect(r.validEnd).toBe(ends[1]);
      if (r.problem?.kind === "corrupt") expect(r.problem.validEntryAt).toBe(ends[2]);
    }
  });

  it("treats a flipped byte in the last entry as a torn tail (nothing valid follows it)", () => {
    const { buf, ends } = log(3);
    const bad = Buffer.from(buf);
    bad[ends[1] + 45] ^= 0x01;
    expect(collect(bad).r.problem?.kind).toBe("torn-tail");
  });

  it("refuses an LSN gap or a repeated entry as corruption", () => {
    const a = log(3).buf;
    const b = log(2, 5).buf; // 5, 6: LSN 4 is missing
    expect(collect(Buffer.concat([a, b])).r.problem).toMatchObject({
      kind: "corrupt",
      why: "lsn 5 does not follow 3",
    });
    // the same when nothing follows the entry after the gap (it was once taken for a torn tail)
    expect(collect(Buffer.concat([a, log(1, 5).buf])).r.problem).toMatchObject({
      kind: "corrupt",
      validEntryAt: a.length,
    });
    const { buf } = log(2, 1);
    const dup = Buffer.concat([buf, buf]);
    expect(collect(dup).r.problem?.kind).toBe("torn-tail"); // a replayed 1, 2 is never above 2: no valid newer entry
    expect(collect(dup).r.lastLsn).toBe(2);
  });

  it("checks the first LSN against the previous file's last", () => {
    const { buf } = log(2, 10);
    expect(collect(buf, 9).r.lastLsn).toBe(11);
    expect(collect(buf, 5).r.problem?.kind).toBe("corrupt");
  });
});
