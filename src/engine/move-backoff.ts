/**
 * Back-off for moves that failed (pure: no clock, no I/O). The autopilot
 * keeps the state between its cycles and hands the planner the pairs to
 * avoid; the planner then ranks and admits the other moves as if those were
 * not possible, so one target that keeps refusing cannot take the budget of
 * concurrent migrations cycle after cycle.
 *
 * Per (shard, target): after the n-th failure in a row the pair is not
 * planned again for min(initial × 2^(n−1), max). A success resets it. An
 * entry whose back-off ended more than `max` ago is forgotten (the pair
 * starts again from `initial`), and so is one whose shard left the map: the
 * state stays bounded by shards × nodes.
 */
import { UsageError } from "../errors.js";

export interface BackoffPolicy {
  /** Back-off after the first failure, ms. */
  initialMs: number;
  /** The back-off never grows past this, ms. */
  maxMs: number;
}

export const DEFAULT_BACKOFF_POLICY: BackoffPolicy = { initialMs: 60_000, maxMs: 60 * 60_000 };

/** One (shard, target) pair that failed, and until when it is not planned again. */
export interface MoveBackoffEntry {
  shard: string;
  target: string;
  /** Failures in a row. */
  failures: number;
  /** When the last failure happened (ms since the epoch). */
  failedAt: number;
  /** Not planned again before this (ms since the epoch). */
  until: number;
  /** The last failure's message. */
  lastError: string;
}

export type MoveBackoffState = readonly MoveBackoffEntry[];

/** Throws a UsageError naming the bad value; `what` says where it came from (a flag, a field). */
export function validateBackoffPolicy(
  p: BackoffPolicy,
  what: { initial: string; max: string } = { initial: "initialMs", max: "maxMs" },
): void {
  if (typeof p.initialMs !== "number" || !Number.isFinite(p.initialMs) || p.initialMs <= 0) {
    throw new UsageError(`${what.initial} must be a positive number, got ${String(p.initialMs)}`);
  }
  if (typeof p.maxMs !== "number" || !Number.isFinite(p.maxMs) || p.maxMs <= 0) {
    throw new UsageError(`${what.max} must be a positive number, got ${String(p.maxMs)}`);
  }
  if (p.maxMs < p.initialMs) {
    throw new UsageError(`${what.max} (${p.maxMs}) must not be below ${what.initial} (${p.initialMs})`);
  }
}

/** The back-off after `failures` failures in a row (≥ 1). */
export function backoffDelayMs(failures: number, policy: BackoffPolicy): number {
  const n = Math.max(1, Math.floor(failures));
  // 2^52 × any positive initial is far past any max: stop doubling there (no Infinity)
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(n - 1, 52));
}

const same = (e: MoveBackoffEntry, shard: string, target: string) => e.shard === shard && e.target === target;

export function recordMoveFailure(
  state: MoveBackoffState,
  move: { shard: string; target: string; error: string },
  now: number,
  policy: BackoffPolicy,
): MoveBackoffEntry[] {
  const prev = state.find((e) => same(e, move.shard, move.target));
  const failures = (prev?.failures ?? 0) + 1;
  const entry: MoveBackoffEntry = {
    shard: move.shard,
    target: move.target,
    failures,
    failedAt: now,
    until: now + backoffDelayMs(failures, policy),
    lastError: move.error,
  };
  return [...state.filter((e) => !same(e, move.shard, move.target)), entry];
}

export function recordMoveSuccess(
  state: MoveBackoffState,
  shard: string,
  target: string,
): MoveBackoffEntry[] {
  return state.filter((e) => !same(e, shard, target));
}

/** The pairs still backing off at `now`, soonest end first. */
export function activeBackoffs(state: MoveBackoffState, now: number): MoveBackoffEntry[] {
  return state.filter((e) => e.until > now).sort((a, b) => a.until - b.until || cmp(a, b));
}

/**
 * Forgets entries whose back-off ended more than `policy.maxMs` ago, and
 * those of shards not in `shards` (when given: split or merged away).
 */
export function pruneBackoffs(
  state: MoveBackoffState,
  now: number,
  policy: BackoffPolicy,
  shards?: ReadonlySet<string>,
): MoveBackoffEntry[] {
  return state.filter((e) => now - e.until <= policy.maxMs && (!shards || shards.has(e.shard)));
}

function cmp(a: MoveBackoffEntry, b: MoveBackoffEntry): number {
  const x = `${a.shard}\u0000${a.target}`;
  const y = `${b.shard}\u0000${b.target}`;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** "shard-3 → node-2 until 2025-01-01T10:00:00.000Z (2 failures: …)", for logs and plan notes. */
export function describeBackoff(e: MoveBackoffEntry): string {
  const err = e.lastError.length > 200 ? `${e.lastError.slice(0, 200)}…` : e.lastError;
  return `${e.shard} → ${e.target} until ${new Date(e.until).toISOString()} (${e.failures} failure${e.failures === 1 ? "" : "s"}: ${err})`;
}

/** The format tag of the back-off state as it is kept in the store. */
export const BACKOFF_MEMORY_FORMAT = "shardctl-autopilot-backoff/1";

const MAX_REMEMBERED = 10_000;
const MAX_NAME = 512;
const MAX_ERROR = 2000;

/**
 * The entries of a back-off state read back from the store (JSON that any
 * process, or anyone with write access to the store, may have written), each
 * checked; `until` is recomputed from its failures and last failure under
 * `policy`, so a restart with a shorter back-off takes effect at once. Entries
 * that do not parse are counted in `refused`, never half taken; a value that
 * is not a state at all is an error naming what it is.
 */
export function parseBackoffEntries(
  value: unknown,
  policy: BackoffPolicy,
): { entries: MoveBackoffEntry[]; refused: number } {
  if (!Array.isArray(value))
    throw new UsageError(`a back-off state is a list of entries, got ${typeof value}`);
  if (value.length > MAX_REMEMBERED)
    throw new UsageError(`a back-off state holds at most ${MAX_REMEMBERED} entries, got ${value.length}`);
  const entries: MoveBackoffEntry[] = [];
  const seen = new Set<string>();
  let refused = 0;
  const name = (x: unknown) => typeof x === "string" && x.length > 0 && x.length <= MAX_NAME;
  for (const e of value as Partial<MoveBackoffEntry>[]) {
    const ok =
      typeof e === "object" &&
      e !== null &&
      name(e.shard) &&
      name(e.target) &&
      Number.isInteger(e.failures) &&
      e.failures! >= 1 &&
      Number.isFinite(e.failedAt) &&
      e.failedAt! >= 0 &&
      typeof e.lastError === "string" &&
      !seen.has(`${e.shard}\u0000${e.target}`);
    if (!ok) {
      refused++;
      continue;
    }
    seen.add(`${e.shard}\u0000${e.target}`);
    entries.push({
      shard: e.shard!,
      target: e.target!,
      failures: e.failures!,
      failedAt: e.failedAt!,
      until: e.failedAt! + backoffDelayMs(e.failures!, policy),
      lastError: e.lastError!.slice(0, MAX_ERROR),
    });
  }
  return { entries, refused };
}
