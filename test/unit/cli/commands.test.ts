import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Command } from "commander";
import { buildProgram } from "../../../src/cli.js";
import { cli } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-cli-"));
  env = { SHARDCTL_DATA_DIR: join(dir, "data"), SHARDCTL_CONFIG: join(dir, "shardctl.yaml") };
  writeFileSync(join(dir, "shardctl.yaml"), "segments: 1024\nreshard:\n  rateWindowSeconds: 600\n");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const mapFile = () => join(dir, "data/location-map.json");

describe("shardctl (foundation commands)", () => {
  it("prints help for every command and exits 0", async () => {
    const top = await cli(["--help"], env);
    expect(top.code).toBe(0);
    const paths: string[][] = [];
    const walk = (cmd: Command, path: string[]) => {
      for (const sub of cmd.commands) {
        paths.push([...path, sub.name()]);
        walk(sub, [...path, sub.name()]);
      }
    };
    walk(buildProgram(), []);
    expect(paths.map((p) => p[0])).toEqual(
      expect.arrayContaining(["init", "locate", "record", "reshard", "shards"]),
    );
    for (const path of paths) {
      const r = await cli([...path, "--help"], env);
      expect(r.code, path.join(" ")).toBe(0);
      expect(r.out, path.join(" ")).toMatch(/Usage: shardctl/);
      expect(r.out, path.join(" ")).toMatch(/Examples?:/);
    }
  });

  it("prints the version", async () => {
    const r = await cli(["--version"], env);
    expect(r.code).toBe(0);
    expect(r.out.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("exits 2 on an unknown command or flag", async () => {
    expect((await cli(["frobnicate"], env)).code).toBe(2);
    expect((await cli(["reshard", "--aply"], env)).code).toBe(2);
  });

  it("makes a migration dry run, and a recovery with nothing to recover, without an agent token", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    const dry = await cli(["migrate", "--shard", "shard-1", "--to", "node-2"], env);
    expect(dry.err).toMatch(/dry run: nothing changed/);
    expect(dry.code).toBe(0);
    const recover = await cli(["migrations", "--recover"], env);
    expect(recover.err).toMatch(/nothing orphaned/);
    expect(recover.code).toBe(0);
    // applying does need one
    const apply = await cli(["migrate", "--shard", "shard-1", "--to", "node-2", "--apply"], env);
    expect(apply.code).toBe(3);
    expect(apply.err).toMatch(/no agent token/);
  });

  it("says a plan without moves has nothing to do, applied or not, without an agent token", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    const file = join(dir, "empty.json");
    const planned = await cli(["plan", "--all", "--out", file, "--json"], env);
    expect(planned.code).toBe(0);
    for (const [args, dry] of [
      [["migrate", file], true],
      [["migrate", "--apply", file], false],
    ] as const) {
      const r = await cli([...args], env);
      expect(r.code, args.join(" ")).toBe(0);
      expect(r.err).toMatch(/the plan has no moves \(map version 1\): nothing to do/);
      expect(/dry run/.test(r.err), args.join(" ")).toBe(dry);
      expect(r.out).toBe("");
    }
    const json = await cli(["migrate", "--apply", file, "--json"], env);
    expect(JSON.parse(json.out)).toMatchObject({ applied: false, mapVersion: 1, moves: [], migrations: [] });
  });

  it("exits 2 when a subcommand is missing or unknown (help on stderr), 0 when help is asked for", async () => {
    for (const args of [[], ["forecast"], ["node"], ["help", "nope"]]) {
      const r = await cli(args, env);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err, args.join(" ")).toMatch(/Usage: shardctl/);
    }
    expect((await cli(["help"], env)).code).toBe(0);
    expect((await cli(["help", "plan"], env)).code).toBe(0);
    // a subcommand's help through `help`, also under a command that has an action of its own
    for (const args of [
      ["node", "help", "start"],
      ["simulate", "help", "build-trace"],
    ]) {
      const h = await cli(args, env);
      expect(h.code, args.join(" ")).toBe(0);
      expect(h.out).toMatch(new RegExp(`^Usage: shardctl ${args[0]} ${args[2]} `));
    }
  });

  it("init: more shards asked for than there are segments is one segment a shard, and says so", async () => {
    const r = await cli(["init", "--shards-per-node", "99999999", "--json"], {
      ...env,
      SHARDCTL_SEGMENTS: "64",
    });
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ segments: 64, shards: 64 });
    expect(r.err).toMatch(
      /^note: \d+ shards asked for \(--shards-per-node 99999999 × 3 node\(s\)\), but there are 64 segments: 64 shards of one segment each$/m,
    );
  });

  it("runs init → record → reshard → locate end to end, with --json", async () => {
    expect((await cli(["init", "--json"], env)).code).toBe(0);
    expect((await cli(["init"], env)).code).toBe(3); // already there
    const rec = await cli(
      ["record", "hot", "--count", "60000", "--zone", "b", "--op", "write", "--json"],
      env,
    );
    expect(JSON.parse(rec.out)).toEqual({ events: 60000, segments: 1 });
    // no agents serve this layout: the file is what the commands read, nothing to warn about
    expect(rec.err).not.toMatch(/warning/);
    const dry = await cli(["reshard", "--json"], env);
    expect(dry.code).toBe(0);
    const plan = JSON.parse(dry.out);
    expect(plan.applied).toBe(false);
    expect(plan.diff.ops[0]).toMatchObject({ kind: "split", reason: "hot-segment" });
    const applied = JSON.parse((await cli(["reshard", "--apply", "--json"], env)).out);
    expect(applied.appliedVersion).toBe(2);
    const loc = JSON.parse((await cli(["locate", "hot", "--json"], env)).out);
    const shards = JSON.parse((await cli(["shards", "--json"], env)).out);
    const own = shards.map.shards.find((s: { id: string }) => s.id === loc.shard);
    expect(own.ranges).toEqual([[loc.segment, loc.segment + 1]]);
  });

  it("refuses a corrupt or truncated store file, changing nothing", async () => {
    await cli(["init"], env);
    const text = readFileSync(mapFile(), "utf8");
    for (const bad of [text.slice(0, 100), text.replace('"epoch":1', '"epoch":7')]) {
      writeFileSync(mapFile(), bad);
      for (const args of [["locate", "k"], ["reshard", "--apply"], ["shards"]]) {
        const r = await cli(args, env);
        expect(r.code, args.join(" ")).toBe(1);
        expect(r.err).toMatch(/location map .* is corrupt/);
        expect(r.err).not.toMatch(/at .*\.ts:\d+/); // no stack trace
      }
      expect(readFileSync(mapFile(), "utf8")).toBe(bad);
    }
  });

  it("refuses hostile keys, access types, zones and counts, recording nothing", async () => {
    await cli(["init"], env);
    const cases: [string[], RegExp][] = [
      [["record", ""], /empty/],
      [["record", "x".repeat(1 << 20)], /longer than 1024/],
      [["record", "a\ud800b"], /UTF-8/],
      [["record", "k", "--op", "scan"], /unknown access type/],
      [["record", "k", "--zone", "mars"], /unknown origin zone/],
      [["record", "k", "--count", "-3"], /positive integer/],
      [["locate", ""], /empty/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args, env);
      expect(r.code, args[1]?.slice(0, 10)).toBe(2);
      expect(r.err).toMatch(message);
    }
    expect(existsSync(join(dir, "data/access-windows.bin"))).toBe(false);
  });

  it("validates a whole trace before recording any of it", async () => {
    const trace = join(dir, "trace.csv");
    writeFileSync(
      trace,
      "timestamp,key,op,zone\n1704067201000,a,read,a\n1704067202000,b,write,b\nnot-a-time,c,read,a\n",
    );
    const r = await cli(["record", "--trace", trace], env);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/line 4: bad timestamp/);
    expect(existsSync(join(dir, "data/access-windows.bin"))).toBe(false);
    writeFileSync(
      trace,
      "timestamp,key,op,zone\n1704067201000,a,read,a\n1704067202000,b,write,b\n1704067202500,c,read,\n",
    );
    expect((await cli(["record", "--trace", trace], env)).code).toBe(0);
  });

  it("refuses an access-windows path that is a directory or a device, naming it (it was a raw EISDIR)", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    const file = join(dir, "data/access-windows.bin");
    mkdirSync(file);
    for (const args of [
      ["plan", "--all"],
      ["predict", "--key", "k"],
      ["record", "k"],
    ]) {
      const r = await cli(args, env);
      expect(r.code, `${args[0]}: ${r.err}`).toBe(3);
      expect(r.err).toContain(
        `error: ${file} is a directory, not an access-windows file; nothing was changed`,
      );
      expect(r.err).not.toMatch(/EISDIR/);
    }
    rmSync(file, { recursive: true });
    symlinkSync("/dev/zero", file);
    const r = await cli(["plan", "--all"], env);
    expect(r.code, r.err).toBe(3);
    expect(r.err).toContain(`${file} is not a regular file`);
  });

  it("refuses access windows recorded with other window levels than the config's, changing nothing", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    expect((await cli(["record", "k", "--count", "5"], env)).code).toBe(0);
    const file = join(dir, "data/access-windows.bin");
    const before = readFileSync(file);
    writeFileSync(
      join(dir, "shardctl.yaml"),
      "segments: 1024\nwindows:\n  levels:\n    - { resolutionSeconds: 1, slots: 10 }\n    - { resolutionSeconds: 60, slots: 120 }\n",
    );
    for (const args of [
      ["record", "k"],
      ["predict", "--key", "k"],
    ]) {
      const r = await cli(args, env);
      expect(r.code, args[0]).toBe(3);
      expect(r.err).toMatch(
        /recorded with window levels 1s×10, 60s×60, 3600s×48, but the config says 1s×10, 60s×120/,
      );
    }
    expect(readFileSync(file).equals(before)).toBe(true);
  });

  it("a config whose segment count differs from the stored state is the same precondition (exit 3) for every command", async () => {
    expect((await cli(["init"], env)).code).toBe(0);
    expect((await cli(["record", "k", "--count", "5"], env)).code).toBe(0);
    const windows = readFileSync(join(dir, "data/access-windows.bin"));
    const map = readFileSync(mapFile());
    const other = { ...env, SHARDCTL_SEGMENTS: "2048" };
    for (const args of [["locate", "k"], ["record", "k"], ["reshard"], ["predict", "--key", "k"]]) {
      const r = await cli(args, other);
      expect(r.code, `${args[0]}: ${r.err}`).toBe(3);
      expect(r.err).toMatch(/1024.*2048|2048.*1024/);
    }
    expect(readFileSync(join(dir, "data/access-windows.bin")).equals(windows)).toBe(true);
    expect(readFileSync(mapFile()).equals(map)).toBe(true);
  });

  it("refuses a config with wrong types (exit 2) before touching the store", async () => {
    writeFileSync(join(dir, "shardctl.yaml"), "segments: lots\n");
    const r = await cli(["init"], env);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/invalid configuration.*\n.*segments/);
    expect(existsSync(mapFile())).toBe(false);
  });

  it("says what to do when no layout exists (exit 3)", async () => {
    const r = await cli(["locate", "k"], env);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/shardctl init/);
  });
});
