/**
 * The routing client against real agent processes put in trouble on purpose: one paused with
 * SIGSTOP (it accepts the connection and never answers), one stopped (its port refuses), a shard
 * fenced and left so, two agents that each released the shard with a redirect to the other (with
 * and without a first attempt cut off in flight by a proxy), a shard that is only a migration's
 * copy on its agent, a redirect followed by a location map that cannot be read any more, a map
 * without addresses, and origin zones that cannot be sent. The map is always the real
 * EmbeddedStore's.
 */
import { randomBytes } from "node:crypto";
import { execFileSync, spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  RedirectCycleError,
  ShardClient,
  type ShardClientOptions,
} from "../../../src/client/shard-client.js";
import { ExitCode, PreconditionError, UsageError, UserError } from "../../../src/errors.js";
import { startDelayProxy } from "../../helpers/delay-proxy.js";
import { admin, get, http, startAgent, stopAgent, tempDir, TOKEN, type AgentProc } from "../agent/harness.js";
import {
  createShard,
  inventory,
  oneShardMap,
  pause,
  realAgent,
  requestCount,
  resume,
  SHARD,
  storeWith,
} from "./real.js";

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function client(store: ShardClientOptions["store"], opts: Partial<ShardClientOptions> = {}): ShardClient {
  const c = new ShardClient({ store, token: TOKEN, baseBackoffMs: 10, maxBackoffMs: 50, ...opts });
  closers.push(() => c.close());
  return c;
}

/** The rejection of `p`, and how long it took to come. */
async function failure(p: Promise<unknown>): Promise<{ err: UserError; ms: number }> {
  const t0 = Date.now();
  try {
    await p;
  } catch (err) {
    return { err: err as UserError, ms: Date.now() - t0 };
  }
  throw new Error("expected the operation to fail");
}

/** Releases the shard on `from` (at epoch 1) with a redirect to `to` at epoch 2. */
async function redirect(from: AgentProc, to: AgentProc, toNode: string): Promise<void> {
  const r = await admin(from.port, "POST", `${SHARD}/release`, {
    epoch: 1,
    redirect: { node: toNode, address: to.address, epoch: 2 },
  });
  expect(r.status, r.body.toString()).toBe(200);
}

describe("ShardClient: bounds and clear errors", () => {
  it("gives up at its deadline when the agent accepts the connection and never answers", async () => {
    const agent = await realAgent();
    await createShard(agent);
    const c = client(await storeWith(oneShardMap(agent.address)), { deadlineMs: 400 });
    pause(agent); // SIGSTOP: the kernel still accepts the connection and takes the request
    const writeId = randomBytes(16);
    const { err, ms } = await failure(c.put("k", "v", { writeId }));
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toMatch(/no answer within the client's deadline \(400 ms\)/);
    // the write is in doubt, and the error says how to retry it safely
    expect(err.message).toMatch(/may have been applied.*same write id/);
    // which id: the one to pass again (`--write-id` on the command line)
    expect(err.message).toContain(`same write id, ${writeId.toString("hex")}`);
    expect(ms).toBeGreaterThanOrEqual(350);
    expect(ms).toBeLessThan(2000); // not the 10 s of the transport's own timeout

    // and it was in doubt: resumed, the agent applies the request it had taken in
    resume(agent);
    let lsn = 0;
    for (let i = 0; i < 100 && lsn === 0; i++) {
      lsn = (await inventory(agent)).lsn as number;
      if (lsn === 0) await sleep(50);
    }
    expect(lsn).toBe(1);
    expect((await get(agent.port, SHARD, "k")).body.toString()).toBe("v");
    // the retry the error advises, with the same write id, is not applied a second time
    expect(await c.put("k", "v", { writeId })).toEqual({ lsn: 1, duplicate: true });
    expect((await inventory(agent)).lsn).toBe(1);
  });

  it("ends an operation in flight when the client is closed, saying whether the write may have been applied", async () => {
    const agent = await realAgent();
    await createShard(agent);
    const c = client(await storeWith(oneShardMap(agent.address)), { deadlineMs: 60_000 });
    pause(agent); // the put is taken in by the kernel and never answered
    const started = Date.now();
    const put = failure(c.put("k", "v"));
    await sleep(300);
    c.close();
    const { err, ms } = await put;
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toMatch(
      /^PUT stopped after 1 attempt: the client was closed; the write may have been applied/,
    );
    expect(ms).toBeLessThan(5000); // not the minute of its deadline
    expect(Date.now() - started).toBeLessThan(5000);
    // a closed client opens new connections for later calls
    resume(agent);
    await c.put("k", "v2");
    expect((await c.get("k"))?.value.toString()).toBe("v2");
    c.close();
  });

  it("does not call a write in doubt when no connection could be made", async () => {
    const gone = await realAgent();
    await stopAgent(gone); // nothing listens on its port any more
    const c = client(await storeWith(oneShardMap(gone.address)), { deadlineMs: 300 });
    const { err } = await failure(c.put("k", "v"));
    expect(err.message).toMatch(/unreachable: connect ECONNREFUSED/);
    expect(err.message).not.toMatch(/may have been applied/);
    expect(err.hint).toMatch(/check that the agents are up/);
  });

  it("gives up at its deadline when the wall clock is stepped back meanwhile (its deadline is on the monotonic clock)", async () => {
    const gone = await realAgent();
    await stopAgent(gone);
    const store = await storeWith(oneShardMap(gone.address));
    const c = client(store, { deadlineMs: 800 });
    // the wall clock steps back an hour 100 ms into the put (an NTP correction, a VM restored):
    // before, the deadline (taken on the wall clock) moved an hour away and the put retried for it
    const realNow = Date.now.bind(Date);
    const stepAt = realNow() + 100;
    const spy = vi.spyOn(Date, "now").mockImplementation(() => {
      const t = realNow();
      return t >= stepAt ? t - 3_600_000 : t;
    });
    try {
      const t0 = performance.now();
      const { err } = await failure(c.put("k", "v"));
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(err.message).toMatch(/unreachable: connect ECONNREFUSED/);
    } finally {
      spy.mockRestore();
      c.close();
    }
  });

  it("calls a write whose own flush failed (a full disk) possibly applied, with its write id", async () => {
    // its entries may have reached the disk before the flush failed, and a restart's recovery keeps
    // them: before, the client said only that the shard was refused, with no write id to retry with
    const mnt = tempDir("client-full");
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    let p: AgentProc | undefined;
    try {
      p = await startAgent({
        dataDir: join(mnt, "data"),
        nodeId: "node-1",
        segments: 64,
        extra: ["--windows-save-seconds", "0"],
      });
      await createShard(p);
      const c = client(await storeWith(oneShardMap(p.address)), { deadlineMs: 5000 });
      let err: UserError | undefined;
      for (let i = 0; i < 2000 && !err; i++)
        await c.put(`k${i}`, randomBytes(3000)).catch((e: UserError) => (err = e));
      expect(err?.message).toMatch(/is refused by its agent: this write was not acknowledged.*ENOSPC/s);
      expect(err?.message).toMatch(/the write may have been applied .* same write id, [0-9a-f]{32}/);
      expect(err?.exitCode).toBe(ExitCode.Failed);
      // a write to the shard failed before it is refused unwritten: nothing in doubt
      const next = await failure(c.put("after", "x"));
      expect(next.err.message).toMatch(/is refused by its agent/);
      expect(next.err.message).not.toMatch(/may have been applied/);
    } finally {
      if (p) await stopAgent(p, "SIGKILL");
      spawnSync("umount", [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });

  it("fails at once when the map gives the owner no address, or one that is not HOST:PORT", async () => {
    const noAddress = client(await storeWith(oneShardMap("")), { deadlineMs: 5000 });
    const a = await failure(noAddress.put("k", "v"));
    expect(a.err).toBeInstanceOf(PreconditionError);
    expect(a.err.message).toMatch(/gives node node-1 \(the owner of shard-1\) no address/);
    expect(a.err.hint).toMatch(/shardctl init --force --nodes/);
    expect(a.ms).toBeLessThan(1000);

    const bad = client(await storeWith(oneShardMap("localhost")), { deadlineMs: 5000 });
    const b = await failure(bad.get("k"));
    expect(b.err).toBeInstanceOf(UserError);
    expect(b.err.message).toMatch(/the address "localhost", which is not HOST:PORT/);
    expect(b.ms).toBeLessThan(1000);
  });

  it("retries a shard that stays fenced a bounded number of times, then names the fence and the way out", async () => {
    const agent = await realAgent();
    await createShard(agent);
    const f = await admin(agent.port, "POST", `${SHARD}/fence`, { epoch: 1 });
    expect(f.status, f.body.toString()).toBe(200);
    const c = client(await storeWith(oneShardMap(agent.address)), { deadlineMs: 500 });
    const { err, ms } = await failure(c.put("k", "v"));
    expect(err.hint).toMatch(/shard shard-1 stayed fenced/);
    expect(err.hint).toMatch(/shardctl migrations --recover/);
    expect(err.message).toMatch(
      /gave up on PUT after \d+ attempts \(deadline 500 ms\): .* answered 503 fenced/,
    );
    // every answered attempt was refused, so the write is not in doubt. A real agent takes a few ms
    // to answer, so the deadline may cut off the last attempt: one that had a connection may reach
    // the agent (the client says the write is in doubt), one that had none is aborted unsent
    const cut = /the last attempt, to \S+, had no answer within the client's deadline/.test(err.message);
    const inDoubt = /may have been applied/.test(err.message);
    if (!cut) expect(inDoubt).toBe(false);
    expect(ms).toBeLessThan(1500);
    // the attempts, as the agent counted them: every one refused as fenced, and nothing written
    const attempts = c.stats.requests;
    expect(err.message).toContain(`after ${attempts} attempts`);
    expect(attempts).toBeGreaterThan(1);
    expect(attempts).toBeLessThan(40);
    const reached = cut && !inDoubt ? attempts - 1 : attempts;
    for (let i = 0; i < 40 && (await requestCount(agent, "put")) < reached; i++) await sleep(50);
    await sleep(100); // an attempt aborted unsent must not arrive late
    expect(await requestCount(agent, "put", 503)).toBe(reached);
    expect(await requestCount(agent, "put")).toBe(reached);
    expect((await inventory(agent)).lsn).toBe(0);
  });

  it("retries a fenced shard on its backoff, not after the fence's whole-second Retry-After", async () => {
    const agent = await realAgent();
    await createShard(agent);
    const f = await admin(agent.port, "POST", `${SHARD}/fence`, { epoch: 1 });
    expect(f.status, f.body.toString()).toBe(200);
    // a fence lasts a migration's write pause (tens of ms); its answer still says Retry-After: 1
    const c = client(await storeWith(oneShardMap(agent.address)), { deadlineMs: 5000 });
    const put = c.put("k", "v");
    while ((await requestCount(agent, "put", 503)) < 1) await sleep(5);
    const u = await admin(agent.port, "POST", `${SHARD}/unfence`, { epoch: 1 });
    expect(u.status, u.body.toString()).toBe(200);
    const unfencedAt = Date.now();
    expect(await put).toEqual({ lsn: 1 });
    // the write goes through within the backoff (at most 1 s by default, 20 ms doubling): here the
    // unfence came after one or two retries, so well under the second Retry-After asks for
    expect(Date.now() - unfencedAt).toBeLessThan(500);
  });

  it("keeps the agent's last answer in its error when the deadline cuts off the attempt after it", async () => {
    const agent = await realAgent();
    await createShard(agent);
    const f = await admin(agent.port, "POST", `${SHARD}/fence`, { epoch: 1 });
    expect(f.status, f.body.toString()).toBe(200);
    const c = client(await storeWith(oneShardMap(agent.address)), { deadlineMs: 1500 });
    const put = failure(c.put("k", "v"));
    // a few attempts refused as fenced, then the agent stops answering: the next attempt hangs
    while ((await requestCount(agent, "put", 503)) < 2) await sleep(10);
    pause(agent);
    const { err, ms } = await put;
    expect(err.message).toMatch(
      /gave up on PUT after \d+ attempts \(deadline 1500 ms\): .* answered 503 fenced/,
    );
    expect(err.message).toContain(
      `the last attempt, to ${agent.address}, had no answer within the client's deadline`,
    );
    // that attempt had a connection (the kernel of a paused process still accepts): in doubt
    expect(err.message).toMatch(/may have been applied/);
    expect(err.hint).toMatch(/shard shard-1 stayed fenced/);
    expect(ms).toBeLessThan(3000);
    resume(agent);
    for (let i = 0; i < 40 && (await requestCount(agent, "put")) < c.stats.requests; i++) await sleep(50);
    expect(await requestCount(agent, "put", 503)).toBe(c.stats.requests);
    expect((await inventory(agent)).lsn).toBe(0);
  });

  it("fails at once, naming the nodes, when two agents redirect to each other (exit 3: nothing written)", async () => {
    const [a, b] = await Promise.all([realAgent("node-1"), realAgent("node-2")]);
    await Promise.all([createShard(a), createShard(b)]);
    await redirect(a, b, "node-2");
    await redirect(b, a, "node-1");
    const c = client(await storeWith(oneShardMap(a.address)), { deadlineMs: 5000 });
    const cycle = `node-1 at ${a.address} → node-2 at ${b.address} → node-1 at ${a.address}`;
    for (const op of [() => c.get("k"), () => c.put("k", "v")]) {
      const { err, ms } = await failure(op());
      expect(err, err.stack).toBeInstanceOf(RedirectCycleError);
      expect(err.exitCode).toBe(ExitCode.Precondition);
      expect(err.message).toContain(`the agents redirect in a cycle: ${cycle}`);
      expect(err.message).not.toMatch(/may have been applied/);
      expect(err.hint).toMatch(/disagree on who owns shard shard-1/);
      expect(err.hint).toMatch(/shardctl status/);
      // not the 5 s deadline: waiting does not end a cycle
      expect(ms).toBeLessThan(1500);
    }
    expect(c.stats.retries).toBe(0);
    // each operation: the chain from the map, then once more from the map reloaded (it may have
    // been behind), each stopped where it comes round: two requests to each agent
    expect(await requestCount(a, "get", 421)).toBe(2);
    expect(await requestCount(b, "get", 421)).toBe(2);
    expect(await requestCount(a, "put", 421)).toBe(2);
    expect(await requestCount(b, "put", 421)).toBe(2);
    expect((await requestCount(a, "put")) + (await requestCount(b, "put"))).toBe(4);
  });

  it("calls a write round a redirect cycle possibly applied (exit 1) when an earlier attempt may have reached an agent", async () => {
    const [a, b] = await Promise.all([realAgent("node-1"), realAgent("node-2")]);
    await Promise.all([createShard(a), createShard(b)]);
    await redirect(a, b, "node-2");
    await redirect(b, a, "node-1");
    // the map names node-1 through a slow proxy: the first attempt's connection is cut in flight
    const proxy = await startDelayProxy(a.port, 300);
    closers.push(() => proxy.close());
    const c = client(await storeWith(oneShardMap(proxy.address)), { deadlineMs: 5000 });
    const put = failure(c.put("k", "v"));
    while (proxy.connections() < 1) await sleep(5);
    proxy.cut(0);
    const { err, ms } = await put;
    expect(err, err.stack).toBeInstanceOf(RedirectCycleError);
    expect(err.exitCode).toBe(ExitCode.Failed);
    expect(err.message).toMatch(/the agents redirect in a cycle: .*node-2 at /);
    expect(err.message).toMatch(/may have been applied.*same write id/);
    expect(ms).toBeLessThan(2500);
  });

  it("names the migration, not a dead agent, when the shard's agent serves nothing yet (a migration target)", async () => {
    const agent = await realAgent();
    const r = await admin(agent.port, "POST", `${SHARD}/receive`, {
      epoch: 1,
      migration: "m-test",
      ranges: [[0, 64]],
    });
    expect(r.status, r.body.toString()).toBe(201);
    const c = client(await storeWith(oneShardMap(agent.address)), { deadlineMs: 300 });
    const { err } = await failure(c.put("k", "v"));
    expect(err.message).toMatch(/answered 503 not-serving/);
    expect(err.hint).not.toMatch(/check that the agents are up/);
    expect(err.hint).toContain(
      `shard shard-1 is a migration target at ${agent.address} that serves nothing yet`,
    );
    expect(err.hint).toMatch(/shardctl migrations --recover/);
    expect(await requestCount(agent, "put", 503)).toBe(await requestCount(agent, "put"));
  });

  it("keeps routing by the map in hand when the store cannot be read after a redirect", async () => {
    const [a, b] = await Promise.all([realAgent("node-1"), realAgent("node-2")]);
    await Promise.all([createShard(a, 1), createShard(b, 2)]);
    await redirect(a, b, "node-2"); // a moved the shard to b, which owns it at epoch 2
    const store = await storeWith(oneShardMap(a.address)); // the map still names a
    const c = client(store, { deadlineMs: 2000 });
    expect(await c.put("k1", "v1")).toEqual({ lsn: 1 });
    // the store cannot be read now (as Consul restarting, say): the old owner still redirects
    writeFileSync(store.file, "garbage, not a location map");
    await expect(store.load()).rejects.toThrow(/is corrupt/);
    const refreshes = c.stats.refreshes;
    expect(await c.put("k2", "v2")).toEqual({ lsn: 2 });
    expect(await c.put("k3", "v3")).toEqual({ lsn: 3 });
    expect(c.stats.refreshes).toBeGreaterThan(refreshes); // it did try to reload
    // every put went to a, then to b at epoch 2 (b refuses any other epoch with 409)
    expect(await requestCount(a, "put", 421)).toBe(3);
    expect(await requestCount(a, "put")).toBe(3);
    expect(await requestCount(b, "put", 200)).toBe(3);
    expect(await requestCount(b, "put")).toBe(3);
    expect(await inventory(b)).toMatchObject({ epoch: 2, lsn: 3 });
  });

  it("refuses an origin zone that cannot be a zone name, and a deadline that is not positive, before it sends anything", async () => {
    const store = await storeWith(oneShardMap("127.0.0.1:1"));
    for (const zone of ["東京", "a\r\nx-evil: 1", "zone b", "A", "-a", "a".repeat(33)]) {
      expect(() => client(store, { originZone: zone }), zone).toThrow(UsageError);
    }
    // a deadline of 0 would also turn the transport's timeout off
    expect(() => client(store, { deadlineMs: 0 })).toThrow(/deadlineMs must be a positive number/);
    // past 2^31 - 1 ms Node fires a timer after 1 ms: every attempt would be cut off at once
    for (const ms of [Infinity, 3e9, 2 ** 31]) {
      expect(() => client(store, { deadlineMs: ms }), String(ms)).toThrow(/up to 2147483647 \(24.8 days\)/);
    }
    expect(() => client(store, { deadlineMs: 2 ** 31 - 1 })).not.toThrow();
    // a real agent that knows the zone counts the write for it
    const ok = await realAgent("node-1", { zones: "a,b,c,eu-west_1" });
    await createShard(ok);
    const c = client(await storeWith(oneShardMap(ok.address)), { originZone: "eu-west_1" });
    await c.put("k", "v");
    const access = await http(ok.port, "GET", "/v1/access?window=600");
    expect(access.status).toBe(200);
    const { zones, segments } = access.json() as {
      zones: string[];
      segments: { writes: number; byZone: number[] }[];
    };
    expect(segments).toHaveLength(1);
    expect(segments[0].writes).toBeGreaterThan(0);
    const counted = zones.filter((_z, i) => segments[0].byZone[i] > 0);
    expect(counted).toEqual(["eu-west_1"]);
  });
});
