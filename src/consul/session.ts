/**
 * Keeping a Consul session alive while its holder works: the autopilot's
 * leader lock (leader.ts) and deploy's cluster lock (deploy-lock.ts) both
 * hold a key with a TTL session, and both must notice the moment they can no
 * longer count on holding it.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { ConsulHttp } from "./http.js";

/** Why a kept-alive session counts as lost. */
export type SessionLoss =
  | { reason: "gone" }
  /** No renewal succeeded for a TTL: Consul may have invalidated it already. */
  | { reason: "silent"; forS: number; error: unknown };

export interface KeepAliveOptions {
  ttlS: number;
  /** Run every `everyMs` between renewals (the autopilot marks its liveness check passing). */
  heartbeat?: { everyMs: number; beat: () => Promise<unknown> };
  /** Called once, just before `lost` is aborted because of the session itself. */
  onLost?: (loss: SessionLoss) => void;
}

/**
 * Renews `session` every TTL/3 until stopped or `lost` aborts. Aborts `lost`
 * when Consul no longer knows the session (expired, destroyed, or its check
 * failed), or when no renewal succeeded for a whole TTL: a holder cut off
 * from Consul must act as if its lock were gone, because Consul may already
 * have given the key to someone else. Returns the function that stops the
 * renewals (and waits for the one in flight).
 */
export function keepSessionAlive(
  http: ConsulHttp,
  session: string,
  lost: AbortController,
  opts: KeepAliveOptions,
): () => Promise<void> {
  const stop = new AbortController();
  const renewEvery = (opts.ttlS * 1000) / 3;
  const tick = Math.min(1000, renewEvery, opts.heartbeat?.everyMs ?? Infinity);
  let lastOk = performance.now();
  let lastRenew = performance.now();
  const done = (async () => {
    while (!stop.signal.aborted && !lost.signal.aborted) {
      try {
        await sleep(tick, undefined, { signal: stop.signal });
      } catch {
        return;
      }
      if (opts.heartbeat) await opts.heartbeat.beat().catch(() => undefined);
      if (performance.now() - lastRenew < renewEvery) continue;
      lastRenew = performance.now();
      try {
        const alive = await http.sessionRenew(session);
        if (!alive) {
          opts.onLost?.({ reason: "gone" });
          lost.abort();
          return;
        }
        lastOk = performance.now();
      } catch (err) {
        if (performance.now() - lastOk > opts.ttlS * 1000) {
          opts.onLost?.({ reason: "silent", forS: opts.ttlS, error: err });
          lost.abort();
          return;
        }
      }
    }
  })();
  return async () => {
    stop.abort();
    await done;
  };
}
