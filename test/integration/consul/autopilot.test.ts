/**
 * Autopilot high availability on a real Consul: two (then three) autopilot
 * processes; kill -9 the leader, another takes over (timed); a graceful stop
 * hands over at once; the deposed leader's late write fails the term check.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../../../src/cli.js";
import { ConsulHttp } from "../../../src/consul/http.js";
import { LeaderElection } from "../../../src/consul/leader.js";
import { readLeader } from "../../../src/consul/status.js";
import { ConsulStore, StaleTermError } from "../../../src/consul/store.js";
import { agentlessMap, smallMap } from "../../contract/maps.js";
import { startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";

const repo = resolve(import.meta.dirname, "../../..");
let consul: DevConsul;
let dataDir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  consul = await startConsulDev();
  dataDir = mkdtempSync(join(tmpdir(), "shardctl-autopilot-"));
  writeFileSync(join(dataDir, "config.yaml"), "{}\n");
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await consul?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

function env(prefix: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: dataDir,
    SHARDCTL_CONFIG: join(dataDir, "config.yaml"),
    CONSUL_HTTP_ADDR: consul.addr,
    SHARDCTL_STORE: "consul",
    SHARDCTL_CONSUL_PREFIX: prefix,
    SHARDCTL_DATA_DIR: dataDir,
    SHARDCTL_SEGMENTS: "1024",
  };
}

function autopilot(prefix: string, id: string): { child: ChildProcess; log: () => string } {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(repo, "bin/shardctl.ts"), "autopilot", "--interval", "1", "--id", id],
    {
      cwd: repo, // `--import tsx` resolves from here
      env: env(prefix),
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  children.push(child);
  let log = "";
  child.stdout!.on("data", (b) => (log += b));
  child.stderr!.on("data", (b) => (log += b));
  return { child, log: () => log };
}

async function until<T>(fn: () => Promise<T | undefined | false>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("autopilot failover", () => {
  it("kill -9 of the leader: another instance takes over; SIGTERM hands over at once; the old term is fenced", async () => {
    const prefix = uniquePrefix("ha");
    const store = new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
    // agentless: the autopilot may commit layout changes without moving data between agents
    const init = await store.compareAndSet(0, agentlessMap());
    expect(init.ok).toBe(true);

    // Given A leads (started first) and B stands by
    const a = autopilot(prefix, "ap-a");
    await until(async () => (await readLeader(store))?.holder === "ap-a", 30_000, "A leads");
    const b = autopilot(prefix, "ap-b");
    await until(async () => b.log().includes("following"), 30_000, "B follows");
    // A's cycles write the map with its term (the cold shards merge).
    const termA = (await store.readTerm())!.term;
    await until(async () => (await store.load())?.map.term === termA, 15_000, "A writes with its term");

    // The CLI's status names the leader.
    const io = fakeIO();
    expect(await runCli(["status", "--json"], io.io, env(prefix))).toBe(0);
    expect(JSON.parse(io.out())).toMatchObject({ leader: { holder: "ap-a" }, term: termA });

    // When A is killed with SIGKILL
    const killedAt = Date.now();
    a.child.kill("SIGKILL");
    await until(async () => (await readLeader(store))?.holder === "ap-b", 45_000, "B takes over");
    const takeoverS = (Date.now() - killedAt) / 1000;
    await until(async () => b.log().includes("leading with term"), 10_000, "B logs its term");
    const termB = (await store.readTerm())!.term;
    expect(termB).toBe(termA + 1);

    // Then A's late write (term A) is refused and writes nothing.
    const before = await store.load({ consistent: true });
    const late = await store
      .compareAndSet(before!.version, { ...before!.map, term: termA, updatedAt: 1 })
      .catch((e) => e);
    expect(late).toBeInstanceOf(StaleTermError);
    expect(late.message).toMatch(new RegExp(`term ${termA}: term ${termB} has taken over`));
    // (B may write meanwhile; the refused map, marked updatedAt 1, must never appear.)
    expect((await store.load({ consistent: true }))!.map.updatedAt).not.toBe(1);

    // A graceful stop (SIGTERM) releases the lock: C takes over within about the lock-delay.
    const c = autopilot(prefix, "ap-c");
    await until(async () => c.log().includes("following"), 30_000, "C follows");
    const termAt = Date.now();
    b.child.kill("SIGTERM");
    await until(async () => (await readLeader(store))?.holder === "ap-c", 20_000, "C takes over");
    const gracefulS = (Date.now() - termAt) / 1000;
    await until(async () => (await store.readTerm())!.term === termB + 1, 10_000, "C bumps the term");
    await until(async () => b.child.exitCode !== null, 10_000, "B exits");
    expect(b.child.exitCode).toBe(0);
    console.log(
      JSON.stringify({ autopilot_failover: { kill9_takeover_s: takeoverS, sigterm_takeover_s: gracefulS } }),
    );
    // The leader's 3 s liveness check goes critical, Consul invalidates its session, 1 s lock-delay.
    expect(takeoverS).toBeLessThan(12);
    expect(gracefulS).toBeLessThan(5);
    c.child.kill("SIGTERM");
    await store.close();
  }, 150_000);

  it("a leader cut off (SIGSTOP) is replaced once its liveness check fails, and steps down when it comes back", async () => {
    const prefix = uniquePrefix("partition");
    const store = new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
    expect((await store.compareAndSet(0, smallMap())).ok).toBe(true);
    const a = autopilot(prefix, "ap-p1");
    await until(async () => (await readLeader(store))?.holder === "ap-p1", 30_000, "p1 leads");
    const b = autopilot(prefix, "ap-p2");
    await until(async () => b.log().includes("following"), 30_000, "p2 follows");
    const termA = (await store.readTerm())!.term;
    // When the leader stops answering (frozen: no renewals reach Consul)
    const stoppedAt = Date.now();
    a.child.kill("SIGSTOP");
    try {
      await until(async () => (await readLeader(store))?.holder === "ap-p2", 45_000, "p2 takes over");
    } finally {
      a.child.kill("SIGCONT");
    }
    const takeoverS = (Date.now() - stoppedAt) / 1000;
    expect(takeoverS).toBeLessThan(12);
    // the new leader bumps the term right after taking the lock
    await until(async () => (await store.readTerm())!.term === termA + 1, 10_000, "p2 bumps the term");
    // Then the old leader, back, notices it lost the lock and stands by; the lock stays with p2.
    await until(
      async () => /stepping down|was deposed|lost leadership/.test(a.log()),
      15_000,
      "p1 steps down",
    );
    expect((await readLeader(store))?.holder).toBe("ap-p2");
    const vm = await store.load({ consistent: true });
    expect(vm!.map.term === 0 || vm!.map.term >= termA).toBe(true);
    console.log(JSON.stringify({ autopilot_partition: { sigstop_takeover_s: takeoverS } }));
    a.child.kill("SIGKILL");
    b.child.kill("SIGTERM");
    await store.close();
  }, 120_000);

  it("a leader whose session is invalidated loses leadership, and its write between deposition and noticing is refused", async () => {
    const prefix = uniquePrefix("fence");
    const http = new ConsulHttp({ addr: consul.addr, prefix });
    const store = new ConsulStore({ http, prefix });
    const init = await store.compareAndSet(0, smallMap());
    if (!init.ok) throw new Error("setup write failed");
    const ac = new AbortController();
    const first = await new LeaderElection({ http, store, holder: "one", lockDelayS: 0 }).campaign(ac.signal);
    const w1 = await store.compareAndSet(init.version, { ...smallMap(1), term: first.term });
    expect(w1.ok).toBe(true);
    // The session is invalidated (as Consul does after the TTL when the leader is partitioned).
    await http.sessionDestroy(first.session);
    const second = await new LeaderElection({ http, store, holder: "two", lockDelayS: 0 }).campaign(
      ac.signal,
    );
    expect(second.term).toBe(first.term + 1);
    await until(async () => first.lost.aborted, 5000, "the first leader notices");
    // The deposed leader's late write (term one) is refused, even from the right version.
    const v = (await store.load({ consistent: true }))!.version;
    await expect(store.compareAndSet(v, { ...smallMap(2), term: first.term })).rejects.toBeInstanceOf(
      StaleTermError,
    );
    // A term that was never granted is refused too; the current one writes.
    await expect(store.compareAndSet(v, { ...smallMap(2), term: second.term + 5 })).rejects.toThrow(
      /current term is/,
    );
    expect((await store.compareAndSet(v, { ...smallMap(3), term: second.term })).ok).toBe(true);
    await second.resign();
    await first.resign();
    expect(await readLeader(store)).toBeNull();
    await store.close();
  }, 60_000);
});

function fakeIO() {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = "";
  out.on("data", (b) => (o += b));
  return { io: { out, err }, out: () => o };
}
