/**
 * The autopilot: the engine as a long-running service. With Consul, several
 * instances may run; one leads (LeaderElection) and runs the cycle, the
 * others wait. Every map write the leader makes carries its term, so a
 * deposed leader's late write is refused by the store.
 *
 * The cycle: collect access windows → reshard (apply) → when a migration
 * stage is given (src/cluster/autopilot-migrate.ts): recover orphaned
 * migrations → predict → plan → migrate the admitted moves. Only the leader
 * runs it, and every map write (commits included) carries its term.
 */
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { Config } from "../config.js";
import type { AccessWindows } from "../engine/access-windows.js";
import { layoutChangeBlocker, servedByAgents } from "../cluster/layout-guard.js";
import type { LayoutDiff } from "../engine/assigner.js";
import type { LocationMap } from "../engine/location-map.js";
import { Lsmm } from "../engine/lsmm.js";
import { describeBackoff, type MoveBackoffEntry } from "../engine/move-backoff.js";
import { systemClock, type CasResult, type LocationStore, type MigrationWrite } from "../engine/ports.js";
import { Segmenter } from "../engine/segmenter.js";
import { PreconditionError, UserError, errorMessage } from "../errors.js";
import { AbortedError } from "./http.js";
import { LeaderElection, type Leadership } from "./leader.js";
import { StaleTermError, type ConsulStore } from "./store.js";

/** Where the access windows come from (the agents, or the data directory's file), and which nodes did not answer. */
export type WindowSource = () => Promise<{ windows: AccessWindows; unreachable: { node: string }[] }>;

export interface AutopilotOptions {
  intervalS: number;
  once: boolean;
  /** This instance's name in the lock and the logs (default host:pid). */
  id?: string;
}

export interface AutopilotDeps {
  config: Config;
  store: LocationStore;
  windows: WindowSource;
  log: (msg: string) => void;
  signal: AbortSignal;
  /**
   * The predict → plan → migrate stage, run after the reshard with the
   * leader's term-stamped store; absent: the autopilot only reshards.
   */
  migrate?: (term: number, store: LocationStore, signal: AbortSignal) => Promise<MigrationStageReport>;
  /**
   * Finishes the migrations a dead coordinator left open (rolls them forward or back), with the
   * leader's term-stamped store, before the reshard stage plans: an orphaned record would refuse
   * the layout changes that touch its shards and put them in back-off for a failure not theirs.
   */
  recover?: (term: number, store: LocationStore) => Promise<void>;
  /**
   * Carries a layout diff out split by split and merge by merge when agents
   * hold the data (src/cluster/reshape.ts), with the leader's term-stamped
   * store; absent, or on a map no agent serves, the diff is one map write.
   */
  executeLayout?: (
    diff: LayoutDiff,
    map: LocationMap,
    store: LocationStore,
    /** Aborted when leadership is lost, the store refused a stale term, or on shutdown. */
    signal: AbortSignal,
    /** The map version the diff was computed against (a changed map refuses the first change). */
    version: number,
  ) => Promise<{ appliedVersion?: number; notApplied?: string; failed?: boolean }>;
  /**
   * The memory of failed moves kept in the store (src/cluster/autopilot-memory.ts): taken up at the
   * start of every cycle and saved at its end, so that a restarted autopilot, a run with --once and
   * a new leader go on from it.
   */
  memory?: {
    recall(store: LocationStore, log: (msg: string) => void): Promise<void>;
    keep(store: LocationStore, log: (msg: string) => void): Promise<void>;
  };
  /** Election timing (tests shorten nothing: Consul's minimum TTL is 10 s). */
  ttlS?: number;
  lockDelayS?: number;
}

export interface CycleReport {
  term: number;
  baseVersion: number;
  appliedVersion?: number;
  ops: number;
  /** Why planned changes were not applied. */
  notApplied?: string;
  /** A layout change was attempted and failed (not merely held back or left for the next cycle). */
  layoutFailed?: boolean;
  migrations?: MigrationStageReport;
}

/** What the migration stage did in one cycle (the fields the log needs). */
export interface MigrationStageReport {
  recovered: { id: string; outcome: string }[];
  planned: number;
  moved: { id: string; shard: string; target: string; writePauseMs?: number }[];
  failed: { shard: string; target: string; error: string }[];
  skipped: string[];
  /** Moves that failed recently and are not planned until their back-off ends. */
  backingOff?: MoveBackoffEntry[];
}

/**
 * Stamps the leader's term on every map and journal record it writes (the
 * store fences on it: a deposed leader can neither commit, nor start, advance
 * or take over a migration). The first refusal for a stale term aborts
 * `deposed` (and is kept in `staleTerm`): callers that record a failed write
 * and carry on (the migration stage does, move by move) stop there instead of
 * starting more futile work on the agents.
 */
export class TermStampedStore implements LocationStore {
  readonly kind;
  private readonly deposedAc = new AbortController();
  /** The refusal that deposed this writer, if any. */
  staleTerm?: StaleTermError;
  constructor(
    private readonly inner: LocationStore,
    private readonly term: number,
  ) {
    this.kind = inner.kind;
  }
  /** Aborts once a write was refused for a stale term. */
  get deposed(): AbortSignal {
    return this.deposedAc.signal;
  }
  load: LocationStore["load"] = (opts) => this.inner.load(opts);
  async compareAndSet(
    expectedVersion: number,
    next: LocationMap,
    opts?: { migration?: MigrationWrite },
  ): Promise<CasResult> {
    return this.fenced(() => this.inner.compareAndSet(expectedVersion, { ...next, term: this.term }, opts));
  }
  putMigration: LocationStore["putMigration"] = (w) =>
    this.fenced(() => this.inner.putMigration({ ...w, term: this.term }));
  private async fenced<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      if (err instanceof StaleTermError && !this.staleTerm) {
        this.staleTerm = err;
        this.deposedAc.abort();
      }
      throw err;
    }
  }
  getMigration: LocationStore["getMigration"] = (id) => this.inner.getMigration(id);
  listMigrations: LocationStore["listMigrations"] = () => this.inner.listMigrations();
  watch: LocationStore["watch"] = (fn, signal) => this.inner.watch(fn, signal);
  close = async () => undefined;
  // the memory is advice, not data: not fenced by the term (a deposed leader's last save is harmless)
  async loadAutopilotMemory(): Promise<string | undefined> {
    return this.inner.loadAutopilotMemory?.();
  }
  async saveAutopilotMemory(text: string): Promise<void> {
    await this.inner.saveAutopilotMemory?.(text);
  }
}

/** One cycle as the leader of `term`: windows → reshard (apply). */
export async function runCycle(
  deps: AutopilotDeps,
  term: number,
  leadership: AbortSignal = deps.signal,
): Promise<CycleReport> {
  await deps.memory?.recall(deps.store, deps.log);
  try {
    return await cycle(deps, term, leadership);
  } finally {
    await deps.memory?.keep(deps.store, deps.log);
  }
}

async function cycle(deps: AutopilotDeps, term: number, leadership: AbortSignal): Promise<CycleReport> {
  const { config } = deps;
  const { windows, unreachable } = await deps.windows();
  const stamped = new TermStampedStore(deps.store, term);
  const stop = AbortSignal.any([leadership, deps.signal, stamped.deposed]);
  await deps.recover?.(term, stamped);
  if (stamped.staleTerm) throw stamped.staleTerm;
  const current = await deps.store.load({ consistent: true });
  const served = !!current && servedByAgents(current.map);
  const lsmm = new Lsmm({
    store: stamped,
    windows,
    segmenter: new Segmenter(config.segments, config.limits.maxKeyBytes),
    clock: systemClock,
    assigner: {
      splitRate: config.reshard.splitRate,
      mergeRate: config.reshard.mergeRate,
      shardLoadCap: config.reshard.shardLoadCap,
      hysteresis: config.reshard.hysteresis,
      minDwellMs: config.reshard.minDwellSeconds * 1000,
    },
    rateWindowSeconds: config.reshard.rateWindowSeconds,
  });
  const result = await lsmm.triggerResharding({
    apply: true,
    canApply: (diff, map) => layoutChangeBlocker(diff, map, unreachable),
    // agents hold the data: each split or merge is a migration between their shards
    execute:
      deps.executeLayout && served
        ? (diff, map, version) => deps.executeLayout!(diff, map, stamped, stop, version)
        : undefined,
  });
  // A layout executor may record a refused commit instead of throwing it.
  if (stamped.staleTerm) throw stamped.staleTerm;
  // (stopping: the reshard stage finished its change in flight; no migration stage is started)
  const migrations = deps.migrate && !stop.aborted ? await deps.migrate(term, stamped, stop) : undefined;
  // Deposed during the migration stage: step down rather than report a cycle.
  if (stamped.staleTerm) throw stamped.staleTerm;
  return {
    term,
    baseVersion: result.baseVersion,
    appliedVersion: result.appliedVersion,
    ops: result.diff.ops.length,
    notApplied: result.notApplied,
    ...(result.failed ? { layoutFailed: true } : {}),
    migrations,
  };
}

/**
 * Runs until `deps.signal` aborts; with `once`, one cycle as the leader (if no other autopilot
 * leads), whose report it returns (undefined when the cycle was not run to its end).
 */
export async function runAutopilot(
  opts: AutopilotOptions,
  deps: AutopilotDeps,
): Promise<CycleReport | undefined> {
  const id = opts.id ?? `${hostname()}:${process.pid}`;
  const { log, signal } = deps;
  if (deps.store.kind !== "consul") {
    log(
      `autopilot ${id}: embedded store, no leader election: run only one autopilot against this data directory`,
    );
    return await leadLoop(opts, deps, { term: 0, lost: signal });
  }
  const store = deps.store as ConsulStore;
  const election = new LeaderElection({
    http: store.http,
    store,
    holder: id,
    log,
    ttlS: deps.ttlS,
    lockDelayS: deps.lockDelayS,
  });
  try {
    return await campaignLoop(opts, deps, election, id);
  } finally {
    await election.close();
  }
}

async function campaignLoop(
  opts: AutopilotOptions,
  deps: AutopilotDeps,
  election: LeaderElection,
  id: string,
): Promise<CycleReport | undefined> {
  const { log, signal } = deps;
  while (!signal.aborted) {
    let leadership: Leadership | null;
    try {
      if (opts.once) {
        leadership = await election.tryLead(signal);
        if (!leadership) {
          throw new PreconditionError("another autopilot leads; --once did nothing", {
            hint: "`shardctl status` shows the leader; run without --once to stand by",
          });
        }
      } else {
        log(`autopilot ${id}: campaigning for leadership`);
        leadership = await election.campaign(signal);
      }
    } catch (err) {
      if (err instanceof AbortedError || signal.aborted) return undefined;
      if (err instanceof PreconditionError) throw err;
      if (opts.once) throw err;
      log(`autopilot ${id}: ${errorMessage(err)}; retrying in 2 s`);
      await sleep(2000, undefined, { signal }).catch(() => undefined);
      continue;
    }
    log(`autopilot ${id}: leading with term ${leadership.term}`);
    let report: CycleReport | undefined;
    try {
      report = await leadLoop(opts, deps, leadership);
    } finally {
      await leadership.resign();
    }
    if (opts.once) return report;
    if (!signal.aborted) log(`autopilot ${id}: lost leadership (term ${leadership.term}); standing by`);
  }
}

async function leadLoop(
  opts: AutopilotOptions,
  deps: AutopilotDeps,
  leadership: { term: number; lost: AbortSignal },
): Promise<CycleReport | undefined> {
  const { log } = deps;
  while (!leadership.lost.aborted && !deps.signal.aborted) {
    let report: CycleReport | undefined;
    try {
      const r = (report = await runCycle(deps, leadership.term, leadership.lost));
      if (r.appliedVersion !== undefined) {
        log(
          r.notApplied
            ? `autopilot: term ${r.term}: planned ${r.ops} layout change(s), applied in part, version ${r.baseVersion} → ${r.appliedVersion}; not all: ${r.notApplied}`
            : `autopilot: term ${r.term}: applied ${r.ops} layout change(s), version ${r.baseVersion} → ${r.appliedVersion}`,
        );
      } else if (r.notApplied) {
        log(`autopilot: term ${r.term}: planned ${r.ops} layout change(s), not applied: ${r.notApplied}`);
      } else {
        log(`autopilot: term ${r.term}: no layout change (version ${r.baseVersion})`);
      }
      const m = r.migrations;
      if (m) {
        const parts = [
          `${m.planned} move(s) planned`,
          `${m.moved.length} done${m.moved.length ? ` (${m.moved.map((x) => `${x.shard}→${x.target} pause ${x.writePauseMs ?? "?"} ms`).join(", ")})` : ""}`,
        ];
        if (m.failed.length) parts.push(`${m.failed.length} failed`);
        if (m.recovered.length) parts.push(`${m.recovered.length} recovered`);
        if (m.skipped.length) parts.push(`skipped: ${m.skipped.join("; ")}`);
        if (m.backingOff?.length) parts.push(`backing off: ${m.backingOff.map(describeBackoff).join("; ")}`);
        log(`autopilot: term ${r.term}: migrations: ${parts.join(", ")}`);
      }
      if (deps.store.kind === "consul") await (deps.store as ConsulStore).sweepOrphanChunks().catch(() => 0);
    } catch (err) {
      if (err instanceof StaleTermError) {
        // --once did nothing: exit 3, as the refusal says; a standing autopilot campaigns again
        if (opts.once) throw err;
        log(`autopilot: ${err.message}`);
        return undefined;
      }
      if (opts.once) throw err;
      if (err instanceof UserError)
        log(`autopilot: cycle failed: ${err.message}${err.hint ? ` (${err.hint})` : ""}`);
      else log(`autopilot: cycle failed (a bug): ${(err as Error)?.stack ?? String(err)}`);
    }
    if (opts.once) return report;
    const both = AbortSignal.any([leadership.lost, deps.signal]);
    await sleep(opts.intervalS * 1000, undefined, { signal: both }).catch(() => undefined);
  }
}
