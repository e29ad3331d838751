import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { planChecksum } from "../../../src/engine/plan-file.js";
import type { MigrationPlan } from "../../../src/engine/planner.js";
import { cli } from "../../helpers/cli.js";

let dir: string;
const f = (name: string) => join(dir, name);
const MATRIX = {
  zones: ["a", "b", "c"],
  rtt_ms: [
    [1, 50, 80],
    [50, 1, 60],
    [80, 60, 1],
  ],
};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-sim-"));
  writeFileSync(f("rtt.json"), JSON.stringify(MATRIX));
  const lines = ["timestamp,key,op,zone"];
  const start = Date.UTC(2024, 0, 1);
  for (let j = 0; j < 40; j++) {
    for (let i = 0; i < 10; i++)
      lines.push(
        `${new Date(start + j * 60_000 + i * 5000).toISOString()},k${i % 2},${i % 4 ? "read" : "write"},${j < 20 ? "a" : "c"}`,
      );
  }
  writeFileSync(f("trace.csv"), lines.join("\n") + "\n");
  // a small series directory for build-trace
  const s = ["timestamp,value"];
  for (let i = 0; i < 288 * 2; i++) s.push(`${new Date(start + i * 300_000).toISOString()},${10 + (i % 7)}`);
  mkdirSync(f("series"));
  writeFileSync(f("series/load.csv"), s.join("\n") + "\n");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sim = (...args: string[]) =>
  cli([
    "simulate",
    "--trace",
    f("trace.csv"),
    "--latency",
    f("rtt.json"),
    "--interval",
    "60",
    "--lead",
    "5",
    ...args,
  ]);

describe("shardctl simulate", () => {
  it("prints the four policies as JSON", async () => {
    const r = await sim("--json", "--segments", "64");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out);
    expect(Object.keys(out.policies)).toEqual(["static", "reactive", "predictive", "oracle"]);
    for (const p of Object.values(out.policies) as Record<string, number>[]) {
      for (const k of ["mean_ms", "p99_ms", "migrations", "bytes_moved"]) expect(typeof p[k]).toBe("number");
    }
    expect(out.policies.oracle.mean_ms).toBeLessThanOrEqual(out.policies.static.mean_ms);
    // the same optimum without the cooldown is no higher
    expect(out.oracle_without_cooldown.mean_ms).toBeLessThanOrEqual(out.policies.oracle.mean_ms);
    expect(typeof out.oracle_without_cooldown.migrations).toBe("number");
    expect(r.err).toMatch(/events\/s/);
  });

  it("prints a table by default", async () => {
    const r = await sim("--policies", "static,oracle");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/policy.*mean ms.*p99 ms.*migrations/);
    expect(r.out).toMatch(/oracle/);
    expect(r.out).toMatch(/oracle without the cooldown \(a bound for any placement\): mean [\d.]+ ms/);
  });

  const hostile: [string, () => void, RegExp][] = [
    [
      "a matrix that is not square",
      () =>
        writeFileSync(
          f("bad.json"),
          JSON.stringify({
            zones: ["a", "b", "c"],
            rtt_ms: [
              [1, 2],
              [2, 1],
            ],
          }),
        ),
      /rows for 3 zones|not square/,
    ],
    [
      "a negative RTT",
      () =>
        writeFileSync(
          f("bad.json"),
          JSON.stringify({
            zones: ["a", "b", "c"],
            rtt_ms: [
              [1, -2, 3],
              [2, 1, 3],
              [3, 3, 1],
            ],
          }),
        ),
      /negative/,
    ],
    ["a matrix that is not JSON", () => writeFileSync(f("bad.json"), "{zones"), /not valid JSON/],
    [
      // a zone no config, client or trace can name: every access would miss it
      "an upper-case zone",
      () =>
        writeFileSync(
          f("bad.json"),
          JSON.stringify({
            zones: ["A", "b", "c"],
            rtt_ms: [
              [1, 2, 3],
              [2, 1, 3],
              [3, 3, 1],
            ],
          }),
        ),
      /zone name "A" is not allowed \(lower-case letters, digits/,
    ],
    [
      "a reserved zone name",
      () =>
        writeFileSync(
          f("bad.json"),
          JSON.stringify({
            zones: ["a", "total", "c"],
            rtt_ms: [
              [1, 2, 3],
              [2, 1, 3],
              [3, 3, 1],
            ],
          }),
        ),
      /"total" cannot name a zone/,
    ],
    [
      // finite, but summed over the events it overflowed to Infinity: null in --json, NaN% in the table
      "an RTT too large to add up",
      () =>
        writeFileSync(
          f("bad.json"),
          JSON.stringify({
            zones: ["a", "b", "c"],
            rtt_ms: [
              [1, 1e308, 3],
              [1e308, 1, 3],
              [3, 3, 1],
            ],
          }),
        ),
      /rtt_ms\[0\]\[1\] is 1e\+308 ms; at most 3600000 ms/,
    ],
  ];
  for (const [what, setup, re] of hostile) {
    it(`refuses ${what} (exit 2, no output)`, async () => {
      setup();
      const r = await cli(["simulate", "--trace", f("trace.csv"), "--latency", f("bad.json")]);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toMatch(re);
    });
  }

  it("refuses a trace with an unknown zone or unsorted lines, naming the line, with no output", async () => {
    const text = readFileSync(f("trace.csv"), "utf8").split("\n");
    writeFileSync(f("zone.csv"), [...text.slice(0, 5), "2024-01-01T00:00:59Z,k1,read,moon"].join("\n"));
    let r = await cli(["simulate", "--trace", f("zone.csv"), "--latency", f("rtt.json")]);
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toMatch(/line 6: unknown zone "moon"/);
    writeFileSync(f("unsorted.csv"), [text[0], text[3], text[2]].join("\n"));
    r = await cli(["simulate", "--trace", f("unsorted.csv"), "--latency", f("rtt.json"), "--json"]);
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toMatch(/line 3: .*not sorted/);
    writeFileSync(f("malformed.csv"), [text[0], "2024-01-01T00:00:00Z,k1,read"].join("\n"));
    r = await cli(["simulate", "--trace", f("malformed.csv"), "--latency", f("rtt.json")]);
    expect(r.err).toMatch(/line 2: expected 4 fields/);
  });

  it("refuses, quickly and with no output, a small trace whose span would need more counts than it holds", async () => {
    // 80 keys at the start of 2000 and one event 1,000,000 five-minute intervals later: 2 KB of
    // trace, which took 2 GB and 24 s before the bound
    const ms = Date.UTC(2000, 0, 1);
    const lines = ["timestamp,key,op,zone"];
    for (let i = 0; i < 80; i++) lines.push(`${ms + i},key${i},read,${"abc"[i % 3]}`);
    lines.push(`${ms + 1_000_000 * 300_000},key0,read,a`);
    writeFileSync(f("wide.csv"), lines.join("\n") + "\n");
    const r = await cli(["simulate", "--trace", f("wide.csv"), "--latency", f("rtt.json"), "--json"]);
    expect(r.code, r.err).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toMatch(
      /error: the trace needs [\d,]+ counts \(\d+ active segments × 3 zones × 1,000,001 intervals of 300 s\); the simulator holds at most 50,000,000/,
    );
    expect(r.err).toMatch(
      /hint: use a longer --interval, or a trace over a shorter span \(a stray timestamp/,
    );
    // the same trace at a day per interval fits
    const day = await cli([
      "simulate",
      "--trace",
      f("wide.csv"),
      "--latency",
      f("rtt.json"),
      "--interval",
      "86400",
      "--lead",
      "60",
      "--policies",
      "static",
      "--json",
    ]);
    expect(day.code, day.err).toBe(0);
  });

  it("needs --trace and --latency", async () => {
    const r = await cli(["simulate"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/needs --trace FILE and --latency MATRIX/);
  });

  it("build-trace writes the same trace for the same seed", async () => {
    const args = [
      "simulate",
      "build-trace",
      "--series",
      f("series"),
      "--keys",
      "3",
      "--events",
      "2000",
      "--days",
      "2",
    ];
    expect((await cli([...args, "--out", f("t1.csv"), "--seed", "4"])).code).toBe(0);
    expect((await cli([...args, "--out", f("t2.csv"), "--seed", "4"])).code).toBe(0);
    expect(readFileSync(f("t1.csv"), "utf8")).toBe(readFileSync(f("t2.csv"), "utf8"));
    expect(readFileSync(f("t1.csv"), "utf8").split("\n")[0]).toBe("timestamp,key,op,zone");
    const r = await cli([
      "simulate",
      "build-trace",
      "--series",
      f("series"),
      "--out",
      f("t3.csv"),
      "--seed",
      "x",
    ]);
    expect(r.code).toBe(2);
    const both = await cli(["simulate", "build-trace", "--out", f("t3.csv")]);
    expect(both.err).toMatch(/exactly one of --series/);
  });

  it("build-trace refuses a series interval below a second (every event would share a timestamp)", async () => {
    mkdirSync(f("tiny"), { recursive: true });
    writeFileSync(f("tiny/s.csv"), readFileSync(f("series/load.csv")));
    writeFileSync(
      f("tiny/index.json"),
      JSON.stringify([{ file: "s.csv", interval_seconds: 1e-9, season: 2 }]),
    );
    const r = await cli(["simulate", "build-trace", "--series", f("tiny"), "--out", f("tiny.csv")]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(
      /an interval of 1e-9 s \(interval_seconds in .*index.json\) is not a number of seconds ≥ 1/,
    );
    expect(existsSync(f("tiny.csv"))).toBe(false);
  });

  /** A series directory `name` holding the 300 s load series and `index` as its index.json; build-trace of it. */
  const indexed = (name: string, index: Record<string, unknown>) => {
    mkdirSync(f(name), { recursive: true });
    writeFileSync(f(`${name}/s.csv`), readFileSync(f("series/load.csv")));
    writeFileSync(f(`${name}/index.json`), JSON.stringify([{ file: "s.csv", ...index }]));
    return (...extra: string[]) =>
      cli(["simulate", "build-trace", "--series", f(name), "--out", f(`${name}.csv`), ...extra]);
  };

  it("build-trace refuses an index.json interval its series' timestamps contradict (it stretched the trace 5×)", async () => {
    const r = await indexed("badinterval", { interval_seconds: 1500 })();
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(
      `series s.csv: interval_seconds 1500 in ${f("badinterval/index.json")}, but its timestamps are 300 s apart`,
    );
    expect(existsSync(f("badinterval.csv"))).toBe(false);
  });

  it("build-trace refuses a season in index.json that is not a whole number of intervals (it was ignored)", async () => {
    for (const season of [0, -1, 2.5, "x", null]) {
      const r = await indexed("badseason", { interval_seconds: 300, season })();
      expect(r.code, JSON.stringify(season)).toBe(2);
      expect(r.err).toContain(
        `series s.csv: a season of ${JSON.stringify(season)} (season in ${f("badseason/index.json")}) is not a whole number of intervals ≥ 1`,
      );
      expect(existsSync(f("badseason.csv"))).toBe(false);
    }
    const ok = await indexed("badseason", { interval_seconds: 300, season: 288 })(
      "--events",
      "500",
      "--days",
      "2",
    );
    expect(ok.code, ok.err).toBe(0);
  });

  it("takes --lead 0 (decide at the boundary) and refuses a negative or fractional lead", async () => {
    const ok = await sim("--policies", "static,reactive", "--lead", "0", "--json");
    expect(ok.code, ok.err).toBe(0);
    for (const lead of ["-1", "1.5", "x"]) {
      const r = await sim("--policies", "static", "--lead", lead);
      expect(r.code, lead).toBe(2);
      expect(r.err).toMatch(/--lead must be a whole number of seconds ≥ 0/);
    }
  });
});

describe("shardctl plan", () => {
  const env = () => ({ SHARDCTL_DATA_DIR: f("data"), SHARDCTL_SEGMENTS: "64" });

  it("plans for a key with the default latency, says so, and writes/verifies plan files", async () => {
    expect((await cli(["init"], env())).code).toBe(0);
    expect((await cli(["record", "user:42", "--count", "400", "--zone", "c"], env())).code).toBe(0);
    const key = await cli(["plan", "--key", "user:42"], env());
    expect(key.code).toBe(0);
    expect(key.err).toMatch(/assumed 1 ms within a zone and 50 ms between zones/);
    expect(key.out).toMatch(/key user:42 → segment \d+, shard shard-\d+/);
    expect(key.out).toMatch(/RTT now/);
    const json = await cli(["plan", "--key", "user:42", "--json", "--latency", f("rtt.json")], env());
    expect(JSON.parse(json.out)).toMatchObject({
      format: "shardctl-migration-plan/1",
      scope: { kind: "key", key: "user:42" },
    });

    const all = await cli(["plan", "--all", "--out", f("plan.json")], env());
    expect(all.code).toBe(0);
    const ok = await cli(["plan", "--verify", f("plan.json")], env());
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/intact/);

    const text = readFileSync(f("plan.json"), "utf8");
    writeFileSync(f("tampered.json"), text.replace(/"horizonSeconds": \d+/, '"horizonSeconds": 1'));
    const tampered = await cli(["plan", "--verify", f("tampered.json")], env());
    expect(tampered.code).toBe(2);
    expect(tampered.err).toMatch(/checksum does not match/);
    writeFileSync(f("truncated.json"), text.slice(0, text.length / 2));
    const truncated = await cli(["plan", "--verify", f("truncated.json")], env());
    expect(truncated.code).toBe(2);
    expect(truncated.err).toMatch(/not complete JSON/);
    // --verify applies nothing, so its refusals do not say that nothing was applied
    expect(tampered.err + truncated.err).not.toMatch(/nothing was applied/);
    // a step `migrate --apply` would refuse (a hand edit that recomputed the checksum) is refused here too
    const file = JSON.parse(text) as { checksum: string; plan: MigrationPlan };
    file.plan.steps = [
      {
        kind: "move",
        shard: "shard-99",
        source: "node-1",
        target: "node-2",
        bytes: 1,
        benefitMs: 1,
        costMs: 0,
        netMs: 1,
        copySeconds: 0,
      },
    ];
    file.checksum = planChecksum(file.plan);
    writeFileSync(f("forged.json"), JSON.stringify(file));
    const forged = await cli(["plan", "--verify", f("forged.json")], env());
    expect(forged.code, forged.err).toBe(2);
    expect(forged.err).toMatch(/error: the plan's step 1 moves shard-99, which is not in the location map\n/);
    // and with a byte order mark in front, an intact plan still verifies
    writeFileSync(f("bom.json"), "\ufeff" + text);
    expect((await cli(["plan", "--verify", f("bom.json")], env())).code).toBe(0);

    // another cluster whose map is at the same version: the plan is not its plan
    const other = { ...env(), SHARDCTL_DATA_DIR: f("other") };
    expect((await cli(["init"], other)).code).toBe(0);
    const otherMap = readFileSync(f("other/location-map.json"), "utf8");
    expect(JSON.parse(otherMap)).toMatchObject({
      version: JSON.parse(readFileSync(f("data/location-map.json"), "utf8")).version,
    });
    for (const args of [["plan", "--verify"], ["migrate"], ["migrate", "--apply"]]) {
      const foreign = await cli([...args, f("plan.json")], other);
      expect(foreign.code, `${args.join(" ")}: ${foreign.err}`).toBe(3);
      expect(foreign.err).toMatch(
        /computed against another location map .* also at version \d+: it does not apply to this one/,
      );
    }
    expect(readFileSync(f("other/location-map.json"), "utf8")).toBe(otherMap);

    // the map moves on: the plan is stale
    expect((await cli(["init", "--force"], env())).code).toBe(0);
    const stale = await cli(["plan", "--verify", f("plan.json")], env());
    expect(stale.code).toBe(3);
    expect(stale.err).toMatch(/re-plan/);
  });

  it("refuses contradictory options", async () => {
    expect((await cli(["plan"], env())).code).toBe(2);
    expect((await cli(["plan", "--key", "k", "--all"], env())).code).toBe(2);
    expect((await cli(["plan", "--key", "k", "--out", f("x.json")], env())).code).toBe(2);
    expect((await cli(["plan", "--key", "k", "--horizon", "-5"], env())).code).toBe(2);
  });
});
