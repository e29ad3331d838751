/**
 * The built CLI on files it reads that a user (or a mistake) points elsewhere: /dev/zero, a
 * directory, a file far too large, a damaged state file. Each is refused at once, naming the
 * file (or the variable that names it), with no stack and nothing changed: never a read that
 * does not end.
 */
import { mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { runProcess } from "../../helpers/cli.js";
import { expectRefused } from "../../helpers/hostile-paths.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-bounded-");
let dir: string;
const env = (more: NodeJS.ProcessEnv = {}) => ({
  SHARDCTL_DATA_DIR: join(dir, "data"),
  SHARDCTL_SEGMENTS: "64",
  ...more,
});
/** A read that never ends is killed here and shows as a failure, not as a hung test. */
const timeoutMs = 20_000;

beforeEach(() => {
  dir = newDir();
  mkdirSync(join(dir, "somedir"));
  writeFileSync(join(dir, "afile"), "keep me");
});

describe("CONSUL_HTTP_TOKEN_FILE", () => {
  for (const [what, file, why] of [
    ["/dev/zero", "/dev/zero", "is larger than 64 KiB"],
    ["a directory", "somedir", "is a directory"],
  ] as const) {
    it(`${what}: any command that loads the config exits 2 naming the variable`, () => {
      const r = expectRefused(dir, ["status"], `CONSUL_HTTP_TOKEN_FILE ${file} ${why}`, {
        env: env({ CONSUL_HTTP_TOKEN_FILE: file }),
        timeoutMs,
      });
      expect(r.stderr).toMatch(/^hint: .*CONSUL_HTTP_TOKEN/m);
    });
  }
});

describe("deploy --inventory", () => {
  // named as resolved: the inventory's directory is where relative key files are found
  for (const [what, file, naming] of [
    ["/dev/zero", "/dev/zero", () => "the inventory /dev/zero is larger than 1 MiB"],
    ["a directory", "somedir", () => `the inventory ${join(dir, "somedir")} is a directory`],
  ] as const) {
    it(`${what}: exit 2 naming the inventory, before anything else`, () => {
      expectRefused(dir, ["deploy", "--inventory", file], naming(), {
        env: env({ SHARDCTL_TOKEN: "t0k" }),
        timeoutMs,
      });
    });
  }
});

describe("the local cluster's files", () => {
  const local = () => join(dir, "data", "local");
  const clusterFile = () => join(local(), "cluster.json");
  /** A local cluster whose agents are not running: stale pid files a `down` would remove. */
  function stoppedCluster(clusterJson?: string) {
    for (const n of ["node-1", "node-2"]) {
      mkdirSync(join(local(), n), { recursive: true });
      writeFileSync(join(local(), n, "agent.pid"), "999999999\n");
    }
    if (clusterJson !== undefined) writeFileSync(clusterFile(), clusterJson);
  }
  const GOOD = JSON.stringify({
    nodes: [
      { id: "node-1", address: "127.0.0.1:7401", zone: "a" },
      { id: "node-2", address: "127.0.0.1:7402", zone: "b" },
    ],
  });

  // each was read as it was: a raw JSON.parse message (exit 3), an internal error with a stack,
  // or a `down` that removed pid files named by the damaged list (one outside the data directory)
  const damaged: [string, string, RegExp][] = [
    ["not JSON", "{not json", /is not valid JSON/],
    ["truncated", GOOD.slice(0, 40), /is not valid JSON/],
    ["empty", "", /is not valid JSON/],
    ["a list", "[]", /does not hold \{"nodes": \[\.\.\.\]\}/],
    ["null", "null", /does not hold \{"nodes"/],
    ["no nodes", '{"nodes": []}', /lists no nodes/],
    ["nodes that are numbers", '{"nodes": [1, 2]}', /has no valid node id at nodes\[0\]/],
    [
      "a node without an address",
      '{"nodes": [{"id": "node-1"}]}',
      /no valid address .* node-1 at nodes\[0\]/,
    ],
    [
      "a node id that is a path",
      '{"nodes": [{"id": "../../x", "address": "127.0.0.1:7401", "zone": "a"}]}',
      /has no valid node id at nodes\[0\]/,
    ],
  ];
  for (const [what, text, why] of damaged) {
    it(`down (cluster.json: ${what}): exit 3 naming it, says what to do, removes nothing`, () => {
      stoppedCluster(text);
      mkdirSync(join(dir, "x"));
      writeFileSync(join(dir, "x", "agent.pid"), "999999999\n");
      const r = expectRefused(dir, ["down"], `the local cluster's node list ${clusterFile()}`, {
        env: env(),
        status: 3,
        timeoutMs,
      });
      expect(r.stderr).toMatch(why);
      expect(r.stderr).not.toMatch(/Unexpected|in JSON at position|Cannot read properties/);
      expect(r.stderr).toContain(`hint: if no agent of this local cluster runs, remove ${clusterFile()}`);
    });
  }

  it("down and up --local with a cluster.json that is a directory or /dev/zero: exit 3 at once", () => {
    stoppedCluster();
    mkdirSync(clusterFile());
    for (const args of [["down"], ["up", "--local"]])
      expectRefused(dir, args, `the local cluster's node list ${clusterFile()} is a directory`, {
        env: env(),
        status: 3,
        timeoutMs,
      });
    const other = join(dir, "data2", "local");
    mkdirSync(other, { recursive: true });
    symlinkSync("/dev/zero", join(other, "cluster.json"));
    for (const args of [["down"], ["up", "--local"]])
      expectRefused(dir, args, `${join(other, "cluster.json")} is larger than 1 MiB`, {
        env: env({ SHARDCTL_DATA_DIR: join(dir, "data2") }),
        status: 3,
        timeoutMs,
      });
  });

  it("up --local with a damaged cluster.json starts nothing and writes no token", () => {
    stoppedCluster("{not json");
    expectRefused(
      dir,
      ["up", "--local"],
      `the local cluster's node list ${clusterFile()} is not valid JSON`,
      {
        env: env(),
        status: 3,
        timeoutMs,
      },
    );
  });

  it("down with a pid file that is a directory: exit 3 naming it, and no other pid file removed", () => {
    // the stale pid file of node-1 was removed before node-2's raised an internal error (EISDIR)
    stoppedCluster(GOOD);
    const pid2 = join(local(), "node-2", "agent.pid");
    rmSync(pid2);
    mkdirSync(pid2);
    const r = expectRefused(dir, ["down"], `the pid file ${pid2} is a directory`, {
      env: env(),
      status: 3,
      timeoutMs,
    });
    expect(r.stderr).toContain(`hint: if the agent node-2 does not run, remove ${pid2}`);
  });

  for (const [what, make, why] of [
    ["a directory", (f: string) => mkdirSync(f), "is a directory"],
    ["/dev/zero", (f: string) => symlinkSync("/dev/zero", f), "is larger than 64 KiB"],
  ] as const) {
    it(`a token file that is ${what}: get exits 2 naming it at once`, () => {
      mkdirSync(local(), { recursive: true });
      make(join(local(), "token"));
      expectRefused(dir, ["get", "k"], `the token file ${join(local(), "token")} ${why}`, {
        env: env(),
        timeoutMs,
      });
    });
  }

  it("up --local with a token file that is a directory: exit 2, its mode left as it was", () => {
    // up made the directory mode 0600, then failed with an internal error (EISDIR)
    mkdirSync(join(local(), "token"), { recursive: true, mode: 0o755 });
    expectRefused(dir, ["up", "--local"], `the token file ${join(local(), "token")} is a directory`, {
      env: env(),
      timeoutMs,
    });
    expect(statSync(join(local(), "token")).mode & 0o777).toBe(0o755);
  });
});

describe("--known-hosts", () => {
  // before any node is reached: a directory was reported as "n1: EISDIR" (exit 1) with a hint about
  // the inventory, and /dev/zero was read without end
  for (const [what, file, naming] of [
    ["/dev/zero", "/dev/zero", () => "the known_hosts file /dev/zero is larger than 16 MiB"],
    ["a directory", "somedir", () => `the known_hosts file ${join(dir, "somedir")} is a directory`],
  ] as const) {
    it(`${what}: node status exits 2 naming it, reaching no node`, () => {
      writeFileSync(
        join(dir, "inventory.yaml"),
        "nodes:\n  - id: n1\n    host: 127.0.0.1\n    port: 1\n    zone: a\n    user: u\n    keyFile: key\n",
      );
      writeFileSync(join(dir, "key"), "");
      const r = expectRefused(
        dir,
        ["node", "status", "n1", "--inventory", "inventory.yaml", "--known-hosts", file],
        naming(),
        { env: env(), timeoutMs },
      );
      expect(r.stderr).toMatch(/^hint: .*--known-hosts FILE/m);
    });
  }
});

describe("lock files", () => {
  it("a location-map lock that is /dev/zero: reshard --apply exits 3 naming it, the map unchanged", () => {
    const data = join(dir, "data");
    const init = runProcess(["init"], { cwd: dir, env: env(), timeout: timeoutMs });
    expect(init.status, init.stderr).toBe(0);
    const map = readFileSync(join(data, "location-map.json"));
    symlinkSync("/dev/zero", join(data, "location-map.lock"));
    const r = expectRefused(dir, ["reshard", "--apply"], "the location map is locked by another writer", {
      env: env(),
      status: 3,
      timeoutMs,
    });
    expect(r.stderr).toContain(`remove ${join(data, "location-map.lock")}`);
    expect(readFileSync(join(data, "location-map.json"))).toEqual(map);
  });
});
