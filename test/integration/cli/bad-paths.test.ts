/**
 * The built CLI on paths a user gets wrong (--out a directory, --out under a missing
 * directory, a data directory that is a file): a usage error naming the path, exit 2,
 * no stack, and nothing left behind (no `.tmp-PID`, no partial output).
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { runProcess } from "../../helpers/cli.js";
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

/** Every file and directory under `root`, relative, sorted: what a failure must not change. */
function tree(root: string): string[] {
  return readdirSync(root, { recursive: true, encoding: "utf8" }).sort();
}

function expectUsageError(args: string[], naming: string, e: NodeJS.ProcessEnv = env()) {
  const before = tree(dir);
  const r = runProcess(args, { cwd: dir, env: e });
  expect(r.stderr, args.join(" ")).not.toMatch(/internal error|\n\s+at /);
  expect(r.status, `${args.join(" ")}\n${r.stderr}`).toBe(2);
  expect(r.stderr).toMatch(/^error: /m);
  expect(r.stderr).toContain(naming);
  expect(tree(dir), args.join(" ")).toEqual(before);
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
