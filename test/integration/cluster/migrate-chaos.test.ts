/**
 * Live migration under faults (issue 8). A local cluster of three real agents
 * and the embedded store; writers keep writing unique values to keys of one
 * shard while the shard migrates back and forth. Each migration is a real
 * `shardctl migrate --apply` process stopped at a phase boundary by a
 * failpoint (SHARDCTL_FAILPOINT); there the test SIGKILLs the coordinator, the
 * source agent or the target agent, or SIGSTOPs the source for a while, then
 * lets things go on (agents restarted by `shardctl up --local`, the
 * coordinator continued or replaced by `shardctl migrations --recover`).
 * Every agent is reached through a user-space proxy (the map holds the
 * proxies' addresses): the test also cuts all connections to the source for
 * two seconds there, or delays every connection by 25 ms each way.
 *
 * After every run: the map and the journal agree, and exactly one agent holds
 * the shard writable, the one the map names, at the map's epoch. At the end:
 * every acknowledged write is in the owner's log exactly once, each key's
 * acknowledged values appear in acknowledgement order, and a read returns the
 * last acknowledged value (or a later unacknowledged attempt).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { decodeEntry } from "../../../src/agent/log-format.js";
import type { LocationMap } from "../../../src/engine/location-map.js";
import { isTerminal, type MigrationRecord } from "../../../src/engine/migration.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { freePortRange, http, tempDir } from "../agent/harness.js";
import { startDelayProxy, type DelayProxy } from "../../helpers/delay-proxy.js";
import { cli as runShardctl, shardctlCommand } from "../../helpers/cli.js";
import { processState } from "../../helpers/proc.js";

const SEGMENTS = 64;
let dir: string;
let token: string;
const env: NodeJS.ProcessEnv = {
  ...process.env,
  SHARDCTL_SEGMENTS: String(SEGMENTS),
  SHARDCTL_ZONES: "a,b,c",
};
delete env.SHARDCTL_TOKEN;
delete env.SHARDCTL_DATA_DIR;
delete env.SHARDCTL_STORE;
delete env.SHARDCTL_FAILPOINT;

const cli = (...args: string[]) => runShardctl(["--data-dir", dir, ...args], env);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Awaits a step of a run, but never longer than `ms`: a hang fails the test with the state it hung in. */
async function within<T>(p: Promise<T>, ms: number, what: string, state: () => Promise<string>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), ms)));
  const r = await Promise.race([p, late]);
  clearTimeout(timer);
  if (r === "late") throw new Error(`${what} did not finish within ${ms / 1000} s\n${await state()}`);
  return r as T;
}

function readMap(): { version: number; map: LocationMap } {
  const f = JSON.parse(readFileSync(join(dir, "location-map.json"), "utf8"));
  return { version: f.version, map: f.map };
}

async function journal(): Promise<MigrationRecord[]> {
  return (await new EmbeddedStore(dir).listMigrations()).records.map((r) => r.record);
}

function agentPid(node: string): number {
  return Number(readFileSync(join(dir, "local", node, "agent.pid"), "utf8").trim());
}

/** The agent's own port (the map names its proxy; the test inspects the agents directly). */
const agentPorts = new Map<string, number>();

async function agentShard(node: string, shard: string): Promise<{ state: string; epoch: number } | null> {
  const port = agentPorts.get(node)!;
  const ask = () => http(port, "GET", `/v1/shards/${shard}`, { token, timeoutMs: 10_000 });
  // a connection may have died with a killed agent: one retry on a fresh one
  const r = await ask().catch(ask);
  return r.status === 200 ? (r.json() as { state: string; epoch: number }) : null;
}

/** What the test knows when a step hangs: the journal's last records and each agent's view of the shard. */
async function stateOf(shard: string, c?: { err: () => string; out: () => string }): Promise<string> {
  const lines: string[] = [];
  if (c) lines.push(`coordinator stderr:\n${c.err()}`, `coordinator stdout:\n${c.out()}`);
  const records = (await journal().catch(() => [])).slice(-2);
  lines.push(`journal: ${JSON.stringify(records)}`);
  for (const node of agentPorts.keys()) {
    const s = await agentShard(node, shard).catch((e: Error) => e.message);
    lines.push(`${node}: ${JSON.stringify(s)}`);
  }
  return lines.join("\n");
}

/** A coordinator process, and a promise of its exit. */
function coordinator(shard: string, target: string, failpoint: string) {
  const { command, args } = shardctlCommand();
  const child: ChildProcess = spawn(
    command,
    [...args, "--data-dir", dir, "migrate", "--shard", shard, "--to", target, "--apply", "--json"],
    { env: { ...env, SHARDCTL_FAILPOINT: failpoint }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let err = "";
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number>((res) => child.on("exit", (code, sig) => res(code ?? (sig ? 128 : -1))));
  return {
    child,
    exited,
    err: () => err,
    out: () => out,
    /** Resolves true when the failpoint stopped it, false when it ended without reaching it. */
    stopped: async (): Promise<boolean> => {
      const deadline = Date.now() + 60_000;
      let ended = false;
      void exited.then(() => (ended = true));
      while (!err.includes(`failpoint ${failpoint}: stopping`)) {
        if (ended) return false;
        if (Date.now() > deadline) throw new Error(`no failpoint ${failpoint} within 60 s:\n${err}`);
        await sleep(10);
      }
      // the line is written just before the process stops itself: a SIGCONT sent in between would be
      // lost and leave it stopped for good, so wait until the kernel reports it stopped (state T)
      while (processState(child.pid!) !== "T") {
        if (ended) return false;
        if (Date.now() > deadline)
          throw new Error(`the coordinator did not stop at ${failpoint} within 60 s`);
        await sleep(5);
      }
      return true;
    },
  };
}

/** Keys of one shard, per writer: writer w owns keys w{w}-k{i}. */
function keysOfShard(map: LocationMap, shard: string, writers: number, perWriter: number): string[][] {
  const seg = new Segmenter(SEGMENTS);
  const sh = map.shards.find((s) => s.id === shard)!;
  const inShard = (k: string) => sh.ranges.some(([a, b]) => seg.segmentOf(k) >= a && seg.segmentOf(k) < b);
  const out: string[][] = [];
  for (let w = 0; w < writers; w++) {
    const keys: string[] = [];
    for (let i = 0; keys.length < perWriter; i++) if (inShard(`w${w}-k${i}`)) keys.push(`w${w}-k${i}`);
    out.push(keys);
  }
  return out;
}

interface Ack {
  key: string;
  value: string;
  at: number;
}

function startWriters(keys: string[][]) {
  const acked: Ack[][] = keys.map(() => []);
  const attempted = new Set<string>();
  let stop = false;
  let errors = 0;
  const clients = keys.map(
    () => new ShardClient({ store: new EmbeddedStore(dir), token, deadlineMs: 30_000, baseBackoffMs: 5 }),
  );
  const done = Promise.all(
    keys.map(async (ks, w) => {
      for (let i = 0; !stop; i++) {
        const key = ks[i % ks.length];
        const value = `w${w}-${i}`;
        attempted.add(value);
        try {
          await clients[w].put(key, value);
          acked[w].push({ key, value, at: Date.now() });
        } catch {
          errors++;
        }
        await sleep(2);
      }
    }),
  );
  return {
    acked,
    attempted,
    errors: () => errors,
    count: () => acked.reduce((n, a) => n + a.length, 0),
    stop: async () => {
      stop = true;
      await done;
      for (const c of clients) c.close();
    },
  };
}

/** The map and the journal agree, and exactly the map's owner holds the shard writable at the map's epoch. */
async function checkInvariants(shard: string, label: string): Promise<void> {
  const open = (await journal()).filter((r) => !isTerminal(r.phase));
  expect(open, `${label}: open journal records`).toEqual([]);
  const { map } = readMap();
  const sh = map.shards.find((s) => s.id === shard)!;
  const last = (await journal()).filter((r) => r.shard === shard).at(-1)!;
  if (last.phase === "done") {
    expect(sh.node, `${label}: done → the map has the target`).toBe(last.target);
    expect(sh.epoch).toBe(last.fromEpoch + 1);
  } else {
    expect(sh.node, `${label}: aborted → the map has the source`).toBe(last.source);
    expect(sh.epoch).toBe(last.fromEpoch);
  }
  const owners: string[] = [];
  for (const n of map.nodes) {
    const s = await agentShard(n.id, shard);
    if (s && s.state === "owned") owners.push(`${n.id}@${s.epoch}`);
  }
  expect(owners, `${label}: writable owners`).toEqual([`${sh.node}@${sh.epoch}`]);
}

const proxies = new Map<string, DelayProxy>();

beforeAll(async () => {
  dir = tempDir("chaos");
  const base = String(await freePortRange(3));
  const up = await cli("up", "--local", "--nodes", "3", "--zones", "a,b,c", "--base-port", base, "--json");
  expect(up.code, up.err).toBe(0);
  token = readFileSync(join(dir, "local", "token"), "utf8").trim();
  // every agent behind a proxy: the map (clients, coordinators, redirects) names the proxies
  const store = new EmbeddedStore(dir);
  const vm = (await store.load())!;
  for (const n of vm.map.nodes) {
    agentPorts.set(n.id, Number(n.address.split(":")[1]));
    proxies.set(n.id, await startDelayProxy(agentPorts.get(n.id)!, 0));
  }
  const cas = await store.compareAndSet(vm.version, {
    ...vm.map,
    nodes: vm.map.nodes.map((n) => ({ ...n, address: proxies.get(n.id)!.address })),
  });
  expect(cas.ok).toBe(true);
});

afterAll(async () => {
  for (const p of proxies.values()) await p.close();
  await cli("down", "--timeout", "5");
  rmSync(dir, { recursive: true, force: true });
});

type Fault = "kill-coordinator" | "kill-source" | "kill-target" | "pause-source" | "cut-source" | "delay-all";
const PHASES = ["journaled", "copying", "fenced", "prepared", "committed", "activated"] as const;

describe("migration under faults", () => {
  it(
    "keeps every acknowledged write exactly once, in order, while shards move back and forth and processes die",
    async () => {
      const shard = readMap().map.shards[0].id;
      const keys = keysOfShard(readMap().map, shard, 3, 8);
      const w = startWriters(keys);
      // all along: never two agents holding the shard writable at one epoch
      const sampler = startOwnerSampler(shard);
      while (w.count() < 100) await sleep(10);
      const faults: Fault[] = [
        "kill-coordinator",
        "kill-source",
        "kill-target",
        "pause-source",
        "cut-source",
        "delay-all",
      ];
      const outcomes: Record<string, number> = {};
      let runs = 0;
      for (const phase of PHASES) {
        for (const fault of faults) {
          const { map } = readMap();
          const sh = map.shards.find((s) => s.id === shard)!;
          const source = sh.node;
          const others = map.nodes.filter((n) => n.id !== source);
          const target = others[runs % others.length].id;
          const label = `${phase}/${fault} (${source} → ${target})`;
          const c = coordinator(shard, target, `migrate.${phase}`);
          const state = () => stateOf(shard, c);
          const step = <T>(p: Promise<T>, ms: number, what: string) =>
            within(p, ms, `${label}: ${what}`, state);
          const reached = await c.stopped();
          expect(reached, `${label}: the coordinator ended before the failpoint:\n${c.err()}`).toBe(true);
          const before = w.count();
          const began = Date.now();
          try {
            if (fault === "kill-coordinator") {
              c.child.kill("SIGKILL");
              await step(c.exited, 30_000, "the killed coordinator's exit");
              const rec = await step(cli("migrations", "--recover"), 120_000, "migrations --recover");
              expect(rec.code, `${label}: recover\n${rec.err}`).toBe(0);
            } else if (fault === "cut-source") {
              // every connection to the source is cut, and new ones refused, for two seconds
              proxies.get(source)!.cut(2000);
              c.child.kill("SIGCONT");
              await step(c.exited, 120_000, "the coordinator");
              await sleep(2100);
            } else if (fault === "delay-all") {
              for (const p of proxies.values()) p.setDelay(25);
              c.child.kill("SIGCONT");
              await step(c.exited, 120_000, "the coordinator");
              for (const p of proxies.values()) p.setDelay(0);
            } else if (fault === "pause-source") {
              const pid = agentPid(source);
              process.kill(pid, "SIGSTOP");
              c.child.kill("SIGCONT");
              await sleep(1500);
              process.kill(pid, "SIGCONT");
              await step(c.exited, 120_000, "the coordinator");
            } else {
              const victim = fault === "kill-source" ? source : target;
              process.kill(agentPid(victim), "SIGKILL");
              await sleep(50);
              const up = await step(cli("up", "--local", "--json"), 120_000, "up --local");
              expect(up.code, `${label}: restart\n${up.err}`).toBe(0);
              c.child.kill("SIGCONT");
              await step(c.exited, 120_000, "the coordinator");
            }
          } finally {
            // never leave a stopped coordinator behind
            if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
            for (const p of proxies.values()) p.setDelay(0);
          }
          // a coordinator that could not finish leaves its record to recovery
          const rec = await step(cli("migrations", "--recover"), 120_000, "migrations --recover");
          expect(rec.code, `${label}: recover\n${rec.err}`).toBe(0);
          const last = (await journal()).filter((r) => r.shard === shard).at(-1)!;
          outcomes[last.phase] = (outcomes[last.phase] ?? 0) + 1;
          await step(checkInvariants(shard, label), 60_000, "the invariant check");
          // the writers make progress again after every fault
          const deadline = Date.now() + 30_000;
          while (w.count() < before + 20) {
            if (Date.now() > deadline)
              throw new Error(`${label}: the writers made no progress\n${await state()}`);
            await sleep(20);
          }
          process.stderr.write(
            `chaos run ${runs + 1}/${PHASES.length * faults.length} ${label}: ${last.phase} in ${Date.now() - began} ms\n`,
          );
          runs++;
          history.push(`${label}: ${last.phase}${last.error ? ` (${last.error.slice(0, 80)})` : ""}`);
        }
      }
      await w.stop();
      const samples = await sampler.stop();
      expect(sampler.violations(), "two writable owners at one epoch").toEqual([]);
      process.stderr.write(
        `chaos: ${runs} runs, ${w.count()} acknowledged writes, ${w.errors()} failed attempts, outcomes ${JSON.stringify(outcomes)}, ${samples} owner samples\n${history.join("\n")}\n`,
      );
      expect(outcomes.done ?? 0).toBeGreaterThan(0);

      // the history: every entry of the shard's log on its owner
      const { map } = readMap();
      const owner = map.shards.find((s) => s.id === shard)!.node;
      const port = agentPorts.get(owner)!;
      const seen = new Map<string, number>();
      const order = new Map<string, string[]>();
      for (let from = 1; ;) {
        const r = await http(port, "GET", `/v1/shards/${shard}/log?from=${from}&max=5000`, { token });
        expect(r.status).toBe(200);
        const n = Number(r.headers["x-entries"]);
        if (n === 0) break;
        const body = r.body;
        let off = 0;
        while (off < body.length) {
          const d = decodeEntry(body, off);
          if (d.kind !== "entry") throw new Error(`the log holds a bad entry at ${off}`);
          const v = d.entry.value.toString();
          seen.set(v, (seen.get(v) ?? 0) + 1);
          const list = order.get(d.entry.key) ?? [];
          list.push(v);
          order.set(d.entry.key, list);
          off += d.length;
        }
        from += n;
      }
      const c = new ShardClient({ store: new EmbeddedStore(dir), token });
      for (const acks of w.acked) {
        const byKey = new Map<string, string[]>();
        for (const a of acks) {
          expect(seen.get(a.value), `acknowledged ${a.value} (${a.key}) in the log`).toBe(1);
          byKey.set(a.key, [...(byKey.get(a.key) ?? []), a.value]);
        }
        for (const [key, values] of byKey) {
          const inLog = (order.get(key) ?? []).filter((v) => values.includes(v));
          expect(inLog, `order of ${key}`).toEqual(values);
          const got = (await c.get(key))?.value.toString();
          const all = order.get(key)!;
          // the last value is the last acknowledged one, or an attempt after it whose answer was lost
          expect(all.indexOf(got!)).toBeGreaterThanOrEqual(all.indexOf(values.at(-1)!));
          expect(got).toBe(all.at(-1));
        }
      }
      c.close();
    },
    15 * 60_000,
  );
});

const history: string[] = [];

/** Polls every agent's state of the shard; a sample where two say "owned" at the same epoch is a violation. */
function startOwnerSampler(shard: string) {
  let stop = false;
  let samples = 0;
  const bad: string[] = [];
  const done = (async () => {
    while (!stop) {
      const states = await Promise.all(
        [...agentPorts.keys()].map(async (n) => ({ n, s: await agentShard(n, shard).catch(() => null) })),
      );
      const owned = states.filter((x) => x.s?.state === "owned");
      const epochs = new Set(owned.map((x) => x.s!.epoch));
      if (epochs.size < owned.length) bad.push(owned.map((x) => `${x.n}@${x.s!.epoch}`).join(" "));
      samples++;
      await sleep(20);
    }
  })();
  return {
    violations: () => bad,
    stop: async () => {
      stop = true;
      await done;
      return samples;
    },
  };
}
