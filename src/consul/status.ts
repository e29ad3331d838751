/** What `shardctl status` reports from Consul: leader, map, term, migrations in progress. */
import { isTerminal, pendingRecovery } from "../engine/migration.js";
import type { LocationStore } from "../engine/ports.js";
import type { ConsulStore } from "./store.js";

export interface LeaderInfo {
  holder: string;
  session: string;
  /** The Consul node the session belongs to. */
  node?: string;
  since?: number;
}

/** A migration journal record that is not finished (or could not be read), as `status` lists it. */
export interface MigrationEntry {
  id: string;
  /** The record's phase, or "unreadable". */
  phase: string;
  shard?: string;
  source?: string;
  target?: string;
  startedAt?: number;
  /** What recovery must still do (`shardctl migrations --recover`), and why. */
  pending?: { kind: "roll-forward" | "roll-back"; why: string };
}

export interface ConsulStatus {
  leader: LeaderInfo | null;
  term: number;
  termHolder?: string;
}

export async function readLeader(store: ConsulStore): Promise<LeaderInfo | null> {
  const read = await store.http.kvGet(store.keys.leader, { consistent: true });
  const session = read.entry?.Session;
  if (!read.entry || !session) return null;
  let holder = "unknown";
  let since: number | undefined;
  try {
    const v = JSON.parse(read.entry.value) as { holder?: unknown; since?: unknown };
    if (typeof v.holder === "string") holder = v.holder;
    if (typeof v.since === "number") since = v.since;
  } catch {
    // a lock value we did not write: still report the session
  }
  const info = await store.http.sessionInfo(session).catch(() => null);
  return { holder, session, node: info?.Node, since };
}

/**
 * The journal's records still open (not done or aborted), oldest first, and
 * those that do not parse, from any location store (Consul's
 * `<prefix>migrations/`, the embedded store's journal).
 */
export async function readOpenMigrations(store: LocationStore): Promise<MigrationEntry[]> {
  const { records, unreadable } = await store.listMigrations();
  return [
    ...records
      .filter(({ record: r }) => !isTerminal(r.phase))
      .map(({ record: r }) => ({
        id: r.id,
        phase: r.phase,
        shard: r.shard,
        source: r.source,
        target: r.target,
        startedAt: r.startedAt,
        ...(pendingRecovery(r) ? { pending: pendingRecovery(r) } : {}),
      })),
    ...unreadable.map((id) => ({ id, phase: "unreadable" })),
  ];
}

export async function readConsulStatus(store: ConsulStore): Promise<ConsulStatus> {
  const [leader, term] = await Promise.all([readLeader(store), store.readTerm()]);
  return { leader, term: term?.term ?? 0, termHolder: term?.holder };
}
