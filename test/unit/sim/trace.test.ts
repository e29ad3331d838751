import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/errors.js";
import { buildTraceFromRequests, buildTraceFromSeries, rng } from "../../../src/sim/build-trace.js";
import { parseTrace, parseTraceTimestamp, splitCsvLine } from "../../../src/sim/trace.js";

const Z = ["a", "b", "c"];

describe("parseTrace", () => {
  it("reads ISO-8601 and epoch-ms timestamps, quoted keys, an optional header", () => {
    const t = parseTrace(
      'timestamp,key,op,zone\n2024-01-01T00:00:00Z,k1,read,a\n1704067200500,"k,2",write,c\n2024-01-01T00:00:01.250Z,k1,read,b\n',
      Z,
    );
    expect(t.length).toBe(3);
    expect(t.keys).toEqual(["k1", "k,2"]);
    expect(Array.from(t.t)).toEqual([
      Date.UTC(2024, 0, 1),
      Date.UTC(2024, 0, 1) + 500,
      Date.UTC(2024, 0, 1) + 1250,
    ]);
    expect(Array.from(t.write)).toEqual([0, 1, 0]);
    expect(Array.from(t.zone)).toEqual([0, 2, 1]);
  });

  const bad: [string, string, RegExp][] = [
    ["unknown zone", "2024-01-01T00:00:00Z,k,read,mars\n", /line 1: unknown zone "mars"/],
    ["unsorted", "2024-01-01T00:00:05Z,k,read,a\n2024-01-01T00:00:01Z,k,read,a\n", /line 2: .*not sorted/],
    ["too few fields", "2024-01-01T00:00:00Z,k,read\n", /line 1: expected 4 fields/],
    ["bad op", "2024-01-01T00:00:00Z,k,delete,a\n", /line 1: op must be read or write/],
    ["bad timestamp", "yesterday,k,read,a\n", /line 1: bad timestamp/],
    ["empty key", "2024-01-01T00:00:00Z,,read,a\n", /line 1: the key is empty/],
    ["unbalanced quote", '2024-01-01T00:00:00Z,"k,read,a\n', /line 1: unbalanced quote/],
    ["wrong header", "time,key,op,zone\n", /line 1: bad timestamp/],
    ["empty", "\n\n", /holds no events/],
  ];
  for (const [name, text, re] of bad) {
    it(`refuses a trace with ${name}, naming the line`, () => {
      expect(() => parseTrace(text, Z)).toThrow(UsageError);
      expect(() => parseTrace(text, Z)).toThrow(re);
    });
  }

  it("names the line of a bad row after good ones (no partial result)", () => {
    const text =
      "2024-01-01T00:00:00Z,k,read,a\n2024-01-01T00:00:01Z,k,read,a\n\n2024-01-01T00:00:02Z,k,read,x\n";
    expect(() => parseTrace(text, Z, { source: "t.csv" })).toThrow(/t.csv, line 4/);
  });

  it("timestamps and CSV fields parse strictly", () => {
    expect(parseTraceTimestamp("2024-01-01")).toBe(Date.UTC(2024, 0, 1));
    expect(parseTraceTimestamp("2024-01-01T01:00:00+01:00")).toBe(Date.UTC(2024, 0, 1));
    expect(parseTraceTimestamp("2024-13-45T00:00:00Z")).toBeUndefined();
    expect(parseTraceTimestamp("1.5e3")).toBeUndefined();
    expect(splitCsvLine('a,"b ""c""",d')).toEqual(["a", 'b "c"', "d"]);
  });

  it("refuses times no Date can hold and days the calendar lacks (they were rolled over or crashed build-trace)", () => {
    expect(parseTraceTimestamp("9999999999999999")).toBeUndefined();
    expect(parseTraceTimestamp("8640000000000000")).toBe(8.64e15);
    expect(parseTraceTimestamp("2024-02-30T00:00:00Z")).toBeUndefined();
    expect(parseTraceTimestamp("2023-02-29")).toBeUndefined();
    expect(parseTraceTimestamp("2024-02-29")).toBe(Date.UTC(2024, 1, 29));
  });
});

describe("trace builders", () => {
  const series = {
    name: "flat",
    values: new Float64Array(288 * 3).fill(5),
    startMs: 0,
    intervalSeconds: 300,
    season: 288,
  };

  it("is deterministic for a seed and follows the sun", () => {
    const a = buildTraceFromSeries([series], { keys: 2, zones: Z, events: 3000, seed: 9, days: 3 });
    const b = buildTraceFromSeries([series], { keys: 2, zones: Z, events: 3000, seed: 9, days: 3 });
    const c = buildTraceFromSeries([series], { keys: 2, zones: Z, events: 3000, seed: 10, days: 3 });
    expect(a).toBe(b);
    expect(a).not.toBe(c);
    const t = parseTrace(a, Z);
    expect(t.length).toBeGreaterThan(2700);
    expect(t.length).toBeLessThan(3300);
    // in the first third of each day zone a dominates, in the second b, in the third c
    const day = 86_400_000;
    const share = [
      [0, 0, 0],
      [0, 0, 0],
      [0, 0, 0],
    ];
    const t0 = t.t[0] - (t.t[0] % day);
    for (let i = 0; i < t.length; i++) share[Math.floor(((t.t[i] - t0) % day) / (day / 3))][t.zone[i]]++;
    for (let third = 0; third < 3; third++) {
      const row = share[third];
      const total = row[0] + row[1] + row[2];
      expect(row[third] / total).toBeGreaterThan(0.6);
      expect(row[third] / total).toBeLessThan(0.8);
    }
  });

  it("refuses bad options", () => {
    expect(() => buildTraceFromSeries([series], { keys: 0, zones: Z, events: 10, seed: 1 })).toThrow(
      UsageError,
    );
    expect(() => buildTraceFromSeries([series], { keys: 1, zones: ["a", "a"], events: 10, seed: 1 })).toThrow(
      /distinct/,
    );
    expect(() => buildTraceFromSeries([], { keys: 1, zones: Z, events: 10, seed: 1 })).toThrow(/no series/);
    const zero = { ...series, values: new Float64Array(10) };
    expect(() => buildTraceFromSeries([zero], { keys: 1, zones: Z, events: 10, seed: 1 })).toThrow(/zero/);
  });

  it("from a request log keeps the real keys and times and assigns zones by time of day", () => {
    const rows = [
      { t: Date.UTC(2024, 0, 1, 1), key: "/a" },
      { t: Date.UTC(2024, 0, 1, 9), key: "/b" },
      { t: Date.UTC(2024, 0, 1, 17), key: "/a" },
    ];
    const t = parseTrace(
      buildTraceFromRequests(rows, { zones: Z, seed: 1, dominantShare: 1, writeFraction: 0 }),
      Z,
    );
    expect(t.keys).toEqual(["/a", "/b"]);
    expect(Array.from(t.zone)).toEqual([0, 1, 2]);
    expect(Array.from(t.write)).toEqual([0, 0, 0]);
    expect(parseTrace(buildTraceFromRequests(rows, { zones: Z, seed: 1, keys: 1 }), Z).keys).toEqual(["/a"]);
  });

  it("the PRNG is seeded", () => {
    const r1 = rng(5);
    const r2 = rng(5);
    const xs = [r1(), r1(), r1()];
    expect([r2(), r2(), r2()]).toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });
});
