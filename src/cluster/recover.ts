/**
 * Migration recovery: a coordinator (the autopilot each cycle, `shardctl
 * migrate` before it starts, `shardctl migrations --recover`) that finds a
 * journaled migration whose owner is gone finishes it.
 *
 * - Orphaned: the owner is a process on this host that no longer exists, or
 *   its heartbeat is older than OWNER_LEASE_MS. A live owner's record is left
 *   alone.
 * - Taking over is a compare-and-set on the record's revision: of two
 *   recovering coordinators, one wins; the old owner, should it wake up, finds
 *   the revision moved and stops without touching the agents (JournalWriter).
 * - Then recoveryAction (src/engine/migration.ts) decides from the map, read
 *   consistently: the commit happened → roll forward (activate the target,
 *   release the source); it did not → roll back (unfence the source, drop the
 *   target's copy; both refuse if a newer migration holds the shard).
 */
import {
  endRecord,
  isOrphaned,
  isTerminal,
  recoveryAction,
  type MigrationOwner,
  type MigrationRecord,
  type RecoveryAction,
} from "../engine/migration.js";
import type { Clock, LocationStore } from "../engine/ports.js";
import type { AgentRpc } from "./agent-rpc.js";
import { ownerAlive, thisOwner } from "./journal.js";
import { updateMap } from "./map-update.js";
import { rollBack, rollForward } from "./migrate.js";
import { rollBackLayout, rollForwardLayout } from "./reshape.js";

export interface RecoveryReport {
  id: string;
  shard: string;
  /** What was done: rolled forward or back, left alone (owner alive), or failed (retried next time). */
  outcome: "rolled-forward" | "rolled-back" | "closed" | "in-progress" | "failed" | "lost-race";
  why: string;
}

export interface RecoverDeps {
  store: LocationStore;
  rpc: AgentRpc;
  clock: Clock;
  log: (msg: string) => void;
  owner?: MigrationOwner;
  /** Decides whether a record's owner is alive (default: signal 0 on this host, else the lease). */
  isAlive?: (owner: MigrationOwner | undefined) => boolean | undefined;
}

/** Finishes every orphaned migration in the journal; returns what it did, per record. */
export async function recoverMigrations(deps: RecoverDeps): Promise<RecoveryReport[]> {
  const { store, clock, log } = deps;
  const alive = deps.isAlive ?? ownerAlive;
  const { records } = await store.listMigrations();
  const reports: RecoveryReport[] = [];
  for (const { record, rev } of records) {
    if (isTerminal(record.phase)) continue;
    const now = clock.now();
    if (!isOrphaned(record, now, alive(record.owner))) {
      const o = record.owner;
      reports.push({
        id: record.id,
        shard: record.shard,
        outcome: "in-progress",
        why: `its coordinator ${o ? `${o.host}:${o.pid}` : "(unknown)"} is alive (heartbeat ${Math.round((now - (record.heartbeatAt ?? record.startedAt)) / 1000)} s ago)`,
      });
      continue;
    }
    reports.push(await recoverOne(deps, record, rev));
  }
  for (const r of reports)
    if (r.outcome !== "in-progress") log(`recovery: migration ${r.id} (${r.shard}): ${r.outcome}: ${r.why}`);
  return reports;
}

async function recoverOne(deps: RecoverDeps, record: MigrationRecord, rev: number): Promise<RecoveryReport> {
  const { store, rpc, clock } = deps;
  const me = deps.owner ?? thisOwner();
  const base = { id: record.id, shard: record.shard };
  // take it over first: from here the old owner's writes fail
  let mine: MigrationRecord = {
    ...record,
    owner: me,
    heartbeatAt: clock.now(),
    recoveredBy: `${me.host}:${me.pid}`,
  };
  const claim = await store.putMigration({ record: mine, expectRev: rev });
  if (!claim.ok) return { ...base, outcome: "lost-race", why: "another coordinator took it over first" };
  let myRev = claim.rev;
  const vm = await store.load({ consistent: true });
  if (!vm) return { ...base, outcome: "failed", why: "the location store holds no map" };
  const action: RecoveryAction = recoveryAction(mine, vm.map);
  const source = vm.map.nodes.find((n) => n.id === record.source);
  const target = vm.map.nodes.find((n) => n.id === record.target);
  const finish = async (next: MigrationRecord): Promise<boolean> => {
    const r = await store.putMigration({ record: next, expectRev: myRev });
    if (r.ok) myRev = r.rev;
    return r.ok;
  };
  if (action.kind === "roll-forward" || (action.kind === "nothing" && mine.phase === "committed")) {
    if (action.kind === "roll-forward") {
      const shard = vm.map.shards.find((s) => s.id === record.shard);
      const fwd = mine.layout
        ? await rollForwardLayout(rpc, mine, vm.map)
        : await rollForward(rpc, mine, { source, target }, shard?.migrationTimestamp ?? clock.now());
      if (fwd.problems.length) {
        await finish({ ...mine, rollForwardPending: fwd.problems.join("; ") });
        return { ...base, outcome: "failed", why: `${action.why}; ${fwd.problems.join("; ")}` };
      }
    }
    const now = clock.now();
    // the map shows the commit, whatever phase the record last reached (the commit writes
    // both, but a record from an older coordinator may lag): it is committed
    if (mine.phase !== "committed")
      mine = { ...mine, phase: "committed", phaseAt: { ...mine.phaseAt, committed: now } };
    const done = endRecord(mine, "done", now, { rollForwardPending: undefined });
    if (!(await finish(done)))
      return { ...base, outcome: "lost-race", why: "the record changed while finishing" };
    return {
      ...base,
      outcome: action.kind === "roll-forward" ? "rolled-forward" : "closed",
      why: action.why,
    };
  }
  if (action.kind === "nothing") return { ...base, outcome: "closed", why: action.why };
  // roll back: both steps are safe to repeat and refused by agents a newer migration holds
  const problems = mine.layout
    ? await rollBackLayout(rpc, mine, vm.map)
    : await rollBack(rpc, mine, { source, target, fenced: true, targetCreated: true });
  if (problems.length) {
    // the record stays open with its roll-back pending, as the coordinator's own abort leaves it: status,
    // migrations and the next migrate --apply say so (not "being migrated by another coordinator")
    await finish({ ...mine, rollBackPending: problems.join("; ") });
    return { ...base, outcome: "failed", why: `${action.why}; ${problems.join("; ")}` };
  }
  const now = clock.now();
  const aborted = endRecord(mine, "aborted", now, {
    rollBackPending: undefined,
    error: `${record.error ? `${record.error}; ` : ""}coordinator gone; recovery rolled back: ${action.why}`,
  });
  if (!(await finish(aborted)))
    return { ...base, outcome: "lost-race", why: "the record changed while finishing" };
  return { ...base, outcome: "rolled-back", why: action.why };
}

/**
 * The shards whose owner serves them at a higher epoch than the map's, with no migration open on
 * them: a data request carried an epoch the map never gave (agents keep the highest epoch they
 * have seen, and refuse lower ones), and every client, reading the map, is now refused with
 * 409 stale-epoch. The map's epoch for each is raised to its owner's (one compare-and-set, retried
 * if the map moved). Returns what was raised; agents that do not answer are skipped.
 */
export async function catchUpMapEpochs(
  deps: Pick<RecoverDeps, "store" | "rpc" | "clock" | "log">,
): Promise<{ shard: string; node: string; from: number; to: number }[]> {
  const { store, rpc, clock, log } = deps;
  type Raised = { shard: string; node: string; from: number; to: number };
  const raised = await updateMap<Raised[]>(
    store,
    async (vm) => {
      if (!vm) return { done: [] };
      const open = new Set<string>();
      for (const { record } of (await store.listMigrations()).records) {
        if (isTerminal(record.phase)) continue;
        open.add(record.shard);
        for (const id of Object.keys(record.layout?.epochs ?? {})) open.add(id);
        for (const id of Object.keys(record.layout?.pieceNodes ?? {})) open.add(id);
      }
      const found: Raised[] = [];
      for (const node of vm.map.nodes) {
        const mine = vm.map.shards.filter((s) => s.node === node.id && !open.has(s.id));
        if (mine.length === 0) continue;
        let held: Map<string, { epoch: number; state: string }>;
        try {
          const inv = await rpc.inventory(node.address);
          if (inv.status !== 200) continue;
          held = new Map(inv.body.shards.map((s) => [s.id, s]));
        } catch {
          continue; // not answering: nothing to learn from it now
        }
        for (const s of mine) {
          const h = held.get(s.id);
          if (h && h.state === "owned" && Number.isSafeInteger(h.epoch) && h.epoch > s.epoch)
            found.push({ shard: s.id, node: node.id, from: s.epoch, to: h.epoch });
        }
      }
      if (found.length === 0) return { done: [] };
      const to = new Map(found.map((r) => [r.shard, r.to]));
      const next = {
        ...vm.map,
        term: 0,
        updatedAt: clock.now(),
        shards: vm.map.shards.map((s) => (to.has(s.id) ? { ...s, epoch: to.get(s.id)! } : s)),
      };
      return { write: next, then: found };
    },
    // the map kept changing: the next recovery looks again
    () => [],
  );
  for (const r of raised)
    log(
      `recovery: ${r.shard} is served by ${r.node} at epoch ${r.to}, above the map's ${r.from}, with no migration open ` +
        `(a request carried an epoch the map never gave): the map's epoch raised to ${r.to}`,
    );
  return raised;
}
