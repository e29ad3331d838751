/**
 * `shardctl record --trace`: a bad line is named by its line number, whatever
 * is wrong with it (key or timestamp), and options a trace would silently
 * ignore (--op, --zone, --count) are refused; either way nothing is recorded.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseTrace } from "../../../src/commands/record.js";
import { cli } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-trace-"));
  env = { SHARDCTL_DATA_DIR: join(dir, "data"), SHARDCTL_CONFIG: join(dir, "shardctl.yaml") };
  writeFileSync(join(dir, "shardctl.yaml"), "segments: 1024\n");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const windowsFile = () => join(dir, "data/access-windows.bin");
/** Epoch milliseconds of 2024-01-01 without its last digit: `${T}1` is a time in the trace's range. */
const T = String(Date.UTC(2024, 0, 1)).slice(0, -1);
const trace = (body: string) => {
  const f = join(dir, "t.csv");
  writeFileSync(f, `timestamp,key,op,zone\n${body}`);
  return f;
};

describe("record --trace", () => {
  it("names the line of a bad key or an unusable timestamp, exit 2, recording nothing", async () => {
    for (const [body, line, why] of [
      [`${T}1,a,read\n${T}2,,write,b\n${T}3,c,read\n`, 3, /the key is empty/],
      [`${T}1,a,read\n${T}2,b,read\n${T}3,x\ud800y,write\n`, 4, /UTF-8/],
      [`${T}1,a,read\n9999999999999999999,b,write\n`, 3, /bad timestamp/],
      // epoch seconds are not taken for milliseconds (60 events a minute apart were recorded in one minute)
      [
        `${T}1,a,read\n1704067200,b,write\n`,
        3,
        /1704067200 ms is 1970-01-20.*epoch seconds\? multiply by 1000/,
      ],
      // a day the calendar lacks is not rolled over into March, nor a date-like word parsed
      [`2024-02-30T00:00:00Z,a,read\n`, 2, /bad timestamp "2024-02-30T00:00:00Z"/],
      [`March 7,a,read\n`, 2, /bad timestamp "March 7"/],
    ] as const) {
      const r = await cli(["record", "--trace", trace(body)], env);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(new RegExp(`error: trace line ${line}: `));
      expect(r.err).toMatch(why);
      expect(existsSync(windowsFile())).toBe(false);
    }
  });

  it("refuses --op, --zone and --count, which a trace would ignore, recording nothing", async () => {
    const f = trace(`${T}1,a,read\n${T}2,b,read,c\n`);
    for (const extra of [
      ["--zone", "b"],
      ["--op", "write"],
      ["--count", "7"],
    ]) {
      const r = await cli(["record", "--trace", f, ...extra], env);
      expect(r.code, extra.join(" ")).toBe(2);
      expect(r.err).toMatch(new RegExp(`${extra[0]} cannot be given with --trace`));
      expect(existsSync(windowsFile())).toBe(false);
    }
    const ok = await cli(["record", "--trace", f, "--json"], env);
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).toEqual({ events: 2, segments: 2 });
  });
});

describe("record --trace reads a trace as simulate does", () => {
  it("unquotes quoted fields: a key with a comma or quotes is the key itself", () => {
    const events = parseTrace(
      'timestamp,key,op,zone\n2024-01-01T00:00:00Z,"user:1",read,a\n2024-01-01T00:00:01Z,"/a,b/""c""",write,b\n',
      ["a", "b"],
    );
    expect(events.map((e) => e.key)).toEqual(["user:1", '/a,b/"c"']);
    expect(events.map((e) => e.op)).toEqual(["read", "write"]);
  });

  it("reads a time without a zone as UTC, needs no header, and takes CR, LF and CRLF line ends", () => {
    for (const eol of ["\n", "\r\n", "\r"]) {
      const events = parseTrace(
        ["\uFEFF2024-01-01T10:00:00,k,read", "1704103200001,k,write,a", ""].join(eol),
        ["a"],
      );
      expect(events.map((e) => e.ts)).toEqual([Date.UTC(2024, 0, 1, 10), Date.UTC(2024, 0, 1, 10) + 1]);
      expect(events.map((e) => e.zone)).toEqual([undefined, "a"]);
    }
  });

  it("refuses an empty trace, a header of other columns and an unbalanced quote, naming the line", () => {
    expect(() => parseTrace("timestamp,key,op\n\n", ["a"])).toThrow(/the trace has no events/);
    expect(() => parseTrace("timestamp,value\n", ["a"])).toThrow(/trace line 1: the header must be/);
    expect(() => parseTrace(`${T}1,"k,read\n`, ["a"])).toThrow(/trace line 1: unbalanced quote/);
  });

  it("records a trace simulate build-trace wrote from a request log with commas in its keys", async () => {
    const log = join(dir, "req.csv");
    writeFileSync(
      log,
      "timestamp,key\n" +
        Array.from({ length: 200 }, (_, i) => `${1704067200000 + i * 60000},"/a,b/${i % 7}"`).join("\n"),
    );
    const built = join(dir, "built.csv");
    const b = await cli(["simulate", "build-trace", "--requests", log, "--out", built], env);
    expect(b.code, b.err).toBe(0);
    const r = await cli(["record", "--trace", built, "--json"], env);
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ events: 200 });
  });
});
