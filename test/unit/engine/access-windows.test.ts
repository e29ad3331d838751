import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AccessWindows, parseAccessType } from "../../../src/engine/access-windows.js";

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
    // the 10 s level sees the last 10 seconds only
    expect(w.rate(3, 10, now).total).toBeCloseTo(3, 5);
    expect(w.rate(4, 60, now).total).toBe(0);
  });

  it("forgets what falls out of a level's span", () => {
    const w = windows(4);
    w.record(1, false, -1, T0, 100);
    expect(w.rate(1, 10, T0 + 5_000).total).toBeCloseTo(10, 5);
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
    expect(w.rate(12, 3600, 10_000_000).total).toBeCloseTo(10_000 / 3600, 6);
    w.record(13, true, 0, 0, 4);
    expect(w.rate(13, 10, 0).writes).toBeCloseTo(0.4, 6);
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
    expect(w.rate(0, 10, T0 + 5_000).total * 10).toBeCloseTo(2, 5);
    expect(w.rate(0, 3600, T0 + 5_000).total * 3600).toBeCloseTo(3, 5);
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
