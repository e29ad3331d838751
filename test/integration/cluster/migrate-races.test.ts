/**
 * Live migration under races the happy path never meets, with real agents
 * (`shardctl up --local`) and the embedded store:
 *
 * - a commit transaction whose answer is lost and that the store applies only
 *   after the coordinator re-read the record (Consul's /v1/txn timing out on
 *   the client while the servers still carry it out): the coordinator must not
 *   roll back a migration that may still commit;
 * - a second coordinator moving the same shard while the first one runs: its
 *   `receive` replaced the first one's copy, and its abort dropped the copy the
 *   first one then committed;
 * - a plan file (re-checksummed by hand) that moves one shard twice: refused
 *   before anything changes, not half applied.
 *
 * After each: one agent holds the shard writable, the one the map names, at
 * the map's epoch, and every acknowledged write reads back.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { executeMigration, listMigrations } from "../../../src/cluster/migrate.js";
import type { LocationMap } from "../../../src/engine/location-map.js";
import { parsePlanFile, serialisePlanFile } from "../../../src/engine/plan-file.js";
import type { CasResult, LocationStore } from "../../../src/engine/ports.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { systemClock } from "../../../src/engine/ports.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { http } from "../agent/harness.js";
import { localClusterSuite, moveStep, readMapFile } from "./local-fixture.js";

const cluster = localClusterSuite("migrate-races");
const { cli } = cluster;

function readMap(): { version: number; map: LocationMap } {
  return readMapFile(cluster.dir);
}

function portOf(node: string): number {
  return Number(
    readMap()
      .map.nodes.find((n) => n.id === node)!
      .address.split(":")[1],
  );
}

function api(port: number, method: string, path: string, opts: Parameters<typeof http>[3] = {}) {
  return http(port, method, path, { token: cluster.token, ...opts });
}

/** A JSON request body, for api(). */
const j = (body: unknown) => ({
  body: JSON.stringify(body),
  headers: { "content-type": "application/json" },
});

/** The target's copy of `shard` received for `migration`. */
async function receive(port: number, shard: string, epoch: number, migration: string): Promise<void> {
  const rcv = await api(port, "POST", `/v1/admin/shards/${shard}/receive`, j({ epoch, migration }));
  expect(rcv.status, rcv.body.toString()).toBe(201);
}

function client(): ShardClient {
  return new ShardClient({
    store: new EmbeddedStore(cluster.dir),
    token: cluster.token,
    deadlineMs: 20_000,
    baseBackoffMs: 5,
  });
}

/** A shard and a node that does not hold it. */
function pickMove(shardIndex: number): { shard: string; source: string; target: string; epoch: number } {
  const m = readMap().map;
  const s = m.shards[shardIndex];
  const target = m.nodes.find((n) => n.id !== s.node)!.id;
  return { shard: s.id, source: s.node, target, epoch: s.epoch };
}

/** Writes `n` keys of `shard` (found by their segment), returns them with their values. */
async function fill(c: ShardClient, shard: string, prefix: string, n: number): Promise<Map<string, string>> {
  const { map } = readMap();
  const seg = new Segmenter(map.segmentCount, 1024);
  const ranges = map.shards.find((s) => s.id === shard)!.ranges;
  const acked = new Map<string, string>();
  for (let i = 0; acked.size < n && i < n * 200; i++) {
    const key = `${prefix}-${i}`;
    const g = seg.segmentOf(key);
    if (!ranges.some(([a, b]) => g >= a && g < b)) continue;
    const value = `${prefix}-value-${i}`;
    await c.put(key, value);
    acked.set(key, value);
  }
  expect(acked.size).toBe(n);
  return acked;
}

/**
 * The end state every race must reach: no open journal record for the shard,
 * exactly one agent holds it writable (owned) — the one the map names, at the
 * map's epoch — and every acknowledged write reads back through the map.
 */
async function expectOneOwnerWithAllWrites(shard: string, acked: Map<string, string>): Promise<void> {
  const { map } = readMap();
  const s = map.shards.find((x) => x.id === shard)!;
  const owners: string[] = [];
  for (const n of map.nodes) {
    const r = await api(portOf(n.id), "GET", `/v1/shards/${shard}`);
    if (r.status === 200 && r.json().state === "owned") owners.push(`${n.id}@${r.json().epoch}`);
  }
  expect(owners).toEqual([`${s.node}@${s.epoch}`]);
  const c = client();
  try {
    for (const [k, v] of acked) expect((await c.get(k))?.value.toString(), k).toBe(v);
  } finally {
    c.close();
  }
  const open = (await listMigrations(new EmbeddedStore(cluster.dir))).records.filter(
    (r) => r.shard === shard && r.phase !== "done" && r.phase !== "aborted",
  );
  expect(open).toEqual([]);
}

describe("migration races", () => {
  // "read": the transaction lands just after the coordinator's first read of its record once the
  // answer was lost (before the fix, the coordinator took that read as "not committed", rolled
  // back — source unfenced, copy dropped — and the map then named the empty target);
  // "write": it lands just after the coordinator's next write of its record (it must be refused)
  it.each([
    ["read", 0],
    ["write", 3],
  ] as const)(
    "a commit whose answer is lost and that the store carries out after the coordinator's next %s is not rolled back under it",
    async (after, shardIndex) => {
      const mv = pickMove(shardIndex);
      const c = client();
      const acked = await fill(c, mv.shard, `late-${after}`, 40);
      c.close();
      const real = new EmbeddedStore(cluster.dir);
      // the commit transaction "times out" on the client; the store carries it out later (the
      // order Consul may give a /v1/txn the client gave up on)
      let late: (() => Promise<CasResult>) | undefined;
      let lateResult: CasResult | undefined;
      const runLate = async () => {
        const run = late;
        late = undefined;
        if (run) lateResult = await run();
      };
      const store: LocationStore = Object.assign(Object.create(real) as EmbeddedStore, {
        compareAndSet: (...args: Parameters<EmbeddedStore["compareAndSet"]>) => {
          if (args[2]?.migration && !lateResult && !late) {
            late = () => real.compareAndSet(...args);
            return Promise.reject(new Error("consul: POST /v1/txn: timed out after 5000 ms"));
          }
          return real.compareAndSet(...args);
        },
        getMigration: async (id: string) => {
          const r = await real.getMigration(id);
          if (after === "read") await runLate();
          return r;
        },
        putMigration: async (w: Parameters<EmbeddedStore["putMigration"]>[0]) => {
          const r = await real.putMigration(w);
          if (after === "write") await runLate();
          return r;
        },
      });
      const rpc = new AgentRpc({ token: cluster.token });
      const outcome = await executeMigration(
        { shard: mv.shard, target: mv.target },
        { store, rpc, clock: systemClock, log: () => {} },
      ).then(
        (r) => `done ${r.phase}`,
        (err: Error) => `failed: ${err.message}`,
      );
      process.stderr.write(
        `late commit after the ${after}: the transaction ${lateResult?.ok ? "applied" : "was refused"}; ${outcome}\n`,
      );
      rpc.close();
      expect(lateResult).toBeDefined();
      // whichever way it went, the shard has one owner with every write
      await expectOneOwnerWithAllWrites(mv.shard, acked);
      if (lateResult?.ok) expect(outcome).toBe("done done");
      else expect(outcome).toMatch(/aborted/);
    },
  );

  it("a second migration of a shard that is being migrated is refused before it touches an agent", async () => {
    const mv = pickMove(1);
    const c = client();
    const acked = await fill(c, mv.shard, "twice", 40);
    c.close();
    const store = new EmbeddedStore(cluster.dir);
    // A: receives on the target, then waits (before its first log read) until B has had its go;
    // A is held again after the target's prepare vote until B has ended
    let releaseA!: () => void;
    const aMayCopy = new Promise<void>((res) => (releaseA = res));
    let releaseCommit!: () => void;
    const aMayCommit = new Promise<void>((res) => (releaseCommit = res));
    let aPrepared!: () => void;
    const aHasPrepared = new Promise<void>((res) => (aPrepared = res));
    class HeldRpc extends AgentRpc {
      override async request(...args: Parameters<AgentRpc["request"]>) {
        if (args[2].includes("/log?from=1&")) await aMayCopy;
        return super.request(...args);
      }
      override async json<T = unknown>(address: string, method: string, path: string, body?: unknown) {
        const r = await super.json<T>(address, method, path, body);
        if (path.endsWith("/prepare")) {
          aPrepared();
          await aMayCommit;
        }
        return r;
      }
    }
    const rpcA = new HeldRpc({ token: cluster.token });
    const a = executeMigration(
      { shard: mv.shard, target: mv.target },
      { store, rpc: rpcA, clock: systemClock, log: () => {} },
    ).then(
      (r) => `done ${r.phase}`,
      (err: Error) => `failed: ${err.message}`,
    );
    // B starts once A's copy exists on the target
    for (let i = 0; i < 400; i++) {
      const r = await api(portOf(mv.target), "GET", `/v1/shards/${mv.shard}`);
      if (r.status === 200) break;
      await new Promise((res) => setTimeout(res, 10));
    }
    // B is held at its first log read until A prepared
    let releaseB!: () => void;
    const bMayCopy = new Promise<void>((res) => (releaseB = res));
    class HeldRpcB extends AgentRpc {
      override async request(...args: Parameters<AgentRpc["request"]>) {
        if (args[2].includes("/log?from=1&")) await bMayCopy;
        return super.request(...args);
      }
    }
    const rpcB = new HeldRpcB({ token: cluster.token });
    const b = executeMigration(
      { shard: mv.shard, target: mv.target },
      { store, rpc: rpcB, clock: systemClock, log: () => {} },
    ).then(
      (r) => `done ${r.phase}`,
      (err: Error) => `failed: ${err.message}`,
    );
    // whether B got as far as its copy or not: let A copy, fence and prepare
    await new Promise((res) => setTimeout(res, 300));
    releaseA();
    await Promise.race([aHasPrepared, a]);
    releaseB();
    const bOutcome = await b;
    releaseCommit();
    const aOutcome = await a;
    process.stderr.write(`two coordinators: A ${aOutcome}; B ${bOutcome}\n`);
    rpcA.close();
    rpcB.close();
    await expectOneOwnerWithAllWrites(mv.shard, acked);
    expect(aOutcome).toBe("done done");
    expect(bOutcome).toMatch(/being migrated/);
  });

  it("a target refuses to prepare a copy that another migration received", async () => {
    const mv = pickMove(5);
    const tp = portOf(mv.target);
    await receive(tp, mv.shard, mv.epoch, "m-second");
    // an empty copy at LSN 0 has the checksum of nothing: only the migration id is wrong
    const p = await api(
      tp,
      "POST",
      `/v1/admin/shards/${mv.shard}/prepare`,
      j({ epoch: mv.epoch, lastLsn: 0, checksum: "00000000-0", migration: "m-first" }),
    );
    expect(p.status, p.body.toString()).toBe(409);
    expect(p.json()).toMatchObject({ error: "another-migration", vote: "abort" });
    expect((await api(tp, "GET", `/v1/shards/${mv.shard}`)).json().state).toBe("receiving");
    // its own migration may prepare it
    const own = await api(
      tp,
      "POST",
      `/v1/admin/shards/${mv.shard}/prepare`,
      j({ epoch: mv.epoch, lastLsn: 0, checksum: "00000000-0", migration: "m-second" }),
    );
    expect(own.status, own.body.toString()).toBe(200);
    const drop = await api(
      tp,
      "DELETE",
      `/v1/admin/shards/${mv.shard}`,
      j({ epoch: mv.epoch, migration: "m-second" }),
    );
    expect(drop.status).toBe(200);
  });

  it("a target refuses the appends and the activation of another migration's copy, and writes nothing", async () => {
    const mv = pickMove(6);
    const c = client();
    const acked = await fill(c, mv.shard, "other-migration", 20);
    c.close();
    const sp = portOf(mv.source);
    const tp = portOf(mv.target);
    await receive(tp, mv.shard, mv.epoch, "m-second");
    const log = await api(sp, "GET", `/v1/shards/${mv.shard}/log?from=1&max=1000`);
    expect(log.status).toBe(200);
    const last = Number(log.headers["x-last-lsn"]);
    expect(last).toBeGreaterThanOrEqual(20);
    const append = (migration?: string) =>
      api(tp, "POST", `/v1/admin/shards/${mv.shard}/append`, {
        body: log.body,
        headers: {
          "content-type": "application/octet-stream",
          "x-shard-epoch": String(mv.epoch),
          ...(migration === undefined ? {} : { "x-migration": migration }),
        },
      });
    const copyLsn = async () => (await api(tp, "GET", `/v1/shards/${mv.shard}`)).json().lsn;
    // the first migration's entries (its copy was replaced by m-second's receive)
    const first = await append("m-first");
    expect(first.status, first.body.toString()).toBe(409);
    expect(first.json()).toMatchObject({ error: "another-migration", migration: "m-second" });
    expect(await copyLsn()).toBe(0);
    // a malformed id is a bad request
    expect((await append("m first")).status).toBe(400);
    expect((await append("x".repeat(129))).status).toBe(400);
    expect(await copyLsn()).toBe(0);
    // its own migration appends them
    const own = await append("m-second");
    expect(own.status, own.body.toString()).toBe(200);
    expect(await copyLsn()).toBe(last);
    const sum = await api(sp, "GET", `/v1/shards/${mv.shard}/checksum?upto=${last}`);
    expect(sum.status).toBe(200);
    const p = await api(
      tp,
      "POST",
      `/v1/admin/shards/${mv.shard}/prepare`,
      j({ epoch: mv.epoch, lastLsn: last, checksum: sum.json().checksum, migration: "m-second" }),
    );
    expect(p.status, p.body.toString()).toBe(200);
    // the first migration may not activate the copy m-second prepared
    const act = await api(
      tp,
      "POST",
      `/v1/admin/shards/${mv.shard}/activate`,
      j({ epoch: mv.epoch, migration: "m-first" }),
    );
    expect(act.status, act.body.toString()).toBe(409);
    expect(act.json()).toMatchObject({ error: "another-migration", migration: "m-second" });
    expect((await api(tp, "GET", `/v1/shards/${mv.shard}`)).json()).toMatchObject({
      state: "prepared",
      epoch: mv.epoch,
    });
    // nothing committed it: m-second rolls back, and the source still serves every write
    const drop = await api(
      tp,
      "DELETE",
      `/v1/admin/shards/${mv.shard}`,
      j({ epoch: mv.epoch, migration: "m-second" }),
    );
    expect(drop.status, drop.body.toString()).toBe(200);
    await expectOneOwnerWithAllWrites(mv.shard, acked);
  });

  it("refuses a plan file that moves one shard twice, before anything changes", async () => {
    const mv = pickMove(4);
    const made = await cli("plan", "--all", "--out", join(cluster.dir, "plan.json"));
    expect(made.code, made.err).toBe(0);
    const plan = parsePlanFile(readFileSync(join(cluster.dir, "plan.json"), "utf8"));
    const move = moveStep(mv.shard, mv.source, mv.target);
    // the checksum is no secret: whoever edits a plan can recompute it
    writeFileSync(
      join(cluster.dir, "twice.json"),
      serialisePlanFile({ ...plan, steps: [move, { ...move }] }),
    );
    const before = readMap();
    const r = await cli("migrate", "--apply", join(cluster.dir, "twice.json"));
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(
      /the plan.s step 2 moves shard-\d+, which step 1 moved already; nothing was applied/,
    );
    expect(readMap()).toEqual(before);
    expect(
      (await listMigrations(new EmbeddedStore(cluster.dir))).records.filter((x) => x.shard === mv.shard),
    ).toEqual([]);
  });
});
