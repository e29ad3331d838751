import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/errors.js";
import { parseSeriesCsv, parseTimestamp } from "../../../src/forecast/csv.js";

/** A CSV of `count` rows every `step` seconds from 2024-01-01T00:00:00Z. */
function csv(values: (number | string)[], step = 300, header = "timestamp,value"): string {
  const t0 = Date.UTC(2024, 0, 1);
  return [header, ...values.map((v, i) => `${new Date(t0 + i * step * 1000).toISOString()},${v}`)].join("\n");
}

const ten = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

describe("parseTimestamp", () => {
  it("reads ISO-8601 with and without a zone (no zone = UTC)", () => {
    expect(parseTimestamp("2024-01-01T00:05:00Z")).toBe(Date.UTC(2024, 0, 1, 0, 5));
    expect(parseTimestamp("2024-01-01 00:05:00")).toBe(Date.UTC(2024, 0, 1, 0, 5));
    expect(parseTimestamp("2024-01-01T01:05:00+01:00")).toBe(Date.UTC(2024, 0, 1, 0, 5));
    expect(parseTimestamp("2024-01-02")).toBe(Date.UTC(2024, 0, 2));
  });

  it("reads epoch seconds and milliseconds", () => {
    expect(parseTimestamp("1704067200")).toBe(1704067200000);
    expect(parseTimestamp("1704067200000")).toBe(1704067200000);
  });

  it("rejects anything else", () => {
    expect(parseTimestamp("yesterday")).toBeUndefined();
    expect(parseTimestamp("2024-13-45T99:00:00Z")).toBeUndefined();
    expect(parseTimestamp("")).toBeUndefined();
  });
});

describe("parseSeriesCsv", () => {
  it("reads a clean file and infers the interval", () => {
    const p = parseSeriesCsv(csv(ten));
    expect(Array.from(p.values)).toEqual(ten);
    expect(p.intervalSeconds).toBe(300);
    expect(p.notes).toEqual([]);
  });

  it("reads epoch-second timestamps and CRLF line endings", () => {
    const text = "ts,v\r\n" + ten.map((v, i) => `${1704067200 + 60 * i},${v}`).join("\r\n") + "\r\n";
    const p = parseSeriesCsv(text);
    expect(p.intervalSeconds).toBe(60);
    expect(p.values.length).toBe(10);
  });

  it("fills gaps by linear interpolation and says how many", () => {
    // Given rows at slots 0..9 with slots 3 and 4 missing
    const lines = csv(ten).split("\n");
    const text = [lines[0], ...lines.slice(1).filter((_, i) => i !== 3 && i !== 4)].join("\n");
    // When parsed
    const p = parseSeriesCsv(text, { minPoints: 5 });
    // Then the two slots are back, on the line between their neighbours, and reported
    expect(p.filled).toBe(2);
    expect(Array.from(p.values)).toEqual(ten);
    expect(p.notes.join(" ")).toMatch(/2 missing points filled by linear interpolation/);
  });

  it("averages duplicate timestamps and reports them", () => {
    const lines = csv(ten).split("\n");
    const dup = lines[3].replace(/,\d+$/, ",100");
    const p = parseSeriesCsv([...lines, dup].join("\n"));
    expect(p.duplicates).toBe(1);
    expect(p.values[2]).toBeCloseTo((3 + 100) / 2);
    expect(p.notes.join(" ")).toMatch(/1 duplicate timestamp averaged/);
  });

  it("sorts unsorted rows and says so", () => {
    const lines = csv(ten).split("\n");
    const shuffled = [lines[0], ...lines.slice(1).reverse()].join("\n");
    const p = parseSeriesCsv(shuffled);
    expect(p.unsorted).toBe(true);
    expect(Array.from(p.values)).toEqual(ten);
    expect(p.notes.join(" ")).toMatch(/sorted/);
  });

  it("names the line of a non-numeric value", () => {
    const values: (number | string)[] = [...ten];
    values[4] = "abc";
    expect(() => parseSeriesCsv(csv(values))).toThrow(UsageError);
    expect(() => parseSeriesCsv(csv(values))).toThrow(/line 6: the value "abc" is not a number/);
  });

  it("rejects NaN and Infinity spelled out", () => {
    expect(() => parseSeriesCsv(csv([...ten.slice(0, 9), "NaN"]))).toThrow(/line 11/);
    expect(() => parseSeriesCsv(csv([...ten.slice(0, 9), "Infinity"]))).toThrow(/line 11/);
  });

  it("names the line of a bad timestamp", () => {
    const text = csv(ten).replace(/\n[^\n]*\n/, "\nnot-a-time,1\n");
    expect(() => parseSeriesCsv(text)).toThrow(/line 2: cannot read the timestamp "not-a-time"/);
  });

  it("rejects a row with one column", () => {
    expect(() => parseSeriesCsv(csv(ten) + "\n2024-02-01T00:00:00Z")).toThrow(/expected two columns/);
  });

  it("rejects too few points", () => {
    expect(() => parseSeriesCsv(csv([1, 2, 3]))).toThrow(/too few points: 3 rows of data, at least 8/);
    expect(() => parseSeriesCsv("timestamp,value\n")).toThrow(/too few points: 0/);
  });

  it("rejects an empty file", () => {
    expect(() => parseSeriesCsv("")).toThrow(/the input is empty/);
    expect(() => parseSeriesCsv("  \n\n")).toThrow(UsageError);
  });

  it("rejects binary garbage", () => {
    const garbage = String.fromCharCode(...Array.from({ length: 512 }, (_, i) => (i * 37) % 256));
    expect(() => parseSeriesCsv(garbage)).toThrow(UsageError);
    expect(() => parseSeriesCsv("\u0000\u0001\u0002PK\u0003\u0004")).toThrow(/binary/);
  });

  it("accepts all zeros and says so", () => {
    const p = parseSeriesCsv(csv(new Array(10).fill(0)));
    expect(p.allZero).toBe(true);
    expect(p.notes.join(" ")).toMatch(/every value is zero/);
  });

  it("a series longer than it reads is refused as too long, not as irregular, and before the rows are all read", () => {
    // 1,001 regular rows against a limit of 1,000 (the default is 5,000,000): the old message said
    // "timestamps too irregular" of a perfectly regular series, after reading all of it
    const long = csv(Array.from({ length: 1001 }, (_, i) => i % 7));
    expect(() => parseSeriesCsv(long, { maxPoints: 1000 })).toThrow(
      /^the series is too long: more than 1000 rows of data; at most 1000 points are read$/,
    );
    // fewer rows, but a span of more slots than it reads (a gap filled at the median spacing)
    const rows = csv(Array.from({ length: 600 }, (_, i) => i % 7)).split("\n");
    const t0 = Date.UTC(2024, 0, 1);
    rows.push(`${new Date(t0 + 1100 * 300_000).toISOString()},1`);
    const err = (() => {
      try {
        parseSeriesCsv(rows.join("\n"), { maxPoints: 1000 });
      } catch (e) {
        return e as UsageError;
      }
    })();
    expect(err?.message).toBe(
      "the series is too long: 1101 points at its spacing of 300s; at most 1000 points are read",
    );
    expect(err?.hint).toMatch(/coarser interval/);
  });

  it("reads quoted fields, says when rows have more columns than two, and refuses an unclosed quote", () => {
    const t0 = Date.UTC(2024, 0, 1);
    const rows = ["timestamp,value,host"];
    for (let i = 0; i < 10; i++)
      rows.push(`"${new Date(t0 + i * 300_000).toISOString()}","${i + 1}",web-${i}`);
    const p = parseSeriesCsv(rows.join("\n"));
    expect(Array.from(p.values)).toEqual(ten);
    expect(p.notes).toContain(
      "10 rows had more than two columns: only the first two (timestamp, value) were read",
    );
    // a thousands separator inside quotes is one field, and not a number
    const sep = csv(["1", "2", "3", "4", "5", "6", "7", '"1,234"', "9", "10"]);
    expect(() => parseSeriesCsv(sep)).toThrow(/line 9: the value "1,234" is not a number/);
    expect(() => parseSeriesCsv(csv(["1", "2", "3", "4", "5", "6", "7", '"8', "9", "10"]))).toThrow(
      /line 9: a quote is not closed/,
    );
    expect(parseSeriesCsv(csv(ten)).notes.join(" ")).not.toMatch(/columns/);
  });

  it("refuses a grid blown up by one stray timestamp", () => {
    const text = csv(ten) + "\n2090-01-01T00:00:00Z,5";
    expect(() => parseSeriesCsv(text)).toThrow(/timestamps too irregular/);
  });

  it("refuses a grid that would be mostly filled in (one stray row 99× the span away), and takes one half filled", () => {
    // 10,000 rows a minute apart and one 990,000 minutes later: 99× the rows, under the 100× bound,
    // took 5 minutes to backtest and scored the interpolated line as perfect
    const rows = ["timestamp,value"];
    const t0 = Date.UTC(2024, 0, 1);
    for (let i = 0; i < 10_000; i++) rows.push(`${new Date(t0 + i * 60_000).toISOString()},${100 + (i % 7)}`);
    rows.push(`${new Date(t0 + 990_000 * 60_000).toISOString()},5`);
    expect(() => parseSeriesCsv(rows.join("\n"))).toThrow(
      /timestamps too sparse: at their median spacing of 60s they span 990001 intervals, and only 10001 have a value/,
    );
    // a gap of 49 minutes in 100: 51 rows a minute apart on a 100-slot grid, under half filled, accepted
    const half = ["timestamp,value"];
    for (let i = 0; i < 100; i++)
      if (i < 25 || i > 73) half.push(`${new Date(t0 + i * 60_000).toISOString()},${i}`);
    const p = parseSeriesCsv(half.join("\n"));
    expect(p.values.length).toBe(100);
    expect(p.filled).toBe(49);
  });

  it("reads a file without a header as data, and says so", () => {
    const text = csv(ten).split("\n").slice(1).join("\n");
    const p = parseSeriesCsv(text);
    expect(p.values.length).toBe(10);
    expect(p.notes.join(" ")).toMatch(/no header/);
  });

  it("takes a first line whose value is a number for data: a bad timestamp there is named, not dropped as a header", () => {
    const rows = Array.from({ length: 39 }, (_, i) => `${1677628800 + (i + 1) * 3600},${i}`);
    expect(() => parseSeriesCsv(["2023-02-29T00:00:00Z,5", ...rows].join("\n"))).toThrow(
      /line 1: cannot read the timestamp "2023-02-29T00:00:00Z"/,
    );
    // headers of any names still are headers
    for (const header of ["timestamp,value", "t,v", "time,requests per second", "ts,"]) {
      const p = parseSeriesCsv([header, ...rows].join("\n"));
      expect(p.values.length, header).toBe(39);
      expect(p.notes.join(" ")).not.toMatch(/no header/);
    }
  });

  it("says how many points off the regular grid it moved to the nearest slot", () => {
    const rows = Array.from(
      { length: 400 },
      (_, i) => `${1704067200 + i * 300 + (i % 10 === 5 ? 100 : 0)},${i}`,
    );
    const p = parseSeriesCsv(["timestamp,value", ...rows].join("\n"));
    expect(p.values.length).toBe(400);
    expect(p.notes).toContain("40 points off the regular grid moved to the nearest slot");
    expect(p.notes.join(" ")).not.toMatch(/averaged/);
    // on the grid: no note
    const onGrid = Array.from({ length: 400 }, (_, i) => `${1704067200 + i * 300},${i}`);
    expect(parseSeriesCsv(["timestamp,value", ...onGrid].join("\n")).notes).toEqual([]);
  });
});

describe("parseSeriesCsv on hostile values and timestamps", () => {
  it("refuses a value too large to add up, naming the line (±1e308 scored every model a perfect 0)", () => {
    for (const big of ["1e308", "-1e308", "2e15"]) {
      const values: (number | string)[] = [...ten];
      values[3] = big;
      expect(() => parseSeriesCsv(csv(values))).toThrow(UsageError);
      expect(() => parseSeriesCsv(csv(values))).toThrow(/line 5: the value .* is out of range/);
    }
    // the largest accepted value still parses
    const values: (number | string)[] = [...ten];
    values[3] = "1e15";
    expect(parseSeriesCsv(csv(values)).values[3]).toBe(1e15);
  });

  it("refuses epoch timestamps outside the dates JavaScript can hold", () => {
    for (const t of ["1e300", "9e15", "-9e15", "99999999999999999"])
      expect(parseTimestamp(t)).toBeUndefined();
    const text = ["t,v", ...ten.map((v, i) => `${1e300 + i * 1e290},${v}`)].join("\n");
    expect(() => parseSeriesCsv(text)).toThrow(/line 2: cannot read the timestamp "1e\+300"/);
  });

  it("refuses calendar dates that do not exist rather than rolling them over", () => {
    expect(parseTimestamp("2024-02-30")).toBeUndefined();
    expect(parseTimestamp("2023-02-29T00:00:00Z")).toBeUndefined();
    expect(parseTimestamp("2024-04-31 12:00")).toBeUndefined();
    expect(parseTimestamp("2024-02-29")).toBe(Date.UTC(2024, 1, 29));
  });

  it("on any text, returns finite values on a positive grid or throws a UsageError (property)", () => {
    const field = fc.oneof(
      fc.string(),
      fc.double().map(String),
      fc.integer({ min: -1e13, max: 1e17 }).map(String),
      fc.constantFrom("1e308", "-1e308", "1e300", "NaN", "Infinity", "0x10", "  5 ", "", "2024-02-30"),
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(field, field), { maxLength: 30 }),
        fc.constantFrom("\n", "\r\n", "\r"),
        fc.boolean(),
        (rows, nl, bom) => {
          const text = (bom ? "\uFEFF" : "") + ["t,v", ...rows.map(([a, b]) => `${a},${b}`)].join(nl);
          let p;
          try {
            p = parseSeriesCsv(text, { minPoints: 2 });
          } catch (err) {
            expect(err).toBeInstanceOf(UsageError);
            return;
          }
          expect(Number.isFinite(p.intervalSeconds) && p.intervalSeconds > 0).toBe(true);
          for (const v of p.values) expect(Number.isFinite(v)).toBe(true);
        },
      ),
      // no shrinking: on long rows of strings it runs for minutes; the seed replays the case
      { numRuns: 2000, seed: 20261127, endOnFailure: true },
    );
  });
});
