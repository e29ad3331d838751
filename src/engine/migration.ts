/**
 * The migration state machine (pure): the phases a live shard move goes
 * through, the journal record that makes it recoverable, the map change at
 * the commit point, and what recovery must do from any state (the failure
 * matrix of DESIGN.md).
 *
 *   journaled → copying → fenced → prepared → committed → done
 *        └──────────┴─────────┴─────────┴→ aborted
 *
 * The commit point is the single store write that moves the shard to the
 * target at epoch + 1 and marks the journal committed. Before it, every
 * failure rolls back (unfence the source at its epoch, drop the target's
 * copy); after it, every failure rolls forward.
 */
import { PreconditionError, UsageError } from "../errors.js";
import type { LocationMap, ShardInfo } from "./location-map.js";

export const MIGRATION_PHASES = [
  "journaled",
  "copying",
  "fenced",
  "prepared",
  "committed",
  "done",
  "aborted",
] as const;
export type MigrationPhase = (typeof MIGRATION_PHASES)[number];

const NEXT: Record<MigrationPhase, readonly MigrationPhase[]> = {
  journaled: ["copying", "aborted"],
  copying: ["fenced", "aborted"],
  fenced: ["prepared", "aborted"],
  prepared: ["committed", "aborted"],
  committed: ["done"],
  done: [],
  aborted: [],
};

export interface MigrationJournal {
  id: string;
  shard: string;
  source: string;
  target: string;
  /** The shard's epoch at the source when the migration began. */
  fromEpoch: number;
  /** The map version the plan was made against. */
  planVersion: number;
  phase: MigrationPhase;
  /** Leadership term of the coordinator that wrote the record (0 for a CLI). */
  term: number;
  startedAt: number;
  /** When each phase was entered (ms). */
  phaseAt: Partial<Record<MigrationPhase, number>>;
  bytesCopied: number;
  /** Last LSN of the fenced source, once known. */
  fencedLsn?: number;
  /** Checksum of the copied log reported by the target at prepare. */
  checksum?: string;
  /** Why it was aborted. */
  error?: string;
}

export function newJournal(args: {
  id: string;
  shard: ShardInfo;
  target: string;
  planVersion: number;
  term: number;
  now: number;
}): MigrationJournal {
  if (args.shard.node === args.target) {
    throw new UsageError(`shard ${args.shard.id} is already on ${args.target}`);
  }
  return {
    id: args.id,
    shard: args.shard.id,
    source: args.shard.node,
    target: args.target,
    fromEpoch: args.shard.epoch,
    planVersion: args.planVersion,
    phase: "journaled",
    term: args.term,
    startedAt: args.now,
    phaseAt: { journaled: args.now },
    bytesCopied: 0,
  };
}

export function canAdvance(from: MigrationPhase, to: MigrationPhase): boolean {
  return NEXT[from].includes(to);
}

/** The journal in its next phase; an illegal transition is a bug in the caller and throws. */
export function advance(
  j: MigrationJournal,
  to: MigrationPhase,
  now: number,
  patch: Partial<MigrationJournal> = {},
): MigrationJournal {
  if (!canAdvance(j.phase, to)) {
    throw new PreconditionError(`migration ${j.id}: cannot go from ${j.phase} to ${to}`);
  }
  return { ...j, ...patch, phase: to, phaseAt: { ...j.phaseAt, [to]: now } };
}

export function isTerminal(phase: MigrationPhase): boolean {
  return phase === "done" || phase === "aborted";
}

/**
 * The map after the commit point: the shard on the target at fromEpoch + 1,
 * stamped with the migration time. Refuses if the shard is no longer where
 * and at the epoch the journal says (someone else moved it).
 */
export function commitMap(map: LocationMap, j: MigrationJournal, now: number, term = map.term): LocationMap {
  const shard = map.shards.find((s) => s.id === j.shard);
  if (!shard) throw new PreconditionError(`shard ${j.shard} is no longer in the map`);
  if (shard.node !== j.source || shard.epoch !== j.fromEpoch) {
    throw new PreconditionError(
      `shard ${j.shard} is at ${shard.node} epoch ${shard.epoch}, not ${j.source} epoch ${j.fromEpoch}: the map moved on`,
    );
  }
  if (!map.nodes.some((n) => n.id === j.target)) {
    throw new PreconditionError(`target node ${j.target} is no longer in the map`);
  }
  return {
    ...map,
    term,
    updatedAt: now,
    shards: map.shards.map((s) =>
      s.id === j.shard
        ? { ...s, node: j.target, epoch: j.fromEpoch + 1, migrationTimestamp: now, changedAt: now }
        : s,
    ),
  };
}

export type RecoveryAction =
  | { kind: "nothing"; why: string }
  | { kind: "roll-back"; why: string }
  | { kind: "roll-forward"; why: string };

/**
 * What a coordinator that finds a journal must do, from the journal and the
 * map read consistently (DESIGN.md, migration failure matrix). The map is the
 * truth for whether the commit point was passed: a commit transaction whose
 * outcome was unknown is decided by where the shard is now.
 */
export function recoveryAction(j: MigrationJournal, map: LocationMap): RecoveryAction {
  if (isTerminal(j.phase)) return { kind: "nothing", why: `the migration already ended (${j.phase})` };
  const shard = map.shards.find((s) => s.id === j.shard);
  if (shard && shard.node === j.target && shard.epoch === j.fromEpoch + 1) {
    return {
      kind: "roll-forward",
      why: `the map has ${j.shard} on ${j.target} at epoch ${shard.epoch}: the commit happened`,
    };
  }
  if (j.phase === "committed") {
    // The journal says committed but the map disagrees: the commit wrote both in one transaction,
    // so this only happens if the map moved on since (a later migration). Nothing to redo.
    return { kind: "nothing", why: "the journal is committed and the map has moved on since" };
  }
  if (shard && shard.node === j.source && shard.epoch === j.fromEpoch) {
    return {
      kind: "roll-back",
      why: `the map still has ${j.shard} on ${j.source} at epoch ${j.fromEpoch}: not committed`,
    };
  }
  return {
    kind: "roll-back",
    why: `the shard changed under the migration; abandoning it (source keeps its epoch)`,
  };
}
