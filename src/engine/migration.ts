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
import { applyLayoutDiff, type LayoutOp } from "./assigner.js";
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

/** Who is driving a migration: recovery leaves a record alone while its owner is alive. */
export interface MigrationOwner {
  host: string;
  pid: number;
  /** Leadership term of an autopilot owner (0 for a CLI). */
  term: number;
}

/** The journal plus what the history shows (`shardctl migrations`). */
export interface MigrationRecord extends MigrationJournal {
  /** ms the shard refused writes: fence → target activated. */
  writePauseMs?: number;
  entriesCopied: number;
  /** Bytes the source held when the copy began (an estimate for progress). */
  bytesTotal?: number;
  /** Entries the target was behind the source at the last progress report. */
  lagEntries?: number;
  /** Pre-copy rounds before the fence. */
  rounds: number;
  /** Segments whose access windows were copied to the target. */
  windowsCopied?: number;
  endedAt?: number;
  /** ms spent in each phase (derived from phaseAt). */
  phaseMs?: Partial<Record<MigrationPhase, number>>;
  /** Set when a step after the commit point failed: recovery must roll forward. */
  rollForwardPending?: string;
  /** Set when an abort could not undo everything on the agents: recovery must roll back. */
  rollBackPending?: string;
  owner?: MigrationOwner;
  /** The owner refreshes this while it works; a record not refreshed for OWNER_LEASE_MS is orphaned. */
  heartbeatAt?: number;
  /** Set by the recovery that finished this record (roll-forward or roll-back). */
  recoveredBy?: string;
  /** A split or merge (segments moving between shards) rather than a whole-shard move. */
  layout?: LayoutChange;
}

/**
 * A split or merge carried out by the migration machinery: the layout op,
 * the node each shard it creates is placed on (a split may place its new
 * piece on another node: "split then move" in one step), and the epoch of
 * every shard involved when it began (the commit refuses if any moved).
 */
export interface LayoutChange {
  op: LayoutOp;
  pieceNodes: Record<string, string>;
  epochs: Record<string, number>;
  /** Node of every existing shard involved, when it began. */
  nodes: Record<string, string>;
}

/** The map after a layout change's commit point; refuses if any involved shard moved on. */
export function commitLayout(
  map: LocationMap,
  change: LayoutChange,
  now: number,
  /** The writer's term, as in commitMap. */
  term = 0,
): LocationMap {
  for (const [id, epoch] of Object.entries(change.epochs)) {
    const s = map.shards.find((x) => x.id === id);
    if (!s || s.epoch !== epoch || s.node !== change.nodes[id])
      throw new PreconditionError(
        `shard ${id} is no longer at ${change.nodes[id]} epoch ${epoch}: the map moved on during the ${change.op.kind}`,
      );
  }
  for (const [id, node] of Object.entries(change.pieceNodes)) {
    if (map.shards.some((x) => x.id === id)) throw new PreconditionError(`shard ${id} exists already`);
    if (!map.nodes.some((n) => n.id === node))
      throw new PreconditionError(`node ${node} is no longer in the map`);
  }
  const next = applyLayoutDiff(
    map,
    { ops: [change.op], shardsBefore: 0, shardsAfter: 0, dedicatedAfter: 0, heldByDwell: [] },
    now,
  );
  return {
    ...next,
    term,
    shards: next.shards.map((s) => (change.pieceNodes[s.id] ? { ...s, node: change.pieceNodes[s.id] } : s)),
  };
}

/** Whether the map shows a layout change's commit (its new shards exist, its merged-away ones are gone). */
export function layoutCommitted(map: LocationMap, change: LayoutChange): boolean {
  const has = (id: string) => map.shards.some((s) => s.id === id);
  const op = change.op;
  if (op.kind === "split") return op.pieces.slice(1).every((p) => has(p.id));
  const kept = map.shards.find((s) => s.id === op.shards[0]);
  return (
    op.shards.slice(1).every((id) => !has(id)) && (kept?.epoch ?? 0) > (change.epochs[op.shards[0]] ?? 0)
  );
}

/** A running coordinator refreshes its record at least this often (ms). */
export const HEARTBEAT_MS = 2_000;
/** A record whose heartbeat is older than this belongs to a coordinator that is gone. */
export const OWNER_LEASE_MS = 15_000;

/**
 * Whether a coordinator may take over a non-terminal record: its owner is
 * known dead (`ownerAlive` false) or silent for longer than the lease.
 */
export function isOrphaned(r: MigrationRecord, now: number, ownerAlive: boolean | undefined): boolean {
  if (isTerminal(r.phase)) return false;
  if (ownerAlive === false) return true;
  const beat = r.heartbeatAt ?? r.phaseAt[r.phase] ?? r.startedAt;
  return now - beat > OWNER_LEASE_MS;
}

export function newJournal(args: {
  id: string;
  shard: ShardInfo;
  target: string;
  planVersion: number;
  term: number;
  now: number;
  /** A split's new piece may stay on the split shard's node. */
  allowSameNode?: boolean;
}): MigrationJournal {
  if (args.shard.node === args.target && !args.allowSameNode) {
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
export function advance<T extends MigrationJournal>(
  j: T,
  to: MigrationPhase,
  now: number,
  patch: Partial<T> = {},
): T {
  if (!canAdvance(j.phase, to)) {
    throw new PreconditionError(`migration ${j.id}: cannot go from ${j.phase} to ${to}`);
  }
  return { ...j, ...patch, phase: to, phaseAt: { ...j.phaseAt, [to]: now } };
}

/**
 * The ms from one wall-clock time to a later one; undefined when the later one is earlier (the
 * clock was stepped back in between: the difference says nothing, and a record keeps no negative
 * duration).
 */
export function elapsedMs(from: number, to: number): number | undefined {
  return to >= from ? to - from : undefined;
}

/** A record's write pause in words: "12 ms", or unknown when the clock was stepped back across it. */
export function describePause(writePauseMs: number | undefined): string {
  return writePauseMs === undefined ? "unknown (the clock was stepped back)" : `${writePauseMs} ms`;
}

/** ms spent in each phase, from the times the phases were entered. */
export function phaseDurations(j: MigrationJournal): Partial<Record<MigrationPhase, number>> {
  const entries = Object.entries(j.phaseAt).sort((a, b) => (a[1] ?? 0) - (b[1] ?? 0)) as [
    MigrationPhase,
    number,
  ][];
  const out: Partial<Record<MigrationPhase, number>> = {};
  for (let i = 0; i + 1 < entries.length; i++) out[entries[i][0]] = entries[i + 1][1] - entries[i][1];
  return out;
}

/** The record ended (done or aborted) at `now`, with the time each phase took. */
export function endRecord(
  j: MigrationRecord,
  to: "done" | "aborted",
  now: number,
  patch: Partial<MigrationRecord> = {},
): MigrationRecord {
  const ended = { ...advance(j, to, now, patch), endedAt: now };
  return { ...ended, phaseMs: phaseDurations(ended) };
}

export function isTerminal(phase: MigrationPhase): boolean {
  return phase === "done" || phase === "aborted";
}

/**
 * What recovery must still do for an open record, if anything: a step after the commit point
 * failed (roll forward), or an abort could not undo everything on the agents (roll back; the
 * record stays in the phase it was aborted in, so that recovery finds it).
 */
export function pendingRecovery(
  r: Pick<MigrationRecord, "rollForwardPending" | "rollBackPending">,
): { kind: "roll-forward" | "roll-back"; why: string } | undefined {
  if (r.rollForwardPending) return { kind: "roll-forward", why: r.rollForwardPending };
  if (r.rollBackPending) return { kind: "roll-back", why: r.rollBackPending };
  return undefined;
}

/** The phase as the listings show it: "fenced (roll-back pending)" for a record recovery must finish. */
export function phaseLabel(
  r: Pick<MigrationRecord, "phase" | "rollForwardPending" | "rollBackPending">,
): string {
  const pending = pendingRecovery(r);
  return pending ? `${r.phase} (${pending.kind} pending)` : r.phase;
}

/**
 * How many ended migrations (done or aborted) a store's journal keeps: every
 * record in flight stays, and the newest JOURNAL_HISTORY ended ones. The
 * journal is read whole by every autopilot cycle, every migration's start
 * and every dashboard refresh, so it must not grow with the cluster's age.
 */
export const JOURNAL_HISTORY = 200;

/** The ended records beyond the newest `keep` (by start time): what a store drops. */
export function endedBeyondHistory<T extends { record: MigrationRecord }>(
  records: readonly T[],
  keep = JOURNAL_HISTORY,
): T[] {
  const ended = records.filter((r) => isTerminal(r.record.phase));
  if (ended.length <= keep) return [];
  return ended
    .sort((a, b) => a.record.startedAt - b.record.startedAt || (a.record.id < b.record.id ? -1 : 1))
    .slice(0, ended.length - keep);
}

/**
 * The map after the commit point: the shard on the target at fromEpoch + 1,
 * stamped with the migration time. Refuses if the shard is no longer where
 * and at the epoch the journal says (someone else moved it). `term` is the
 * writer's: 0 for an operator (never the map's last term, which a later
 * leader's term makes stale), the leader's for the autopilot.
 */
export function commitMap(map: LocationMap, j: MigrationJournal, now: number, term = 0): LocationMap {
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
export function recoveryAction(
  j: MigrationJournal & { layout?: LayoutChange },
  map: LocationMap,
): RecoveryAction {
  if (isTerminal(j.phase)) return { kind: "nothing", why: `the migration already ended (${j.phase})` };
  if (j.layout) {
    if (layoutCommitted(map, j.layout))
      return {
        kind: "roll-forward",
        why: `the map shows the ${j.layout.op.kind} of ${j.shard}: the commit happened`,
      };
    if (j.phase === "committed")
      return { kind: "nothing", why: "the journal is committed and the map has moved on since" };
    return {
      kind: "roll-back",
      why: `the map does not show the ${j.layout.op.kind} of ${j.shard}: not committed`,
    };
  }
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

/** A record a store may hold: the fields every reader relies on. */
export function looksLikeRecord(r: unknown): r is MigrationRecord {
  const x = r as Partial<MigrationRecord> | null;
  if (
    !x ||
    typeof x !== "object" ||
    typeof x.id !== "string" ||
    typeof x.shard !== "string" ||
    typeof x.source !== "string" ||
    typeof x.target !== "string" ||
    !(MIGRATION_PHASES as readonly unknown[]).includes(x.phase) ||
    !isTime(x.startedAt) ||
    !isCount(x.fromEpoch) ||
    !x.phaseAt ||
    typeof x.phaseAt !== "object" ||
    // what `migrations` and `status` print of every record: a foreign one without them is not ours
    !isCount(x.bytesCopied) ||
    !isCount(x.entriesCopied) ||
    !isCount(x.rounds)
  )
    return false;
  for (const [phase, at] of Object.entries(x.phaseAt))
    if (!(MIGRATION_PHASES as readonly string[]).includes(phase) || !isTime(at)) return false;
  for (const t of [x.endedAt, x.heartbeatAt]) if (t !== undefined && !isTime(t)) return false;
  for (const n of [x.writePauseMs, x.bytesTotal, x.lagEntries, x.windowsCopied, x.fencedLsn])
    if (n !== undefined && !isCount(n)) return false;
  return true;
}

/** A time a Date can hold (ms since the epoch, within ±8.64e15). */
function isTime(t: unknown): t is number {
  return typeof t === "number" && Number.isFinite(t) && Math.abs(t) <= 8.64e15;
}

/** A finite number ≥ 0. */
function isCount(n: unknown): n is number {
  return typeof n === "number" && Number.isFinite(n) && n >= 0;
}

/** Refuses to store a record readers could not use (a bug in the caller). */
export function checkRecord(r: MigrationRecord): void {
  if (!looksLikeRecord(r) || !/^[A-Za-z0-9_.-]{1,128}$/.test(r.id)) {
    throw new Error(`bug: not a storable migration record: ${JSON.stringify(r).slice(0, 200)}`);
  }
}
