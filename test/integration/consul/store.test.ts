/**
 * ConsulStore against a real `consul agent -dev`: CAS races between two
 * processes, chunking past 512 KiB, corrupt and foreign values, a Consul that
 * is down or frozen, and the CLI's status/nodes against it.
 */
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MoveBackoffs } from "../../../src/cluster/autopilot-migrate.js";
import { AutopilotMemory } from "../../../src/cluster/autopilot-memory.js";
import { runCli } from "../../../src/cli.js";
import { canonicalMap } from "../../../src/consul/codec.js";
import { ConsulHttp } from "../../../src/consul/http.js";
import { deregisterAgentService, registerAgentService } from "../../../src/consul/services.js";
import { ConsulStore } from "../../../src/consul/store.js";
import { newJournal, type MigrationPhase, type MigrationRecord } from "../../../src/engine/migration.js";
import { UserError } from "../../../src/errors.js";
import { largeMap, smallMap } from "../../contract/maps.js";
import {
  freePort,
  rawKeys,
  rawPut,
  startConsulDev,
  uniquePrefix,
  type DevConsul,
} from "../../helpers/consul.js";

const run = promisify(execFile);
let consul: DevConsul;

beforeAll(async () => {
  consul = await startConsulDev();
});
afterAll(async () => {
  await consul?.stop();
});

function open(prefix: string, opts: { addr?: string; timeoutMs?: number } = {}): ConsulStore {
  return new ConsulStore({
    http: new ConsulHttp({ addr: opts.addr ?? consul.addr, prefix, timeoutMs: opts.timeoutMs }),
    prefix,
  });
}

async function rawGet(key: string): Promise<{ value: string; index: number } | null> {
  const res = await fetch(`http://${consul.addr}/v1/kv/${key}`);
  if (res.status === 404) return null;
  const [e] = (await res.json()) as { Value: string; ModifyIndex: number }[];
  return { value: Buffer.from(e.Value ?? "", "base64").toString(), index: e.ModifyIndex };
}

function fakeIO() {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = "";
  let e = "";
  out.on("data", (b) => (o += b));
  err.on("data", (b) => (e += b));
  return { io: { out, err }, out: () => o, err: () => e };
}

describe("CAS races between two writer processes", () => {
  it("every increment lands exactly once: no lost update, no overwrite", async () => {
    const prefix = uniquePrefix("race");
    const store = open(prefix);
    const base = smallMap();
    const first = await store.compareAndSet(0, base);
    expect(first.ok).toBe(true);
    const N = 60;
    const startAt = String(Date.now() + 4000);
    const writer = () =>
      run(
        process.execPath,
        [
          "--import",
          "tsx",
          join(import.meta.dirname, "cas-writer.ts"),
          consul.addr,
          prefix,
          String(N),
          startAt,
        ],
        {
          timeout: 60_000,
        },
      );
    const [a, b] = await Promise.all([writer(), writer()]);
    const ra = JSON.parse(a.stdout.trim().split("\n").pop()!);
    const rb = JSON.parse(b.stdout.trim().split("\n").pop()!);
    expect(ra.wins + rb.wins).toBe(2 * N);
    const vm = await store.load({ consistent: true });
    expect(vm!.map.nextShardSeq).toBe(base.nextShardSeq + 2 * N);
    // The two processes really raced (each lost at least once) — otherwise this proves little.
    expect(ra.lost + rb.lost).toBeGreaterThan(0);
    await store.close();
  }, 90_000);
});

describe("a map over Consul's 512 KiB value limit", () => {
  it("is chunked: no key over the limit, a write over 64 operations commits, old chunks are collected", async () => {
    const prefix = uniquePrefix("big");
    const store = open(prefix);
    const big = largeMap();
    expect(JSON.stringify(canonicalMap(big)).length).toBeGreaterThan(512 * 1024);
    const r = await store.compareAndSet(0, big);
    if (!r.ok) throw new Error("write failed");
    const keys = await rawKeys(consul.addr, prefix);
    const chunkKeys = keys.filter((k) => k.includes("/chunks/"));
    expect(chunkKeys.length).toBeGreaterThan(64); // more than one transaction could hold
    for (const k of keys) {
      const v = await rawGet(k);
      expect(Buffer.byteLength(v!.value)).toBeLessThan(512 * 1024);
    }
    // A change to 30 shards rewrites a few chunks, in one transaction; dead chunks go.
    const changed = structuredClone(big);
    for (let i = 0; i < 30; i++) changed.shards[i * 150].epoch += 1;
    const r2 = await store.compareAndSet(r.version, changed);
    if (!r2.ok) throw new Error("second write failed");
    const after = (await rawKeys(consul.addr, prefix)).filter((k) => k.includes("/chunks/"));
    const meta = JSON.parse((await rawGet(`${prefix}map/meta`))!.value) as { chunks: { key: string }[] };
    expect(new Set(after)).toEqual(new Set(meta.chunks.map((c) => c.key)));
    const rewritten = after.filter((k) => !chunkKeys.includes(k));
    expect(rewritten.length).toBeGreaterThan(0);
    expect(rewritten.length).toBeLessThanOrEqual(30);
    expect((await store.load({ consistent: true }))!.map).toEqual(changed);
    await store.close();
  });
});

describe("orphan chunks", () => {
  it("the sweep deletes unreferenced chunks older than 10 minutes and nothing else", async () => {
    const prefix = uniquePrefix("sweep");
    const store = open(prefix);
    const w = await store.compareAndSet(0, smallMap());
    if (!w.ok) throw new Error("write failed");
    const live = (await rawKeys(consul.addr, prefix)).filter((k) => k.includes("/chunks/"));
    // A writer that died between writing its chunks and committing, 11 minutes ago and just now:
    const old = `${prefix}map/chunks/${(Date.now() - 11 * 60_000).toString(36)}-dead00-0`;
    const recent = `${prefix}map/chunks/${Date.now().toString(36)}-busy00-0`;
    await rawPut(consul.addr, old, "{}");
    await rawPut(consul.addr, recent, "{}");
    // While the map has not moved since, their commits could still succeed: both are kept.
    expect(await store.sweepOrphanChunks()).toBe(0);
    // Once it has moved on (the same chunks: nothing else changes), the old one goes.
    const w2 = await store.compareAndSet(w.version, { ...smallMap(), updatedAt: smallMap().updatedAt + 1 });
    if (!w2.ok) throw new Error("second write failed");
    expect(await store.sweepOrphanChunks()).toBe(1);
    const after = (await rawKeys(consul.addr, prefix)).filter((k) => k.includes("/chunks/"));
    expect(after.sort()).toEqual([...live, recent].sort());
    expect((await store.load({ consistent: true }))!.map).toEqual({
      ...smallMap(),
      updatedAt: smallMap().updatedAt + 1,
    });
    await store.close();
  });
});

describe("the autopilot's memory of failed moves in Consul", () => {
  it("is one key beside the map: what one process saves, another takes up; junk there is logged, then replaced", async () => {
    const prefix = uniquePrefix("memory");
    const T0 = Date.UTC(2026, 0, 1, 12);
    const policy = { initialMs: 60_000, maxMs: 3_600_000 };
    const logs: string[] = [];
    const log = (m: string) => logs.push(m);
    const a = new AutopilotMemory(new MoveBackoffs(policy), new MoveBackoffs(policy));
    const storeA = open(prefix);
    expect(await storeA.loadAutopilotMemory()).toBeUndefined();
    a.moves.failed({ shard: "shard-3", target: "node-2", error: "409 shard-exists" }, T0);
    await a.keep(storeA, log);
    expect(await rawKeys(consul.addr, prefix)).toEqual([`${prefix}autopilot-memory`]);
    // another process (a new leader) takes it up
    const b = new AutopilotMemory(new MoveBackoffs(policy), new MoveBackoffs(policy));
    const storeB = open(prefix);
    await b.recall(storeB, log);
    expect(b.moves.active(T0 + 1000).map((e) => `${e.shard}→${e.target}`)).toEqual(["shard-3→node-2"]);
    // someone writes junk under the key: logged, the process keeps its state, and its next save replaces it
    await rawPut(consul.addr, `${prefix}autopilot-memory`, "\u0000garbage");
    b.moves.failed({ shard: "shard-4", target: "node-1", error: "down" }, T0);
    await b.recall(storeB, log);
    expect(logs.join("\n")).toMatch(/memory of failed moves in the store is unreadable \(not JSON\)/);
    expect(
      b.moves
        .entries()
        .map((e) => e.shard)
        .sort(),
    ).toEqual(["shard-3", "shard-4"]);
    await b.keep(storeB, log);
    const c = new AutopilotMemory(new MoveBackoffs(policy), new MoveBackoffs(policy));
    await c.recall(open(prefix), log);
    expect(
      c.moves
        .entries()
        .map((e) => e.shard)
        .sort(),
    ).toEqual(["shard-3", "shard-4"]);
    await Promise.all([storeA.close(), storeB.close()]);
  });
});

describe("corrupt and foreign values under the prefix", () => {
  it("a foreign meta value: load and CAS fail with a clear error, and nothing is written", async () => {
    const prefix = uniquePrefix("foreign");
    await rawPut(consul.addr, `${prefix}map/meta`, '{"hello":"not ours"}');
    const before = await rawGet(`${prefix}map/meta`);
    const store = open(prefix);
    await expect(store.load()).rejects.toThrow(/corrupt or not shardctl's/);
    await expect(store.compareAndSet(before!.index, smallMap())).rejects.toThrow(/corrupt or not shardctl's/);
    await expect(store.compareAndSet(0, smallMap())).resolves.toEqual({
      ok: false,
      currentVersion: before!.index,
    });
    expect(await rawGet(`${prefix}map/meta`)).toEqual(before);
    expect(await rawKeys(consul.addr, prefix)).toEqual([`${prefix}map/meta`]);
    await store.close();
  });

  it("binary garbage as the meta, and a stray key without a meta, are refused", async () => {
    const p1 = uniquePrefix("garbage");
    await rawPut(consul.addr, `${p1}map/meta`, "\u0000\u00ff\u0001garbage");
    await expect(open(p1).load()).rejects.toThrow(/not JSON/);
    const p2 = uniquePrefix("stray");
    await rawPut(consul.addr, `${p2}map/something`, "x");
    await expect(open(p2).load()).rejects.toThrow(/not a key shardctl writes/);
  });

  it("a tampered chunk fails its checksum; a deleted chunk is reported missing", async () => {
    const prefix = uniquePrefix("tamper");
    const store = open(prefix);
    const r = await store.compareAndSet(0, smallMap());
    if (!r.ok) throw new Error("write failed");
    const chunk = (await rawKeys(consul.addr, prefix)).find((k) => k.includes("/chunks/"))!;
    const v = (await rawGet(chunk))!.value;
    await rawPut(consul.addr, chunk, v.replace('"n1"', '"n2"'));
    const err = await store.load().catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toMatch(/fails its checksum/);
    await fetch(`http://${consul.addr}/v1/kv/${chunk}`, { method: "DELETE" });
    await expect(store.load()).rejects.toThrow(/is missing/);
    await store.close();
  });
});

describe("init --force over a corrupt map in Consul", () => {
  const env = (prefix: string) => ({
    CONSUL_HTTP_ADDR: consul.addr,
    SHARDCTL_CONSUL_PREFIX: prefix,
    SHARDCTL_STORE: "consul",
    HOME: tmpdir(),
  });
  /** Every key under the prefix with its value's bytes (base64, as Consul holds them). */
  async function rawTree(prefix: string): Promise<Record<string, string>> {
    const res = await fetch(`http://${consul.addr}/v1/kv/${prefix}?recurse`);
    if (res.status === 404) return {};
    const list = (await res.json()) as { Key: string; Value: string | null }[];
    return Object.fromEntries(list.map((e) => [e.Key, e.Value ?? ""]));
  }
  async function putBytes(key: string, bytes: Uint8Array): Promise<void> {
    const res = await fetch(`http://${consul.addr}/v1/kv/${key}`, { method: "PUT", body: bytes });
    if (!res.ok) throw new Error(`PUT ${key}: ${res.status}`);
  }
  /** Damages a fresh prefix one way; returns what its keys held. */
  const damages: Record<string, (prefix: string) => Promise<void>> = {
    "bytes that are not UTF-8 as the meta": (p) =>
      putBytes(`${p}map/meta`, new Uint8Array([0, 0xff, 0xfe, 0x80, 0x41])),
    "a meta that is not shardctl's": (p) => rawPut(consul.addr, `${p}map/meta`, '{"hello":"not ours"}'),
    "a stray key without a meta": (p) => rawPut(consul.addr, `${p}map/something`, "x"),
    // it went unnoticed beside a meta: every command read the map as whole
    "a stray key beside a meta": async (p) => {
      const r = await open(p).compareAndSet(0, smallMap());
      if (!r.ok) throw new Error("write failed");
      await rawPut(consul.addr, `${p}map/foo`, "x");
    },
    "a tampered chunk": async (p) => {
      const r = await open(p).compareAndSet(0, smallMap());
      if (!r.ok) throw new Error("write failed");
      const chunk = (await rawKeys(consul.addr, p)).find((k) => k.includes("/chunks/"))!;
      const v = (await rawGet(chunk))!.value;
      await rawPut(consul.addr, chunk, v.replace('"n1"', '"n2"'));
    },
    "a missing chunk": async (p) => {
      const r = await open(p).compareAndSet(0, smallMap());
      if (!r.ok) throw new Error("write failed");
      const chunk = (await rawKeys(consul.addr, p)).find((k) => k.includes("/chunks/"))!;
      await fetch(`http://${consul.addr}/v1/kv/${chunk}`, { method: "DELETE" });
    },
  };

  it("a damaged leadership term is named as the term, not the map (init --force leaves it), and the hint's repair works", async () => {
    const prefix = uniquePrefix("term");
    expect((await open(prefix).compareAndSet(0, smallMap())).ok).toBe(true);
    await rawPut(consul.addr, `${prefix}term`, "garbage{");
    const st = fakeIO();
    expect(await runCli(["status"], st.io, env(prefix))).toBe(1);
    expect(st.err()).toContain(
      `error: the autopilot's leadership term ${prefix}term in Consul at ${consul.addr} is damaged (it is not JSON); nothing was written`,
    );
    expect(st.err()).not.toMatch(/init --force|location map .* is corrupt/);
    // the hint: a term above the map's
    expect(st.err()).toContain(`consul kv put ${prefix}term '{"term": N, "holder": "", "since": 0}'`);
    const meta = JSON.parse((await rawGet(`${prefix}map/meta`))!.value) as { term: number };
    await rawPut(consul.addr, `${prefix}term`, JSON.stringify({ term: meta.term + 1, holder: "", since: 0 }));
    const ok = fakeIO();
    expect(await runCli(["status"], ok.io, env(prefix)), ok.err()).toBe(0);
    expect(ok.out()).toMatch(new RegExp(`term:\\s+${meta.term + 1}`));
  });

  it("a journal record written by someone else that shardctl cannot print (a time past Date's range, no byte count, an unknown phase) is listed as unreadable by status and migrations, not a crash", async () => {
    const prefix = uniquePrefix("foreign-record");
    const map = smallMap();
    expect((await open(prefix).compareAndSet(0, map)).ok).toBe(true);
    const foreign = {
      id: "m1",
      shard: map.shards[0].id,
      source: map.shards[0].node,
      target: map.nodes[1].id,
      phase: "copying",
      startedAt: 1e20,
      fromEpoch: 1,
      phaseAt: {},
    };
    await rawPut(consul.addr, `${prefix}migrations/m1`, JSON.stringify(foreign));
    await rawPut(
      consul.addr,
      `${prefix}migrations/m2`,
      JSON.stringify({ ...foreign, id: "m2", startedAt: 5, phase: "bogus" }),
    );
    const st = fakeIO();
    expect(await runCli(["status"], st.io, env(prefix)), st.err()).toBe(0);
    expect(st.err()).not.toMatch(/internal error|RangeError/);
    expect(st.out()).toMatch(/m1 *│ unreadable/);
    expect(st.out()).toMatch(/m2 *│ unreadable/);
    const js = fakeIO();
    expect(await runCli(["status", "--json"], js.io, env(prefix)), js.err()).toBe(0);
    expect(JSON.parse(js.out()).migrations).toEqual([
      { id: "m1", phase: "unreadable" },
      { id: "m2", phase: "unreadable" },
    ]);
    const ms = fakeIO();
    await runCli(["migrations"], ms.io, env(prefix));
    expect(ms.out() + ms.err()).not.toMatch(/undefined|internal error/);
    expect(ms.out() + ms.err()).toMatch(/m1/);
  });

  for (const [what, damage] of Object.entries(damages)) {
    it(`${what}: init refuses it and changes nothing; init --force keeps a byte-exact copy and replaces it`, async () => {
      const prefix = uniquePrefix("repair");
      await damage(prefix);
      const damaged = await rawTree(prefix);
      const oldMeta = await rawGet(`${prefix}map/meta`);

      const plain = fakeIO();
      expect(await runCli(["init"], plain.io, env(prefix))).not.toBe(0);
      expect(plain.err()).toMatch(/corrupt or not shardctl's/);
      expect(plain.err()).toMatch(/init --force/);
      expect(await rawTree(prefix)).toEqual(damaged);

      const forced = fakeIO();
      expect(await runCli(["init", "--force", "--json"], forced.io, env(prefix)), forced.err()).toBe(0);
      const out = JSON.parse(forced.out());
      expect(out.corruptKeptAs).toMatch(new RegExp(`^${prefix}corrupt/\\d{8}T\\d{9}Z-[a-z0-9]+/$`));
      expect(forced.err()).toContain(`the damaged keys are kept under ${out.corruptKeptAs}`);
      const after = await rawTree(prefix);
      // every damaged key, byte for byte, under the copy's folder; none of them left under map/
      for (const [key, b64] of Object.entries(damaged)) {
        expect(after[out.corruptKeptAs + key.slice(`${prefix}map/`.length)]).toBe(b64);
        if (key !== `${prefix}map/meta`) expect(after[key]).toBeUndefined();
      }
      const fresh = await open(prefix).load({ consistent: true });
      expect(fresh).not.toBeNull();
      expect(fresh!.version).toBe(out.version);
      if (oldMeta) expect(fresh!.version).toBeGreaterThan(oldMeta.index);
      expect(fresh!.map.shards).toHaveLength(out.shards);
      // the map folder holds the new meta and its chunks only
      const mapKeys = Object.keys(after).filter((k) => k.startsWith(`${prefix}map/`));
      expect(mapKeys.filter((k) => !k.startsWith(`${prefix}map/chunks/`))).toEqual([`${prefix}map/meta`]);
      expect(Object.keys(damaged).filter((k) => k.includes("/chunks/") && mapKeys.includes(k))).toEqual([]);
    });
  }

  it("a map that is not corrupt is not replaced; a change during the replacement leaves everything as it was", async () => {
    const intact = uniquePrefix("intact");
    const store = open(intact);
    const w = await store.compareAndSet(0, smallMap());
    if (!w.ok) throw new Error("write failed");
    const before = await rawTree(intact);
    await expect(store.replaceCorruptMap(smallMap(1), Date.now())).rejects.toThrow(/no longer corrupt/);
    expect(await rawTree(intact)).toEqual(before);

    // another writer changes the damaged meta between the copies and the switch
    const racing = uniquePrefix("racing");
    await rawPut(consul.addr, `${racing}map/meta`, "not json");
    class RacingHttp extends ConsulHttp {
      override async txn(...args: Parameters<ConsulHttp["txn"]>) {
        if (args[0].some((op) => op.verb === "cas" && op.key === `${racing}map/meta`))
          await rawPut(consul.addr, `${racing}map/meta`, "still not json");
        return super.txn(...args);
      }
    }
    const raced = new ConsulStore({
      http: new RacingHttp({ addr: consul.addr, prefix: racing }),
      prefix: racing,
    });
    await expect(raced.replaceCorruptMap(smallMap(), Date.now())).rejects.toThrow(
      /changed while it was being replaced/,
    );
    // the other writer's value stands; no copy, no new chunk is left behind
    expect(await rawTree(racing)).toEqual({
      [`${racing}map/meta`]: Buffer.from("still not json").toString("base64"),
    });
    await raced.close();
    await store.close();
  });

  it("a large map (many chunks, more than one transaction) replaces a damaged large one", async () => {
    const prefix = uniquePrefix("repair-large");
    const store = open(prefix);
    const w = await store.compareAndSet(0, largeMap());
    if (!w.ok) throw new Error("write failed");
    const chunks = (await rawKeys(consul.addr, prefix)).filter((k) => k.includes("/chunks/"));
    expect(chunks.length).toBeGreaterThan(4);
    await rawPut(consul.addr, chunks[2], "{}");
    const damaged = await rawTree(prefix);
    await expect(store.load()).rejects.toThrow(/corrupt or not shardctl's/);
    const r = await store.replaceCorruptMap(largeMap(), Date.now());
    expect(r.why).toMatch(/chunk/);
    const after = await rawTree(prefix);
    for (const [key, b64] of Object.entries(damaged))
      expect(after[r.keptAs + key.slice(`${prefix}map/`.length)]).toBe(b64);
    for (const c of chunks) expect(after[c]).toBeUndefined();
    const loaded = await open(prefix).load({ consistent: true });
    expect(loaded!.version).toBe(r.version);
    expect(canonicalMap(loaded!.map)).toEqual(canonicalMap(largeMap()));
    await store.close();
  });
});

describe("a Consul that is down or frozen", () => {
  it("down: a clear error naming the address, within a bounded time", async () => {
    const port = await freePort();
    const store = open("shardctl/", { addr: `127.0.0.1:${port}` });
    const t0 = Date.now();
    const err = await store.load().catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toBe(
      `cannot reach Consul at 127.0.0.1:${port} (connection refused); is its address right (CONSUL_HTTP_ADDR, or consul.addr in the config)?`,
    );
    expect(Date.now() - t0).toBeLessThan(2000);
    await store.close();
  });

  it("frozen (SIGSTOP): reads and writes fail after the timeout, the write's outcome is reported unknown, never half-applied", async () => {
    const prefix = uniquePrefix("frozen");
    const store = open(prefix, { timeoutMs: 1500 });
    const first = await store.compareAndSet(0, smallMap(0));
    if (!first.ok) throw new Error("write failed");
    await consul.pause();
    try {
      const t0 = Date.now();
      await expect(store.load()).rejects.toThrow(/cannot reach Consul at .* \(no answer within 1\.5 s\)/);
      // The transaction was sent before Consul froze: it may commit when Consul resumes.
      await expect(store.compareAndSet(first.version, smallMap(1))).rejects.toThrow(
        /no answer within 1\.5 s\); is its address right \(CONSUL_HTTP_ADDR, or consul\.addr in the config\)\? The write was sent: whether it committed is unknown/,
      );
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      consul.resume();
    }
    const vm = await store.load({ consistent: true });
    // After SIGCONT the map is the old one or the new one, whole and valid (load validates it).
    if (vm!.version === first.version) expect(vm!.map).toEqual(smallMap(0));
    else expect(vm!.map).toEqual(smallMap(1));
    await store.close();
  });

  it("a watch survives a frozen Consul: it reports the error, backs off, and delivers the next change", async () => {
    const prefix = uniquePrefix("watch-frozen");
    const writer = open(prefix);
    const first = await writer.compareAndSet(0, smallMap(0));
    if (!first.ok) throw new Error("write failed");
    const errors: string[] = [];
    const seen: number[] = [];
    const watcher = new ConsulStore({
      http: new ConsulHttp({ addr: consul.addr, prefix, timeoutMs: 800 }),
      prefix,
      watchWaitS: 1,
      onWatchError: (e) => errors.push((e as Error).message),
    });
    const ac = new AbortController();
    const done = watcher.watch((vm) => seen.push(vm.version), ac.signal);
    await until(async () => seen.length === 1, 5000);
    await consul.pause();
    try {
      await until(async () => errors.length > 0, 10_000);
    } finally {
      consul.resume();
    }
    expect(errors[0]).toMatch(/cannot reach Consul at .*no answer within/);
    const second = await writer.compareAndSet(first.version, smallMap(1));
    if (!second.ok) throw new Error("second write failed");
    await until(async () => seen.includes(second.version), 15_000);
    expect(seen).toEqual([first.version, second.version]);
    ac.abort();
    await done;
    await watcher.close();
    await writer.close();
  }, 40_000);

  it("the CLI says what to do and exits 1", async () => {
    const port = await freePort();
    const io = fakeIO();
    const dir = mkdtempSync(join(tmpdir(), "shardctl-cli-"));
    const code = await runCli(["--store", "consul", "status"], io.io, {
      CONSUL_HTTP_ADDR: `127.0.0.1:${port}`,
      SHARDCTL_DATA_DIR: dir,
      HOME: dir,
    });
    rmSync(dir, { recursive: true, force: true });
    expect(code).toBe(1);
    expect(io.err()).toContain(
      `error: cannot reach Consul at 127.0.0.1:${port} (connection refused); is its address right (CONSUL_HTTP_ADDR, or consul.addr in the config)?`,
    );
    expect(io.err()).toContain("hint:");
  });
});

describe("a web server that is not Consul at CONSUL_HTTP_ADDR", () => {
  it("is named as such for status, migrations, shards and init (exit 1), not read as an empty Consul", async () => {
    // what `python3 -m http.server` answers: 404 with an HTML page, no Consul headers
    const server = createServer((_req, res) => {
      res.writeHead(404, { "content-type": "text/html" });
      res.end("<!DOCTYPE HTML><title>Not Found</title>");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), "shardctl-cli-"));
    try {
      for (const cmd of ["status", "migrations", "shards", "init"]) {
        const io = fakeIO();
        const code = await runCli(["--store", "consul", cmd], io.io, {
          CONSUL_HTTP_ADDR: `127.0.0.1:${port}`,
          SHARDCTL_DATA_DIR: dir,
          HOME: dir,
        });
        expect(code, `${cmd}: ${io.err()}`).toBe(1);
        expect(io.err()).toContain(
          `error: the server at 127.0.0.1:${port} answers HTTP, but not as Consul (a KV read came back 404 without Consul's X-Consul-Index header); is its address right (CONSUL_HTTP_ADDR, or consul.addr in the config)?`,
        );
        expect(io.out()).toBe("");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await new Promise((r) => server.close(r));
    }
  });
});

describe("an https:// address for a plain-HTTP Consul", () => {
  it("says the port does not speak TLS and to use http://, in one line, exit 1, for reads and writes", async () => {
    const io = fakeIO();
    const dir = mkdtempSync(join(tmpdir(), "shardctl-cli-"));
    const env = { CONSUL_HTTP_ADDR: `https://${consul.addr}`, SHARDCTL_DATA_DIR: dir, HOME: dir };
    const code = await runCli(["--store", "consul", "status"], io.io, env);
    const init = fakeIO();
    const initCode = await runCli(["--store", "consul", "init"], init.io, env);
    rmSync(dir, { recursive: true, force: true });
    for (const [c, text] of [
      [code, io.err()],
      [initCode, init.err()],
    ] as const) {
      expect(c).toBe(1);
      expect(text).toContain(
        `error: cannot reach Consul at https://${consul.addr} (it does not speak TLS there: an https:// address for a plain-HTTP Consul)`,
      );
      expect(text).toContain("hint: use http:// in CONSUL_HTTP_ADDR");
      expect(text).not.toMatch(/whether it committed is unknown|SSL routines/);
      expect(text.trim().split("\n")).toHaveLength(2);
    }
  });
});

describe("status and nodes against Consul", () => {
  let health: Server;
  let healthPort: number;
  let healthy = true;
  beforeAll(async () => {
    healthPort = await freePort();
    health = createServer((req, res) => {
      res.statusCode = req.url === "/health" && healthy ? 200 : 503;
      res.end(healthy ? "ok" : "down");
    });
    await new Promise<void>((r) => health.listen(healthPort, "127.0.0.1", r));
  });
  afterAll(async () => {
    await new Promise((r) => health.close(r));
  });

  it("status shows the map version and shard count; nodes shows registered agents with their health", async () => {
    const prefix = uniquePrefix("cli");
    const store = open(prefix);
    const map = smallMap();
    map.nodes[0].address = `127.0.0.1:${healthPort}`;
    const w = await store.compareAndSet(0, map);
    if (!w.ok) throw new Error("write failed");
    const http = new ConsulHttp({ addr: consul.addr, prefix });
    await registerAgentService(http, map.nodes[0], { interval: "1s", timeout: "1s" });
    await registerAgentService(
      http,
      { id: "extra-1", address: "127.0.0.1:1", zone: "c" },
      { interval: "1s", timeout: "1s" },
    );
    const env = {
      CONSUL_HTTP_ADDR: consul.addr,
      SHARDCTL_CONSUL_PREFIX: prefix,
      SHARDCTL_STORE: "consul",
      HOME: tmpdir(),
    };
    const st = fakeIO();
    expect(await runCli(["status", "--json"], st.io, env)).toBe(0);
    const report = JSON.parse(st.out());
    expect(report).toMatchObject({
      store: "consul",
      leader: null,
      term: 0,
      map: { version: w.version, shards: 6 },
    });
    expect(report.migrations).toEqual([]);
    // Open migration journal records (as the coordinator writes them) show up, finished ones do
    // not, unreadable ones as such
    const [sh1, sh2] = [map.shards[1], map.shards[2]];
    const record = (id: string, shard: typeof sh1, now: number, phase: MigrationPhase): MigrationRecord => ({
      ...newJournal({
        id,
        shard,
        target: map.nodes[1].id === shard.node ? map.nodes[2].id : map.nodes[1].id,
        planVersion: w.version,
        term: 0,
        now,
      }),
      phase,
      entriesCopied: 0,
      rounds: 0,
    });
    const open1 = record("m-1", sh1, 1_700_000_000_000, "copying");
    expect((await store.putMigration({ record: open1, expectRev: 0 })).ok).toBe(true);
    const finished = record("m-0", sh2, 1_699_999_000_000, "done");
    expect((await store.putMigration({ record: finished, expectRev: 0 })).ok).toBe(true);
    await rawPut(consul.addr, `${prefix}migrations/m-2`, "{garbage");
    const st2 = fakeIO();
    expect(await runCli(["status", "--json"], st2.io, env)).toBe(0);
    expect(JSON.parse(st2.out()).migrations).toEqual([
      {
        id: "m-1",
        phase: "copying",
        shard: sh1.id,
        source: sh1.node,
        target: open1.target,
        startedAt: 1_700_000_000_000,
      },
      { id: "m-2", phase: "unreadable" },
    ]);
    const st3 = fakeIO();
    expect(await runCli(["status"], st3.io, env)).toBe(0);
    expect(st3.out()).toMatch(
      new RegExp(`m-1.*copying.*${sh1.id}.*${sh1.node}.*${open1.target}.*2023-11-14T22:13:20`),
    );
    expect(st3.out()).not.toMatch(/m-0/);

    const nodesJson = async () => {
      const io = fakeIO();
      expect(await runCli(["nodes", "--json"], io.io, env)).toBe(0);
      return JSON.parse(io.out()) as { id: string; health: string; inMap: boolean; zone: string }[];
    };
    await until(async () => (await nodesJson()).find((n) => n.id === "n1")?.health === "passing", 10_000);
    const rows = await nodesJson();
    expect(rows.find((n) => n.id === "n1")).toMatchObject({ health: "passing", inMap: true, zone: "a" });
    expect(rows.find((n) => n.id === "n2")).toMatchObject({ health: "unregistered", inMap: true });
    // An agent registered but not in the map, whose health port is closed:
    await until(
      async () => (await nodesJson()).find((n) => n.id === "extra-1")?.health === "critical",
      10_000,
    );
    expect(rows.find((n) => n.id === "extra-1")).toMatchObject({ inMap: false, zone: "c" });
    // The agent's /health starts failing → critical.
    healthy = false;
    await until(async () => (await nodesJson()).find((n) => n.id === "n1")?.health === "critical", 10_000);
    const table = fakeIO();
    expect(await runCli(["nodes"], table.io, env)).toBe(0);
    expect(table.out()).toMatch(/n1.*critical/);
    await deregisterAgentService(http, "n1");
    await deregisterAgentService(http, "extra-1");
    expect((await nodesJson()).find((n) => n.id === "n1")).toMatchObject({ health: "unregistered" });
    http.close();
    await store.close();
  }, 40_000);

  it("registering an agent with a hostile address or id is refused before any call", async () => {
    const http = new ConsulHttp({ addr: consul.addr, prefix: "x/" });
    await expect(registerAgentService(http, { id: "ok", address: "no-port", zone: "a" })).rejects.toThrow(
      /not host:port/,
    );
    await expect(registerAgentService(http, { id: "ok", address: "h:99999", zone: "a" })).rejects.toThrow(
      /not host:port/,
    );
    await expect(registerAgentService(http, { id: "../etc", address: "h:1", zone: "a" })).rejects.toThrow(
      /not valid/,
    );
    http.close();
  });
});

async function until(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
