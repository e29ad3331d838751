/**
 * The cluster-wide deploy lock: one `deploy`, `deploy --rollback`,
 * `undeploy` or `node start|stop|restart` at a time per cluster (per location
 * store). Two of them at once would interleave on the nodes — one stopping an
 * agent while the other installs or starts it, each rolling back the other's
 * release — and two deploys could both write the initial layout. The lock is taken before any node is
 * touched, and a second command is refused (exit 3) naming the holder,
 * without waiting: the first may run for minutes, and the user decides.
 *
 * - Embedded store: `<dataDir>/deploy.lock`, created exclusively
 *   (acquireFileLock), holding the holder record. A holder whose pid is gone
 *   on this host is stale and taken over at once.
 * - Consul: `<prefix>deploy-lock`, acquired with a TTL session renewed while
 *   the command runs (src/consul/deploy-lock.ts). The session's behaviour is
 *   "delete": a killed holder's lock disappears when its session expires.
 *
 * The record (the lock file, or the key's value) says who holds it; anything
 * else there is refused with an error saying what to check, never taken over.
 */
import { hostname } from "node:os";
import { join } from "node:path";
import type { LocationStore } from "../engine/ports.js";
import { PreconditionError, UsageError } from "../errors.js";
import { acquireFileLock, ensureDataDir, readLockText, type EmbeddedStore } from "../store/embedded.js";

export type LockingCommand = "deploy" | "rollback" | "undeploy" | "node-start" | "node-stop" | "node-restart";
const COMMANDS: readonly LockingCommand[] = [
  "deploy",
  "rollback",
  "undeploy",
  "node-start",
  "node-stop",
  "node-restart",
];

export const DEPLOY_LOCK_FORMAT = "shardctl-deploy-lock";
export const DEPLOY_LOCK_FILE = "deploy.lock";

/** Default TTL of the Consul session: a killed holder's lock is gone within twice this. */
export const DEFAULT_DEPLOY_LOCK_TTL_S = 15;

/** What the lock holds: who is deploying what, since when. */
export interface DeployLockHolder {
  format: typeof DEPLOY_LOCK_FORMAT;
  host: string;
  pid: number;
  command: LockingCommand;
  nodes: string[];
  /** ISO 8601. */
  startedAt: string;
  /** Consul only: the session's TTL (the lock of a dead holder is gone within twice this). */
  sessionTtlS?: number;
}

export interface DeployLock {
  readonly holder: DeployLockHolder;
  /** Aborts if the lock is lost while held (Consul: the session expired or could not be renewed). */
  readonly lost: AbortSignal;
  /** Releases the lock; idempotent, never throws (a lock it cannot release is reported through `log`). */
  release(): Promise<void>;
}

export interface DeployLockOptions {
  /** Consul: the session TTL in seconds (default DEFAULT_DEPLOY_LOCK_TTL_S). */
  ttlS?: number;
  log?: (message: string) => void;
  now?: () => number;
}

export function holderRecord(
  command: LockingCommand,
  nodes: readonly string[],
  now: () => number = Date.now,
): DeployLockHolder {
  return {
    format: DEPLOY_LOCK_FORMAT,
    host: hostname(),
    pid: process.pid,
    command,
    nodes: [...nodes],
    startedAt: new Date(now()).toISOString(),
  };
}

/**
 * Takes the deploy lock of the cluster `store` holds, for `command` on `nodes`.
 * Throws a PreconditionError (exit 3) when another holder has it, or when the
 * lock holds something that is not a deploy lock record; nothing is changed then.
 */
export async function acquireDeployLock(
  store: LocationStore,
  command: LockingCommand,
  nodes: readonly string[],
  opts: DeployLockOptions = {},
): Promise<DeployLock> {
  const holder = holderRecord(command, nodes, opts.now);
  if (store.kind === "consul") {
    const { acquireConsulDeployLock } = await import("../consul/deploy-lock.js");
    return acquireConsulDeployLock(
      store as unknown as import("../consul/store.js").ConsulStore,
      holder,
      opts,
    );
  }
  return acquireFileDeployLock((store as EmbeddedStore).dataDir, holder);
}

/** SHARDCTL_DEPLOY_LOCK_TTL: the Consul session TTL in seconds (Consul's own minimum applies, 10 s by default). */
export function deployLockTtlS(env: NodeJS.ProcessEnv): number {
  const raw = env.SHARDCTL_DEPLOY_LOCK_TTL;
  if (raw === undefined || raw === "") return DEFAULT_DEPLOY_LOCK_TTL_S;
  const n = Number(raw);
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(n) || n < 1 || n > 86_400)
    throw new UsageError(
      `SHARDCTL_DEPLOY_LOCK_TTL must be a whole number of seconds from 1 to 86400, got ${JSON.stringify(raw)}`,
      {
        hint: `it is the TTL of the Consul session that holds the deploy lock (default ${DEFAULT_DEPLOY_LOCK_TTL_S}); unset it to use the default`,
      },
    );
  return n;
}

// ---------------------------------------------------------------- the record

/** Any C0 control character or DEL: a hostile record must not write escapes to the terminal. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

const plainText = (v: unknown, max: number): v is string =>
  typeof v === "string" && v.length > 0 && v.length <= max && !CONTROL.test(v);

/** The holder record in `text`, or undefined when it is not one (garbage, another program's, truncated). */
export function parseHolder(text: string): DeployLockHolder | undefined {
  let v: Partial<DeployLockHolder>;
  try {
    v = JSON.parse(text) as Partial<DeployLockHolder>;
  } catch {
    return undefined;
  }
  if (!v || typeof v !== "object" || v.format !== DEPLOY_LOCK_FORMAT) return undefined;
  if (!plainText(v.host, 255) || !Number.isSafeInteger(v.pid) || (v.pid as number) <= 0) return undefined;
  if (!COMMANDS.includes(v.command as LockingCommand)) return undefined;
  if (!Array.isArray(v.nodes) || v.nodes.length > 10_000 || !v.nodes.every((n) => plainText(n, 255)))
    return undefined;
  if (!plainText(v.startedAt, 64) || Number.isNaN(Date.parse(v.startedAt))) return undefined;
  if (v.sessionTtlS !== undefined && !(Number.isSafeInteger(v.sessionTtlS) && v.sessionTtlS > 0))
    return undefined;
  return v as DeployLockHolder;
}

function commandLine(c: LockingCommand): string {
  if (c === "rollback") return "deploy --rollback";
  return c.startsWith("node-") ? `node ${c.slice("node-".length)}` : c;
}

function nodeList(nodes: readonly string[]): string {
  if (nodes.length === 0) return "no node";
  const shown = nodes.slice(0, 8).join(", ");
  return nodes.length > 8 ? `${shown}, … (${nodes.length} nodes)` : shown;
}

function age(startedAt: string, now: number): string {
  const diff = Math.round((now - Date.parse(startedAt)) / 1000);
  // a clock ahead of this one (another host's, or a record written by hand): not "0 s ago"
  if (!Number.isFinite(diff)) return "at an unreadable time";
  if (diff < -5) return "in the future by this host's clock";
  const s = Math.max(0, diff);
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

/** "`shardctl deploy` of n1, n2 by pid 4242 on ctl-1, since 2025-… (12 s ago)" */
export function describeHolder(h: DeployLockHolder, now = Date.now()): string {
  return (
    `\`shardctl ${commandLine(h.command)}\` of ${nodeList(h.nodes)} by pid ${h.pid} on ${h.host}, ` +
    `since ${h.startedAt} (${age(h.startedAt, now)})`
  );
}

/** The refusal when another deploy holds the lock; `ifGone` says what to do if that process is gone. */
export function heldError(h: DeployLockHolder, ifGone: string, now = Date.now()): PreconditionError {
  return new PreconditionError(
    `${h.command.startsWith("node-") ? "another command" : "another deploy"} holds the cluster's deploy lock: ${describeHolder(h, now)}; nothing was changed`,
    { hint: `wait for it to end, then run this command again; ${ifGone}` },
  );
}

/** A short, printable sign of what a lock holds that is not a record. */
export function preview(text: string): string {
  if (text.trim() === "") return "it is empty";
  const head = JSON.stringify(text.slice(0, 40));
  return `it holds ${Buffer.byteLength(text)} byte(s) starting ${head}`;
}

// ---------------------------------------------------------------- the embedded store

/** How long a refused deploy re-checks (a holder that died at that moment is taken over). */
const FILE_LOCK_WAIT_MS = 250;

async function acquireFileDeployLock(dataDir: string, holder: DeployLockHolder): Promise<DeployLock> {
  ensureDataDir(dataDir);
  const file = join(dataDir, DEPLOY_LOCK_FILE);
  const content = JSON.stringify(holder) + "\n";
  const release = await acquireFileLock(file, "the deploy lock", FILE_LOCK_WAIT_MS, {
    content,
    // only a holder on this host can be seen dead (a data directory on a shared filesystem)
    holderPid: (text) => {
      const h = parseHolder(text);
      return h && h.host === holder.host ? h.pid : undefined;
    },
    refusal: (text) => {
      const h = text === undefined ? undefined : parseHolder(text);
      if (h)
        return heldError(
          h,
          h.host === holder.host
            ? // a dead holder's lock is taken over at once: pid h.pid runs
              `if pid ${h.pid} is no longer that shardctl (its pid was reused), remove ${file}`
            : `it runs on another host: if no shardctl ${commandLine(h.command)} runs on ${h.host} any more, remove ${file}`,
        );
      return new PreconditionError(
        `the deploy lock ${file} does not hold a shardctl deploy lock record (${text === undefined ? "it cannot be read" : preview(text)}); nothing was changed`,
        {
          hint: `another program wrote it, or it was damaged: if no shardctl deploy, deploy --rollback, undeploy or node start|stop|restart runs on this cluster, remove ${file} and run this command again`,
        },
      );
    },
  });
  let released = false;
  return {
    holder,
    lost: new AbortController().signal, // a lock file is not taken away from a live holder
    async release() {
      if (released) return;
      released = true;
      // only our own record: never a lock someone took over meanwhile (after a false "dead" reading)
      if (readLockText(file) === content) release();
    },
  };
}
