/**
 * The migration coordinator: moves one log shard and its data to another
 * node with a two-phase cutover (issue 8; the state machine and the failure
 * matrix are in src/engine/migration.ts and DESIGN.md).
 *
 *   journal → receive (target, source epoch e) → pre-copy until the lag is
 *   small → fence the source (its last LSN after the drain) → catch up →
 *   prepare (the target checks LSN and checksum, persists "prepared", votes)
 *   → COMMIT POINT: compareAndSet of the map moving the shard to the target
 *   at e + 1 → activate the target at e + 1 → release the source with a
 *   redirect → journal done.
 *
 * Before the commit point every failure aborts: the source is unfenced at e,
 * the target's copy dropped, the journal marked aborted. After it, the
 * coordinator only rolls forward.
 *
 * The journal is a record in the location store (Consul KV under
 * `<prefix>migrations/`, or the embedded map file), written by JournalWriter
 * with a compare-and-set on its revision and refreshed by a heartbeat. The
 * commit point writes the map and the record ("committed") in one store
 * transaction. A coordinator that finds its record changed by someone else
 * (recovery took an orphaned migration over) stops without touching the
 * agents. The agents are given the migration id with fence/receive/unfence/
 * drop, so a late coordinator cannot undo a newer migration's fence.
 * Recovery of orphaned records is in recover.ts.
 */
import { askServing, describeServing } from "./serving.js";
import { PreconditionError, UserError } from "../errors.js";
import type { NodeInfo, ShardInfo } from "../engine/location-map.js";
import {
  advance,
  describePause,
  elapsedMs,
  endRecord,
  commitMap,
  newJournal,
  type MigrationOwner,
  type MigrationPhase,
  type MigrationRecord,
} from "../engine/migration.js";
import { StalePlanError, checkPlanFresh } from "../engine/planner.js";
import type { Clock, LocationStore } from "../engine/ports.js";
import { failpoint } from "../failpoint.js";
import { transferWindows } from "./windows-transfer.js";
import { failText, type AgentRpc } from "./agent-rpc.js";
import { ShardCopier, type CopyProgress } from "./migrate-copy.js";
import {
  CommitOutcomeUnknownError,
  JournalWriter,
  otherMigrationsOf,
  TakenOverError,
  thisOwner,
} from "./journal.js";

export type { MigrationRecord } from "../engine/migration.js";

export interface MigrateDeps {
  store: LocationStore;
  rpc: AgentRpc;
  clock: Clock;
  /** Progress lines (stderr in the CLI). */
  log: (msg: string) => void;
  /** Who drives the migration (default: this process, term 0). */
  owner?: MigrationOwner;
  /**
   * Why the coordinator should stop (Ctrl-C: "interrupted (SIGINT)"), or
   * undefined. Asked at each safe point before the commit: there it rolls back
   * as for a failed step. After the commit it is not asked: the move finishes.
   */
  interrupted?: () => string | undefined;
}

export interface MigrateOptions {
  shard: string;
  target: string;
  /** The map version a plan was made for; refused (exit 3) if the map moved on. */
  planVersion?: number;
  /**
   * Where a plan's later step saw the shard (its source node, and its epoch in the map the plan was
   * made for): refused (exit 3, a stale plan) if the shard moved since — by another coordinator, as
   * the plan's own earlier steps move other shards — instead of moving it again.
   */
  expect?: { source: string; epoch: number };
  /**
   * Pre-copy ends when the source is fewer than this many entries ahead
   * (default: adaptive, what the copy moves in PAUSE_BUDGET_MS, see migrate-copy.ts).
   */
  lagThreshold?: number;
  /** Rounds without progress, once the copy reached the source's end, before fencing anyway (default 50). */
  maxRounds?: number;
  /** Entries per log request (default 5000). */
  batchEntries?: number;
  /** Progress callback (phase, bytes copied of an estimated total, lag), at most every 100 ms while bytes flow. */
  onProgress?: (p: CopyProgress) => void;
}

/** Every journaled migration, oldest first; records that do not parse are named, not hidden. */
export async function listMigrations(
  store: LocationStore,
): Promise<{ records: MigrationRecord[]; unreadable: string[] }> {
  const { records, unreadable } = await store.listMigrations();
  return { records: records.map((r) => r.record), unreadable };
}

/** A step of a migration failed before the commit point: roll back (the message says why). */
export class StepError extends Error {}

/** What a connection error's code means, in words. */
const NETWORK_ERRORS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ETIMEDOUT: "timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EPIPE: "connection closed",
  ECONNABORTED: "connection aborted",
};

/**
 * Why a step failed, for a failure that is not a StepError: a described error (a UserError, e.g.
 * the store cannot be reached) as it is; a node that cannot be reached by its id and address
 * (`cannot reach node-3 at 127.0.0.1:7403 (connection refused)`); anything else is unexpected.
 */
export function stepFailure(err: unknown, nodes: readonly { id: string; address: string }[]): string {
  if (err instanceof UserError || err instanceof StepError) return err.message;
  return unreachable(err, nodes) ?? `unexpected: ${err instanceof Error ? err.message : String(err)}`;
}

/** "cannot reach node-3 at ADDR (connection refused)" for a connection error, else undefined. */
function unreachable(err: unknown, nodes: readonly { id: string; address: string }[]): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as NodeJS.ErrnoException & { address?: unknown; port?: unknown };
  const code = typeof e.code === "string" ? e.code : undefined;
  if (!code || !(code in NETWORK_ERRORS)) return undefined;
  const addr =
    typeof e.address === "string" && typeof e.port === "number" ? `${e.address}:${e.port}` : undefined;
  const node = nodes.find((n) => n.address === addr || (addr === undefined && e.message.includes(n.address)));
  const where = node ? `${node.id} at ${node.address}` : (addr ?? "an agent");
  return `cannot reach ${where} (${NETWORK_ERRORS[code]})`;
}

/** Executes one move; resolves with the finished record, throws (after aborting) on failure. */
export async function executeMigration(opts: MigrateOptions, deps: MigrateDeps): Promise<MigrationRecord> {
  const { store, rpc, clock, log } = deps;
  const vm = await store.load({ consistent: true });
  if (!vm) {
    throw new PreconditionError("the location store holds no map yet", {
      hint: "start a local cluster with `shardctl up --local`, or initialise the store",
    });
  }
  if (opts.planVersion !== undefined) checkPlanFresh({ mapVersion: opts.planVersion }, vm.version);
  const shard: ShardInfo | undefined = vm.map.shards.find((s) => s.id === opts.shard);
  if (!shard) {
    throw new UserError(`shard ${opts.shard} is not in the location map`, {
      hint: "`shardctl shards` lists the shards",
    });
  }
  const source: NodeInfo | undefined = vm.map.nodes.find((n) => n.id === shard.node);
  const target: NodeInfo | undefined = vm.map.nodes.find((n) => n.id === opts.target);
  if (!target) {
    throw new PreconditionError(
      `node ${opts.target} is not in the location map (it left, or the name is wrong)`,
      {
        hint: `known nodes: ${vm.map.nodes.map((n) => n.id).join(", ")}; \`shardctl nodes\` lists them`,
      },
    );
  }
  if (!source) throw new UserError(`the map names node ${shard.node} for ${shard.id} but does not list it`);
  if (opts.expect && (shard.node !== opts.expect.source || shard.epoch !== opts.expect.epoch))
    throw new StalePlanError(
      `the plan moves ${shard.id} from ${opts.expect.source} (epoch ${opts.expect.epoch}), but it ${shard.node === opts.expect.source ? "moved and came back" : `is on ${shard.node}`} (epoch ${shard.epoch}) since: another coordinator moved it`,
      {
        hint: "re-plan against the current map (`shardctl plan --all --out plan.json`) and apply the new plan",
      },
    );
  const e = shard.epoch;
  await checkRoom(rpc, shard.id, source, target);
  const id = migrationId(clock.now(), shard.id);
  await refuseBusy(store, id, [shard.id]);
  const owner = deps.owner ?? thisOwner();
  let j: MigrationRecord = {
    ...newJournal({
      id,
      shard,
      target: target.id,
      planVersion: vm.version,
      term: owner.term,
      now: clock.now(),
    }),
    entriesCopied: 0,
    rounds: 0,
    owner,
  };
  const journal = new JournalWriter(
    store,
    () => j,
    () => clock.now(),
  );
  const save = () => journal.save();
  const to = async (phase: MigrationPhase, patch: Partial<MigrationRecord> = {}) => {
    j = advance(j, phase, clock.now(), patch);
    await save();
  };
  await save();
  await refuseConcurrent(store, journal, [shard.id], (why) => {
    j = endRecord(j, "aborted", clock.now(), { error: why });
  });
  journal.startHeartbeat();
  await failpoint("migrate.journaled");
  log(`migration ${id}: ${shard.id} ${source.id} → ${target.id} at epoch ${e}`);
  const enc = encodeURIComponent(shard.id);
  let fenced = false;
  let targetCreated = false;
  // a safe point before the commit: an interrupt rolls back from here
  const stopIfInterrupted = () => {
    const why = deps.interrupted?.();
    if (why) throw new StepError(why);
  };
  // the copy (snapshot when the source's log is compacted, then the log): migrate-copy.ts
  const copier = new ShardCopier({
    rpc,
    source,
    target,
    shardId: shard.id,
    epoch: e,
    migration: id,
    batchEntries: opts.batchEntries,
    phase: () => j.phase,
    onCopied: (bytes, entries) => {
      j.bytesCopied += bytes;
      j.entriesCopied += entries;
    },
    onProgress: opts.onProgress,
    log: (msg) => log(`migration ${id}: ${msg}`),
    fail: (msg) => new StepError(msg),
    stop: deps.interrupted,
  });

  const abort = async (why: string): Promise<never> => {
    journal.stopHeartbeat();
    if (journal.takenOver) {
      // recovery owns the migration now: it rolls back (or forward) itself
      log(`migration ${id}: taken over by another coordinator; stopping: ${why}`);
      throw new TakenOverError(id, journal.takenOverRevision ?? journal.revision);
    }
    log(`migration ${id}: ABORT: ${why}`);
    const problems = await rollBack(rpc, j, { source, target, fenced, targetCreated });
    const now = clock.now();
    if (problems.length) {
      // not clean: the record stays open so that recovery finishes the roll-back
      j = { ...j, error: why, rollBackPending: problems.join("; ") };
      await save().catch(() => undefined);
      // still fenced only if its unfence is among what failed (the copy's drop may be all that did)
      const stillFenced = fenced && problems.some((p) => p.startsWith(`unfence on ${source.id}`));
      throw new UserError(
        `migration of ${shard.id} to ${target.id} aborted (${why}), but the roll-back did not finish: ${j.rollBackPending}`,
        {
          hint: stillFenced
            ? `no acknowledged write is lost; when the agents answer again, \`shardctl migrations --recover\` (or the next \`migrate --apply\`, or the autopilot) unfences ${shard.id} on ${source.id} and drops the copy`
            : `${shard.id} ${fenced ? "is unfenced again" : "was not fenced"}: ${source.id} serves it as before; when ${target.id} answers again, \`shardctl migrations --recover\` (or the next \`migrate --apply\`, or the autopilot) drops the copy there and closes the record, and until then ${shard.id} cannot be migrated`,
        },
      );
    }
    j = endRecord(j, "aborted", now, { error: why });
    try {
      await save();
    } catch (err) {
      if (err instanceof TakenOverError) throw err;
      throw new UserError(
        `migration of ${shard.id} to ${target.id} aborted (${j.error}), and the journal could not record it: ${(err as Error).message}`,
        { hint: "the next `shardctl migrate` or the autopilot finishes the record (recovery)" },
      );
    }
    // what the source answers now, not what the map says: a map older than the agents (restored from
    // a backup) names an owner that may have released the shard long ago
    const serving = describeServing(shard.id, source.id, e, await askServing(rpc, source.address, shard.id));
    throw new UserError(`migration of ${shard.id} to ${target.id} aborted: ${j.error}`, {
      hint: serving.served
        ? `${serving.text} with all its data; fix the cause and re-run`
        : `${serving.text}. This migration changed nothing`,
    });
  };

  try {
    stopIfInterrupted();
    // set before asking: a request whose answer is lost may still have been carried out
    targetCreated = true;
    const rcv = await rpc
      .json(target.address, "POST", `/v1/admin/shards/${enc}/receive`, {
        epoch: e,
        migration: id,
        ranges: shard.ranges,
        migrationTimestamp: shard.migrationTimestamp,
      })
      .catch((err: unknown) => {
        // refused before a connection was made: the request never reached the target, nothing to drop
        if ((err as NodeJS.ErrnoException).code === "ECONNREFUSED") targetCreated = false;
        throw err;
      });
    if (rcv.status !== 201 && rcv.status !== 200)
      throw new StepError(failText(`target ${target.id} (receive)`, rcv.status, rcv.body));
    await to("copying");
    await failpoint("migrate.copying");
    stopIfInterrupted();
    await copier.estimate();
    await copier.preCopy({ lagThreshold: opts.lagThreshold, maxRounds: opts.maxRounds });
    // the access history goes with the data, then the log copy catches up once more
    const w = await transferWindows(rpc, source, target, shard.ranges);
    if (w.problems.length) log(`migration ${id}: access windows not all copied: ${w.problems.join("; ")}`);
    j.windowsCopied = w.segments;
    await copier.preCopy({ lagThreshold: opts.lagThreshold, maxRounds: opts.maxRounds });
    j.rounds = copier.rounds;
    stopIfInterrupted();
    log(
      `migration ${id}: pre-copied ${j.entriesCopied} entries (${j.bytesCopied} bytes) in ${j.rounds} rounds`,
    );
    fenced = true; // as above: a lost answer may hide a fence that happened
    const f = await rpc.shardAction(source.address, shard.id, "fence", { epoch: e, migration: id });
    if (f.status !== 200) throw new StepError(failText(`source ${source.id} (fence)`, f.status, f.body));
    const fencedLsn = (f.body as { lsn: number }).lsn;
    // recorded without waiting (inside the write pause): recovery does not need it, since a
    // roll-back unfences whatever the record says, and the commit waits for it anyway
    const fencedSaved = to("fenced", { fencedLsn });
    fencedSaved.catch(() => undefined);
    await failpoint("migrate.fenced");
    log(`migration ${id}: source fenced at LSN ${fencedLsn}; catching up`);
    // the fenced source's checksum cannot change: ask for it while the catch-up runs (one round trip less)
    const checksumAnswer = rpc.json<{ checksum: string; lsn?: number }>(
      source.address,
      "GET",
      `/v1/shards/${enc}/checksum?upto=${fencedLsn}&base=${copier.base}`,
    );
    checksumAnswer.catch(() => undefined); // awaited below unless the catch-up fails first
    await copier.catchUp(fencedLsn);
    const c = await checksumAnswer;
    if (c.status !== 200) throw new StepError(failText(`source ${source.id} (checksum)`, c.status, c.body));
    if (c.body.lsn !== undefined && c.body.lsn !== fencedLsn)
      throw new StepError(`the fenced source moved from LSN ${fencedLsn} to ${c.body.lsn}`);
    stopIfInterrupted();
    const p = await rpc.json<{ vote?: string }>(target.address, "POST", `/v1/admin/shards/${enc}/prepare`, {
      epoch: e,
      lastLsn: fencedLsn,
      checksum: c.body.checksum,
      migration: id,
    });
    if (p.status !== 200 || p.body.vote !== "commit")
      throw new StepError(failText(`target ${target.id} (prepare)`, p.status, p.body));
    await fencedSaved;
    stopIfInterrupted();
    // the prepare vote is the target's (persisted there); the journal's next write is the commit itself
    j = advance(j, "prepared", clock.now(), { checksum: c.body.checksum });
    await failpoint("migrate.prepared");
    stopIfInterrupted();
    log(`migration ${id}: target prepared (checksum ${c.body.checksum}); committing`);
    // the commit point: the map and the journal record in one store transaction, read consistently
    const committing = advance(j, "committed", clock.now());
    const commit = await journal.commitPoint(
      (map) => commitMap(map, committing, clock.now(), owner.term),
      committing,
      `${shard.id} stays fenced on ${source.id} (no writes are lost); when the store is back, \`shardctl migrations --recover\` (or the autopilot) finishes it`,
    );
    if (!commit.ok) throw new StepError(commit.why);
    j = committing;
  } catch (err) {
    // the store may hold the commit: neither roll back nor forward (recovery decides from the journal)
    if (err instanceof CommitOutcomeUnknownError) throw err;
    return abort(stepFailure(err, [source, target]));
  }

  // after the commit point: roll forward only
  await failpoint("migrate.committed");
  const committedAt = j.phaseAt.committed ?? clock.now();
  log(`migration ${id}: committed: ${shard.id} is on ${target.id} at epoch ${e + 1}`);
  const fwd = await rollForward(rpc, j, { source, target }, committedAt);
  journal.stopHeartbeat();
  const fenceAt = j.phaseAt.fenced ?? committedAt;
  if (fwd.problems.length) {
    j = { ...j, rollForwardPending: fwd.problems.join("; ") };
    await save().catch(() => undefined);
    throw new UserError(
      `migration ${id} of ${shard.id} committed (the map has it on ${target.id} at epoch ${e + 1}) but: ${j.rollForwardPending}`,
      {
        hint: "no data is lost; bring the agents back, then `shardctl migrations --recover` (or the autopilot) rolls it forward",
      },
    );
  }
  const now = clock.now();
  j = endRecord(j, "done", now, {
    writePauseMs: fwd.activatedAt !== undefined ? elapsedMs(fenceAt, fwd.activatedAt) : undefined,
  });
  try {
    await save();
  } catch (err) {
    // the move is complete on the agents and in the map; only the record's last word is missing
    log(`migration ${id}: done, but the journal could not record it: ${(err as Error).message}`);
  }
  log(`migration ${id}: done; write pause ${describePause(j.writePauseMs)}, ${j.bytesCopied} bytes copied`);
  return j;
}

/**
 * Refuses (exit 3), before anything is written, a migration of shards another
 * migration in flight involves: a refusal that changed nothing leaves no
 * journal record (the journal keeps only 200 ended ones). The race of two
 * that start at once is refuseConcurrent's, after each journaled.
 */
export async function refuseBusy(store: LocationStore, id: string, shards: readonly string[]): Promise<void> {
  const others = await otherMigrationsOf(store, id, shards);
  if (others.length === 0) return;
  throw openMigrationError(others[0], "nothing was started");
}

function busyWhy(o: MigrationRecord): string {
  if (o.rollBackPending)
    return `${o.shard} has an open migration (${o.id} to ${o.target}): it was aborted, and its roll-back waits for an agent (${o.rollBackPending})`;
  if (o.rollForwardPending)
    return `${o.shard} has an open migration (${o.id} to ${o.target}): it committed, and its roll-forward waits for an agent (${o.rollForwardPending})`;
  return `${o.shard} is being migrated by another coordinator (migration ${o.id}, ${o.phase})`;
}

/** What to do about an open migration record that stands in the way (see busyWhy). */
function busyHint(o: MigrationRecord): string {
  if (o.rollBackPending || o.rollForwardPending)
    return "`shardctl migrations --recover` finishes it once that agent answers again (the autopilot and the next `migrate --apply` try too); `shardctl migrations` shows it";
  return "`shardctl migrations` shows it; wait for it to end (or `shardctl migrations --recover` if its coordinator died)";
}

/** The refusal for a shard an open migration record holds (busyWhy, busyHint), with how much was done. */
/** A shard an open migration record holds (another coordinator's, or one waiting for recovery): exit 3. */
export class ShardBusyError extends PreconditionError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, opts);
    this.name = "ShardBusyError";
  }
}

export function openMigrationError(o: MigrationRecord, done: string): ShardBusyError {
  return new ShardBusyError(`${busyWhy(o)}; ${done}`, { hint: busyHint(o) });
}

/**
 * Stops a coordinator that just journaled a migration of shards another
 * migration in flight involves (two `migrate --apply` at once, or a plan run
 * beside the autopilot): it touched no agent yet, so its record is closed as
 * aborted and it throws (exit 3). Were both to go on, the second `receive`
 * would replace the first one's copy on a shared target, and either one's
 * roll-back could drop the copy the other commits.
 */
export async function refuseConcurrent(
  store: LocationStore,
  journal: JournalWriter,
  shards: readonly string[],
  /** Closes the coordinator's record (the journal then writes it). */
  aborted: (why: string) => void,
): Promise<void> {
  let others: MigrationRecord[];
  try {
    others = await otherMigrationsOf(store, journal.id, shards);
  } catch (err) {
    const why = `the journal could not be read to rule out another migration: ${(err as Error).message}`;
    aborted(why);
    await journal.save().catch(() => undefined);
    throw new UserError(`nothing was started: ${why}`, { hint: "retry when the store answers" });
  }
  if (others.length === 0) return;
  aborted(busyWhy(others[0]));
  await journal.save().catch(() => undefined);
  throw openMigrationError(others[0], "nothing was started");
}

/** Headroom a target keeps beyond the copy (its own logs, snapshots, the file system's reserve). */
export const ROOM_MARGIN_BYTES = 64 * 1024 * 1024;

/**
 * Refuses (exit 3) before anything starts a move whose copy would not fit on
 * the target: the source's log and snapshot bytes, plus a margin, against the
 * target's available disk. Agents that do not report either are not refused.
 */
export async function checkRoom(
  rpc: AgentRpc,
  shardId: string,
  source: NodeInfo,
  target: NodeInfo,
): Promise<void> {
  const [s, t] = await Promise.all([
    rpc
      .json<{ logBytes?: number; valueBytes?: number }>(
        source.address,
        "GET",
        `/v1/shards/${encodeURIComponent(shardId)}`,
      )
      .catch(() => undefined),
    rpc
      .json<{ disk?: { availableBytes?: number } }>(target.address, "GET", "/v1/node")
      .catch(() => undefined),
  ]);
  const need = s?.status === 200 ? (s.body.logBytes ?? 0) : undefined;
  const have = t?.status === 200 ? t.body.disk?.availableBytes : undefined;
  if (need === undefined || have === undefined) return;
  if (need + ROOM_MARGIN_BYTES > have) {
    throw new PreconditionError(
      `node ${target.id} has ${formatMiB(have)} free, and ${shardId} needs ${formatMiB(need)} plus ${formatMiB(ROOM_MARGIN_BYTES)} of headroom; nothing was started`,
      { hint: `free space on ${target.id}, or pick another target (\`shardctl nodes\` shows disk free)` },
    );
  }
}

function formatMiB(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/** A migration id: sortable by start time, with the shard, unique enough to never collide. */
export function migrationId(now: number, shardId: string): string {
  const stamp = new Date(now).toISOString().replace(/[-:.]/g, "").slice(0, 15);
  const safe = shardId.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 64);
  return `${stamp}-${safe}-${Math.random().toString(36).slice(2, 8)}`;
}

type Answer = { status: number; body: unknown };

async function attempt(what: string, fn: () => Promise<Answer>, tries: number): Promise<string | undefined> {
  let last = "";
  for (let i = 0; i < tries; i++) {
    try {
      const r = await fn();
      if (r.status === 200) return undefined;
      last = failText(what, r.status, r.body);
      if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) break; // refused: retrying will not help
    } catch (err) {
      // the step already names the node: "drop on node-3: cannot reach 127.0.0.1:7403 (connection refused)"
      last = `${what}: ${unreachable(err, []) ?? (err instanceof Error ? err.message : String(err))}`;
    }
    if (i + 1 < tries) await new Promise((res) => setTimeout(res, 50 * 2 ** i));
  }
  return last;
}

/**
 * An agent's refusal that means the shard is no longer this migration's to
 * undo (a newer migration fenced or received it, or it moved on at a higher
 * epoch): nothing to roll back there.
 */
function notOurs(r: Answer): Answer {
  const code = (r.body as { error?: string } | undefined)?.error;
  if (
    r.status === 409 &&
    ["another-migration", "not-owner", "stale-epoch", "still-owned"].includes(code ?? "")
  )
    return { status: 200, body: r.body };
  return r;
}

/**
 * Undoes a migration that did not commit: the source unfenced at its epoch,
 * the target's copy dropped. Both carry the migration id, so an agent whose
 * shard a newer migration has fenced or received refuses. Returns the
 * problems (empty when both sides are clean).
 */
export async function rollBack(
  rpc: AgentRpc,
  j: MigrationRecord,
  sides: { source?: NodeInfo; target?: NodeInfo; fenced: boolean; targetCreated: boolean },
): Promise<string[]> {
  const problems: string[] = [];
  const enc = encodeURIComponent(j.shard);
  const { source, target } = sides;
  if (sides.fenced && source) {
    const p = await attempt(
      `unfence on ${source.id}`,
      async () =>
        notOurs(
          await rpc.shardAction(source.address, j.shard, "unfence", { epoch: j.fromEpoch, migration: j.id }),
        ),
      3,
    );
    if (p) problems.push(p);
  }
  if (sides.targetCreated && target) {
    const p = await attempt(
      `drop on ${target.id}`,
      async () => {
        const r = await rpc.json(target.address, "DELETE", `/v1/admin/shards/${enc}`, {
          epoch: j.fromEpoch,
          migration: j.id,
        });
        return r.status === 404 ? { status: 200, body: r.body } : notOurs(r); // nothing there: nothing to drop
      },
      3,
    );
    if (p) problems.push(p);
  }
  return problems;
}

/**
 * Finishes a committed migration on the agents: the target activated at
 * epoch + 1, the source released with a redirect. Idempotent (both agents
 * answer a retried step with success).
 */
export async function rollForward(
  rpc: AgentRpc,
  j: MigrationRecord,
  sides: { source?: NodeInfo; target?: NodeInfo },
  migrationTimestamp: number,
): Promise<{ problems: string[]; activatedAt?: number }> {
  const problems: string[] = [];
  const enc = encodeURIComponent(j.shard);
  const e = j.fromEpoch;
  const { source, target } = sides;
  let activatedAt: number | undefined;
  if (!target) {
    problems.push(`target node ${j.target} is no longer in the map`);
    return { problems };
  }
  // both at once: the target serves at e + 1 and the source redirects to it; neither is
  // writable at the other's epoch, so the order does not matter and the pause is one round trip
  const activate = attempt(
    `activate on ${target.id}`,
    () =>
      rpc.json(target.address, "POST", `/v1/admin/shards/${enc}/activate`, {
        epoch: e,
        migrationTimestamp,
        migration: j.id,
      }),
    5,
  ).then((p) => {
    if (p) problems.push(p);
    else activatedAt = Date.now();
  });
  const release = source
    ? attempt(
        `release on ${source.id}`,
        () =>
          rpc.shardAction(source.address, j.shard, "release", {
            epoch: e + 1,
            redirect: { node: target.id, address: target.address, epoch: e + 1 },
          }),
        5,
      ).then((p) => {
        if (p) problems.push(p);
      })
    : Promise.resolve();
  await Promise.all([activate, release]);
  await failpoint("migrate.activated");
  return { problems, activatedAt };
}
