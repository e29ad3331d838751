/**
 * The ports the engine is given: it never reaches Consul, files or agents by
 * itself. Implementations live at the edges (src/store, src/consul, src/cluster).
 */
import type { LocationMap, VersionedMap } from "./location-map.js";
import type { MigrationRecord } from "./migration.js";

export interface Clock {
  /** Milliseconds since the Unix epoch (virtual in the simulator and in tests). */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export type CasResult =
  | {
      ok: true;
      version: number;
      /** the journal record's new revision, when one was written */ migrationRev?: number;
    }
  | { ok: false; currentVersion: number };

/** A journal record with its store revision (Consul ModifyIndex; a counter in the embedded store). */
export interface StoredMigration {
  record: MigrationRecord;
  rev: number;
}

/** A journal write: only if the stored record still has `expectRev` (0: it must not exist yet). */
export interface MigrationWrite {
  record: MigrationRecord;
  expectRev: number;
  /**
   * The writer's leadership term (an autopilot leader's; absent or 0 for a
   * CLI). A store that elects leaders refuses the write unless it is the
   * current term, as it does a map write stamped with a term, so a deposed
   * leader cannot start, advance or take over a migration.
   */
  term?: number;
}

export type MigrationPutResult = { ok: true; rev: number } | { ok: false; rev: number };

export interface LoadOptions {
  /** Read through the store's leader (Consul `?consistent`): required before any decision that moves data. */
  consistent?: boolean;
}

/**
 * Where the location map lives. Implementations: the embedded file store and
 * Consul KV. Every write is a compare-and-set against the version read; a lost
 * race is reported, never overwritten.
 */
export interface LocationStore {
  readonly kind: "embedded" | "consul";
  /** The current map, or null when the store holds none yet. */
  load(opts?: LoadOptions): Promise<VersionedMap | null>;
  /** Writes `next` only if the stored version is still `expectedVersion` (0: nothing stored yet). */
  compareAndSet(
    expectedVersion: number,
    next: LocationMap,
    opts?: { migration?: MigrationWrite },
  ): Promise<CasResult>;
  /**
   * The migration journal (issue 8). A compareAndSet given `migration` writes
   * the map and the record in one atomic step (the commit point), or neither.
   */
  putMigration(write: MigrationWrite): Promise<MigrationPutResult>;
  getMigration(id: string): Promise<StoredMigration | null>;
  /** Every journal record, oldest first; records that do not parse are named in `unreadable`. */
  listMigrations(): Promise<{ records: StoredMigration[]; unreadable: string[] }>;
  /**
   * Calls onChange with each new map (the first call with the current one),
   * until the signal aborts.
   */
  watch(onChange: (map: VersionedMap) => void, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
  /**
   * The autopilot's memory of failed moves (src/cluster/autopilot-memory.ts), kept beside the map
   * so that a restarted autopilot, a run with --once and a new leader go on from it: the text last
   * saved, or undefined when there is none. Optional: a store without it keeps no memory.
   */
  loadAutopilotMemory?(): Promise<string | undefined>;
  saveAutopilotMemory?(text: string): Promise<void>;
  /**
   * `init --force` over a damaged map (load threw a CorruptLocationMapError): keeps a copy of what
   * is stored (`keptAs` names where), then writes `next` in its place, at a version above the
   * damaged one's. Refuses (PreconditionError, nothing changed) when the map is not damaged any
   * more or changed meanwhile. Optional: a store without it cannot be repaired by `init --force`.
   */
  replaceCorruptMap?(
    next: LocationMap,
    now: number,
  ): Promise<{ version: number; keptAs: string; why: string }>;
}
