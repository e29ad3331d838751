/**
 * Leadership edge cases on a real Consul, in process (runAutopilot /
 * LeaderElection against a `consul agent -dev`):
 *
 * - the agent dropped the autopilot's liveness check (Consul deregisters a
 *   service after a minute critical: a leader frozen or cut off that long; or
 *   an agent restarted without its registrations): the instance must register
 *   it again and lead again, not fail every campaign forever;
 * - a graceful stop (SIGTERM) in the middle of a cycle keeps the leadership
 *   alive until the cycle's in-flight work is done and the lock is released:
 *   no second leader meanwhile, and the in-flight commit is not refused;
 * - a leader refused for a stale term in its migration stage stops there (no
 *   further moves) and steps down;
 * - a deposed leader (its session destroyed through Consul's HTTP API, a
 *   follower leads with the next term) can no longer write the migration
 *   journal: it can neither start a migration (before touching an agent),
 *   advance its own, nor take an orphaned one over;
 * - an operator's map writes (reshard --apply, a migration's or a split's
 *   commit, deploy's node registration) are written as term 0 after a leader
 *   wrote the map and a later leader took the next term: they used to carry the
 *   map's last term and were refused as a deposed leader's.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostname } from "node:os";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { executeMigration } from "../../../src/cluster/migrate.js";
import { recoverMigrations } from "../../../src/cluster/recover.js";
import {
  runAutopilot,
  runCycle,
  TermStampedStore,
  type AutopilotDeps,
} from "../../../src/consul/autopilot.js";
import { ConsulHttp } from "../../../src/consul/http.js";
import { AUTOPILOT_SERVICE, LeaderElection } from "../../../src/consul/leader.js";
import { readLeader } from "../../../src/consul/status.js";
import { ConsulStore, StaleTermError } from "../../../src/consul/store.js";
import { defaultConfig } from "../../../src/config.js";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { Lsmm } from "../../../src/engine/lsmm.js";
import { commitMap, newJournal, type MigrationRecord } from "../../../src/engine/migration.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { registerInMap } from "../../../src/cluster/deploy.js";
import { systemClock } from "../../../src/engine/ports.js";
import { agentlessMap } from "../../contract/maps.js";
import { rawKeys, rawPut, startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";
import { freePorts } from "../../helpers/ports.js";

let consul: DevConsul;
beforeAll(async () => {
  consul = await startConsulDev();
});
afterAll(async () => {
  await consul?.stop();
});

function openStore(prefix: string): ConsulStore {
  return new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
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

/** The agent's registered autopilot service ids whose holder is `holder`. */
async function autopilotServices(holder: string): Promise<string[]> {
  const res = await fetch(`http://${consul.addr}/v1/agent/services`);
  const all = (await res.json()) as Record<string, { Service: string; Meta?: Record<string, string> }>;
  return Object.entries(all)
    .filter(([, s]) => s.Service === AUTOPILOT_SERVICE && s.Meta?.holder === holder)
    .map(([id]) => id);
}

function deps(store: ConsulStore, signal: AbortSignal, extra: Partial<AutopilotDeps>): AutopilotDeps {
  const config = { ...defaultConfig(), segments: 1024 };
  return {
    config,
    store,
    signal,
    log: () => undefined,
    windows: async () => ({
      windows: new AccessWindows({ segmentCount: 1024, zones: config.zones }),
      unreachable: [],
    }),
    ...extra,
  };
}

describe("leadership", () => {
  it("campaigns again after Consul dropped the instance's liveness check", async () => {
    const prefix = uniquePrefix("recheck");
    const store = openStore(prefix);
    const logs: string[] = [];
    const election = new LeaderElection({
      http: store.http,
      store,
      holder: "rc-one",
      lockDelayS: 0,
      log: (m) => logs.push(m),
    });
    const ac = new AbortController();
    const first = await election.campaign(ac.signal);
    // Consul removes the service (and its check) of an instance that was
    // critical for a minute: as if this leader had been frozen that long.
    const [id] = await autopilotServices("rc-one");
    expect(id).toBeDefined();
    const dereg = await fetch(`http://${consul.addr}/v1/agent/service/deregister/${id}`, { method: "PUT" });
    expect(dereg.ok).toBe(true);
    // Its session was bound to that check: Consul invalidates it, the leader notices.
    await until(async () => first.lost.aborted, 10_000, "the leader notices its session is gone");
    await first.resign();
    // Back: the instance campaigns again (the same election object, as runAutopilot does) and leads.
    const second = await election.campaign(AbortSignal.any([ac.signal, AbortSignal.timeout(20_000)]));
    expect(second.term).toBe(first.term + 1);
    expect((await readLeader(store))?.holder).toBe("rc-one");
    // and it is bound to a live check again: its service is registered
    expect(await autopilotServices("rc-one")).toHaveLength(1);
    await second.resign();
    await election.close();
    await store.close();
  }, 60_000);

  it("a term key set back behind its back: the next leader takes a term above the map's, and its writes go through", async () => {
    const prefix = uniquePrefix("term-rewound");
    const store = openStore(prefix);
    expect((await store.compareAndSet(0, agentlessMap())).ok).toBe(true);
    // leader A writes the map with its term, then the term key is set back (an operator, a restore)
    const election = new LeaderElection({ http: store.http, store, holder: "tr-a", lockDelayS: 0 });
    const ac = new AbortController();
    let a = await election.campaign(ac.signal);
    for (let i = 0; i < 3; i++) {
      await a.resign();
      a = await election.campaign(ac.signal);
    }
    const vm = (await store.load({ consistent: true }))!;
    expect((await new TermStampedStore(store, a.term).compareAndSet(vm.version, vm.map)).ok).toBe(true);
    await a.resign();
    await rawPut(consul.addr, `${prefix}term`, JSON.stringify({ term: 1, holder: "x", since: 0 }));
    const b = await election.campaign(AbortSignal.any([ac.signal, AbortSignal.timeout(20_000)]));
    // (it was 2: every write of that leader was refused as a deposed one's)
    expect(b.term).toBe(a.term + 1);
    const now = (await store.load({ consistent: true }))!;
    expect((await new TermStampedStore(store, b.term).compareAndSet(now.version, now.map)).ok).toBe(true);
    await b.resign();
    await election.close();
    await store.close();
  }, 60_000);

  it("autopilot --once whose write is refused for a stale term fails with the refusal (exit 3), not as a cycle done", async () => {
    const prefix = uniquePrefix("once-stale");
    const store = openStore(prefix);
    expect((await store.compareAndSet(0, agentlessMap())).ok).toBe(true);
    const ac = new AbortController();
    // while its cycle gathers the access windows, a later leader's term is taken and writes the map
    const later = async () => {
      const t = (await store.readTerm())!;
      await rawPut(
        consul.addr,
        `${prefix}term`,
        JSON.stringify({ term: t.term + 1, holder: "later", since: 0 }),
      );
      const vm = (await store.load({ consistent: true }))!;
      const w = await new TermStampedStore(store, t.term + 1).compareAndSet(vm.version, vm.map);
      expect(w.ok).toBe(true);
    };
    const d = deps(store, ac.signal, {
      windows: async () => {
        await later();
        // a hot segment, so that the cycle has a layout change to write
        const windows = new AccessWindows({ segmentCount: 1024, zones: ["a", "b", "c"] });
        for (let i = 0; i < 60; i++) windows.record(7, true, 0, Date.now() - i * 1000, 5000);
        return { windows, unreachable: [] };
      },
    });
    const run = runAutopilot({ once: true, intervalS: 1, id: "once-stale" }, d);
    await expect(run).rejects.toBeInstanceOf(StaleTermError);
    await store.close();
  }, 60_000);

  it("SIGTERM mid-cycle: the leader stays alive until its in-flight work is done, then hands over", async () => {
    const prefix = uniquePrefix("term-mid");
    const store = openStore(prefix);
    expect((await store.compareAndSet(0, agentlessMap())).ok).toBe(true);
    const ac = new AbortController();
    const events: { what: string; at: number }[] = [];
    let commit: unknown;
    let started!: () => void;
    const inStage = new Promise<void>((r) => (started = r));
    let cycles = 0;
    const run = runAutopilot(
      { intervalS: 0.2, once: false, id: "mid-a" },
      deps(store, ac.signal, {
        // An in-flight migration: it has fenced a source and must commit (or
        // roll back) before the process may go, whatever the signal says.
        migrate: async (term, stamped) => {
          if (cycles++ > 0) return { recovered: [], planned: 0, moved: [], failed: [], skipped: [] };
          started();
          await new Promise((r) => setTimeout(r, 7000));
          const vm = (await stamped.load({ consistent: true }))!;
          commit = await stamped
            .compareAndSet(vm.version, { ...vm.map, updatedAt: vm.map.updatedAt + 1 })
            .catch((e: unknown) => e);
          events.push({ what: `commit with term ${term}`, at: Date.now() });
          return { recovered: [], planned: 1, moved: [], failed: [], skipped: [] };
        },
      }),
    ).finally(() => events.push({ what: "a returned", at: Date.now() }));
    await inStage;
    const termA = (await store.readTerm())!.term;
    // SIGTERM now (the CLI aborts this signal), and another instance stands by.
    ac.abort();
    const other = new LeaderElection({ http: store.http, store, holder: "mid-b" });
    const otherAc = new AbortController();
    const b = other.campaign(otherAc.signal).then((l) => {
      events.push({ what: "b leads", at: Date.now() });
      return l;
    });
    await run;
    const lb = await b;
    // The in-flight commit went through under A's term, A returned, and only then did B lead.
    expect(commit).toMatchObject({ ok: true });
    expect(events.map((e) => e.what)).toEqual([`commit with term ${termA}`, "a returned", "b leads"]);
    expect(lb.term).toBe(termA + 1);
    await lb.resign();
    await other.close();
    await store.close();
  }, 60_000);

  it("a stale-term refusal in the migration stage stops further moves and the cycle steps down", async () => {
    const prefix = uniquePrefix("stale-stage");
    const store = openStore(prefix);
    expect((await store.compareAndSet(0, agentlessMap())).ok).toBe(true);
    const election = new LeaderElection({ http: store.http, store, holder: "st-a", lockDelayS: 0 });
    const lead = await election.campaign(new AbortController().signal);
    const attempts: string[] = [];
    const cycle = runCycle(
      deps(store, new AbortController().signal, {
        // The contract of runMigrationCycle: each move's error is recorded and
        // the next move starts unless the signal says stop.
        migrate: async (term, stamped, signal) => {
          // another leader has taken over (its term bump is all this writer can see)
          await rawPut(
            consul.addr,
            `${prefix}term`,
            JSON.stringify({ term: term + 1, holder: "st-b", since: Date.now() }),
          );
          const failed: { shard: string; target: string; error: string }[] = [];
          for (const shard of ["s1", "s2", "s3"]) {
            if (signal.aborted) break;
            attempts.push(shard);
            const vm = (await stamped.load({ consistent: true }))!;
            await stamped
              .compareAndSet(vm.version, { ...vm.map, updatedAt: vm.map.updatedAt + 1 })
              .catch((e: unknown) => failed.push({ shard, target: "n", error: String(e) }));
          }
          return { recovered: [], planned: 3, moved: [], failed, skipped: [] };
        },
      }),
      lead.term,
      lead.lost,
    );
    await expect(cycle).rejects.toBeInstanceOf(StaleTermError);
    expect(attempts).toEqual(["s1"]);
    await lead.resign();
    await election.close();
    await store.close();
  }, 60_000);
});

describe("a deposed leader and the migration journal", () => {
  it("after its session is destroyed and a follower took the next term, its journal writes are refused", async () => {
    const prefix = uniquePrefix("journal-fence");
    const store = openStore(prefix);
    // Nodes at loopback ports nothing listens on: no agent of anyone's may be reached by a
    // migration this test starts (were the journal write accepted, it would go on to them).
    const ports = await freePorts(3);
    const map = initialLayout(
      1024,
      ports.map((p, i) => ({ id: `n${i + 1}`, address: `127.0.0.1:${p}`, zone: ["a", "b", "c"][i] })),
      { shardsPerNode: 2, now: Date.now() },
    );
    const init = await store.compareAndSet(0, map);
    expect(init.ok).toBe(true);
    const ac = new AbortController();
    const electionA = new LeaderElection({ http: store.http, store, holder: "jf-a", lockDelayS: 0 });
    const a = await electionA.campaign(ac.signal);
    const stampedA = new TermStampedStore(store, a.term);
    const ownerA = { host: hostname(), pid: process.pid, term: a.term };
    const record = (shard: string, id: string): MigrationRecord => ({
      ...newJournal({
        id,
        shard: map.shards.find((s) => s.id === shard)!,
        target: "n2",
        planVersion: init.ok ? init.version : 0,
        term: a.term,
        now: Date.now(),
      }),
      entriesCopied: 0,
      rounds: 0,
      owner: ownerA,
      heartbeatAt: Date.now(),
    });
    // While A leads, its journal writes go through: a migration of shard-1 in flight.
    const inFlight = record("shard-1", "jf-inflight");
    const w1 = await stampedA.putMigration({ record: inFlight, expectRev: 0 });
    expect(w1.ok).toBe(true);
    const rev1 = w1.ok ? w1.rev : 0;
    // And an orphan of a coordinator long gone (its heartbeat is a minute old).
    const orphan = { ...record("shard-2", "jf-orphan"), owner: { host: "gone", pid: 1, term: 0 } };
    orphan.heartbeatAt = orphan.startedAt = Date.now() - 60_000;
    const w2 = await store.putMigration({ record: orphan, expectRev: 0 });
    expect(w2.ok).toBe(true);

    // A's session is destroyed through Consul's HTTP API (as Consul does when A's liveness
    // check fails: a freeze, a partition); B takes the lock and the next term.
    const destroyed = await fetch(`http://${consul.addr}/v1/session/destroy/${a.session}`, { method: "PUT" });
    expect(destroyed.ok).toBe(true);
    const electionB = new LeaderElection({ http: store.http, store, holder: "jf-b", lockDelayS: 0 });
    const b = await electionB.campaign(AbortSignal.any([ac.signal, AbortSignal.timeout(20_000)]));
    expect(b.term).toBe(a.term + 1);
    const journalKeys = async () => (await rawKeys(consul.addr, `${prefix}migrations/`)).sort();
    const before = await journalKeys();

    // A, deposed, whether or not it noticed yet: it cannot advance its migration (a phase step or
    // a heartbeat), so it stops at its next step instead of copying and fencing on for nothing...
    await expect(
      stampedA.putMigration({ record: { ...inFlight, phase: "copying" }, expectRev: rev1 }),
    ).rejects.toThrow(
      new RegExp(
        `refused a migration journal write from leadership term ${a.term}: term ${b.term} has taken over`,
      ),
    );
    expect(stampedA.deposed.aborted).toBe(true);
    expect(stampedA.staleTerm).toBeInstanceOf(StaleTermError);
    // ...it cannot start a new one: refused at the journal, before any agent is asked anything...
    const rpc = new AgentRpc({ token: "unused" });
    const logs: string[] = [];
    const started = executeMigration(
      { shard: "shard-3", target: "n1" },
      {
        store: new TermStampedStore(store, a.term),
        rpc,
        clock: systemClock,
        log: (m) => logs.push(m),
        owner: ownerA,
      },
    );
    await expect(started).rejects.toBeInstanceOf(StaleTermError);
    rpc.close();
    expect(logs).toEqual([]); // it never reached "migration …: shard-3 n2 → n1"
    // ...and its recovery cannot take the orphan over from the new leader.
    const reports = await recoverMigrations({
      store: new TermStampedStore(store, a.term),
      rpc: new AgentRpc({ token: "unused" }),
      clock: systemClock,
      log: () => undefined,
      owner: ownerA,
    }).catch((e: unknown) => e);
    expect(reports).toBeInstanceOf(StaleTermError);

    // Nothing A tried is in the journal: the same keys, the records as they were.
    expect(await journalKeys()).toEqual(before);
    expect(await store.getMigration("jf-inflight")).toMatchObject({
      rev: rev1,
      record: { phase: "journaled" },
    });
    expect((await store.getMigration("jf-orphan"))?.record.owner).toMatchObject({ host: "gone" });
    // The new leader writes the journal as before: it takes the orphan over.
    const stampedB = new TermStampedStore(store, b.term);
    const orphanNow = (await store.getMigration("jf-orphan"))!;
    const claim = await stampedB.putMigration({
      record: { ...orphanNow.record, owner: { host: hostname(), pid: process.pid, term: b.term } },
      expectRev: orphanNow.rev,
    });
    expect(claim.ok).toBe(true);
    // An operator's CLI (no term) is fenced by the record's revision only, as before.
    const cli = await store.putMigration({
      record: { ...inFlight, phase: "aborted", error: "operator" },
      expectRev: rev1,
    });
    expect(cli.ok).toBe(true);

    await b.resign();
    await a.resign();
    await electionA.close();
    await electionB.close();
    await store.close();
  }, 60_000);
  it("an operator's map writes go through after a leader wrote the map and a later leader took the next term", async () => {
    const prefix = uniquePrefix("operator-term");
    const store = openStore(prefix);
    const nodes = ["n1", "n2", "n3"].map((id, i) => ({ id, address: `127.0.0.1:${1 + i}`, zone: "abc"[i] }));
    const init = await store.compareAndSet(0, initialLayout(256, nodes, { shardsPerNode: 1, now: 0 }));
    expect(init.ok).toBe(true);
    // leader A writes the map (its term is on it), then steps down; B takes the next term and writes nothing
    const ac = new AbortController();
    const electionA = new LeaderElection({ http: store.http, store, holder: "op-a", lockDelayS: 0 });
    const a = await electionA.campaign(ac.signal);
    const vm1 = (await store.load({ consistent: true }))!;
    const byA = await new TermStampedStore(store, a.term).compareAndSet(vm1.version, {
      ...vm1.map,
      updatedAt: 1,
    });
    expect(byA.ok).toBe(true);
    expect((await store.load({ consistent: true }))!.map.term).toBe(a.term);
    await a.resign();
    const electionB = new LeaderElection({ http: store.http, store, holder: "op-b", lockDelayS: 0 });
    const b = await electionB.campaign(AbortSignal.any([ac.signal, AbortSignal.timeout(20_000)]));
    expect(b.term).toBeGreaterThan(a.term);

    // reshard --apply: a hot segment split out, written as term 0
    const clock = { t: 10_000_000 };
    const windows = new AccessWindows({ segmentCount: 256, zones: ["a", "b", "c"] });
    const lsmm = new Lsmm({
      store,
      windows,
      segmenter: new Segmenter(256),
      clock: { now: () => clock.t },
      assigner: { splitRate: 10, mergeRate: 1, shardLoadCap: 100, hysteresis: 0.2, minDwellMs: 0 },
      rateWindowSeconds: 60,
    });
    for (let i = 0; i < 60; i++) {
      clock.t += 1000;
      lsmm.updateAccessPattern("hot-key", "write", "b", 30);
      lsmm.updateAccessPattern(`cold-${i}`, "read");
    }
    const resharded = await lsmm.triggerResharding({ apply: true });
    expect(resharded.appliedVersion).toBeDefined();
    let vm = (await store.load({ consistent: true }))!;
    expect(vm.map.term).toBe(0);

    // a migration's commit (the default term of commitMap is the operator's) after the leader writes again
    const byB = await new TermStampedStore(store, b.term).compareAndSet(vm.version, {
      ...vm.map,
      updatedAt: 2,
    });
    expect(byB.ok).toBe(true);
    vm = (await store.load({ consistent: true }))!;
    expect(vm.map.term).toBe(b.term);
    await b.resign();
    const electionC = new LeaderElection({ http: store.http, store, holder: "op-c", lockDelayS: 0 });
    const c = await electionC.campaign(AbortSignal.any([ac.signal, AbortSignal.timeout(20_000)]));
    expect(c.term).toBeGreaterThan(b.term);
    const shard = vm.map.shards[0];
    const journal = newJournal({
      id: "op-move",
      shard,
      target: "n3",
      planVersion: vm.version,
      term: 0,
      now: 3,
    });
    const moved = await store.compareAndSet(vm.version, commitMap(vm.map, journal, 3));
    expect(moved.ok).toBe(true);
    vm = (await store.load({ consistent: true }))!;
    expect(vm.map.shards[0]).toMatchObject({ node: "n3", epoch: shard.epoch + 1 });
    // deploy's registration of a node, as term 0 too
    const registered = await registerInMap(
      store,
      [{ id: "n4", address: "127.0.0.1:4", zone: "a" }],
      256,
      () => 5,
    );
    expect(registered.changed).toEqual(["n4"]);
    expect((await store.load({ consistent: true }))!.map.term).toBe(0);

    await c.resign();
    await electionA.close();
    await electionB.close();
    await electionC.close();
    await store.close();
  }, 60_000);
});
