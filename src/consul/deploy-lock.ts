/**
 * The deploy lock in Consul (the why is in src/cluster/deploy-lock.ts):
 * `<prefix>deploy-lock`, acquired with a session that has a TTL and is
 * renewed while the command runs (keepSessionAlive, as the autopilot's leader
 * lock). The session's behaviour is "delete" and it has no lock-delay: when a
 * killed deployer's session expires — within twice its TTL of its last
 * renewal — Consul deletes the key, and the next deploy takes it at once.
 */
import {
  DEFAULT_DEPLOY_LOCK_TTL_S,
  heldError,
  parseHolder,
  preview,
  type DeployLock,
  type DeployLockHolder,
  type DeployLockOptions,
} from "../cluster/deploy-lock.js";
import { PreconditionError, errorMessage } from "../errors.js";
import type { KvRead } from "./http.js";
import { keepSessionAlive } from "./session.js";
import type { ConsulStore } from "./store.js";

export async function acquireConsulDeployLock(
  store: ConsulStore,
  base: DeployLockHolder,
  opts: DeployLockOptions = {},
): Promise<DeployLock> {
  const { http } = store;
  const key = store.keys.deployLock;
  const ttlS = opts.ttlS ?? DEFAULT_DEPLOY_LOCK_TTL_S;
  const log = opts.log ?? (() => undefined);
  const now = opts.now ?? Date.now;
  const holder: DeployLockHolder = { ...base, sessionTtlS: ttlS };

  /** Throws unless the key is free: absent, or a record no session holds (a leftover). */
  const refuseUnlessFree = (read: KvRead) => {
    const entry = read.entry;
    if (!entry) return;
    const h = parseHolder(entry.value);
    if (!h) {
      throw new PreconditionError(
        `the Consul key ${key} does not hold a shardctl deploy lock record (${preview(entry.value)}); nothing was changed`,
        {
          hint: entry.Session
            ? `Consul session ${entry.Session} holds it, and it is not a shardctl deploy's: find who made it (\`consul kv get -detailed ${key}\`, /v1/session/info/${entry.Session}); once that session is gone, delete the key (\`consul kv delete ${key}\`)`
            : `another program wrote it (does something else use the prefix ${store.keys.prefix}?): if nothing does, delete it (\`consul kv delete ${key}\`) and run this command again`,
        },
      );
    }
    if (!entry.Session) return;
    const theirTtl = h.sessionTtlS ?? DEFAULT_DEPLOY_LOCK_TTL_S;
    throw heldError(
      h,
      `if that process is gone (killed, or its machine down), its lock goes by itself when its Consul session expires, ` +
        `within ${2 * theirTtl} s of its last renewal (session TTL ${theirTtl} s): then run this command again`,
      now(),
    );
  };

  // a held or foreign key is refused before a session is made
  refuseUnlessFree(await http.kvGet(key, { consistent: true }));
  const session = await http.sessionCreate({
    name: `shardctl ${holder.command} ${holder.host}:${holder.pid}`,
    ttlS,
    // the holder is dead or cut off when its session ends: nothing of it to wait for
    lockDelayS: 0,
    behavior: "delete",
  });
  const lost = new AbortController();
  const stopRenewing = keepSessionAlive(http, session, lost, {
    ttlS,
    onLost: (loss) =>
      log(
        loss.reason === "gone"
          ? `the deploy lock is lost: Consul no longer knows its session (it expired)`
          : `the deploy lock may be lost: no renewal of its Consul session for ${loss.forS} s (${errorMessage(loss.error)})`,
      ),
  });
  const endSession = async () => {
    await stopRenewing();
    await http.sessionDestroy(session).catch(() => undefined);
  };
  try {
    const acquired = await http.kvPut(key, JSON.stringify(holder), { acquire: session });
    if (!acquired) {
      // taken between the look and the acquire
      refuseUnlessFree(await http.kvGet(key, { consistent: true }));
      throw new PreconditionError(`Consul refused the deploy lock ${key} though no session holds it`, {
        hint: "a lock-delay after its last holder's session ended: run this command again in a few seconds",
      });
    }
  } catch (err) {
    await endSession();
    throw err;
  }

  let released = false;
  return {
    holder,
    lost: lost.signal,
    async release() {
      if (released) return;
      released = true;
      try {
        await stopRenewing();
        // deleted only while it is still ours; destroying the session would delete it too
        await http.txn([
          { verb: "check-session", key, session },
          { verb: "delete", key },
        ]);
        await http.sessionDestroy(session);
      } catch (err) {
        log(
          `warning: the deploy lock ${key} was not released (${errorMessage(err)}); ` +
            `it goes by itself when its Consul session expires, within ${2 * ttlS} s`,
        );
      }
    },
  };
}
