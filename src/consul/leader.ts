/**
 * Leader election for autopilot over a Consul session lock, with a fencing
 * term.
 *
 * - Each instance registers itself as a `shardctl-autopilot` service with a
 *   TTL check (3 s) that it marks passing every second, and holds a session
 *   bound to that check (plus a session TTL of 10 s, renewed every TTL/3, as
 *   a backstop). A killed or frozen instance stops its heartbeat: the check
 *   goes critical within 3 s, Consul invalidates the session at once and
 *   releases the lock. (Without the ACL permission to register the service,
 *   the session TTL alone decides: 10–20 s.) A dead instance's service is
 *   removed by Consul after a minute critical.
 * - The lock is `<prefix>leader` (PUT ?acquire=session). Followers block on
 *   that key (blocking queries, index rules) and try to acquire as soon as it
 *   has no session; Consul's lock-delay keeps a new leader out for 1 s after
 *   an invalidation, so the old one's in-flight requests drain first.
 * - On winning, the leader bumps the term (`<prefix>term`) in one
 *   transaction that also checks it still holds the lock. Every map write it
 *   makes carries that term, and ConsulStore refuses writes from a lower one.
 * - Leadership is lost when the lock key shows another session, when a renew
 *   says the session is gone, or when no renew has succeeded for a TTL (a
 *   partitioned leader steps down on its own; its late writes fail the term
 *   check anyway).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { UserError, errorMessage } from "../errors.js";
import { blockingLoop } from "./blocking.js";
import { AbortedError, type ConsulHttp, type KvRead } from "./http.js";
import type { ConsulKeys } from "./keys.js";
import { keepSessionAlive } from "./session.js";
import type { ConsulStore, TermRecord } from "./store.js";

export interface LeaderElectionOptions {
  http: ConsulHttp;
  store: ConsulStore;
  /** Names this instance in the lock value and the term record (e.g. host:pid). */
  holder: string;
  ttlS?: number;
  lockDelayS?: number;
  log?: (msg: string) => void;
  /** Blocking wait while following, seconds. */
  waitS?: number;
  /** TTL of the process-bound health check, seconds (default 3); its heartbeat runs every second. */
  checkTtlS?: number;
}

export const AUTOPILOT_SERVICE = "shardctl-autopilot";

export interface Leadership {
  term: number;
  session: string;
  /** Aborts when leadership is lost (or resigned). */
  lost: AbortSignal;
  /** Releases the lock and destroys the session (a graceful handover). */
  resign(): Promise<void>;
}

export class LeaderElection {
  private readonly http: ConsulHttp;
  private readonly keys: ConsulKeys;
  private readonly ttlS: number;
  private readonly lockDelayS: number;
  private readonly log: (msg: string) => void;
  private readonly serviceId: string;
  private readonly checkTtlS: number;
  /** The check id sessions are bound to; null when we may not register one (TTL-only). */
  private checkId: string | null | undefined;

  constructor(private readonly opts: LeaderElectionOptions) {
    this.http = opts.http;
    this.keys = opts.store.keys;
    this.ttlS = opts.ttlS ?? 10;
    this.lockDelayS = opts.lockDelayS ?? 1;
    this.checkTtlS = opts.checkTtlS ?? 3;
    this.log = opts.log ?? (() => undefined);
    const safe = opts.holder.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 100);
    this.serviceId = `${AUTOPILOT_SERVICE}-${safe}-${Math.random().toString(36).slice(2, 8)}`;
  }

  /** Removes this instance's service and check (call when it stops campaigning for good). */
  async close(): Promise<void> {
    if (this.checkId) await this.http.serviceDeregister(this.serviceId).catch(() => undefined);
    this.checkId = undefined;
  }

  /**
   * Registers the process-bound TTL check (once, and again when the agent
   * dropped it); falls back to TTL-only sessions without permission.
   */
  private async livenessChecks(): Promise<string[]> {
    for (let attempt = 0; ; attempt++) {
      await this.registerLivenessCheck();
      if (!this.checkId) return [];
      if (await this.http.checkPass(this.checkId)) return [this.checkId];
      // Consul removes the service of an instance critical for a minute (this
      // one was frozen or cut off that long), and an agent restarted without
      // its state forgets it: register it again, or no session could be made.
      if (attempt > 0) {
        throw new UserError(
          `the Consul agent at ${this.http.addr} does not keep the ${AUTOPILOT_SERVICE} check this instance registers`,
          { hint: "check the agent's logs; the autopilot retries" },
        );
      }
      this.log(
        `autopilot: the Consul agent no longer knows this instance's liveness check (critical for a minute, or the agent restarted); registering it again`,
      );
      this.checkId = undefined;
    }
  }

  private async registerLivenessCheck(): Promise<void> {
    if (this.checkId === undefined) {
      try {
        await this.http.serviceRegister({
          ID: this.serviceId,
          Name: AUTOPILOT_SERVICE,
          Address: "",
          Port: 0,
          Meta: { holder: this.opts.holder.slice(0, 512) },
          Check: { TTL: `${this.checkTtlS}s`, Status: "passing", DeregisterCriticalServiceAfter: "1m" },
        });
        this.checkId = `service:${this.serviceId}`;
      } catch (err) {
        if (!(err instanceof UserError) || !/may not write/.test(err.message)) throw err;
        this.log(
          `autopilot: the token may not register the ${AUTOPILOT_SERVICE} service; falling back to the session TTL (a crashed leader is replaced after 10-20 s)`,
        );
        this.checkId = null;
      }
    }
  }

  /** Waits until this instance leads (or the signal aborts: AbortedError). */
  async campaign(signal: AbortSignal): Promise<Leadership> {
    for (;;) {
      if (signal.aborted) throw new AbortedError();
      const won = await this.attempt(signal, true);
      if (won) return won;
    }
  }

  /** One try without waiting: leads now, or returns null (someone else leads). */
  async tryLead(signal: AbortSignal): Promise<Leadership | null> {
    return this.attempt(signal, false);
  }

  private async attempt(signal: AbortSignal, wait: boolean): Promise<Leadership | null> {
    const serviceChecks = await this.livenessChecks();
    const session = await this.http.sessionCreate({
      name: `shardctl-autopilot ${this.opts.holder}`,
      ttlS: this.ttlS,
      lockDelayS: this.lockDelayS,
      behavior: "release",
      serviceChecks,
    });
    const lost = new AbortController();
    const stopRenew = this.renewLoop(session, lost);
    const giveUp = async () => {
      lost.abort();
      await stopRenew();
      await this.http.sessionDestroy(session).catch(() => undefined);
    };
    const onOuterAbort = () => lost.abort();
    signal.addEventListener("abort", onOuterAbort, { once: true });
    try {
      for (;;) {
        if (lost.signal.aborted) {
          await giveUp();
          if (signal.aborted) throw new AbortedError();
          return null; // our session died while waiting: start over with a new one
        }
        const value = JSON.stringify({ holder: this.opts.holder, pid: process.pid, since: Date.now() });
        const acquired = await this.http.kvPut(this.keys.leader, value, { acquire: session });
        if (acquired) {
          const term = await this.bumpTerm(session);
          if (term === null) continue; // lost the lock between acquire and bump
          this.watchLock(session, lost);
          // From here on the outer signal (SIGINT/SIGTERM) no longer ends the
          // leadership: the heartbeat and the renewals go on until resign(),
          // so the leader's in-flight work (a migration's commit or roll-back)
          // ends under its own term and no second leader overlaps it. The
          // caller watches its signal itself and always resigns.
          signal.removeEventListener("abort", onOuterAbort);
          let resigned = false;
          return {
            term,
            session,
            lost: lost.signal,
            resign: async () => {
              if (resigned) return;
              resigned = true;
              lost.abort();
              await stopRenew();
              await this.http.kvPut(this.keys.leader, "", { release: session }).catch(() => undefined);
              await this.http.sessionDestroy(session).catch(() => undefined);
            },
          };
        }
        if (!wait) {
          await giveUp();
          return null;
        }
        await this.waitForVacancy(lost.signal);
      }
    } catch (err) {
      await giveUp();
      throw err;
    } finally {
      signal.removeEventListener("abort", onOuterAbort);
    }
  }

  /** Blocks (blocking queries on the lock key) until the lock has no holder, then waits out the lock-delay. */
  private async waitForVacancy(signal: AbortSignal): Promise<void> {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    let vacant = false;
    let sawHolder = false;
    try {
      await blockingLoop<KvRead>({
        signal: ac.signal,
        now: () => performance.now(),
        sleep: (ms, s) => sleep(ms, undefined, { signal: s }),
        fetch: (index, s) =>
          this.http.kvGet(this.keys.leader, { index, waitS: this.opts.waitS ?? 30, signal: s }),
        onResult: (read) => {
          if (!read.entry?.Session) {
            vacant = true;
            ac.abort();
          } else if (!sawHolder) {
            sawHolder = true;
            this.log(`autopilot: following; the lock is held by ${describeHolder(read.entry.value)}`);
          }
        },
        onError: (err, backoff) =>
          this.log(
            `autopilot: watching the leader lock failed (${errorMessage(err)}); retrying in ${backoff} ms`,
          ),
      });
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    // A vacancy after an invalidation: Consul refuses acquires for lock-delay.
    if (vacant)
      await sleep(sawHolder ? this.lockDelayS * 1000 : 100, undefined, { signal }).catch(() => undefined);
  }

  /**
   * Every second: marks the liveness check passing; every TTL/3: renews the
   * session. Aborts `lost` when the session is gone or no renewal succeeded
   * for a TTL.
   */
  private renewLoop(session: string, lost: AbortController): () => Promise<void> {
    return keepSessionAlive(this.http, session, lost, {
      ttlS: this.ttlS,
      heartbeat: {
        everyMs: (this.checkTtlS * 1000) / 3,
        beat: async () => {
          if (this.checkId) await this.http.checkPass(this.checkId);
        },
      },
      onLost: (loss) =>
        this.log(
          loss.reason === "gone"
            ? "autopilot: Consul no longer knows our session (expired or its check failed); stepping down"
            : `autopilot: no session renewal for ${loss.forS} s (${errorMessage(loss.error)}); stepping down`,
        ),
    });
  }

  /** While leading: aborts `lost` as soon as the lock key names another session (or none). */
  private watchLock(session: string, lost: AbortController): void {
    void blockingLoop<KvRead>({
      signal: lost.signal,
      now: () => performance.now(),
      sleep: (ms, s) => sleep(ms, undefined, { signal: s }),
      fetch: (index, s) =>
        this.http.kvGet(this.keys.leader, { index, waitS: this.opts.waitS ?? 30, signal: s }),
      onResult: (read) => {
        if (read.entry?.Session !== session) {
          this.log("autopilot: the leader lock is no longer ours; stepping down");
          lost.abort();
        }
      },
      onError: () => undefined, // the renew loop decides when silence means loss
    });
  }

  /**
   * The next term, in one transaction that also checks we still hold the lock; null if we do not.
   * Above both the term key and the term that last wrote the map: a term key set back or deleted
   * behind our back would otherwise hand out terms again that the map has seen, and every write of
   * this leader would be refused as stale.
   */
  private async bumpTerm(session: string): Promise<number | null> {
    // (a map that cannot be read leaves the term key alone to decide; the cycle will report it)
    const mapTerm = (await this.opts.store.load({ consistent: true }).catch(() => null))?.map.term ?? 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.opts.store.readTerm();
      const next: TermRecord = {
        term: Math.max(current?.term ?? 0, mapTerm) + 1,
        holder: this.opts.holder,
        since: Date.now(),
      };
      const res = await this.http.txn([
        { verb: "check-session", key: this.keys.leader, session },
        { verb: "cas", key: this.keys.term, value: JSON.stringify(next), index: current?.modifyIndex ?? 0 },
      ]);
      if (res.ok) return next.term;
      if (res.errors.some((e) => e.opIndex === 0)) return null;
    }
    throw new Error("could not bump the leadership term after 5 attempts while holding the lock");
  }
}

export function describeHolder(value: string): string {
  try {
    const v = JSON.parse(value) as { holder?: string; pid?: number };
    return v.holder ? `${v.holder}` : "an unknown holder";
  } catch {
    return "an unknown holder";
  }
}
