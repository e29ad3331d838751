/**
 * The local cluster the migration tests run against: three agents started by
 * `shardctl up --local` in a data directory of their own, the embedded store's
 * map read straight from its file, and `down` afterwards.
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect } from "vitest";
import type { LocationMap, SegmentRange, ShardInfo } from "../../../src/engine/location-map.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { ShardClient } from "../../../src/client/shard-client.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { cli as runShardctl, type watchedProcess } from "../../helpers/cli.js";
import { processState } from "../../helpers/proc.js";
import { freePortRange, http, tempDir } from "../agent/harness.js";

/** The environment for the CLI: `segments` segments, zones a,b,c, nothing inherited that would redirect it. */
export function clusterEnv(segments = 64): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    SHARDCTL_SEGMENTS: String(segments),
    SHARDCTL_ZONES: "a,b,c",
  };
  delete env.SHARDCTL_TOKEN;
  delete env.SHARDCTL_DATA_DIR;
  delete env.SHARDCTL_STORE;
  delete env.SHARDCTL_FAILPOINT;
  return env;
}

/** The CLI on the data directory `dir()` names (read at each call: it is set in beforeAll). */
export function clusterCli(dir: () => string, env: NodeJS.ProcessEnv) {
  return (...args: string[]) => runShardctl(["--data-dir", dir(), ...args], env);
}

/** The map and its version, from the embedded store's file. */
export function readMapFile(dir: string): { version: number; map: LocationMap } {
  const f = JSON.parse(readFileSync(join(dir, "location-map.json"), "utf8"));
  return { version: f.version, map: f.map };
}

/** Starts three local agents in zones a, b, c on free ports; returns the cluster's token. */
export async function upLocalCluster(cli: ReturnType<typeof clusterCli>, dir: string): Promise<string> {
  const base = String(await freePortRange(3));
  const up = await cli("up", "--local", "--nodes", "3", "--zones", "a,b,c", "--base-port", base, "--json");
  expect(up.code, up.err).toBe(0);
  return readFileSync(join(dir, "local", "token"), "utf8").trim();
}

/** Stops the agents and removes the data directory. */
export async function downLocalCluster(cli: ReturnType<typeof clusterCli>, dir: string): Promise<void> {
  await cli("down", "--timeout", "5");
  rmSync(dir, { recursive: true, force: true });
}

/** A test file's local cluster: its data directory and token (set once `beforeAll` ran), CLI and segmenter. */
export interface LocalCluster {
  readonly dir: string;
  readonly token: string;
  readonly env: NodeJS.ProcessEnv;
  /** `shardctl --data-dir <dir> …` in this process. */
  readonly cli: ReturnType<typeof clusterCli>;
  readonly seg: Segmenter;
}

/**
 * Registers the hooks that start three local agents (`up --local`, zones a,b,c, `segments`
 * segments) in a temporary data directory before the file's tests and stop them and remove the
 * directory after.
 */
export function localClusterSuite(name: string, segments = 64): LocalCluster {
  let dir = "";
  let token = "";
  const env = clusterEnv(segments);
  const cli = clusterCli(() => dir, env);
  beforeAll(async () => {
    dir = tempDir(name);
    token = await upLocalCluster(cli, dir);
  });
  afterAll(() => downLocalCluster(cli, dir));
  return {
    get dir() {
      return dir;
    },
    get token() {
      return token;
    },
    env,
    cli,
    seg: new Segmenter(segments),
  };
}

/**
 * Two shards of the map holding more than two segments (and passing `also`), each with one key
 * written 60 times through the routing client (returned: the caller closes it), busy enough for
 * the reshard stage to split them.
 */
export async function twoBusyShards(
  cluster: LocalCluster,
  prefix: string,
  also: (s: ShardInfo) => boolean = () => true,
): Promise<{ x: ShardInfo; y: ShardInfo; keyX: string; keyY: string; c: ShardClient }> {
  const { map } = readMapFile(cluster.dir);
  const [x, y] = map.shards.filter((s) => s.ranges[0][1] - s.ranges[0][0] > 2 && also(s));
  const keyX = keysIn(cluster.seg, x.ranges, `${prefix}-x-`)[0];
  const keyY = keysIn(cluster.seg, y.ranges, `${prefix}-y-`)[0];
  const c = new ShardClient({
    store: new EmbeddedStore(cluster.dir),
    token: cluster.token,
    deadlineMs: 20_000,
  });
  for (let i = 0; i < 60; i++) {
    await c.put(keyX, `x${i}`);
    await c.put(keyY, `y${i}`);
  }
  return { x, y, keyX, keyY, c };
}

/** The first `n` keys `${prefix}0`, `${prefix}1`, … whose segment is in `ranges`. */
export function keysIn(seg: Segmenter, ranges: SegmentRange[], prefix: string, n = 1): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    const k = `${prefix}${i}`;
    const s = seg.segmentOf(k);
    if (ranges.some(([a, b]) => s >= a && s < b)) out.push(k);
  }
  return out;
}

/**
 * Waits until `p`, started with SHARDCTL_FAILPOINT=`fp`, has stopped itself there (state T: a
 * signal sent before would be lost).
 */
export function stoppedAtFailpoint(p: ReturnType<typeof watchedProcess>, fp: string): Promise<true> {
  return until(
    () => p.err().includes(`failpoint ${fp}: stopping`) && processState(p.child.pid!) === "T",
    60_000,
    () => `the process at ${fp}:\n${p.err()}`,
  );
}

/**
 * Continues `p`, stopped at a failpoint, until it exits: a failpoint met again (a plan's next step,
 * a commit's next round) stops it again, and is continued too.
 */
export async function continueUntilExit(p: ReturnType<typeof watchedProcess>): Promise<void> {
  let ended = false;
  void p.exited.then(() => (ended = true));
  while (!ended) {
    p.child.kill("SIGCONT");
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The pid of node `node`'s agent in the local cluster under `dir` (its agent.pid). */
export function localAgentPid(dir: string, node: string): number {
  return Number(readFileSync(join(dir, "local", node, "agent.pid"), "utf8").trim());
}

/** A plan's move step with nominal figures, for plan files a test writes by hand. */
export function moveStep(shard: string, source: string, target: string) {
  return {
    kind: "move" as const,
    shard,
    source,
    target,
    bytes: 1,
    benefitMs: 1,
    costMs: 0,
    netMs: 1,
    copySeconds: 0,
  };
}

/** Polls `fn` every 100 ms until it returns something truthy (returned), or throws after `ms`. */
export async function until<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  ms: number,
  what: () => string,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what()}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The times (ms) of the log lines matching `re`: each line starts with its ISO timestamp. */
export function logStamps(log: string, re: RegExp): number[] {
  return log
    .split("\n")
    .filter((l) => re.test(l))
    .map((l) => Date.parse(l.slice(0, 24)));
}

/** Writes `<dir>/zones.json`: zones a, b, c, 1 ms within a zone and 50 ms between zones; returns its path. */
export function writeZoneMatrix(dir: string): string {
  const file = join(dir, "zones.json");
  writeFileSync(
    file,
    JSON.stringify({
      zones: ["a", "b", "c"],
      rtt_ms: [
        [1, 50, 50],
        [50, 1, 50],
        [50, 50, 1],
      ],
    }),
  );
  return file;
}

/**
 * Two moves for the planner on the local cluster, one of which the target refuses: of node a's
 * shards, p gets writes from zone b and q from zone c (so the planner moves p to b and q to c), and
 * b already holds a copy of p at a newer epoch (409 shard-exists on every attempt). Returns the
 * nodes, the two shards, and p's key and the client that wrote it (still open; close it).
 */
export async function plantRefusedMove(dir: string, token: string, seg: Segmenter, prefix: string) {
  const { map } = readMapFile(dir);
  const nodeIn = (zone: string) => map.nodes.find((n) => n.zone === zone)!;
  const [a, b, c] = [nodeIn("a"), nodeIn("b"), nodeIn("c")];
  const [p, q] = map.shards.filter((s) => s.node === a.id);
  const keyP = keysIn(seg, p.ranges, `${prefix}-p-`)[0];
  const keyQ = keysIn(seg, q.ranges, `${prefix}-q-`)[0];
  const client = (zone: string) =>
    new ShardClient({ store: new EmbeddedStore(dir), token, originZone: zone, deadlineMs: 20_000 });
  const fromB = client("b");
  const fromC = client("c");
  for (let i = 0; i < 60; i++) {
    await fromB.put(keyP, `p${i}`);
    await fromC.put(keyQ, `q${i}`);
  }
  fromC.close();
  const plantEpoch = p.epoch + 5;
  const bPort = Number(b.address.split(":")[1]);
  const planted = await http(bPort, "POST", `/v1/admin/shards/${p.id}/receive`, {
    token,
    body: JSON.stringify({ epoch: plantEpoch }),
    headers: { "content-type": "application/json" },
  });
  expect(planted.status).toBe(201);
  return { a, b, c, p, q, keyP, fromB, bPort, plantEpoch };
}

/** Whether the segment of `key` has a shard of its own in the embedded map under `dir`. */
export function hasOwnShard(dir: string, seg: Segmenter, key: string): boolean {
  const s = seg.segmentOf(key);
  const owner = readMapFile(dir).map.shards.find((x) => x.ranges.some(([a, b]) => s >= a && s < b))!;
  return owner.ranges.length === 1 && owner.ranges[0][1] - owner.ranges[0][0] === 1;
}
