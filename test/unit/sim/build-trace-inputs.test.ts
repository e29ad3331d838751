/**
 * What build-trace writes, simulate reads: hostile request logs and options
 * are refused by build-trace (exit 2, naming the line, nothing written), with
 * the rules simulate applies; and the smaller edges of simulate's inputs.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli, repoRoot } from "../../helpers/cli.js";

let dir: string;
const f = (name: string) => join(dir, name);
const MATRIX = '{"zones":["a","b","c"],"rtt_ms":[[1,50,80],[50,1,60],[80,60,1]]}';

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-build-trace-"));
  writeFileSync(f("rtt.json"), MATRIX);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A request log: a header, a good line, then `last` as line 3. */
function log(name: string, last: string | Buffer): string {
  writeFileSync(
    f(name),
    Buffer.concat([
      Buffer.from("timestamp,key\n2024-01-01T00:00:00Z,a\n"),
      Buffer.from(last),
      Buffer.from("\n"),
    ]),
  );
  return f(name);
}

const build = (...args: string[]) => cli(["simulate", "build-trace", ...args]);

/** Nothing at `out`, and no temporary file beside it. */
function nothingWritten(out: string): void {
  expect(existsSync(out)).toBe(false);
  expect(readdirSync(dir).filter((n) => n.startsWith(".tmp"))).toEqual([]);
}

describe("simulate build-trace refuses what simulate would refuse", () => {
  it("a key longer than 1024 bytes or not UTF-8, naming the line; simulate refuses the same key in a trace", async () => {
    for (const [name, last, why] of [
      ["long", `2024-01-01T00:00:01Z,${"k".repeat(2001)}`, /line 3: the key is longer than 1024 bytes/],
      [
        "ff",
        Buffer.from([...Buffer.from("2024-01-01T00:00:01Z,ab"), 0xff, 0x63]),
        /line 3: the key holds U\+FFFD, the replacement character: bytes that are not UTF-8 turn into it/,
      ],
    ] as const) {
      const out = f(`${name}.trace.csv`);
      const r = await build("--requests", log(`${name}.csv`, last), "--out", out);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(why);
      expect(r.err).toMatch(/nothing was written/);
      nothingWritten(out);
    }
    // the same key in a trace: simulate's reason, which build-trace now gives
    writeFileSync(
      f("long-trace.csv"),
      `timestamp,key,op,zone\n2024-01-01T00:00:00Z,${"k".repeat(2001)},read,a\n`,
    );
    const s = await cli(["simulate", "--trace", f("long-trace.csv"), "--latency", f("rtt.json")]);
    expect(s.code).toBe(2);
    expect(s.err).toMatch(/the key is longer than 1024 bytes/);
  });

  it("zone names the config refuses (A, total, reads)", async () => {
    const requests = log("ok.csv", "2024-01-01T00:00:01Z,b");
    for (const zones of ["A,b", "total,b", "a,reads", "a,B"]) {
      const out = f("zones.trace.csv");
      const r = await build("--requests", requests, "--zones", zones, "--out", out);
      expect(r.code, zones).toBe(2);
      expect(r.err).toMatch(/is not allowed|cannot name a zone/);
      nothingWritten(out);
    }
  });

  it("a number of epoch seconds: epoch ms are expected, and the message says so; epoch ms from 2000 on are read", async () => {
    const out = f("secs.trace.csv");
    writeFileSync(f("secs.csv"), "timestamp,key\n1500000000,a\n1500000060,b\n");
    const r = await build("--requests", f("secs.csv"), "--out", out);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(/line 2: bad timestamp 1500000000: a number is read as epoch milliseconds/);
    expect(r.err).toMatch(/1970-01-18.*before 2000-01-01.*multiply by 1000/);
    nothingWritten(out);
    // the same times in ms (and a byte order mark before the header) are 2017
    writeFileSync(f("ms.csv"), "\uFEFFtimestamp,key\n1500000000000,a\n1500000060000,b\n");
    const ok = await build("--requests", f("ms.csv"), "--out", out, "--json");
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).toEqual({
      out,
      events: 2,
      keys: 2,
      zones: ["a", "b", "c"],
      span: { from: "2017-07-14T02:40:00.000Z", to: "2017-07-14T02:41:00.000Z" },
    });
    // and simulate reads what was written
    const s = await cli(["simulate", "--trace", out, "--latency", f("rtt.json"), "--json"]);
    expect(s.code, s.err).toBe(0);
    // a trace's numeric times follow the same rule
    writeFileSync(f("secs-trace.csv"), "timestamp,key,op,zone\n1500000000,a,read,a\n");
    const t = await cli(["simulate", "--trace", f("secs-trace.csv"), "--latency", f("rtt.json")]);
    expect(t.code).toBe(2);
    expect(t.err).toMatch(/line 2: bad timestamp 1500000000: a number is read as epoch milliseconds/);
  });

  it("refuses an empty --out clearly (it said rename '.tmp-NNN' -> '')", async () => {
    const before = readdirSync(process.cwd()).filter((n) => n.startsWith(".tmp"));
    const r = await build("--requests", log("ok2.csv", "2024-01-01T00:00:01Z,b"), "--out", "");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^error: --out is empty$/m);
    expect(r.err).not.toMatch(/rename/);
    expect(readdirSync(process.cwd()).filter((n) => n.startsWith(".tmp"))).toEqual(before);
  });

  it("refuses an --out that is one of its inputs (the request log, a series of --series), writing nothing", async () => {
    const input = log("self.csv", "2024-01-01T00:00:01Z,b");
    const before = readFileSync(input, "utf8");
    let r = await build("--requests", input, "--out", input);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(
      /--out .*self\.csv is the input itself: the trace would replace the data it is built from/,
    );
    expect(readFileSync(input, "utf8")).toBe(before);
    const series = f("series-dir");
    mkdirSync(series);
    const rows = Array.from({ length: 600 }, (_, i) => `${1704067200 + i * 300},${10 + (i % 7)}`);
    writeFileSync(join(series, "base.csv"), ["timestamp,value", ...rows].join("\n"));
    r = await build("--series", series, "--out", join(series, "base.csv"));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/is the input itself/);
    expect(readFileSync(join(series, "base.csv"), "utf8").startsWith("timestamp,value\n1704067200,")).toBe(
      true,
    );
    // through another path to the same file (a link) too
    symlinkSync(join(series, "base.csv"), f("link.csv"));
    r = await build("--series", series, "--out", f("link.csv"));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/is the input .*base\.csv/);
    // another file is written
    r = await build("--series", series, "--out", f("trace-out.csv"));
    expect(r.code, r.err).toBe(0);
  });

  it("lists --json in its help, and man/shardctl.1 describes it as itself", async () => {
    const help = await build("--help");
    expect(help.out).toMatch(/--json/);
    const man = readFileSync(join(repoRoot, "man/shardctl.1"), "utf8");
    expect(man).toMatch(/\.B simulate build\\-trace\nbuild a follow\\-the\\-sun trace/);
    expect(man).toMatch(/\.B simulate\nreplay a workload trace/);
  });
});

describe("simulate's smaller edges", () => {
  const trace = () => {
    const lines = ["timestamp,key,op,zone"];
    const start = Date.UTC(2024, 0, 1);
    for (let i = 0; i < 60; i++) lines.push(`${new Date(start + i * 60_000).toISOString()},k${i % 3},read,a`);
    writeFileSync(f("t.csv"), lines.join("\n") + "\n");
    return f("t.csv");
  };

  it("names --lead and its default when the interval is not longer than the lead the user never gave", async () => {
    const r = await cli(["simulate", "--trace", trace(), "--latency", f("rtt.json"), "--interval", "1"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--lead: 30 s, its default/);
    expect(r.err).toMatch(/--interval: 1 s/);
  });

  it("reads a latency matrix that starts with a UTF-8 byte order mark", async () => {
    writeFileSync(f("bom.json"), "\uFEFF" + MATRIX);
    const r = await cli([
      "simulate",
      "--trace",
      trace(),
      "--latency",
      f("bom.json"),
      "--interval",
      "60",
      "--lead",
      "5",
    ]);
    expect(r.code, r.err).toBe(0);
  });

  it("refuses a request log whose trace simulate would not replay at its defaults, writing nothing", async () => {
    // a stray year: 2024 and 9999 span far more than 5,000,000 five-minute intervals
    const out = f("far.trace.csv");
    let r = await build("--requests", log("far.csv", "9999-12-31T00:00:00Z,b"), "--out", out);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(
      /the trace built \(\d+ events from 2024-01-01T00:00:00\.000Z to 9999-12-31T00:00:00\.000Z\) is more than simulate replays at its default --interval: the trace spans [\d,]+ intervals of 300 s; the simulator replays at most 5,000,000; nothing was written/,
    );
    expect(r.err).toMatch(/hint: check the input for a stray timestamp/);
    nothingWritten(out);
    // within the interval bound, but too many counts: 80 keys over 1,000,001 intervals
    const rows = ["timestamp,key"];
    const ms = Date.UTC(2000, 0, 1);
    for (let i = 0; i < 80; i++) rows.push(`${ms + i},key${i}`);
    rows.push(`${ms + 1_000_000 * 300_000},key0`);
    writeFileSync(f("wide.csv"), rows.join("\n") + "\n");
    r = await build("--requests", f("wide.csv"), "--out", out);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(
      /the trace needs [\d,]+ counts \(\d+ active segments × 3 zones × 1,000,001 intervals of 300 s\)/,
    );
    nothingWritten(out);
  });

  it("notes a horizon that leaves the predictive policy no forecast inside the trace", async () => {
    const args = [
      "simulate",
      "--trace",
      trace(),
      "--latency",
      f("rtt.json"),
      "--interval",
      "60",
      "--lead",
      "5",
    ];
    const long = await cli([...args, "--horizon", "100000", "--json"]);
    expect(long.code, long.err).toBe(0);
    expect(long.err).toMatch(
      /note: the horizon \(--horizon: 100000 intervals of 60 s\) leaves no forecast inside the trace .*predictive decides as reactive does here/,
    );
    const result = JSON.parse(long.out);
    expect(result.notes).toHaveLength(1);
    // both plan on what they observed: the same moves, the same latency
    expect(result.policies.predictive).toEqual(result.policies.reactive);
    const short = await cli([...args, "--horizon", "2", "--json"]);
    expect(short.err).not.toMatch(/note:/);
    expect(JSON.parse(short.out).notes).toEqual([]);
    // a trace of one interval: no horizon helps, and the note does not ask for one below 1
    writeFileSync(f("one.csv"), "timestamp,key,op,zone\n2024-01-01T00:00:00Z,k0,read,a\n");
    const one = await cli(["simulate", "--trace", f("one.csv"), "--latency", f("rtt.json"), "--json"]);
    expect(one.code, one.err).toBe(0);
    expect(one.err).toMatch(/no --horizon gives one in a trace this short .*: give a shorter --interval/);
    expect(one.err).not.toMatch(/below 1/);
  });
});
