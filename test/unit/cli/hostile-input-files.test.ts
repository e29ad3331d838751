/**
 * Input files that are not what the commands expect: a directory, a device
 * that never ends, a file far too large. Each is a usage error (exit 2) naming
 * the file, with nothing on stdout: never an internal error, never a hang.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readInputBytes, readInputText } from "../../../src/commands/common.js";
import { UsageError } from "../../../src/errors.js";
import { cli } from "../../helpers/cli.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-hostile-input-");
const MATRIX = JSON.stringify({
  zones: ["a", "b"],
  rtt_ms: [
    [1, 50],
    [50, 1],
  ],
});

describe("readInputText", () => {
  it("reads a file whole", () => {
    const d = newDir();
    writeFileSync(join(d, "x.csv"), "a,b\n");
    expect(readInputText(join(d, "x.csv"), "the input")).toBe("a,b\n");
  });

  it("refuses a missing file, a directory and a file over the limit with a UsageError naming it", () => {
    const d = newDir();
    writeFileSync(join(d, "big.csv"), "x".repeat(1000));
    for (const [file, max, re] of [
      [join(d, "none.csv"), undefined, /cannot read the input .*none\.csv: it does not exist/],
      [d, undefined, /the input .* is a directory/],
      [join(d, "big.csv"), 999, /the input .*big\.csv is larger than 999 B/],
    ] as const) {
      expect(() => readInputText(file, "the input", max)).toThrow(UsageError);
      expect(() => readInputText(file, "the input", max)).toThrow(re);
    }
  });

  it("stops reading a device that never ends", () => {
    expect(() => readInputText("/dev/zero", "the trace", 1 << 20)).toThrow(
      /the trace \/dev\/zero is larger than 1\.0 MiB/,
    );
  });
});

describe("commands refuse input files that are directories or endless", () => {
  const cases: [string, (d: string) => string[]][] = [
    ["plan --verify DIR", (d) => ["plan", "--verify", d]],
    ["plan --verify /dev/zero", () => ["plan", "--verify", "/dev/zero"]],
    ["forecast backtest --input /dev/zero", () => ["forecast", "backtest", "--input", "/dev/zero"]],
    [
      "simulate --trace /dev/zero",
      (d) => ["simulate", "--trace", "/dev/zero", "--latency", join(d, "rtt.json")],
    ],
    [
      "simulate --latency /dev/zero",
      (d) => ["simulate", "--trace", join(d, "rtt.json"), "--latency", "/dev/zero"],
    ],
    [
      "simulate --latency DIR",
      (d) => ["simulate", "--trace", join(d, "rtt.json"), "--latency", join(d, "sub")],
    ],
  ];
  for (const [what, args] of cases) {
    it(`${what}: exit 2, the file named, nothing on stdout`, async () => {
      const d = newDir();
      writeFileSync(join(d, "rtt.json"), MATRIX);
      mkdirSync(join(d, "sub"));
      const r = await cli(args(d), { SHARDCTL_DATA_DIR: join(d, "data") });
      expect(r.err).not.toMatch(/internal error/);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toMatch(/is a directory|is larger than/);
    });
  }
});

describe("simulate build-trace --requests", () => {
  it("refuses a time beyond what a Date holds, naming the line, and writes no trace", async () => {
    // it was read as epoch ms, then writing the trace as ISO-8601 crashed (RangeError)
    const d = newDir();
    writeFileSync(join(d, "req.csv"), "timestamp,key\n1704067200000,k1\n9999999999999999,k2\n");
    const r = await cli([
      "simulate",
      "build-trace",
      "--requests",
      join(d, "req.csv"),
      "--out",
      join(d, "t.csv"),
    ]);
    expect(r.err).not.toMatch(/internal error/);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/line 3: bad timestamp "9999999999999999"/);
    expect(existsSync(join(d, "t.csv"))).toBe(false);
  });
});

describe("plan --all --out", () => {
  it("refuses a named pipe rather than replacing it with a regular file, before planning", async () => {
    const d = newDir();
    execFileSync("mkfifo", [join(d, "pipe")]);
    const r = await cli(["plan", "--all", "--out", join(d, "pipe")], { SHARDCTL_DATA_DIR: join(d, "data") });
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toMatch(/--out .*pipe: is a pipe, not a regular file/);
    expect(statSync(join(d, "pipe")).isFIFO()).toBe(true);
  });
});

describe("forecast backtest on values too large to add up", () => {
  it("is exit 2 naming the line, not a table of perfect scores", async () => {
    // ±1e308 overflowed in every model and the report rounded the Infinity/NaN scores to 0
    const d = newDir();
    const t0 = Date.UTC(2024, 0, 1);
    const rows = Array.from(
      { length: 100 },
      (_, i) => `${new Date(t0 + i * 3_600_000).toISOString()},${i % 2 ? "1e308" : "-1e308"}`,
    );
    writeFileSync(join(d, "big.csv"), ["timestamp,value", ...rows].join("\n"));
    const r = await cli(["forecast", "backtest", "--input", join(d, "big.csv"), "--json"]);
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toMatch(/line 2: the value "-1e308" is out of range/);
  });
});

/** Every file and directory under `root`, relative, sorted: what a refusal must not change. */
function tree(root: string): string[] {
  return readdirSync(root, { recursive: true, encoding: "utf8" }).sort();
}

describe("files that were read whole without a bound", () => {
  // each read /dev/zero until memory ran out (the process was killed); now reading stops at a limit
  const cases: [string, (d: string) => string[], NodeJS.ProcessEnv, RegExp][] = [
    [
      "--config /dev/zero",
      () => ["--config", "/dev/zero", "shards"],
      {},
      /config file \/dev\/zero is larger than 1 MiB/,
    ],
    ["SHARDCTL_CONFIG=/dev/zero", () => ["shards"], { SHARDCTL_CONFIG: "/dev/zero" }, /larger than 1 MiB/],
    ["--config DIR", (d) => ["--config", join(d, "sub"), "shards"], {}, /config file .*sub is a directory/],
    [
      "record --trace /dev/zero",
      () => ["record", "--trace", "/dev/zero"],
      {},
      /the trace \/dev\/zero is larger than 448\.0 MiB/,
    ],
    [
      "record --trace DIR",
      (d) => ["record", "--trace", join(d, "sub")],
      {},
      /the trace .*sub is a directory/,
    ],
    [
      "put --file /dev/zero",
      () => ["put", "big", "--file", "/dev/zero"],
      {},
      /the value in \/dev\/zero is more than 16777216 bytes \(limits\.maxValueBytes\)/,
    ],
    [
      "put --file DIR",
      (d) => ["put", "big", "--file", join(d, "sub")],
      {},
      /the value file .*sub is a directory/,
    ],
  ];
  for (const [what, args, env, re] of cases) {
    it(`${what}: exit 2 with the limit named, nothing written`, async () => {
      const d = newDir();
      mkdirSync(join(d, "sub"));
      const before = tree(d);
      const r = await cli(args(d), { SHARDCTL_DATA_DIR: join(d, "data"), ...env });
      expect(r.err).not.toMatch(/internal error/);
      expect(r.code, r.err).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toMatch(re);
      expect(tree(d)).toEqual(before);
    });
  }

  it("put --file with a smaller limits.maxValueBytes stops at that limit + 1", async () => {
    const d = newDir();
    writeFileSync(join(d, "shardctl.yaml"), "limits:\n  maxValueBytes: 1000\n");
    writeFileSync(join(d, "v.bin"), Buffer.alloc(1001));
    const r = await cli(["--config", join(d, "shardctl.yaml"), "put", "k", "--file", join(d, "v.bin")], {
      SHARDCTL_DATA_DIR: join(d, "data"),
    });
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/the value in .*v\.bin is more than 1000 bytes/);
  });
});

describe("readInputBytes", () => {
  it("reads a binary file whole, and stops at the limit + 1 with the caller's error", () => {
    const d = newDir();
    writeFileSync(join(d, "v.bin"), Buffer.from([0, 255, 1]));
    expect(readInputBytes(join(d, "v.bin"), "the value")).toEqual(Buffer.from([0, 255, 1]));
    expect(() =>
      readInputBytes("/dev/zero", "the value", 10, { tooLarge: () => new UsageError("too big") }),
    ).toThrow("too big");
  });
});
