/** The keys shardctl uses under its Consul prefix (see docs/CONSUL.md). */
import { UsageError } from "../errors.js";

export interface ConsulKeys {
  prefix: string;
  /** Subtree holding the map: meta + chunks (read in one recursive GET). */
  mapDir: string;
  meta: string;
  chunksDir: string;
  /** Leadership term counter, bumped (CAS) by each new autopilot leader. */
  term: string;
  /** Session lock held by the autopilot leader. */
  leader: string;
  /** Migration journal entries (written by the migration coordinator). */
  migrationsDir: string;
  /** Session lock held by a running deploy, `deploy --rollback` or undeploy (src/cluster/deploy-lock.ts). */
  deployLock: string;
  /** The autopilot's memory of failed moves (src/cluster/autopilot-memory.ts). */
  autopilotMemory: string;
}

/** Normalises and checks a prefix: relative, safe characters, ending in "/". */
export function normalizePrefix(prefix: string): string {
  const p = prefix.trim();
  if (
    !p ||
    p.startsWith("/") ||
    !/^[A-Za-z0-9_.\-/]+$/.test(p) ||
    p.includes("//") ||
    /(^|\/)\.\.?(\/|$)/.test(p)
  ) {
    throw new UsageError(`Consul key prefix ${JSON.stringify(prefix)} is not usable`, {
      hint: "use letters, digits, _ . - and / (e.g. shardctl/ or team-a/shardctl/), without a leading slash",
    });
  }
  return p.endsWith("/") ? p : `${p}/`;
}

export function consulKeys(prefix: string): ConsulKeys {
  const p = normalizePrefix(prefix);
  return {
    prefix: p,
    mapDir: `${p}map/`,
    meta: `${p}map/meta`,
    chunksDir: `${p}map/chunks/`,
    term: `${p}term`,
    leader: `${p}leader`,
    migrationsDir: `${p}migrations/`,
    deployLock: `${p}deploy-lock`,
    autopilotMemory: `${p}autopilot-memory`,
  };
}
