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
 *   further moves) and steps down.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAutopilot, runCycle, type AutopilotDeps } from "../../../src/consul/autopilot.js";
import { ConsulHttp } from "../../../src/consul/http.js";
import { AUTOPILOT_SERVICE, LeaderElection } from "../../../src/consul/leader.js";
import { readLeader } from "../../../src/consul/status.js";
import { ConsulStore, StaleTermError } from "../../../src/consul/store.js";
import { defaultConfig } from "../../../src/config.js";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { agentlessMap } from "../../contract/maps.js";
import { rawPut, startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";

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
