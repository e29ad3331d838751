import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AccessWindows,
  OP_READ,
  OP_WRITE,
  parseAccessType,
  type SegmentWindows,
} from "../../../src/engine/access-windows.js";
import { fnv1a64Bytes } from "../../../src/engine/hash.js";
import { runAtOnce } from "../../../src/slices.js";
import { UsageError } from "../../../src/errors.js";

const T0 = Date.UTC(2026, 0, 1);
const zones = ["a", "b", "c"];

function windows(segmentCount = 100_000) {
  return new AccessWindows({ segmentCount, zones });
}

describe("AccessWindows", () => {
  it("states its size: 2,384 bytes per segment with the default levels and 3 zones", () => {
    const w = windows();
    expect(w.bytesPerSegment).toBe(118 * 5 * 4 + 3 * 8);
    expect((w.bytesPerSegment * 100_000) / 2 ** 20).toBeLessThan(256);
  });

  it("allocates only the chunks of segments it has seen", () => {
    const w = windows();
    expect(w.allocatedBytes).toBe(0);
    w.record(5, false, 0, T0);
    expect(w.allocatedBytes).toBe(1024 * w.bytesPerSegment);
  });

  it("keeps 100,000 touched segments under 256 MB", () => {
    const w = windows();
    for (let s = 0; s < 100_000; s++) w.record(s, s % 2 === 0, s % 3, T0);
    expect(w.allocatedBytes / 2 ** 20).toBeLessThan(256);
  });

  it("counts reads, writes and zones, and computes sliding rates", () => {
    const w = windows(10);
    for (let i = 0; i < 60; i++) {
      w.record(3, false, 0, T0 + i * 1000, 2); // 2 reads/s from a
      w.record(3, true, 1, T0 + i * 1000, 1); // 1 write/s from b
    }
    const now = T0 + 59_999;
    const r = w.rate(3, 60, now);
    expect(r.reads).toBeCloseTo(2, 5);
    expect(r.writes).toBeCloseTo(1, 5);
    expect(r.total).toBeCloseTo(3, 5);
    expect(r.byZone[0]).toBeCloseTo(2, 5);
    expect(r.byZone[1]).toBeCloseTo(1, 5);
    expect(r.byZone[2]).toBe(0);
    // the 10 s level sees the last 10 seconds only; a 10 s window is its whole span, so it no
    // longer holds the window's oldest slot: the rate is over the 9 whole slots and 999 ms it holds
    expect(w.rate(3, 10, now).total).toBeCloseTo(30 / 9.999, 9);
    expect(w.rate(4, 60, now).total).toBe(0);
  });

  it("forgets what falls out of a level's span", () => {
    const w = windows(4);
    w.record(1, false, -1, T0, 100);
    // at T0 + 5 s the 1 s level holds slots T0 - 4 s … T0 + 5 s, 9 s of time (the newest has just begun)
    expect(w.rate(1, 10, T0 + 5_000).total).toBeCloseTo(100 / 9, 9);
    expect(w.rate(1, 10, T0 + 20_000).total).toBe(0);
    // still within the minute level
    expect(w.rate(1, 60, T0 + 20_000).total).toBeCloseTo(100 / 60, 5);
    // after two days the hour level has moved past it too
    expect(w.rate(1, 3600 * 48, T0 + 49 * 3600_000).total).toBe(0);
  });

  it("keeps every level's counts near time zero (virtual clocks), where slot numbers are small", () => {
    const w = windows(256);
    w.record(12, false, -1, 10_000_000, 10_000); // hour level slot 2 of 48: clearing must not wrap into the minute level
    expect(w.rate(12, 60, 10_000_000).total).toBeCloseTo(10_000 / 60, 6);
    // 3600 s is the minute level's span: it holds minutes 107…166, from 6,420 s to now (3,580 s)
    expect(w.rate(12, 3600, 10_000_000).total).toBeCloseTo(10_000 / 3580, 9);
    w.record(13, true, 0, 0, 4);
    // slots -9 … 0 of the 1 s level: 9 s of time at t = 0
    expect(w.rate(13, 10, 0).writes).toBeCloseTo(4 / 9, 9);
    // slot numbers below zero, -1 (once the mark of an unwritten ring) included
    w.record(14, false, 1, -1_500, 3);
    w.record(14, false, 1, -500, 5);
    expect(Array.from(w.series(14, 0, -500)).slice(-2)).toEqual([3, 5]);
  });

  it("clears slots when the ring wraps", () => {
    const w = windows(1);
    w.record(0, false, 0, T0, 5);
    w.record(0, false, 0, T0 + 10_000, 7); // same 1 s ring slot, 10 s later
    expect(w.series(0, 0, T0 + 10_000)).toEqual(Float64Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 7]));
  });

  it("accepts late events within the span and drops older ones", () => {
    const w = windows(1);
    w.record(0, false, 0, T0 + 5_000, 1);
    w.record(0, false, 0, T0 + 1_000, 1); // late but inside 10 s
    w.record(0, false, 0, T0 - 60_000, 1); // too old for the 1 s level, counted by the others
    expect(Array.from(w.series(0, 0, T0 + 5_000))).toEqual([0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    // the 10 s window (the level's span) is over the 9 s the level holds; the hour over 59 min 5 s
    expect(w.rate(0, 10, T0 + 5_000).total * 9).toBeCloseTo(2, 9);
    expect(w.rate(0, 3600, T0 + 5_000).total * 3545).toBeCloseTo(3, 9);
  });

  it("returns series per zone, reads and writes, oldest first", () => {
    const w = windows(2);
    w.record(1, true, 2, T0 + 60_000 * 3, 4);
    w.record(1, false, 0, T0 + 60_000 * 4, 6);
    const now = T0 + 60_000 * 4;
    const total = w.series(1, 1, now);
    expect(total.length).toBe(60);
    expect(total[59]).toBe(6);
    expect(total[58]).toBe(4);
    expect(w.series(1, 1, now, "c")[58]).toBe(4);
    expect(w.series(1, 1, now, "writes")[58]).toBe(4);
    expect(w.series(1, 1, now, "reads")[59]).toBe(6);
  });

  it("round-trips through serialize and refuses altered or truncated bytes", () => {
    const w = windows(5000);
    w.record(4000, true, 1, T0, 3);
    w.record(7, false, -1, T0, 9);
    const bytes = w.serialize();
    const back = AccessWindows.deserialize(bytes);
    expect(back.rate(4000, 60, T0).writes).toBeCloseTo(w.rate(4000, 60, T0).writes, 9);
    expect(back.rate(7, 60, T0).total).toBeCloseTo(9 / 60, 9);
    expect([...back.activeSegments()]).toEqual([7, 4000]);
    const flipped = bytes.slice();
    flipped[200] ^= 0xff;
    expect(() => AccessWindows.deserialize(flipped)).toThrow(/corrupt/);
    expect(() => AccessWindows.deserialize(bytes.subarray(0, bytes.length - 100))).toThrow(/corrupt/);
    expect(() => AccessWindows.deserialize(new Uint8Array(3))).toThrow(/corrupt/);
  });

  it("moves a segment's history with exportSegment/importSegment", () => {
    const a = windows(10);
    a.record(3, true, 0, T0, 11);
    const b = windows(10);
    b.importSegment(a.exportSegment(3)!);
    expect(b.rate(3, 60, T0).writes).toBeCloseTo(11 / 60, 9);
    const other = new AccessWindows({ segmentCount: 10, zones: ["x"] });
    expect(() => other.importSegment(a.exportSegment(3)!)).toThrow(/other zones/);
  });

  it("refuses unknown zones, access types and segments", () => {
    const w = windows(10);
    expect(() => w.zoneIndexOf("mars")).toThrow(/unknown origin zone/);
    expect(w.zoneIndexOf(undefined)).toBe(-1);
    expect(() => parseAccessType("scan")).toThrow(/unknown access type/);
    // a zone named like one of series()'s other series could never be read back
    for (const name of ["total", "reads", "writes"])
      expect(() => new AccessWindows({ segmentCount: 4, zones: ["a", name] })).toThrow(/cannot name a zone/);
    expect(() => w.record(10, false, 0, T0)).toThrow(/outside/);
    expect(() => w.record(-1, false, 0, T0)).toThrow(/outside/);
    expect(() => new AccessWindows({ segmentCount: 0, zones })).toThrow();
    expect(
      () =>
        new AccessWindows({
          segmentCount: 1,
          zones,
          levels: [
            { resolutionSeconds: 60, slots: 2 },
            { resolutionSeconds: 1, slots: 2 },
          ],
        }),
    ).toThrow(/finest/);
  });
});

describe("AccessWindows roll-up (property)", () => {
  const levels = [
    { resolutionSeconds: 1, slots: 5 },
    { resolutionSeconds: 10, slots: 6 },
    { resolutionSeconds: 60, slots: 4 },
  ];
  it("every level's series equals a count of the raw events in its window", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            dt: fc.integer({ min: 0, max: 20_000 }),
            late: fc.integer({ min: 0, max: 90_000 }),
            write: fc.boolean(),
            zone: fc.integer({ min: -1, max: 2 }),
            count: fc.integer({ min: 1, max: 5 }),
          }),
          { maxLength: 120 },
        ),
        fc.integer({ min: 0, max: 400_000 }),
        (steps, after) => {
          const w = new AccessWindows({ segmentCount: 4, zones, levels });
          const events: { t: number; write: boolean; zone: number; count: number }[] = [];
          let clock = T0;
          for (const s of steps) {
            clock += s.dt;
            // now and then an event arrives late (up to 90 s behind the clock)
            const t = s.late % 3 === 0 ? clock - s.late : clock;
            w.record(2, s.write, s.zone, t, s.count);
            events.push({ t, write: s.write, zone: s.zone, count: s.count });
          }
          const now = clock + after;
          levels.forEach((lv, l) => {
            const res = lv.resolutionSeconds * 1000;
            const cur = Math.floor(now / res);
            for (const which of ["total", "writes", "reads", "a", "c"]) {
              const expected = new Array(lv.slots).fill(0);
              for (const e of events) {
                const k = lv.slots - 1 - (cur - Math.floor(e.t / res));
                if (k < 0 || k >= lv.slots) continue;
                if (which === "writes" && !e.write) continue;
                if (which === "reads" && e.write) continue;
                if (which === "a" && e.zone !== 0) continue;
                if (which === "c" && e.zone !== 2) continue;
                expected[k] += e.count;
              }
              expect(Array.from(w.series(2, l, now, which)), `level ${l} ${which}`).toEqual(expected);
            }
          });
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("AccessWindows sliding rates", () => {
  it("keeps the previous slot in a one-slot window that has just crossed a boundary", () => {
    // Given a steady 10 accesses/s, one every 100 ms, for 12 s
    const w = windows(1);
    for (let ms = 0; ms <= 12_000; ms += 100) w.record(0, false, 0, T0 + ms);
    // When the rate over the last second is read 50 ms into a new slot
    const r = w.rate(0, 1, T0 + 12_050);
    // Then 95% of the previous slot (10) and the new slot so far (1) are in it, not the new slot alone
    expect(r.total).toBeCloseTo(0.95 * 10 + 1, 9);
    expect(r.byZone[0]).toBeCloseTo(10.5, 9);
  });

  it("weights the oldest slot by the fraction of it inside the window", () => {
    const w = windows(1);
    w.record(0, true, -1, T0 + 9_000, 100); // slot 9 only
    // window [9.25 s, 10.25 s]: three quarters of slot 9
    expect(w.rate(0, 1, T0 + 10_250).writes).toBeCloseTo(75, 9);
    // window [8.5 s, 10.5 s]: all of slot 9, over 2 s
    expect(w.rate(0, 2, T0 + 10_500).total).toBeCloseTo(50, 9);
    // a window inside the current slot: its part of the slot's accesses so far (0.5 s of the 0.7 s
    // elapsed), over the window
    expect(w.rate(0, 0.5, T0 + 9_700).total).toBeCloseTo((100 * (0.5 / 0.7)) / 0.5, 9);
    // the minute level: a 2-minute window 30 s into minute 2 takes half of minute 0
    const m = windows(1);
    m.record(0, false, 2, T0 + 10_000, 600); // minute 0
    m.record(0, false, 2, T0 + 70_000, 60); // minute 1
    expect(m.rate(0, 120, T0 + 150_000).byZone[2]).toBeCloseTo((300 + 60) / 120, 9);
  });

  it("computes the same loads for every segment as rate does for one", () => {
    const w = windows(3000);
    for (let i = 0; i < 5000; i++)
      w.record((i * 7919) % 3000, i % 3 === 0, (i % 4) - 1, T0 + i * 37, 1 + (i % 5));
    for (const [win, now] of [
      [1, T0 + 185_010],
      [10, T0 + 185_010],
      [600, T0 + 185_010],
      [7200, T0 + 4_000_000],
    ]) {
      const loads = w.loads(win, now);
      for (const s of [0, 1, 17, 2999]) expect(loads[s]).toBeCloseTo(w.rate(s, win, now).total, 9);
    }
  });

  it("refuses a window that is not a positive number of seconds", () => {
    const w = windows(2);
    expect(() => w.rate(0, 0, T0)).toThrow(/positive/);
    expect(() => w.loads(Number.NaN, T0)).toThrow(/positive/);
    expect(() => w.rate(0, 10, Number.NaN)).toThrow(/finite/);
  });

  it("matches a model of the raw events (property)", () => {
    const levels = [
      { resolutionSeconds: 1, slots: 5 },
      { resolutionSeconds: 10, slots: 6 },
      { resolutionSeconds: 60, slots: 4 },
    ];
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ dt: fc.integer({ min: 0, max: 9_000 }), late: fc.integer({ min: 0, max: 70_000 }) }),
          { maxLength: 80 },
        ),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 0, max: 120_000 }),
        (steps, windowS, after) => {
          const w = new AccessWindows({ segmentCount: 1, zones, levels });
          const times: number[] = [];
          let clock = T0 + 123;
          for (const s of steps) {
            clock += s.dt;
            const t = s.late % 4 === 0 ? clock - s.late : clock;
            w.record(0, false, 0, t);
            times.push(t);
          }
          const now = clock + after;
          // the model: the finest level covering the window; the oldest slot weighted by the part of
          // its elapsed time inside the window; or, if the level no longer holds it, the time it holds
          const lv = levels.findIndex((l) => l.resolutionSeconds * l.slots >= windowS);
          const { resolutionSeconds, slots } = levels[lv < 0 ? levels.length - 1 : lv];
          const res = resolutionSeconds * 1000;
          const cur = Math.floor(now / res);
          const start = now - windowS * 1000;
          let first = Math.floor(start / res);
          let weight = 1;
          let duration = windowS * 1000;
          if (first < cur - slots + 1) {
            first = cur - slots + 1;
            duration = Math.max(now - first * res, res);
          } else {
            const end = Math.min((first + 1) * res, now);
            weight = (end - start) / (end - first * res);
          }
          let expected = 0;
          for (const t of times) {
            const s = Math.floor(t / res);
            if (s >= first && s <= cur) expected += s === first ? weight : 1;
          }
          expect(w.rate(0, windowS, now).total).toBeCloseTo((expected * 1000) / duration, 9);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("AccessWindows.recordBatch", () => {
  it("records the same as one record call per event", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            segment: fc.integer({ min: 0, max: 2999 }),
            write: fc.boolean(),
            zone: fc.integer({ min: -1, max: 2 }),
          }),
          { maxLength: 60 },
        ),
        fc.array(fc.integer({ min: 0, max: 4_000 }), { minLength: 1, maxLength: 4 }),
        (events, gaps) => {
          const a = windows(3000);
          const b = windows(3000);
          let t = T0;
          for (const gap of gaps) {
            t += gap;
            const n = events.length;
            const segments = Uint32Array.from(events, (e) => e.segment);
            const ops = Uint8Array.from(events, (e) => (e.write ? OP_WRITE : OP_READ));
            const zs = Int8Array.from(events, (e) => e.zone);
            a.recordBatch(segments, ops, zs, n, t);
            for (const e of events) b.record(e.segment, e.write, e.zone, t);
          }
          for (const s of new Set(events.map((e) => e.segment))) {
            expect(a.exportSegment(s)).toEqual(b.exportSegment(s));
          }
          expect([...a.activeSegments()]).toEqual([...b.activeSegments()]);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("records only the first n events, and refuses a bad batch before recording any of it", () => {
    const w = windows(10);
    const segments = Uint32Array.from([1, 2, 3, 4]);
    const ops = Uint8Array.from([OP_WRITE, OP_READ, OP_READ, OP_READ]);
    w.recordBatch(segments, ops, Int8Array.from([0, 1, -1, 2]), 3, T0);
    expect([...w.activeSegments()]).toEqual([1, 2, 3]);
    expect(w.rate(1, 1, T0 + 1_000).writes).toBe(1);
    expect(() => w.recordBatch(Uint32Array.from([5, 10]), ops, Int8Array.from([0, 0]), 2, T0)).toThrow(
      /outside/,
    );
    expect(() => w.recordBatch(Uint32Array.from([5, 6]), ops, Int8Array.from([0, 3]), 2, T0)).toThrow(
      /zone index 3/,
    );
    expect(() => w.recordBatch(Uint32Array.from([5, 6]), ops, Int8Array.from([0, -2]), 2, T0)).toThrow(
      /zone index -2/,
    );
    expect(() => w.recordBatch(segments, ops, Int8Array.from([0, 0]), 3, T0)).toThrow(/does not fit/);
    expect(() => w.recordBatch(segments, ops, Int8Array.from([0, 0, 0]), 3, Number.NaN)).toThrow(/time/);
    expect([...w.activeSegments()]).toEqual([1, 2, 3]);
  });
});

describe("AccessWindows counts and hostile input", () => {
  it("saturates counts at 2^32 - 1 instead of wrapping, in the current slot and when rolled up", () => {
    const w = windows(1);
    const max = 2 ** 32 - 1;
    w.record(0, true, 0, T0, max);
    w.record(0, true, 0, T0, 5);
    expect(w.series(0, 0, T0, "writes")[9]).toBe(max);
    w.record(0, true, 0, T0 + 1_000, max); // the next second: the first one moves into the ring
    w.record(0, false, 1, T0 + 30_000, 1); // both roll up into the same minute
    expect(w.series(0, 1, T0 + 30_000, "a")[59]).toBe(max);
    expect(w.series(0, 1, T0 + 30_000, "writes")[59]).toBe(max);
    expect(w.series(0, 1, T0 + 30_000, "b")[59]).toBe(1);
  });

  it("refuses bad zone indexes, counts and times without recording anything", () => {
    const w = windows(4);
    expect(() => w.record(1, false, 3, T0)).toThrow(/zone index 3/);
    expect(() => w.record(1, false, 0.5, T0)).toThrow(/zone index/);
    expect(() => w.record(1, false, Number.NaN, T0)).toThrow(/zone index/);
    expect(() => w.record(1, false, 0, T0, -1)).toThrow(/whole number/);
    expect(() => w.record(1, false, 0, T0, 1.5)).toThrow(/whole number/);
    expect(() => w.record(1, false, 0, T0, 2 ** 32)).toThrow(/whole number/);
    expect(() => w.record(1, false, 0, Number.NaN)).toThrow(/time/);
    expect(() => w.record(1, false, 0, Number.POSITIVE_INFINITY)).toThrow(/time/);
    expect(() => w.record(1.5, false, 0, T0)).toThrow(/outside/);
    expect(() => w.series(1, 3, T0)).toThrow(/level 3/);
    expect([...w.activeSegments()]).toEqual([]);
  });

  it("refuses malformed exported windows and changes nothing", () => {
    const a = windows(10);
    a.record(3, true, 0, T0, 11);
    const good = a.exportSegment(3)!;
    const b = windows(10);
    b.record(3, false, 1, T0, 2);
    const before = b.exportSegment(3);
    const bad = [
      { ...good, stamps: [Number.NaN, ...good.stamps.slice(1)] },
      { ...good, stamps: [good.stamps[0] + 0.5, ...good.stamps.slice(1)] },
      { ...good, stamps: [2 ** 60, ...good.stamps.slice(1)] },
      { ...good, cells: good.cells.map((c, i) => (i === 7 ? -1 : c)) },
      { ...good, cells: good.cells.map((c, i) => (i === 7 ? 2 ** 32 : c)) },
      { ...good, cells: good.cells.slice(1) },
      { ...good, segment: 10 },
      { ...good, segment: 2.5 },
    ];
    for (const data of bad) expect(() => b.importSegment(data)).toThrow();
    // moved to another clock, a slot number written as text is refused all the same
    const text = { ...good, stamps: [String(good.stamps[0]), ...good.stamps.slice(1)] } as never;
    expect(() => b.importSegment(text, 300_000)).toThrow(/not an integer/);
    expect(() => b.importSegment(good, Number.NaN)).toThrow(/clock offset/);
    expect(() => b.importSegment(null as never)).toThrow(/other zones/);
    expect(b.exportSegment(3)).toEqual(before);
  });

  it("imports windows recorded on a clock ahead or behind at the times the reader's clock gives them", () => {
    // Given the same accesses counted by a store on the true clock and by one whose clock is
    // five minutes ahead (or behind), at times away from hour boundaries
    for (const offsetMs of [300_000, -300_000]) {
      const truth = windows(4);
      const skewed = windows(4);
      for (let i = 0; i < 1_800; i += 7) {
        const t = T0 + 600_000 + i * 1000;
        truth.record(2, i % 3 === 0, i % 3, t, 1 + (i % 5));
        skewed.record(2, i % 3 === 0, i % 3, t + offsetMs, 1 + (i % 5));
      }
      const now = T0 + 600_000 + 1_800_000;
      // When the skewed store's export is imported with its clock offset
      const merged = windows(4);
      merged.importSegment(skewed.exportSegment(2)!, offsetMs);
      // Then every level's series and every rate read on the true clock are the true ones
      for (let level = 0; level < 3; level++) {
        expect(Array.from(merged.series(2, level, now)), `level ${level}`).toEqual(
          Array.from(truth.series(2, level, now)),
        );
        expect(Array.from(merged.series(2, level, now, "writes"))).toEqual(
          Array.from(truth.series(2, level, now, "writes")),
        );
      }
      for (const w of [5, 60, 600, 7200]) expect(merged.loads(w, now)[2]).toBe(truth.loads(w, now)[2]);
      // and without the offset they are not (the skewed counts sit in other minutes)
      const naive = windows(4);
      naive.importSegment(skewed.exportSegment(2)!);
      expect(naive.loads(600, now)[2]).not.toBe(truth.loads(600, now)[2]);
    }
  });

  it("refuses a file whose slot numbers are not integers even when its checksum is right", () => {
    const w = windows(5);
    w.record(2, false, 0, T0, 1);
    const bytes = w.serialize();
    const hlen = new DataView(bytes.buffer, bytes.byteOffset).getUint32(5, true);
    const body = bytes.slice(0, bytes.length - 16);
    // segment 2's finest stamp: the third Float64 of the chunk's stamps (3 levels per segment)
    new DataView(body.buffer).setFloat64(9 + hlen + 2 * 3 * 8, 0.5, true);
    const resealed = new Uint8Array(bytes.length);
    resealed.set(body);
    resealed.set(new TextEncoder().encode(fnv1a64Bytes(body)), body.length);
    expect(() => AccessWindows.deserialize(resealed)).toThrow(/corrupt.*not an integer/);
  });
});

describe("AccessWindows persisted format (SCAW1) compatibility", () => {
  const smallLevels = [
    { resolutionSeconds: 1, slots: 4 },
    { resolutionSeconds: 5, slots: 3 },
    { resolutionSeconds: 30, slots: 2 },
  ];
  /** A fixed stream of 3,000 events over 1,500 segments (two chunks), late ones included. */
  function feed(w: AccessWindows): number {
    let seed = 7;
    const next = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0);
    let t = T0;
    for (let i = 0; i < 3000; i++) {
      t += next() % 90;
      const late = next() % 7 === 0 ? next() % 40_000 : 0;
      w.record(next() % 1500, next() % 4 === 0, (next() % 3) - 1, t - late, 1 + (next() % 5));
    }
    return t;
  }

  it("writes the bytes the previous layout wrote for the same events", () => {
    // pinned with the previous implementation (one Float64 stamp per level, finest ring of 4 positions)
    const w = new AccessWindows({ segmentCount: 1500, zones: ["a", "b"], levels: smallLevels });
    feed(w);
    const bytes = w.serialize();
    expect(bytes.length).toBe(344_257);
    expect(fnv1a64Bytes(bytes)).toBe("5d95b3593b5b3d7d");
  });

  it("reads such a file back to the same windows and the same bytes", () => {
    const w = new AccessWindows({ segmentCount: 1500, zones: ["a", "b"], levels: smallLevels });
    const end = feed(w);
    const bytes = w.serialize();
    const back = AccessWindows.deserialize(bytes);
    // (a byte comparison: a deep equality over 344 KB takes seconds)
    expect(Buffer.compare(back.serialize(), bytes)).toBe(0);
    for (let s = 0; s < 1500; s += 37) {
      for (let l = 0; l < 3; l++) expect(back.series(s, l, end)).toEqual(w.series(s, l, end));
      expect(back.exportSegment(s)).toEqual(w.exportSegment(s));
    }
  });

  it("exports the previous layout: a ring of `slots` positions per level, indexed by slot mod slots", () => {
    const w = new AccessWindows({ segmentCount: 4, zones: ["a"], levels: smallLevels });
    // finest slots 100..103 (T0 is a multiple of 4 s and of 30 s), then slot 105: 100 and 101 roll up
    const t0 = T0 + 100_000;
    [1, 2, 3, 4].forEach((n, i) => w.record(1, false, 0, t0 + i * 1000, n));
    w.record(1, true, -1, t0 + 5_000, 7);
    const e = w.exportSegment(1)!;
    const abs0 = Math.floor(t0 / 1000) + 5;
    const five = Math.floor((abs0 - 5) / 5);
    expect(e.stamps).toEqual([abs0, five, Math.floor((abs0 - 5) / 30)]);
    const cell = (pos: number, c: number) => e.cells[pos * 3 + c];
    // finest ring: slot a at position a mod 4, cells [writes, unattributed, a]
    expect(cell(abs0 % 4, 0)).toBe(7);
    expect(cell(abs0 % 4, 1)).toBe(7);
    expect(cell((abs0 - 3) % 4, 2)).toBe(3);
    expect(cell((abs0 - 2) % 4, 2)).toBe(4);
    expect(cell((abs0 - 1) % 4, 2)).toBe(0); // never written
    // 5 s level (positions 4..6): the first two slots (1 + 2 accesses) rolled up into one 5 s slot
    expect(cell(4 + (five % 3), 2)).toBe(3);
    expect(e.cells.slice(4 * 3, 7 * 3).reduce((x, y) => x + y, 0)).toBe(3);
  });

  it("imports windows exported in the previous layout", () => {
    const e: SegmentWindows = {
      segment: 2,
      zones: ["a"],
      levels: smallLevels,
      // finest newest slot 1001; 5 s level newest 199; 30 s level never written
      stamps: [1001, 199, -1],
      cells: [
        // finest positions 0..3 = slots 1000, 1001, 998, 999; cells [writes, unattributed, a]
        0, 0, 4, 1, 0, 6, 0, 0, 0, 0, 2, 0,
        // 5 s positions 0..2 = slots 198, 199, 197
        0, 0, 0, 0, 0, 50, 0, 0, 0,
        // 30 s
        0, 0, 0, 0, 0, 0,
      ],
    };
    const w = new AccessWindows({ segmentCount: 4, zones: ["a"], levels: smallLevels });
    w.importSegment(e);
    const now = 1001 * 1000 + 999;
    expect(Array.from(w.series(2, 0, now))).toEqual([0, 2, 4, 6]);
    expect(Array.from(w.series(2, 0, now, "writes"))).toEqual([0, 0, 0, 1]);
    // the 5 s level: 50 stored in slot 199, plus the finest slots not rolled up yet (998, 999 → 199;
    // 1000, 1001 → 200)
    expect(Array.from(w.series(2, 1, now))).toEqual([0, 52, 10]);
    expect(w.exportSegment(2)).toEqual(e);
  });
});

describe("AccessWindows record queue", () => {
  it("reads the same whether or not reads come between the records (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            segment: fc.integer({ min: 0, max: 2100 }),
            dt: fc.integer({ min: 0, max: 3_000 }),
            late: fc.integer({ min: 0, max: 30_000 }),
            write: fc.boolean(),
            zone: fc.integer({ min: -1, max: 2 }),
            count: fc.integer({ min: 0, max: 3 }),
            read: fc.integer({ min: 0, max: 9 }),
          }),
          { maxLength: 200 },
        ),
        (steps) => {
          const a = windows(2101);
          const b = windows(2101);
          let t = T0;
          for (const s of steps) {
            t += s.dt;
            const at = s.late % 5 === 0 ? t - s.late : t;
            a.record(s.segment, s.write, s.zone, at, s.count);
            b.record(s.segment, s.write, s.zone, at, s.count);
            // b is read now and then, which applies its queue early
            if (s.read === 0) b.rate(s.segment, 10, t);
            if (s.read === 1) b.series(s.segment, 1, t);
            if (s.read === 2) expect(b.allocatedBytes).toBeGreaterThan(0);
          }
          for (const s of new Set(steps.map((x) => x.segment))) {
            expect(a.exportSegment(s)).toEqual(b.exportSegment(s));
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  it("applies queued events before a batch, an import and a serialization", () => {
    const w = windows(10);
    w.record(1, true, 0, T0 + 5_000);
    w.recordBatch(Uint32Array.from([1]), Uint8Array.from([OP_READ]), Int8Array.from([0]), 1, T0);
    // the queued event (5 s) came first, so the batch's (0 s) is a late one in the ring
    expect(Array.from(w.series(1, 0, T0 + 5_000))).toEqual([0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    const other = windows(10);
    other.record(2, false, 1, T0, 3);
    w.record(2, false, 0, T0, 7);
    w.importSegment(other.exportSegment(2)!); // replaces what segment 2 had, the queued event too
    expect(w.rate(2, 10, T0 + 9_000).byZone).toEqual([0, 3 / 9, 0]);
    w.record(3, false, 2, T0, 4);
    expect(AccessWindows.deserialize(w.serialize()).series(3, 0, T0, "c")[9]).toBe(4);
  });
});

describe("AccessWindows.serializeSteps", () => {
  /** Windows with events in chunks 0..n-1 (1,024 segments each), two segments per chunk. */
  function spread(chunks: number) {
    const w = windows(chunks * 1024);
    for (let c = 0; c < chunks; c++) {
      w.record(c * 1024 + 5, false, 0, T0);
      w.record(c * 1024 + 700, true, 2, T0 + 1500);
    }
    return w;
  }
  function run(steps: Generator<void, Uint8Array, void>, between: (step: number) => void = () => {}) {
    let yields = 0;
    for (;;) {
      const r = steps.next();
      if (r.done) return { bytes: r.value, yields };
      between(++yields);
    }
  }

  it("gives the bytes serialize gives, in steps of a few segments' work", () => {
    const w = spread(10);
    const { bytes, yields } = run(w.serializeSteps(256));
    // per chunk, 1,024 segments laid out in 4 steps and their bytes checksummed in 4 more; the last
    // of these runs on into the next chunk's first: 7 pauses per chunk
    expect(yields).toBe(10 * 7);
    expect(Buffer.compare(bytes, w.serialize())).toBe(0);
    expect(Buffer.compare(run(w.serializeSteps(1)).bytes, bytes)).toBe(0);
    expect(Buffer.compare(run(w.serializeSteps(5000)).bytes, bytes)).toBe(0);
    expect(run(windows(5000).serializeSteps(1)).yields).toBe(0); // nothing recorded: no chunk at all
  });

  it("writes events recorded between steps into the segments still to come, and a whole file", () => {
    const w = spread(6);
    const { bytes } = run(w.serializeSteps(256), (step) => {
      if (step !== 9) return; // chunk 0 is written (7 steps), chunk 1's first 512 segments laid out
      w.record(5, false, 1, T0 + 2000); // laid out already
      w.record(1024 + 5, false, 1, T0 + 2000); // laid out already
      w.record(1024 + 700, false, 1, T0 + 2000); // not yet
      w.record(5 * 1024 + 5, false, 1, T0 + 2000); // not yet (queued, not applied, here)
    });
    const back = AccessWindows.deserialize(bytes); // the checksum covers what was written
    const last = (s: number) => back.series(s, 0, T0 + 2000, "b").at(-1);
    expect([last(5), last(1024 + 5), last(1024 + 700), last(5 * 1024 + 5)]).toEqual([0, 0, 1, 1]);
    expect(w.series(5, 0, T0 + 2000, "b").at(-1)).toBe(1); // and nothing was lost from the store itself
  });

  it("leaves out a chunk first touched after it started, and keeps the file whole", () => {
    const w = windows(8 * 1024);
    w.record(1, false, 0, T0);
    w.record(3 * 1024, false, 0, T0);
    const { bytes } = run(w.serializeSteps(), () => w.record(7 * 1024, false, 0, T0));
    const back = AccessWindows.deserialize(bytes);
    expect([...back.activeSegments()]).toEqual([1, 3 * 1024]);
    expect([...w.activeSegments()]).toContain(7 * 1024);
  });

  it("refuses a step size that is not a positive whole number of segments", () => {
    const w = spread(2);
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => w.serializeSteps(bad).next()).toThrow(/segmentsPerStep must be a positive integer/);
    }
  });
});

describe("AccessWindows.serializeStream and importStream", () => {
  /** Windows with events spread over `chunks` chunks and two hours. */
  function busy(chunks: number, zs: string[] = zones) {
    const w = new AccessWindows({ segmentCount: chunks * 1024, zones: zs });
    for (let s = 0; s < chunks * 1024; s += 5)
      w.record(s, s % 2 === 0, s % zs.length, T0 + (s % 7200) * 1000);
    return w;
  }
  function collect(w: AccessWindows, segmentsPerStep?: number) {
    const { length, pieces } = w.serializeStream(segmentsPerStep);
    const out: Uint8Array[] = [];
    let steps = 0;
    for (const p of pieces)
      if (p === undefined) steps++;
      else out.push(p);
    return { length, out, steps, bytes: Buffer.concat(out) };
  }
  /** Feeds `bytes` to a fresh store's importStream in pieces of `size` bytes; returns the store and its count. */
  function readBack(bytes: Uint8Array, size: number, into = windows(4 * 1024), opts = {}) {
    const reader = into.importStream(opts);
    for (let at = 0; at < bytes.length; at += size) runAtOnce(reader.push(bytes.subarray(at, at + size)));
    return { into, n: reader.finish() };
  }

  it("streams the bytes serialize gives, a chunk per piece, with their length known at the start", () => {
    const w = busy(4);
    const { length, out, steps, bytes } = collect(w);
    expect(Buffer.compare(bytes, w.serialize())).toBe(0);
    expect(length).toBe(bytes.length);
    // the magic and header, 4 chunks, the checksum; each chunk its own buffer
    expect(out.length).toBe(6);
    expect(new Set(out.map((p) => p.buffer)).size).toBe(6);
    expect(steps).toBe(4 * 7);
    expect(collect(windows(100)).out.length).toBe(2); // nothing recorded: no chunk
    for (const bad of [0, -1, 1.5]) expect(() => w.serializeStream(bad)).toThrow(/segmentsPerStep/);
  });

  it("reads it back in pieces of any size into another store, what deserialize reads", () => {
    const w = busy(2);
    const bytes = w.serialize();
    const active = [...w.activeSegments()];
    // (pieces that split the header, the stamps and the cells anywhere; the whole form at once)
    for (const size of [13, 4099, 1 << 20, bytes.length]) {
      const { into, n } = readBack(bytes, size, windows(2 * 1024));
      expect(n).toBe(active.length);
      expect(Buffer.compare(into.serialize(), bytes)).toBe(0);
    }
  });

  it("reads only the segments `keep` accepts, moved by a clock offset as importSegment does, and leaves the others", () => {
    const w = busy(4);
    const into = windows(4 * 1024);
    into.record(3, false, 1, T0); // not in the stream's kept range: stays
    const keep = (s: number) => s >= 1024 && s < 2048;
    const { n } = readBack(w.serialize(), 65_536, into, { keep, clockOffsetMs: 42_000 });
    expect(n).toBe([...w.activeSegments()].filter(keep).length);
    const expected = windows(4 * 1024);
    expected.record(3, false, 1, T0);
    for (const s of w.activeSegments()) if (keep(s)) expected.importSegment(w.exportSegment(s)!, 42_000);
    expect(Buffer.compare(into.serialize(), expected.serialize())).toBe(0);
  });

  it("refuses a stream cut short, altered, with bytes after its end, or of other windows", () => {
    const w = busy(2);
    const bytes = w.serialize();
    const into = () => windows(2 * 1024);
    const read = (b: Uint8Array, target = into()) => readBack(b, 10_000, target);
    for (const cut of [0, 3, 9, 200, bytes.length >> 1, bytes.length - 1])
      expect(() => read(bytes.subarray(0, cut))).toThrow(/cut short/);
    const flipped = Uint8Array.from(bytes);
    flipped[bytes.length - 100] ^= 1;
    expect(() => read(flipped)).toThrow(/checksum mismatch/);
    const magic = Uint8Array.from(bytes);
    magic[0] = 0x58;
    expect(() => read(magic)).toThrow(/bad magic/);
    expect(() => read(Buffer.concat([bytes, Buffer.from("x")]))).toThrow(/bytes after the checksum/);
    expect(() => read(bytes, windows(3 * 1024))).toThrow(/the windows are of 2048 segments/);
    expect(() => read(busy(2, ["a", "b"]).serialize())).toThrow(/zones a,b/);
    // a header that is not JSON, or names a chunk the store has not
    const header = (text: string) => {
      const h = Buffer.from(text);
      const len = Buffer.alloc(4);
      len.writeUInt32LE(h.length);
      return Buffer.concat([Buffer.from("SCAW1"), len, h]);
    };
    expect(() => read(header("{nope"))).toThrow(/header is not JSON/);
    expect(() =>
      read(header(JSON.stringify({ segmentCount: 2048, zones, levels: w.levels, chunks: [5] }))),
    ).toThrow(/chunk index/);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY])
      expect(() => into().importStream({ clockOffsetMs: bad })).toThrow(/clock offset/);
  });

  it("refuses any damaged stream with a usage error, whatever the bytes changed or cut, and never crashes (property)", () => {
    const w = windows(1024);
    for (let s = 0; s < 1024; s += 3) w.record(s, s % 2 === 0, s % 3, T0 + s * 1000);
    const bytes = w.serialize();
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat(bytes.length - 1), xor: fc.integer({ min: 1, max: 255 }) }), {
          minLength: 0,
          maxLength: 4,
        }),
        fc.option(fc.nat(bytes.length - 1), { nil: undefined }),
        fc.integer({ min: 1, max: 1 << 16 }),
        (flips, cut, size) => {
          if (flips.length === 0 && cut === undefined) return;
          const damaged = Uint8Array.from(bytes);
          for (const f of flips) damaged[f.at] ^= f.xor;
          const given = cut === undefined ? damaged : damaged.subarray(0, cut);
          const into = windows(1024);
          let error: unknown;
          try {
            const reader = into.importStream();
            for (let at = 0; at < given.length; at += size)
              runAtOnce(reader.push(given.subarray(at, at + size)));
            reader.finish();
          } catch (err) {
            error = err;
          }
          expect(error).toBeInstanceOf(UsageError);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe("AccessWindows.copySegment", () => {
  /** Windows with a few hundred random events over two hours in `segments` segments of 3 chunks. */
  function random(seed: number, segments: number[]) {
    const w = windows(3 * 1024);
    let x = seed;
    const rnd = () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 400; i++) {
      const s = segments[Math.floor(rnd() * segments.length)];
      w.record(s, rnd() < 0.3, Math.floor(rnd() * 4) - 1, T0 + Math.floor(rnd() * 7_200_000));
    }
    return w;
  }

  it("gives what importSegment(exportSegment) gives, byte for byte", () => {
    const from = random(1, [3, 700, 1500, 2999]);
    const a = random(2, [3, 9, 1500]);
    const b = random(2, [3, 9, 1500]);
    for (const s of [3, 700, 1500, 2999]) {
      a.copySegment(from, s);
      b.importSegment(from.exportSegment(s)!);
    }
    expect(Buffer.compare(a.serialize(), b.serialize())).toBe(0);
    expect(a.exportSegment(700)).toEqual(from.exportSegment(700));
    expect(a.exportSegment(9)).toEqual(b.exportSegment(9)); // the others stay
  });

  it("leaves a segment empty that the other store holds nothing of", () => {
    const from = windows(3 * 1024);
    from.record(5, false, 0, T0); // chunk 0 allocated, segment 6 empty in it; chunk 2 not allocated
    const w = random(3, [6, 2500]);
    w.copySegment(from, 6);
    w.copySegment(from, 2500);
    expect(w.exportSegment(6)).toBeUndefined();
    expect(w.exportSegment(2500)).toBeUndefined();
    expect([...w.activeSegments()]).toEqual([]);
  });

  it("refuses windows of other zones or levels and segments out of range, changing nothing", () => {
    const w = random(4, [10]);
    const before = w.serialize();
    const otherZones = new AccessWindows({ segmentCount: 3 * 1024, zones: ["a", "b"] });
    const otherLevels = new AccessWindows({
      segmentCount: 3 * 1024,
      zones,
      levels: [{ resolutionSeconds: 1, slots: 30 }],
    });
    otherZones.record(10, false, 0, T0);
    otherLevels.record(10, false, 0, T0);
    expect(() => w.copySegment(otherZones, 10)).toThrow(/other zones or levels/);
    expect(() => w.copySegment(otherLevels, 10)).toThrow(/other zones or levels/);
    const small = windows(100);
    for (const bad of [-1, 3 * 1024, 1.5, Number.NaN])
      expect(() => w.copySegment(small, bad)).toThrow(/outside/);
    expect(() => w.copySegment(small, 500)).toThrow(/segment 500 is outside 0..99/);
    expect(Buffer.compare(w.serialize(), before)).toBe(0);
  });
});

describe("AccessWindows.deserializeSteps", () => {
  it("reads what deserialize reads, a few segments at a time, and refuses what it refuses", () => {
    const w = windows(5 * 1024);
    for (let s = 0; s < 5 * 1024; s += 7) w.record(s, s % 2 === 0, s % 3, T0 + s * 1000);
    const bytes = w.serialize();
    const steps = AccessWindows.deserializeSteps(bytes, 512);
    let yields = 0;
    let r = steps.next();
    for (; !r.done; r = steps.next()) yields++;
    // 5 chunks of 1,024 segments read 512 at a time, after the checksum's pieces
    expect(yields).toBeGreaterThanOrEqual(9);
    expect(Buffer.compare(r.value.serialize(), bytes)).toBe(0);
    const flipped = Uint8Array.from(bytes);
    flipped[bytes.length >> 1] ^= 1;
    expect(() => [...AccessWindows.deserializeSteps(flipped)]).toThrow(/checksum mismatch/);
    for (const bad of [0, -3, 2.5])
      expect(() => AccessWindows.deserializeSteps(bytes, bad).next()).toThrow(/segmentsPerStep/);
  });
});
