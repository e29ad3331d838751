/**
 * The migration journal as one coordinator writes it: every change to its
 * record is a compare-and-set on the record's revision in the location store,
 * and a heartbeat keeps the record fresh while the coordinator works.
 *
 * A write that finds another revision means someone else (a recovering
 * coordinator) took the migration over: from then on this coordinator must
 * not touch the agents or the journal again (`TakenOverError`). Writes are
 * serialised, so the heartbeat never races the commit point's transaction.
 */
import { hostname } from "node:os";
import { PreconditionError, UserError } from "../errors.js";
import { HEARTBEAT_MS, isTerminal, type MigrationOwner, type MigrationRecord } from "../engine/migration.js";
import type { CasResult, LocationStore, MigrationPutResult, StoredMigration } from "../engine/ports.js";
import type { LocationMap } from "../engine/location-map.js";
import { failpoint } from "../failpoint.js";
import { processAlive } from "../store/embedded.js";

/** Commit attempts on a map that changed meanwhile (each one: someone else committed between read and write). */
const COMMIT_ROUNDS = 8;

export class TakenOverError extends UserError {
  constructor(id: string, rev: number) {
    super(
      `migration ${id} was taken over by another coordinator (journal revision ${rev}); this one stopped without touching the agents`,
      { hint: "`shardctl migrations` shows how it ended" },
    );
    this.name = "TakenOverError";
  }
}

/**
 * The commit was sent to the store, its answer was lost, and the store cannot
 * be read to learn whether it was applied. The coordinator must not roll back
 * (the store may hold the commit, and a roll-back would drop the copy the map
 * then names) nor roll forward: the sources stay fenced, the target's copy
 * stays prepared, and recovery decides from the journal once the store answers.
 */
export class CommitOutcomeUnknownError extends UserError {
  constructor(message: string, hint: string) {
    super(message, { hint });
    this.name = "CommitOutcomeUnknownError";
  }
}

export function thisOwner(term = 0): MigrationOwner {
  return { host: hostname(), pid: process.pid, term };
}

/**
 * Whether the owner of a record is alive, when that can be known from here:
 * a process on this host is checked with signal 0 (a zombie is not alive); elsewhere, undefined (the
 * heartbeat lease decides).
 */
export function ownerAlive(owner: MigrationOwner | undefined): boolean | undefined {
  if (!owner || owner.host !== hostname()) return undefined;
  if (owner.pid === process.pid) return true;
  return processAlive(owner.pid);
}

/**
 * The records in flight (neither done nor aborted), other than `id`, of
 * migrations that involve any of `shards`: a move of one, or a split or merge
 * that names one. A coordinator asks this right after it journaled its own
 * record: of two that start at once, at least the later one sees the other
 * (both, if they journaled before either looked) and stops.
 */
export async function otherMigrationsOf(
  store: LocationStore,
  id: string,
  shards: readonly string[],
): Promise<MigrationRecord[]> {
  const mine = new Set(shards);
  const { records } = await store.listMigrations();
  return records
    .map((r) => r.record)
    .filter((r) => {
      if (r.id === id || isTerminal(r.phase)) return false;
      const involved = r.layout
        ? [...Object.keys(r.layout.epochs), ...Object.keys(r.layout.pieceNodes)]
        : [r.shard];
      return involved.some((s) => mine.has(s));
    });
}

export class JournalWriter {
  private rev: number;
  private chain: Promise<unknown> = Promise.resolve();
  private timer?: ReturnType<typeof setInterval>;
  private lostTo?: number;
  /**
   * Records this writer sent whose answer was lost (a write that may have
   * been carried out): a refused compare-and-set that finds one of them
   * stored found this coordinator's own write, not a takeover.
   */
  private unanswered: MigrationRecord[] = [];
  /** The commit was sent and its answer lost: until resync decides it, a heartbeat writes nothing. */
  private commitInDoubt = false;

  /**
   * `current` gives the record as the coordinator holds it now: every save
   * and heartbeat writes that (so a heartbeat also reports progress).
   */
  constructor(
    private readonly store: LocationStore,
    private readonly current: () => MigrationRecord,
    private readonly now: () => number,
    rev = 0,
  ) {
    this.rev = rev;
  }

  /** The id of the record this writer keeps. */
  get id(): string {
    return this.current().id;
  }

  get revision(): number {
    return this.rev;
  }

  /** True once another coordinator's write was seen. */
  get takenOver(): boolean {
    return this.lostTo !== undefined;
  }

  /** The revision another coordinator's write gave the record (once taken over). */
  get takenOverRevision(): number | undefined {
    return this.lostTo;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private lost(rev: number): never {
    this.lostTo = rev;
    this.stopHeartbeat();
    throw new TakenOverError(this.id, rev);
  }

  /** One write of the record at the revision held; a lost answer leaves the record in `unanswered`. */
  private async put(record: MigrationRecord): Promise<MigrationPutResult> {
    try {
      const r = await this.store.putMigration({ record, expectRev: this.rev });
      if (r.ok) {
        this.rev = r.rev;
        this.unanswered = [];
      }
      return r;
    } catch (err) {
      this.unanswered.push(record);
      throw err;
    }
  }

  /**
   * After a refused or unanswered write: re-reads the record. When the store
   * holds one of this writer's own writes whose answer was lost, its revision
   * becomes this writer's (returns the record); otherwise returns what is
   * stored (null when nothing is) without adopting it.
   */
  private async adoptOwn(): Promise<{ own: boolean; stored: StoredMigration | null }> {
    const stored = await this.store.getMigration(this.id);
    if (stored && this.unanswered.some((u) => sameRecord(u, stored.record))) {
      this.rev = stored.rev;
      this.unanswered = [];
      return { own: true, stored };
    }
    return { own: false, stored };
  }

  /** Writes the record as it is now (with a fresh heartbeat). */
  save(): Promise<void> {
    return this.exclusive(async () => {
      if (this.lostTo !== undefined) this.lost(this.lostTo);
      // the commit's answer was lost: resync (queued behind) decides it; a heartbeat written
      // now would be refused by the commit, or overwrite it with an older phase
      if (this.commitInDoubt) return;
      const record = { ...this.current(), heartbeatAt: this.now() };
      let r: MigrationPutResult;
      try {
        r = await this.put(record);
      } catch (err) {
        // unknown outcome: the store, read again, tells whether this write is there
        const seen = await this.adoptOwn().catch(() => undefined);
        if (seen?.own) return;
        throw err;
      }
      if (r.ok) return;
      // refused: the record moved. A write of this coordinator's whose answer was lost, or a takeover
      const seen = await this.adoptOwn();
      if (!seen.own) this.lost(seen.stored?.rev ?? r.rev);
      r = await this.put(record);
      if (!r.ok) this.lost(r.rev);
    });
  }

  /** The map and this record in one store transaction (see commitPoint). */
  private commit(expectedVersion: number, next: LocationMap, record: MigrationRecord): Promise<CasResult> {
    return this.exclusive(async () => {
      if (this.lostTo !== undefined) this.lost(this.lostTo);
      for (let retried = false; ; retried = true) {
        const rec = { ...record, heartbeatAt: this.now() };
        let r: CasResult;
        try {
          r = await this.store.compareAndSet(expectedVersion, next, {
            migration: { record: rec, expectRev: this.rev },
          });
        } catch (err) {
          // the answer is lost: the commit may be in the store (commitPoint resyncs)
          if (!(err instanceof PreconditionError)) {
            this.unanswered.push(rec);
            this.commitInDoubt = true;
          }
          throw err;
        }
        if (r.ok) {
          this.rev = r.migrationRev ?? this.rev;
          this.unanswered = [];
          return r;
        }
        // refused: the map moved, or the record did — by a write of ours whose answer was lost
        // (then the commit is tried once more at its revision), or by another coordinator
        const seen = await this.adoptOwn();
        if (seen.own && !retried) continue;
        if (seen.stored && seen.stored.rev !== this.rev) this.lost(seen.stored.rev);
        return r;
      }
    });
  }

  /**
   * The commit point of a move, split or merge: reads the map consistently,
   * builds the next one from it (`build` throws when the map moved on), and
   * writes it with `record` (phase committed) in one store transaction. An
   * answer lost in transit is decided by re-reading the record: the
   * transaction wrote both or neither. Returns the committed map, or why the
   * commit did not happen (the caller rolls back). Throws TakenOverError, and
   * CommitOutcomeUnknownError when the outcome is unknown and the store cannot
   * be read (the caller must then leave everything as it is: the sources stay
   * fenced; recovery finishes it: `unknownHint` says so).
   */
  async commitPoint(
    build: (map: LocationMap) => LocationMap,
    record: MigrationRecord,
    unknownHint: string,
  ): Promise<{ ok: true; map: LocationMap } | { ok: false; why: string }> {
    // A map that changed between the read and the write (another coordinator committed a move of
    // another shard) is read again and the next map built again: `build` refuses if what this
    // change stands on moved; a few rounds, as every round means someone else committed.
    for (let round = 1; ; round++) {
      const r = await this.commitOnce(build, record, unknownHint);
      if (r.ok || !r.changed || round === COMMIT_ROUNDS) return r.ok ? r : { ok: false, why: r.why };
    }
  }

  private async commitOnce(
    build: (map: LocationMap) => LocationMap,
    record: MigrationRecord,
    unknownHint: string,
  ): Promise<{ ok: true; map: LocationMap } | { ok: false; why: string; changed?: boolean }> {
    const cur = await this.store.load({ consistent: true });
    if (!cur) return { ok: false, why: "the location map disappeared" };
    await failpoint("migrate.commit-read");
    let next: LocationMap;
    try {
      next = build(cur.map);
    } catch (err) {
      return { ok: false, why: (err as Error).message };
    }
    let cas: CasResult;
    try {
      cas = await this.commit(cur.version, next, record);
    } catch (err) {
      if (err instanceof TakenOverError) throw err;
      // A refusal (a stale leadership term, a lock held) is an answer: the store wrote
      // nothing, and a deposed writer may not write the record to settle it either.
      if (err instanceof PreconditionError)
        return { ok: false, why: `the commit was refused: ${(err as Error).message}` };
      const after = await this.resync().catch((e: unknown) => {
        if (e instanceof TakenOverError) throw e;
        return undefined;
      });
      if (after === undefined) {
        this.stopHeartbeat();
        throw new CommitOutcomeUnknownError(
          `migration ${this.id}: the commit was sent but its outcome is unknown (${(err as Error).message}), and the store cannot be read`,
          unknownHint,
        );
      }
      if (after?.phase !== "committed")
        return { ok: false, why: `the commit was refused: ${(err as Error).message}` };
      return { ok: true, map: next };
    }
    if (!cas.ok)
      return {
        ok: false,
        changed: true,
        why: `the location map changed during the migration (version ${cur.version} → ${cas.currentVersion}); the commit was refused`,
      };
    return { ok: true, map: next };
  }

  /**
   * After a commit whose outcome was unknown: decides it for good. A
   * transaction whose answer was lost may still be carried out after the
   * record was read (Consul's servers apply a /v1/txn the client gave up on),
   * so a record that does not show the commit is written once more at the
   * revision read: the transaction, which checks the record's revision,
   * cannot commit after that. A record another coordinator wrote meanwhile is
   * a takeover; one that shows the commit is this commit.
   */
  private async resync(): Promise<MigrationRecord | null> {
    return this.exclusive(async () => {
      for (;;) {
        const cur = await this.store.getMigration(this.id);
        if (!cur) return null;
        if (cur.rev !== this.rev) {
          // the commit (this coordinator's own write, whose answer was lost), an earlier write of
          // its own, or another coordinator's
          if (!this.unanswered.some((u) => sameRecord(u, cur.record))) this.lost(cur.rev);
          this.rev = cur.rev;
          this.unanswered = [];
          if (cur.record.phase === "committed") {
            this.commitInDoubt = false;
            return cur.record;
          }
          continue;
        }
        const w = await this.put({ ...this.current(), heartbeatAt: this.now() });
        if (w.ok) {
          this.commitInDoubt = false;
          return cur.record;
        }
        // the record moved between the read and the write: the commit, or a takeover; read again
      }
    });
  }

  /**
   * Saves the record every `everyMs` while the coordinator works. A heartbeat is not queued while
   * the last one is still waiting or in flight: with the store away, each save waits for its
   * timeouts (a write and a read, 5 s each with Consul), so heartbeats queued every 2 s piled up,
   * and the coordinator's next own write (its abort's) waited a minute behind them.
   */
  startHeartbeat(everyMs = HEARTBEAT_MS): void {
    let pending = false;
    this.timer = setInterval(() => {
      if (pending) return;
      pending = true;
      // a failed heartbeat (the store briefly away) is retried by the next one; a takeover stops them
      this.save()
        .catch(() => undefined)
        .finally(() => (pending = false));
    }, everyMs);
    this.timer.unref();
  }

  stopHeartbeat(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Whether two journal records say the same (field order aside): a stored record that is a write of ours. */
export function sameRecord(a: MigrationRecord, b: MigrationRecord): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === "object" && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([p], [q]) => (p < q ? -1 : 1)))
      : x,
  );
}
