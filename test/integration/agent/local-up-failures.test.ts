/**
 * `shardctl up --local` fails (and cleans up after itself) when the cluster it
 * would report would not work: a port held by another process or another
 * local cluster, an agent that answers as someone else, a location map that
 * names none of the local agents, a data dir that is a file. After a failure
 * no agent process of the data dir is left running and no pid file remains.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { runCli } from "../../../src/cli.js";
import { processAlive } from "../../../src/store/embedded.js";
import { freePortRange, tempDir } from "./harness.js";

const env: NodeJS.ProcessEnv = { ...process.env, SHARDCTL_SEGMENTS: "64", SHARDCTL_ZONES: "a,b,c" };
delete env.SHARDCTL_TOKEN;
delete env.SHARDCTL_DATA_DIR;
delete env.SHARDCTL_STORE;
delete env.SHARDCTL_CONFIG;

async function cli(dir: string, ...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const io = {
    out: new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }),
    err: new Writable({ write: (c, _e, cb) => (err.push(String(c)), cb()) }),
  };
  const code = await runCli(["--data-dir", dir, ...args], io, env);
  return { code, out: out.join(""), err: err.join("") };
}

/** Pids of live processes whose command line mentions `dir` (the agents of that data dir). */
function processesOf(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8");
      if (cmd.split("\0").some((a) => a.startsWith(dir + "/"))) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function pidFiles(dir: string): string[] {
  const local = join(dir, "local");
  if (!existsSync(local)) return [];
  return readdirSync(local)
    .map((n) => join(local, n, "agent.pid"))
    .filter((f) => existsSync(f));
}

/** The pids `up` said it started ("starting node-1 (zone a) on …, pid N"). */
function startedPids(err: string): number[] {
  return [...err.matchAll(/^starting \S+ .*, pid (\d+)$/gm)].map((m) => Number(m[1]));
}

/** Whether the process runs (a zombie init has not reaped yet has ended). */
const alive = processAlive;

const dirs: string[] = [];
const blockers: Server[] = [];
function newDir(): string {
  const d = tempDir("up-fail");
  dirs.push(d);
  return d;
}

afterEach(async () => {
  for (const b of blockers.splice(0)) await new Promise((res) => b.close(res));
  for (const d of dirs.splice(0)) {
    await cli(d, "down", "--timeout", "5");
    for (const pid of processesOf(d)) process.kill(pid, "SIGKILL");
    rmSync(d, { recursive: true, force: true });
  }
});

function expectNothingLeft(dir: string) {
  expect(processesOf(dir)).toEqual([]);
  expect(pidFiles(dir)).toEqual([]);
}

describe("up --local refuses a cluster that would not work", () => {
  it("fails before starting anything when a port is held by another process, and a retry on other ports works", async () => {
    const dir = newDir();
    const base = await freePortRange(2);
    const blocker = createServer((c) => c.resume()); // reads, so that a peer's close ends the connection
    blockers.push(blocker);
    await new Promise<void>((res) => blocker.listen(base + 1, "127.0.0.1", res));

    const up = await cli(dir, "up", "--local", "--nodes", "2", "--base-port", String(base));
    expect(up.code, up.err).toBe(1);
    expect(up.err).toContain(`error: port ${base + 1} (for node-2) is in use by another process`);
    expect(up.err).toMatch(/hint: pick another --base-port/);
    expect(up.err).not.toMatch(/local cluster up|\n\s+at /);
    expect(startedPids(up.err)).toEqual([]);
    expectNothingLeft(dir);
    // no nodes were kept, so the next `up` may take other ports
    expect(existsSync(join(dir, "local", "cluster.json"))).toBe(false);

    const other = await freePortRange(2);
    const retry = await cli(dir, "up", "--local", "--nodes", "2", "--base-port", String(other), "--json");
    expect(retry.code, retry.err).toBe(0);
    const r = JSON.parse(retry.out) as { nodes: { address: string }[]; shardsAssigned: number };
    expect(r.nodes.map((n) => n.address)).toEqual([`127.0.0.1:${other}`, `127.0.0.1:${other + 1}`]);
    expect(r.shardsAssigned).toBeGreaterThan(0);
    expect((await cli(dir, "put", "k", "v")).code).toBe(0);
  });

  it("fails when another local cluster listens on the base port, and leaves that cluster alone", async () => {
    const first = newDir();
    const second = newDir();
    const base = await freePortRange(2);
    const up1 = await cli(first, "up", "--local", "--nodes", "2", "--base-port", String(base), "--json");
    expect(up1.code, up1.err).toBe(0);
    const firstPids = (JSON.parse(up1.out) as { nodes: { pid: number }[] }).nodes.map((n) => n.pid);

    const up2 = await cli(second, "up", "--local", "--nodes", "2", "--base-port", String(base));
    expect(up2.code, up2.err).toBe(1);
    expect(up2.err).toContain(
      `port ${base} (for node-1) is in use by a shardctl agent (node-1) of another cluster`,
    );
    expect(up2.err).toMatch(/run `shardctl down` in the other cluster's data dir/);
    expect(up2.err).not.toMatch(/local cluster up|\n\s+at /);
    expectNothingLeft(second);

    for (const pid of firstPids) expect(alive(pid)).toBe(true);
    expect((await cli(first, "put", "k", "v")).code).toBe(0);
  });

  it("stops the agents it started when a port answers as another cluster's agent", async () => {
    const first = newDir();
    const second = newDir();
    const base = await freePortRange(1);
    const up1 = await cli(first, "up", "--local", "--nodes", "1", "--base-port", String(base), "--json");
    expect(up1.code, up1.err).toBe(0);
    const firstPid = (JSON.parse(up1.out) as { nodes: { pid: number }[] }).nodes[0].pid;

    // a cluster whose node-1 shares the port and whose pid file names the other cluster's node-1
    // (a recycled pid): `up` must not take it for its own node-1 (its command line names another
    // data directory), and finds the port taken before it starts anything
    const own = await freePortRange(1);
    mkdirSync(join(second, "local", "node-1"), { recursive: true });
    writeFileSync(
      join(second, "local", "cluster.json"),
      JSON.stringify({
        nodes: [
          { id: "node-1", address: `127.0.0.1:${base}`, zone: "a" },
          { id: "node-2", address: `127.0.0.1:${own}`, zone: "b" },
        ],
      }),
    );
    writeFileSync(join(second, "local", "node-1", "agent.pid"), `${firstPid}\n`);

    const up2 = await cli(second, "up", "--local");
    expect(up2.code, up2.err).toBe(1);
    expect(up2.err).toMatch(
      new RegExp(
        `port ${base} \\(for node-1\\) is in use by a shardctl agent \\(node-1\\) of another cluster`,
      ),
    );
    expect(startedPids(up2.err)).toEqual([]);
    expect(existsSync(join(second, "local", "node-2", "agent.pid"))).toBe(false);
    expect(processesOf(second)).toEqual([]);
    expect(alive(firstPid)).toBe(true); // not ours: left alone
    expect((await cli(first, "put", "k", "v")).code).toBe(0);
  });

  it("fails and stops its agents when the map from `init` names none of them, and its hint works", async () => {
    const dir = newDir();
    expect((await cli(dir, "init")).code).toBe(0);
    const base = await freePortRange(3);
    const up = await cli(dir, "up", "--local", "--base-port", String(base));
    expect(up.code, up.err).toBe(1);
    expect(up.err).toMatch(
      /error: no shard could be assigned: the location map .* names none of the local agents/,
    );
    expect(up.err).not.toMatch(/local cluster up|\n\s+at /);
    expect(startedPids(up.err)).toHaveLength(3);
    expectNothingLeft(dir);
    for (const pid of startedPids(up.err)) expect(alive(pid)).toBe(false);

    const hint = /hint: .*?: shardctl (init --force --nodes \S+) && shardctl (up --local .*)$/m.exec(up.err);
    expect(hint, up.err).not.toBeNull();
    expect((await cli(dir, ...hint![1].split(" "))).code).toBe(0);
    const again = await cli(dir, ...hint![2].split(" "));
    expect(again.code, again.err).toBe(0);
    expect((await cli(dir, "put", "k", "v")).code).toBe(0);
  });

  it("refuses --nodes, --base-port or --zones that differ from the existing cluster, starting nothing", async () => {
    const dir = newDir();
    const base = await freePortRange(3);
    const up = await cli(dir, "up", "--local", "--nodes", "2", "--zones", "a,b", "--base-port", String(base));
    expect(up.code, up.err).toBe(0);
    expect((await cli(dir, "down", "--timeout", "5")).code).toBe(0);
    const clusterFile = readFileSync(join(dir, "local", "cluster.json"), "utf8");
    for (const [args, message] of [
      [["--nodes", "3"], "--nodes 3 (it has 2)"],
      [["--base-port", String(base + 1)], `--base-port ${base + 1} (it starts at ${base})`],
      [["--zones", "b,a"], "--zones b,a (its nodes are in a,b)"],
    ] as const) {
      const r = await cli(dir, "up", "--local", ...args);
      expect(r.code, r.err).toBe(3);
      expect(r.err).toContain(`the local cluster in ${dir} already exists with other settings: ${message}`);
      expect(r.err).toMatch(/hint: run `shardctl up --local` without those options/);
      expect(startedPids(r.err)).toEqual([]);
      expectNothingLeft(dir);
      expect(readFileSync(join(dir, "local", "cluster.json"), "utf8")).toBe(clusterFile);
    }
    // the same settings given again, or none, start it as it is
    const again = await cli(dir, "up", "--local", "--nodes", "2", "--base-port", String(base), "--json");
    expect(again.code, again.err).toBe(0);
    const r = JSON.parse(again.out) as { nodes: { address: string }[] };
    expect(r.nodes.map((n) => n.address)).toEqual([`127.0.0.1:${base}`, `127.0.0.1:${base + 1}`]);
  });

  it("refuses --zones with an empty name ('a,,b' is a typo, not two zones) and an empty list, starting nothing", async () => {
    const dir = newDir();
    for (const [zones, message] of [
      ["a,,b", '--zones "a,,b" has an empty zone name'],
      ["a,b,", '--zones "a,b," has an empty zone name'],
      ["", "--zones is empty"],
    ] as const) {
      const r = await cli(dir, "up", "--local", "--nodes", "2", "--zones", zones);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toContain(`error: ${message}`);
      expect(startedPids(r.err)).toEqual([]);
      expectNothingLeft(dir);
    }
  });

  it("refuses another segment count than the layout's (a wrong SHARDCTL_SEGMENTS), starting nothing; the keys stay", async () => {
    const dir = newDir();
    const base = await freePortRange(2);
    const up = await cli(dir, "up", "--local", "--nodes", "2", "--zones", "a,b", "--base-port", String(base));
    expect(up.code, up.err).toBe(0);
    const keys = Array.from({ length: 12 }, (_, i) => `probe:${i}`);
    for (const k of keys) expect((await cli(dir, "put", k, `v-${k}`)).code).toBe(0);
    expect((await cli(dir, "down", "--timeout", "5")).code).toBe(0);
    // an agent restarted with 4096 segments took every key of its shards for a stray and deleted it
    env.SHARDCTL_SEGMENTS = "4096";
    try {
      const r = await cli(dir, "up", "--local");
      expect(r.code, r.err).toBe(3);
      expect(r.err).toContain("error: the layout has 64 segments but the config says 4096");
      expect(r.err).toMatch(/hint: set segments in the config \(or SHARDCTL_SEGMENTS\) to 64/);
      expect(startedPids(r.err)).toEqual([]);
      expectNothingLeft(dir);
    } finally {
      env.SHARDCTL_SEGMENTS = "64";
    }
    expect((await cli(dir, "up", "--local")).code).toBe(0);
    for (const k of keys) expect((await cli(dir, "get", k)).out).toBe(`v-${k}`);
  });

  it("fails and stops its agents when the map reaches the nodes at other ports, where nothing answers, and its hint works", async () => {
    const dir = newDir();
    const first = await freePortRange(2);
    const up = await cli(
      dir,
      "up",
      "--local",
      "--nodes",
      "2",
      "--zones",
      "a,b",
      "--base-port",
      String(first),
    );
    expect(up.code, up.err).toBe(0);
    expect((await cli(dir, "put", "k", "v")).code).toBe(0);
    expect((await cli(dir, "down", "--timeout", "5")).code).toBe(0);
    // the hint for a damaged cluster.json is to remove it; then `up` with other ports
    rmSync(join(dir, "local", "cluster.json"));
    const second = await freePortRange(3);
    const again = await cli(
      dir,
      "up",
      "--local",
      "--nodes",
      "3",
      "--zones",
      "a,b,c",
      "--base-port",
      String(second),
    );
    expect(again.code, again.err).toBe(1);
    expect(again.err).toContain(
      `error: the location map in the embedded store reaches the local nodes at other addresses, where they do not answer: node-1 at 127.0.0.1:${first} (no answer), node-2 at 127.0.0.1:${first + 1} (no answer)`,
    );
    expect(again.err).not.toMatch(/local cluster up|\n\s+at /);
    expect(startedPids(again.err)).toHaveLength(3);
    expectNothingLeft(dir);
    expect(existsSync(join(dir, "local", "cluster.json"))).toBe(false);
    const hint = /hint: start the cluster where the map has it: shardctl (up --local .*)$/m.exec(again.err);
    expect(hint![1]).toBe(`up --local --nodes 2 --zones a,b --base-port ${first}`);
    expect((await cli(dir, ...hint![1].split(" "))).code).toBe(0);
    const get = await cli(dir, "get", "k");
    expect(get.code, get.err).toBe(0);
    expect(get.out).toBe("v");
  });

  it("refuses --nodes and --base-port that are not decimal digits, starting nothing", async () => {
    const dir = newDir();
    for (const args of [
      ["--nodes", "1e1"],
      ["--nodes", "0x2"],
      ["--nodes", " 2"],
      ["--base-port", "0x6978"],
      ["--base-port", "2.7e4"],
    ]) {
      const r = await cli(dir, "up", "--local", ...args);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toContain(`error: ${args[0]} must be a positive integer, got ${JSON.stringify(args[1])}`);
      expect(startedPids(r.err)).toEqual([]);
      expectNothingLeft(dir);
      expect(existsSync(join(dir, "local"))).toBe(false);
    }
  });

  it("gives a clean usage error when the data dir is a regular file", async () => {
    const dir = newDir();
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "x");
    const up = await cli(file, "up", "--local", "--base-port", String(await freePortRange(3)));
    expect(up.code).toBe(2);
    expect(up.err).toContain(`error: the data directory ${file} is not a directory; nothing was changed`);
    expect(up.err).not.toMatch(/internal error|\n\s+at /);
  });
});
