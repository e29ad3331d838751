/** What `shardctl status` reports from Consul: leader, map, term, migrations in progress. */
import type { ConsulStore } from "./store.js";

export interface LeaderInfo {
  holder: string;
  session: string;
  /** The Consul node the session belongs to. */
  node?: string;
  since?: number;
}

export interface MigrationEntry {
  id: string;
  state: string;
  shard?: string;
  from?: string;
  to?: string;
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

/** Entries under `<prefix>migrations/` (written by the migration coordinator); unparseable ones are reported as such. */
export async function readMigrations(store: ConsulStore): Promise<MigrationEntry[]> {
  const tree = await store.http.kvTree(store.keys.migrationsDir, { consistent: true });
  return tree.entries
    .filter((e) => e.Key !== store.keys.migrationsDir)
    .map((e) => {
      const id = e.Key.slice(store.keys.migrationsDir.length);
      try {
        const v = JSON.parse(e.value) as Record<string, unknown>;
        const str = (k: string) => (typeof v[k] === "string" ? (v[k] as string) : undefined);
        return {
          id,
          state: str("state") ?? "unknown",
          shard: str("shard"),
          from: str("from"),
          to: str("to"),
        };
      } catch {
        return { id, state: "unreadable" };
      }
    });
}

export async function readConsulStatus(store: ConsulStore): Promise<ConsulStatus> {
  const [leader, term] = await Promise.all([readLeader(store), store.readTerm()]);
  return { leader, term: term?.term ?? 0, termHolder: term?.holder };
}
