/**
 * The built CLI on paths a user gets wrong (--out a directory, --out under a missing
 * directory, a data directory that is a file): a usage error naming the path, exit 2,
 * no stack, and nothing left behind (no `.tmp-PID`, no partial output). --out through a
 * symbolic link writes the file the link points to, like a shell redirection.
 */
import { execFileSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { runProcess } from "../../helpers/cli.js";
import { expectRefused, tree } from "../../helpers/hostile-paths.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-badpaths-");
let dir: string;
const env = () => ({ SHARDCTL_DATA_DIR: join(dir, "data"), SHARDCTL_SEGMENTS: "64" });

beforeEach(() => {
  dir = newDir();
  mkdirSync(join(dir, "somedir"));
  writeFileSync(join(dir, "afile"), "keep me");
  const s = ["timestamp,value"];
  const start = Date.UTC(2024, 0, 1);
  for (let i = 0; i < 288 * 2; i++) s.push(`${new Date(start + i * 300_000).toISOString()},${10 + (i % 7)}`);
  mkdirSync(join(dir, "series"));
  writeFileSync(join(dir, "series/load.csv"), s.join("\n") + "\n");
});

function expectUsageError(args: string[], naming: string, e: NodeJS.ProcessEnv = env()) {
  const r = expectRefused(dir, args, naming, { env: e });
  expect(readFileSync(join(dir, "afile"), "utf8")).toBe("keep me");
  return r;
}

const badOuts = ["somedir", "somedir/", "nodir/x.json", "afile/x.json"];

describe("--out paths that cannot be written", () => {
  it("plan --all --out refuses each, before planning, leaving nothing behind", () => {
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    for (const out of badOuts) {
      const r = expectUsageError(["plan", "--all", "--out", out], `--out ${out}`);
      expect(r.stdout).toBe("");
    }
  });

  it("simulate build-trace --out refuses each, leaving nothing behind", () => {
    for (const out of badOuts) {
      expectUsageError(
        ["simulate", "build-trace", "--series", "series", "--events", "500", "--days", "2", "--out", out],
        `--out ${out}`,
      );
    }
  });

  it("get --out refuses each before asking the cluster", () => {
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    for (const out of badOuts) {
      const r = expectUsageError(["get", "k", "--out", out, "--json"], `--out ${out}`);
      expect(r.stdout).toBe("");
    }
  });

  it("a good --out still works and leaves only the file", () => {
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    const before = tree(dir);
    const r = runProcess(["plan", "--all", "--out", "somedir/plan.json"], { cwd: dir, env: env() });
    expect(r.status, r.stderr).toBe(0);
    expect(tree(dir)).toEqual([...before, join("somedir", "plan.json")].sort());
  });
});

describe("--out through a symbolic link", () => {
  it("writes the file the link points to (also a dangling link's), and the link stays a link", () => {
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    writeFileSync(join(dir, "somedir/plan.json"), "old plan");
    symlinkSync("somedir/plan.json", join(dir, "plan-link"));
    symlinkSync("somedir/trace.csv", join(dir, "trace-link"));
    const before = tree(dir);
    let r = runProcess(["plan", "--all", "--out", "plan-link"], { cwd: dir, env: env() });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, "somedir/plan.json"), "utf8"))).toBeTypeOf("object");
    r = runProcess(
      [
        "simulate",
        "build-trace",
        "--series",
        "series",
        "--events",
        "500",
        "--days",
        "2",
        "--out",
        "trace-link",
      ],
      { cwd: dir, env: env() },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(dir, "somedir/trace.csv"), "utf8")).toMatch(/\n/);
    for (const [link, target] of [
      ["plan-link", "somedir/plan.json"],
      ["trace-link", "somedir/trace.csv"],
    ]) {
      expect(lstatSync(join(dir, link)).isSymbolicLink(), link).toBe(true);
      expect(readlinkSync(join(dir, link))).toBe(target);
    }
    expect(tree(dir)).toEqual([...before, join("somedir", "trace.csv")].sort());
  });

  it("refuses a link to /dev/null, to a pipe, to a directory, and a link loop: exit 2, nothing written", () => {
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    execFileSync("mkfifo", [join(dir, "pipe")]);
    symlinkSync("/dev/null", join(dir, "to-null"));
    symlinkSync("pipe", join(dir, "to-pipe"));
    symlinkSync("somedir", join(dir, "to-dir"));
    symlinkSync("loop-b", join(dir, "loop-a"));
    symlinkSync("loop-a", join(dir, "loop-b"));
    for (const [out, why] of [
      ["to-null", /is a device/],
      ["to-pipe", /is a pipe/],
      ["to-dir", /is a directory/],
      ["loop-a", /symbolic link loop/],
    ] as const) {
      for (const args of [
        ["plan", "--all", "--out", out],
        ["get", "k", "--out", out],
      ]) {
        const r = expectUsageError(args, `--out ${out}`);
        expect(r.stderr).toMatch(why);
        expect(r.stdout).toBe("");
        expect(lstatSync(join(dir, out)).isSymbolicLink()).toBe(true);
      }
    }
    expect(lstatSync("/dev/null").isCharacterDevice()).toBe(true);
  });

  it("names a pipe behind /dev/stdout (a link to pipe:[N] that only the kernel follows), not a raw ENOENT", () => {
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    // spawnSync gives the command a socket for its standard output, a shell's | a pipe
    for (const args of [
      ["plan", "--all", "--out", "/dev/stdout"],
      ["simulate", "build-trace", "--series", "series", "--out", "/dev/stdout"],
    ]) {
      const r = runProcess(args, { cwd: dir, env: env() });
      expect(r.status, r.stderr).toBe(2);
      // (a pipe from a shell; node's spawnSync gives a socket)
      expect(r.stderr).toMatch(/^error: --out \/dev\/stdout: is a (pipe|socket), not a regular file/);
      expect(r.stderr).not.toMatch(/ENOENT|\.tmp-/);
      expect(r.stdout).toBe("");
    }
  });
});

describe("a data directory that is a file", () => {
  for (const args of [["init"], ["record", "k"]]) {
    for (const dataDir of ["afile", "afile/x"]) {
      it(`-d ${dataDir} ${args.join(" ")}: exit 2, names the data directory`, () => {
        const r = expectUsageError(
          ["-d", dataDir, ...args],
          `the data directory ${dataDir} is not a directory`,
          {},
        );
        if (dataDir !== "afile") expect(r.stderr).toContain("(afile is a file)");
      });
    }
  }
});

describe("a data directory that cannot be made", () => {
  // each was an internal error with a stack (ENAMETOOLONG, ELOOP, ENOENT); /proc/self/x never returned
  const long = "a".repeat(300);
  const cases: [string, string, RegExp][] = [
    ["a name too long", long, /the path, or a name in it, is too long \(ENAMETOOLONG\)/],
    ["a name too long below a new directory", `new/${long}/x`, /too long \(ENAMETOOLONG\)/],
    ["a symbolic link loop", "loop/l1", /leads to itself \(a loop\).*\(ELOOP\)/],
    ["a dangling symbolic link", "dangling", /no directory can be made there \(ENOENT\)/],
  ];
  if (existsSync("/proc/self")) {
    cases.push([
      "/proc/self (no file can be made)",
      "/proc/self",
      /no (file|directory) can be made there \(ENOENT\)/,
    ]);
    cases.push(["/proc/self/x", "/proc/self/x", /no directory can be made there \(ENOENT\)/]);
  }
  for (const [what, dataDir, why] of cases) {
    for (const args of [["init"], ["record", "k"], ["up", "--local", "--nodes", "1"]]) {
      it(`${what}: ${args.join(" ")} exits 2 naming it, and leaves nothing behind`, () => {
        mkdirSync(join(dir, "loop"));
        symlinkSync("l1", join(dir, "loop/l2"));
        symlinkSync("l2", join(dir, "loop/l1"));
        symlinkSync("nowhere", join(dir, "dangling"));
        const r = expectUsageError(["-d", dataDir, ...args], dataDir.slice(0, 40), {});
        expect(r.stderr).toMatch(why);
        expect(r.stderr).toMatch(/^error: cannot (create|write in) the (data )?directory /m);
      });
    }
  }
});

describe("deploy building its bundle where a file is in the way", () => {
  it("<dataDir>/deploy a regular file: exit 2 naming it, not an internal error; the file kept", () => {
    // mkdirSync's recursive threw EEXIST, printed as an internal error with its stack
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    writeFileSync(join(dir, "data/deploy"), "not a directory");
    writeFileSync(
      join(dir, "inventory.yaml"),
      "nodes:\n  - id: n1\n    host: 127.0.0.1\n    port: 1\n    zone: a\n    user: u\n    keyFile: key\n",
    );
    writeFileSync(join(dir, "key"), "");
    const r = expectUsageError(
      ["deploy", "--inventory", "inventory.yaml", "--known-hosts", "kh"],
      `cannot create the directory for the agent bundle ${join(dir, "data/deploy")}`,
      { ...env(), SHARDCTL_TOKEN: "t0k" },
    );
    expect(r.stderr).toMatch(/data\/deploy exists and is not a directory/);
    expect(readFileSync(join(dir, "data/deploy"), "utf8")).toBe("not a directory");
  });
});

describe("deploy --bundle that is not a bundle file", () => {
  it("a missing file, a directory, a device, a pipe, a huge file: exit 2 saying which, before any lock or node", () => {
    expect(runProcess(["init"], { cwd: dir, env: env() }).status).toBe(0);
    writeFileSync(
      join(dir, "inventory.yaml"),
      "nodes:\n  - id: n1\n    host: 127.0.0.1\n    port: 1\n    zone: a\n    user: u\n    keyFile: key\n",
    );
    writeFileSync(join(dir, "key"), "");
    execFileSync("mkfifo", [join(dir, "pipe")]);
    // sparse: 300 MiB on paper, nothing on disk
    writeFileSync(join(dir, "huge.mjs"), "");
    truncateSync(join(dir, "huge.mjs"), 300 * 1024 * 1024);
    const cases: [string, RegExp][] = [
      ["nobundle.mjs", /the bundle \S+nobundle\.mjs does not exist/],
      ["afile/agent.mjs", /the bundle \S+afile\/agent\.mjs does not exist/],
      ["somedir", /the bundle \S+somedir is a directory/],
      ["/dev/zero", /the bundle \/dev\/zero is not a regular file \(a device, a pipe or a socket\)/],
      ["pipe", /the bundle \S+pipe is not a regular file/],
      ["huge.mjs", /the bundle \S+huge\.mjs is 300(\.0)? MiB: an agent bundle is a few MiB/],
    ];
    for (const [bundle, why] of cases) {
      const r = expectUsageError(
        ["deploy", "--inventory", "inventory.yaml", "--known-hosts", "kh", "--bundle", bundle],
        "the bundle ",
        { ...env(), SHARDCTL_TOKEN: "t0k" },
      );
      expect(r.stderr, bundle).toMatch(why);
      expect(r.stderr).toMatch(/hint: .*omit --bundle to build one/);
    }
  });
});

describe("agent --data-dir where a file is in the way", () => {
  it("<dataDir>/shards a file, or the data directory under a file: exit 2 naming it, not an internal error", () => {
    // mkdirSync's recursive threw EEXIST, printed as an internal error with its stack
    writeFileSync(join(dir, "token"), "t0k", { mode: 0o600 });
    mkdirSync(join(dir, "agentdata"));
    writeFileSync(join(dir, "agentdata/shards"), "not a directory");
    const agent = (dataDir: string) => [
      "--data-dir",
      dataDir,
      "agent",
      "--listen",
      "127.0.0.1:0",
      "--zone",
      "a",
      "--node-id",
      "n1",
      "--token-file",
      "token",
      "--segments",
      "64",
    ];
    for (const [dataDir, inTheWay] of [
      ["agentdata", "agentdata/shards"],
      ["afile/data", "afile"],
    ]) {
      const r = expectUsageError(agent(dataDir), "cannot create the agent's shard directory", {
        ...env(),
      });
      expect(r.stderr).toContain(`${inTheWay} exists and is not a directory`);
    }
    expect(readFileSync(join(dir, "agentdata/shards"), "utf8")).toBe("not a directory");
  });

  it("size and count flags that are not decimal digits: exit 2 naming the flag, no data directory made", () => {
    // Number() took 0x1000, 1e3 and 4.096e3 as whole numbers
    writeFileSync(join(dir, "token"), "t0k", { mode: 0o600 });
    const base = ["--data-dir", "flagdata", "agent", "--listen", "127.0.0.1:0", "--zone", "a"];
    const rest = ["--node-id", "n1", "--token-file", "token"];
    for (const [flag, value, naming] of [
      ["--segments", "0x40", '--segments must be a positive integer, got "0x40"'],
      ["--max-file-bytes", "1e6", '--max-file-bytes must be a positive integer, got "1e6"'],
      ["--snapshot-bytes", "4.096e3", '--snapshot-bytes must be a positive integer, got "4.096e3"'],
      ["--windows-save-seconds", "1e1", "--windows-save-seconds must be a whole number from 0 to 86400"],
    ]) {
      expectUsageError([...base, ...rest, flag, value], naming);
      expect(existsSync(join(dir, "flagdata"))).toBe(false);
    }
  });
});
