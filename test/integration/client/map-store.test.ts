/**
 * The routing client's map against a real Consul (`consul agent -dev`), the store whose reads
 * can be slow and can answer out of order, reached through a TCP proxy that holds its answers
 * (test/helpers/delay-proxy.ts) or paused with SIGSTOP: a slow read of an older map must not
 * replace the newer one a later read brought, and the deadline bounds the wait for the store as
 * it bounds the wait for the agents.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { ConsulHttp } from "../../../src/consul/http.js";
import { ConsulStore } from "../../../src/consul/store.js";
import type { LocationMap } from "../../../src/engine/location-map.js";
import type { LoadOptions, LocationStore } from "../../../src/engine/ports.js";
import { UserError } from "../../../src/errors.js";
import { startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";
import { startDelayProxy } from "../../helpers/delay-proxy.js";
import { admin, TOKEN, type AgentProc } from "../agent/harness.js";
import { createShard, oneShardMap, realAgent, requestCount, SHARD } from "./real.js";

let consul: DevConsul;
beforeAll(async () => {
  consul = await startConsulDev();
});
afterAll(async () => {
  await consul?.stop();
});

const closers: (() => unknown)[] = [];
afterEach(async () => {
  consul.resume(); // a test that failed while Consul was paused
  for (const c of closers.splice(0).reverse()) await c();
});

function consulStore(addr: string, prefix: string): ConsulStore {
  const s = new ConsulStore({ http: new ConsulHttp({ addr, prefix }), prefix });
  closers.push(() => s.close());
  return s;
}

/** `store`, with the version of every map its load() returned, in the order they returned. */
function recordingLoads(store: LocationStore, versions: number[]): LocationStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop !== "load") return Reflect.get(target, prop, receiver);
      return async (opts?: LoadOptions) => {
        const vm = await target.load(opts);
        versions.push(vm?.version ?? 0);
        return vm;
      };
    },
  });
}

/** The map after the shard moved from node-1 to node-2 at epoch 2. */
function moved(map: LocationMap, to: AgentProc): LocationMap {
  const next = structuredClone(map);
  next.nodes.push({ id: "node-2", address: to.address, zone: "b" });
  next.shards[0] = { ...next.shards[0], node: "node-2", epoch: 2 };
  return next;
}

/**
 * node-1 (a) owned the shard at epoch 1 and released it to node-2 (b) at epoch 2; the store
 * holds the map before the move (v1) and `writer` can store the one after it.
 */
async function movedShard() {
  const [a, b] = await Promise.all([realAgent("node-1"), realAgent("node-2")]);
  await Promise.all([createShard(a, 1), createShard(b, 2)]);
  const r = await admin(a.port, "POST", `${SHARD}/release`, {
    epoch: 1,
    redirect: { node: "node-2", address: b.address, epoch: 2 },
  });
  expect(r.status, r.body.toString()).toBe(200);
  const before = oneShardMap(a.address);
  return { a, b, ...(await stored(before)), after: moved(before, b) };
}

/** A fresh prefix in Consul holding `map`; `writer` reads and writes it directly. */
async function stored(map: LocationMap) {
  const prefix = uniquePrefix("client-map");
  const writer = consulStore(consul.addr, prefix);
  const cas = await writer.compareAndSet(0, map);
  if (!cas.ok) throw new Error("could not store the first map");
  return { prefix, writer, v1: cas.version };
}

function client(store: LocationStore, deadlineMs = 10_000): ShardClient {
  const c = new ShardClient({ store, token: TOKEN, baseBackoffMs: 10, maxBackoffMs: 50, deadlineMs });
  closers.push(() => c.close());
  return c;
}

describe("ShardClient and a slow location store", () => {
  it("keeps the newer map when a read that started earlier brings an older one later", async () => {
    const { a, b, prefix, writer, v1, after } = await movedShard();
    // the client reads Consul through a proxy that can hold its answers
    const proxy = await startDelayProxy(consul.httpPort, 0);
    closers.push(() => proxy.close());
    const loads: number[] = [];
    const c = client(recordingLoads(consulStore(proxy.address, prefix), loads));
    expect((await c.refresh()).version).toBe(v1);

    // refresh 1 reads v1, and its answer is held 1.5 s: Consul is paused while the request goes
    // in, and the proxy holds what Consul answers once resumed
    await consul.pause();
    const first = c.refresh();
    await sleep(200); // the request is forwarded and waits in Consul's socket
    proxy.setDelay(1500);
    consul.resume();
    await writer.load(); // Consul answers again (and so has answered refresh 1, with v1)
    await sleep(200);

    // the shard moves (v2); refresh 2 reads it at once
    const cas = await writer.compareAndSet(v1, after);
    if (!cas.ok) throw new Error("could not store the second map");
    proxy.setDelay(0);
    expect((await c.refresh()).version).toBe(cas.version);
    // refresh 1 ends last, with the older map: the client keeps the newer
    expect((await first).version).toBe(cas.version);
    // (the race happened as staged: v1 came back after v2)
    expect(loads).toEqual([v1, cas.version, v1]);

    // and routes by it: straight to node-2, nothing to node-1 (which would redirect)
    await c.put("k", "v");
    expect(await requestCount(a, "put")).toBe(0);
    expect(await requestCount(b, "put", 200)).toBe(1);
  });

  it("does not wait past its deadline for a map reload: the map in hand still routes", async () => {
    const { a, b, prefix, writer, v1, after } = await movedShard();
    const c = client(consulStore(consul.addr, prefix), 1000);
    expect((await c.refresh()).version).toBe(v1);
    const cas = await writer.compareAndSet(v1, after);
    expect(cas.ok).toBe(true);
    // the map in hand names node-1, which redirects: the client marks its map stale
    expect(await c.put("k1", "v1")).toEqual({ lsn: 1 });
    // the store stops answering (Consul's HTTP timeout is 5 s): the next put must not wait for it
    await consul.pause();
    const t0 = Date.now();
    expect(await c.put("k2", "v2")).toEqual({ lsn: 2 });
    const ms = Date.now() - t0;
    consul.resume();
    expect(ms).toBeLessThan(1000);
    expect(await requestCount(a, "put", 421)).toBe(2);
    expect(await requestCount(b, "put", 200)).toBe(2);
  });

  it("fails at its deadline, naming the store, when the first map does not come", async () => {
    const { prefix } = await stored(oneShardMap("127.0.0.1:1"));
    const c = client(consulStore(consul.addr, prefix), 600);
    await consul.pause();
    const t0 = Date.now();
    const err = await c.get("k").then(
      () => undefined,
      (e: unknown) => e,
    );
    const ms = Date.now() - t0;
    consul.resume();
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toMatch(
      /the location store did not answer within the client's deadline \(600 ms\)/,
    );
    expect(ms).toBeLessThan(1500);
  });
});
