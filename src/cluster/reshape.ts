/**
 * Splits and merges on a cluster whose agents hold the data (issue 8): the
 * layout ops of the resharding engine carried out by the migration
 * machinery, moving segments between shards.
 *
 * A layout change is a set of imports: segments of a source shard copied
 * into a target shard (src/agent/import.ts).
 *   - split of A into A + P…: each new piece P is a new shard, created
 *     `receiving` on its node (A's node, or the node a plan moves it to:
 *     "split then move" in one step), importing P's segments from A;
 *   - merge of K, O…: the kept shard K imports all of each O (K keeps serving
 *     its own keys meanwhile; imported keys stay invisible until the commit).
 * Then, as for a move: journal → pre-copy while the sources serve → fence
 * the sources → catch up → content checksums compared → COMMIT POINT: the map
 * (applyLayoutDiff, every involved shard at epoch + 1, pieces on their
 * nodes) and the journal record in one store transaction → the targets serve
 * their new ranges, a split's source is unfenced with fewer ranges, a
 * merge's sources redirect to K. Before the commit, every failure rolls back
 * (new pieces dropped, imports into K purged, sources unfenced).
 *
 * The write ids go with the data (the export pages carry them; see
 * src/agent/import.ts): a client's retry of a write a source applied, sent
 * after the commit (or refused while the source was fenced and sent again),
 * is answered by the new owner as a duplicate with the original outcome.
 */
import { askServing, describeServing } from "./serving.js";
import { UserError } from "../errors.js";
import type { LayoutDiff, LayoutOp } from "../engine/assigner.js";
import type { LocationMap, NodeInfo, SegmentRange, ShardInfo } from "../engine/location-map.js";
import {
  advance,
  describePause,
  elapsedMs,
  endRecord,
  commitLayout,
  newJournal,
  type LayoutChange,
  type MigrationPhase,
  type MigrationRecord,
} from "../engine/migration.js";
import { checkPlanFresh, StalePlanError, type MigrationPlan } from "../engine/planner.js";
import { PreconditionError } from "../errors.js";
import { failpoint } from "../failpoint.js";
import { transferWindows } from "./windows-transfer.js";
import { failText, tryJson, type AgentRpc } from "./agent-rpc.js";
import { CommitOutcomeUnknownError, JournalWriter, TakenOverError, thisOwner } from "./journal.js";
import {
  migrationId,
  refuseBusy,
  refuseConcurrent,
  ShardBusyError,
  StepError,
  stepFailure,
  type MigrateDeps,
} from "./migrate.js";

export interface LayoutOptions {
  op: LayoutOp;
  /** Where a split's new pieces go (default: the split shard's node). */
  pieceNodes?: Record<string, string>;
  planVersion?: number;
  lagThreshold?: number;
  maxRounds?: number;
  batchEntries?: number;
}

interface Import {
  source: ShardInfo;
  sourceNode: NodeInfo;
  target: string;
  targetNode: NodeInfo;
  ranges: SegmentRange[];
  /** A new shard created for the import (dropped on abort), else a live shard (purged on abort). */
  fresh: boolean;
  /**
   * The target's epoch in the map the change starts from (a new piece: 1), presented at import-begin
   * and import-prepare: an agent that has seen a newer epoch for it refuses (a stale map).
   */
  targetEpoch: number;
  next: number;
  /** Snapshot records already imported from a compacted source. */
  snapSkip: number;
  fencedLsn?: number;
}

export function rangesParam(ranges: SegmentRange[]): string {
  return ranges.map(([a, b]) => `${a}-${b}`).join(",");
}

/** The imports a layout change consists of, against the map it starts from. */
export function planImports(
  map: LocationMap,
  op: LayoutOp,
  pieceNodes: Record<string, string> = {},
): { imports: Omit<Import, "next" | "snapSkip">[]; change: LayoutChange; main: ShardInfo } {
  const shard = (id: string) => {
    const s = map.shards.find((x) => x.id === id);
    if (!s)
      throw new PreconditionError(`shard ${id} is not in the location map (the layout moved on): re-plan`);
    return s;
  };
  const node = (id: string) => {
    const n = map.nodes.find((x) => x.id === id);
    if (!n) throw new PreconditionError(`node ${id} is not in the location map (it left): re-plan`);
    if (!n.address) throw new PreconditionError(`node ${id} has no agent address: nothing to move data with`);
    return n;
  };
  const imports: Omit<Import, "next" | "snapSkip">[] = [];
  const epochs: Record<string, number> = {};
  const nodes: Record<string, string> = {};
  const placed: Record<string, string> = {};
  let main: ShardInfo;
  if (op.kind === "split") {
    main = shard(op.shard);
    epochs[main.id] = main.epoch;
    nodes[main.id] = main.node;
    for (const p of op.pieces.slice(1)) {
      const target = pieceNodes[p.id] ?? main.node;
      placed[p.id] = target;
      imports.push({
        source: main,
        sourceNode: node(main.node),
        target: p.id,
        targetNode: node(target),
        ranges: p.ranges,
        fresh: true,
        targetEpoch: 1,
      });
    }
  } else {
    main = shard(op.shards[0]);
    epochs[main.id] = main.epoch;
    nodes[main.id] = main.node;
    for (const id of op.shards.slice(1)) {
      const o = shard(id);
      epochs[o.id] = o.epoch;
      nodes[o.id] = o.node;
      imports.push({
        source: o,
        sourceNode: node(o.node),
        target: main.id,
        targetNode: node(main.node),
        ranges: o.ranges,
        fresh: false,
        targetEpoch: main.epoch,
      });
    }
  }
  return { imports, change: { op, pieceNodes: placed, epochs, nodes }, main };
}

/** Executes one split or merge; resolves with the finished record, throws (after rolling back) on failure. */
export async function executeLayoutChange(opts: LayoutOptions, deps: MigrateDeps): Promise<MigrationRecord> {
  const { store, rpc, clock, log } = deps;
  const vm = await store.load({ consistent: true });
  if (!vm) throw new PreconditionError("the location store holds no map yet");
  if (opts.planVersion !== undefined) checkPlanFresh({ mapVersion: opts.planVersion }, vm.version);
  const { imports: planned, change, main } = planImports(vm.map, opts.op, opts.pieceNodes);
  const imports: Import[] = planned.map((i) => ({ ...i, next: 1, snapSkip: 0 }));
  const id = migrationId(clock.now(), `${opts.op.kind}-${main.id}`);
  await refuseBusy(store, id, [...Object.keys(change.epochs), ...Object.keys(change.pieceNodes)]);
  const owner = deps.owner ?? thisOwner();
  const targetNode = imports[0]?.targetNode.id ?? main.node;
  let j: MigrationRecord = {
    ...newJournal({
      id,
      shard: main,
      target: targetNode,
      planVersion: vm.version,
      term: owner.term,
      now: clock.now(),
      allowSameNode: true,
    }),
    entriesCopied: 0,
    rounds: 0,
    owner,
    layout: change,
  };
  const journal = new JournalWriter(
    store,
    () => j,
    () => clock.now(),
  );
  const to = async (phase: MigrationPhase, patch: Partial<MigrationRecord> = {}) => {
    j = advance(j, phase, clock.now(), patch);
    await journal.save();
  };
  await journal.save();
  await refuseConcurrent(
    store,
    journal,
    [...Object.keys(change.epochs), ...Object.keys(change.pieceNodes)],
    (why) => {
      j = endRecord(j, "aborted", clock.now(), { error: why });
    },
  );
  journal.startHeartbeat();
  const what = describeChange(opts.op, change);
  log(`migration ${id}: ${what}`);
  const fencedSources = new Set<string>();
  // a safe point before the commit: an interrupt rolls back from here
  const stopIfInterrupted = () => {
    const why = deps.interrupted?.();
    if (why) throw new StepError(why);
  };

  const copy = async (im: Import): Promise<number> => {
    const r = await rpc.request(
      im.sourceNode.address,
      "GET",
      `/v1/shards/${encodeURIComponent(im.source.id)}/export?from=${im.next}&max=${opts.batchEntries ?? 5000}&ranges=${rangesParam(im.ranges)}&snapSkip=${im.snapSkip}`,
    );
    if (r.status !== 200)
      throw new StepError(failText(`source ${im.sourceNode.id} (export)`, r.status, tryJson(r.body)));
    const last = Number(r.headers["x-last-lsn"]);
    const through = Number(r.headers["x-scanned-through"]);
    // hands the exported page to the target's import, with the headers that say what it holds
    const importPage = async (headers: Record<string, string>): Promise<void> => {
      const a = await rpc.request(
        im.targetNode.address,
        "POST",
        `/v1/admin/shards/${encodeURIComponent(im.target)}/import`,
        {
          headers: {
            "content-type": "application/octet-stream",
            "x-source-shard": im.source.id,
            "x-migration": id,
            "x-scanned-through": String(through),
            ...headers,
          },
          body: r.body,
        },
      );
      if (a.status !== 200)
        throw new StepError(failText(`target ${im.targetNode.id} (import)`, a.status, tryJson(a.body)));
    };
    const snapLsn = r.headers["x-snapshot-lsn"];
    if (typeof snapLsn === "string") {
      // a compacted source: a page of its snapshot's records first
      await importPage({ "x-from": "1", "x-snapshot-lsn": snapLsn, "x-snapshot-skip": String(im.snapSkip) });
      im.snapSkip = Number(r.headers["x-snapshot-next"]);
      if (through > 0) im.next = through + 1;
      j.bytesCopied += r.body.length;
      j.entriesCopied += Number(r.headers["x-entries"]);
      return last - (im.next - 1) + (through > 0 ? 0 : 1);
    }
    if (through >= im.next) {
      await importPage({ "x-from": String(im.next) });
      im.next = through + 1;
      j.bytesCopied += r.body.length;
      j.entriesCopied += Number(r.headers["x-entries"]);
    }
    return last - (im.next - 1);
  };

  /** New pieces whose `receive` was refused before a connection was made: nothing of them to drop. */
  const neverReached = new Set<string>();
  const abort = async (why: string): Promise<never> => {
    journal.stopHeartbeat();
    if (journal.takenOver) throw new TakenOverError(id, journal.takenOverRevision ?? journal.revision);
    log(`migration ${id}: ABORT: ${why}`);
    const problems = await rollBackLayout(rpc, j, vm.map, neverReached);
    if (problems.length) {
      j = { ...j, error: why, rollBackPending: problems.join("; ") };
      await journal.save().catch(() => undefined);
      throw new ChangeLeftOpenError(
        `${what} aborted (${why}), but the roll-back did not finish: ${j.rollBackPending}`,
        "no acknowledged write is lost; `shardctl migrations --recover` finishes the roll-back when the agents answer",
        false,
      );
    }
    const now = clock.now();
    j = endRecord(j, "aborted", now, { error: why });
    await journal.save().catch(() => undefined);
    // what the agents answer now, not what the map says (it may be older than the agents)
    const involved = opts.op.kind === "split" ? [opts.op.shard] : opts.op.shards;
    const serving = await Promise.all(
      involved.map(async (s) => {
        const n = nodeOf(vm.map, change.nodes[s]);
        if (!n) return { served: false, text: `${s}'s node ${change.nodes[s]} is not in the map` };
        return describeServing(s, n.id, change.epochs[s], await askServing(rpc, n.address, s));
      }),
    );
    throw new UserError(`${what} aborted: ${why}`, {
      hint: serving.every((s) => s.served)
        ? `the shards are served as before with all their data (${serving.map((s) => s.text).join("; ")}); fix the cause and re-run`
        : `the agents answer: ${serving.map((s) => s.text).join("; ")}. This change moved no data`,
    });
  };

  let committedMap: LocationMap;
  try {
    stopIfInterrupted();
    for (const im of imports) {
      const enc = encodeURIComponent(im.target);
      if (im.fresh) {
        const r = await rpc
          .json(im.targetNode.address, "POST", `/v1/admin/shards/${enc}/receive`, {
            epoch: 1,
            migration: id,
          })
          .catch((err: unknown) => {
            // refused before a connection was made: the request never reached the target (as a move's)
            if ((err as NodeJS.ErrnoException).code === "ECONNREFUSED") neverReached.add(im.target);
            throw err;
          });
        if (r.status !== 201 && r.status !== 200)
          throw new StepError(
            failText(`target ${im.targetNode.id} (receive ${im.target})`, r.status, r.body),
          );
      }
      const b = await rpc.json(im.targetNode.address, "POST", `/v1/admin/shards/${enc}/import-begin`, {
        epoch: im.targetEpoch,
        source: im.source.id,
        migration: id,
        ranges: im.ranges,
      });
      if (b.status !== 201 && b.status !== 200)
        throw new StepError(failText(`target ${im.targetNode.id} (import-begin)`, b.status, b.body));
    }
    await to("copying");
    await failpoint("migrate.copying");
    const threshold = opts.lagThreshold ?? 1000;
    // copy until the lag is small; stop anyway after maxRounds rounds without progress
    let best = Infinity;
    let still = 0;
    for (;;) {
      j.rounds++;
      let lag = 0;
      for (const im of imports) lag = Math.max(lag, await copy(im));
      stopIfInterrupted();
      if (lag < threshold) break;
      if (lag < best) {
        best = lag;
        still = 0;
      } else if (++still >= (opts.maxRounds ?? 50)) break;
    }
    // the access history of the moving segments goes with them, then the copy catches up once more
    for (const im of imports) {
      const w = await transferWindows(rpc, im.sourceNode, im.targetNode, im.ranges);
      if (w.problems.length) log(`migration ${id}: access windows not all copied: ${w.problems.join("; ")}`);
      j.windowsCopied = (j.windowsCopied ?? 0) + w.segments;
      await copy(im);
    }
    stopIfInterrupted();
    for (const im of imports) {
      if (fencedSources.has(im.source.id)) continue;
      fencedSources.add(im.source.id);
      const f = await rpc.shardAction(im.sourceNode.address, im.source.id, "fence", {
        epoch: im.source.epoch,
        migration: id,
      });
      if (f.status !== 200)
        throw new StepError(failText(`source ${im.sourceNode.id} (fence ${im.source.id})`, f.status, f.body));
      const lsn = (f.body as { lsn: number }).lsn;
      for (const other of imports) if (other.source.id === im.source.id) other.fencedLsn = lsn;
    }
    await to("fenced", { fencedLsn: imports[0]?.fencedLsn });
    await failpoint("migrate.fenced");
    for (const im of imports) {
      while (im.next - 1 < im.fencedLsn!) {
        const lag = await copy(im);
        if (lag > 0 && im.next - 1 >= im.fencedLsn!)
          throw new StepError(`the fenced source ${im.source.id} moved on`);
      }
      const c = await rpc.json<{ checksum: string }>(
        im.sourceNode.address,
        "GET",
        `/v1/shards/${encodeURIComponent(im.source.id)}/export-checksum?upto=${im.fencedLsn}&ranges=${rangesParam(im.ranges)}`,
      );
      if (c.status !== 200)
        throw new StepError(failText(`source ${im.sourceNode.id} (checksum)`, c.status, c.body));
      const p = await rpc.json<{ vote?: string }>(
        im.targetNode.address,
        "POST",
        `/v1/admin/shards/${encodeURIComponent(im.target)}/import-prepare`,
        {
          epoch: im.targetEpoch,
          source: im.source.id,
          migration: id,
          through: im.fencedLsn,
          checksum: c.body.checksum,
        },
      );
      if (p.status !== 200 || p.body.vote !== "commit")
        throw new StepError(failText(`target ${im.targetNode.id} (import-prepare)`, p.status, p.body));
    }
    stopIfInterrupted();
    await to("prepared");
    await failpoint("migrate.prepared");
    const committing = advance(j, "committed", clock.now());
    const commit = await journal.commitPoint(
      (map) => commitLayout(map, change, clock.now(), owner.term),
      committing,
      "the sources stay fenced (no writes are lost); `shardctl migrations --recover` finishes it when the store answers",
    );
    if (!commit.ok) throw new StepError(commit.why);
    committedMap = commit.map;
    j = committing;
  } catch (err) {
    if (err instanceof TakenOverError) throw err;
    // the store may hold the commit: neither roll back nor forward (recovery decides from the journal)
    if (err instanceof CommitOutcomeUnknownError) throw err;
    return abort(stepFailure(err, vm.map.nodes));
  }
  await failpoint("migrate.committed");
  log(`migration ${id}: committed: ${what}`);
  const fenceAt = j.phaseAt.fenced ?? clock.now();
  const fwd = await rollForwardLayout(rpc, j, committedMap);
  journal.stopHeartbeat();
  if (fwd.problems.length) {
    j = { ...j, rollForwardPending: fwd.problems.join("; ") };
    await journal.save().catch(() => undefined);
    throw new ChangeLeftOpenError(
      `${what} committed, but: ${j.rollForwardPending}`,
      "no data is lost; `shardctl migrations --recover` rolls it forward when the agents answer",
      true,
    );
  }
  const now = clock.now();
  j = endRecord(j, "done", now, { writePauseMs: elapsedMs(fenceAt, fwd.servingAt) });
  await journal
    .save()
    .catch((err) =>
      log(`migration ${id}: done, but the journal could not record it: ${(err as Error).message}`),
    );
  log(
    `migration ${id}: done; write pause ${describePause(j.writePauseMs)}, ${j.entriesCopied} entries copied`,
  );
  return j;
}

export function describeChange(op: LayoutOp, change: LayoutChange): string {
  if (op.kind === "split") {
    const pieces = op.pieces
      .slice(1)
      .map((p) => `${p.id}${change.pieceNodes[p.id] !== op.node ? ` on ${change.pieceNodes[p.id]}` : ""}`);
    return `split of ${op.shard} (${change.nodes[op.shard]}) into ${op.shard} + ${pieces.join(" + ")}`;
  }
  return `merge of ${op.shards.join(" + ")} into ${op.shards[0]} (${change.nodes[op.shards[0]]})`;
}

function nodeOf(map: LocationMap, id: string | undefined): NodeInfo | undefined {
  return id === undefined ? undefined : map.nodes.find((n) => n.id === id);
}

/** The agents' side of the commit: targets serve their new ranges, sources are reshaped or redirect. Idempotent. */
export async function rollForwardLayout(
  rpc: AgentRpc,
  j: MigrationRecord,
  map: LocationMap,
): Promise<{ problems: string[]; servingAt: number }> {
  const change = j.layout!;
  const problems: string[] = [];
  const op = change.op;
  const shardIn = (id: string) => map.shards.find((s) => s.id === id);
  const targets = op.kind === "split" ? op.pieces.slice(1).map((p) => p.id) : [op.shards[0]];
  for (const t of targets) {
    const s = shardIn(t);
    const n = nodeOf(map, s?.node);
    if (!s || !n) {
      problems.push(`${t} is not in the map any more`);
      continue;
    }
    const r = await rpc
      .json(n.address, "POST", `/v1/admin/shards/${encodeURIComponent(t)}/import-commit`, {
        epoch: s.epoch,
        migration: j.id,
        ranges: s.ranges,
      })
      .catch((err) => ({ status: 0, body: { message: (err as Error).message } }));
    if (r.status !== 200) problems.push(failText(`import-commit of ${t} on ${n.id}`, r.status, r.body));
  }
  const servingAt = Date.now();
  if (op.kind === "split") {
    const s = shardIn(op.shard);
    const n = nodeOf(map, change.nodes[op.shard]);
    if (s && n) {
      const r = await rpc
        .json(n.address, "POST", `/v1/admin/shards/${encodeURIComponent(op.shard)}/reshape`, {
          epoch: s.epoch,
          migration: j.id,
          ranges: s.ranges,
        })
        .catch((err) => ({ status: 0, body: { message: (err as Error).message } }));
      if (r.status !== 200) problems.push(failText(`reshape of ${op.shard} on ${n.id}`, r.status, r.body));
    }
  } else {
    const kept = shardIn(op.shards[0]);
    const keptNode = nodeOf(map, kept?.node);
    for (const id of op.shards.slice(1)) {
      const n = nodeOf(map, change.nodes[id]);
      if (!n || !kept || !keptNode) continue;
      const r = await rpc
        .shardAction(n.address, id, "release", {
          epoch: kept.epoch,
          redirect: { node: keptNode.id, address: keptNode.address, epoch: kept.epoch },
        })
        .catch((err) => ({ status: 0, body: { message: (err as Error).message } }));
      // (404 unknown-shard: an agent restarted since an earlier release removed the copy, its id
      // being out of the map: nothing is left to release)
      const gone = r.status === 404 && (r.body as { error?: unknown } | undefined)?.error === "unknown-shard";
      if (r.status !== 200 && !gone) problems.push(failText(`release of ${id} on ${n.id}`, r.status, r.body));
    }
  }
  // (as a move's roll-forward: the agents are done, the record is not)
  await failpoint("migrate.activated");
  return { problems, servingAt };
}

/** Undoes a layout change that did not commit. Each step is refused by agents a newer migration holds. */
export async function rollBackLayout(
  rpc: AgentRpc,
  j: MigrationRecord,
  map: LocationMap,
  /** New pieces the coordinator knows were never created (their `receive` never reached the target). */
  neverReached: ReadonlySet<string> = new Set(),
): Promise<string[]> {
  const change = j.layout!;
  const op = change.op;
  const problems: string[] = [];
  const ok = (r: { status: number; body: unknown }) => {
    const code = (r.body as { error?: string } | undefined)?.error ?? "";
    return (
      r.status === 200 ||
      r.status === 404 ||
      (r.status === 409 &&
        ["another-migration", "not-owner", "stale-epoch", "still-owned", "no-import"].includes(code))
    );
  };
  const call = async (what: string, fn: () => Promise<{ status: number; body: unknown }>) => {
    const r = await fn().catch((err) => ({ status: 0, body: { message: (err as Error).message } }));
    if (!ok(r)) problems.push(failText(what, r.status, r.body));
  };
  if (op.kind === "split") {
    for (const p of op.pieces.slice(1)) {
      const n = nodeOf(map, change.pieceNodes[p.id]);
      if (n && !neverReached.has(p.id))
        await call(`drop of ${p.id} on ${n.id}`, () =>
          rpc.json(n.address, "DELETE", `/v1/admin/shards/${encodeURIComponent(p.id)}`, {
            epoch: 1,
            migration: j.id,
          }),
        );
    }
  } else {
    const n = nodeOf(map, change.nodes[op.shards[0]]);
    if (n)
      await call(`import-abort on ${op.shards[0]}`, () =>
        rpc.json(n.address, "POST", `/v1/admin/shards/${encodeURIComponent(op.shards[0])}/import-abort`, {
          epoch: 1,
          migration: j.id,
        }),
      );
  }
  const sources = op.kind === "split" ? [op.shard] : op.shards.slice(1);
  for (const s of sources) {
    const n = nodeOf(map, change.nodes[s]);
    if (n)
      await call(`unfence of ${s} on ${n.id}`, () =>
        rpc.shardAction(n.address, s, "unfence", { epoch: change.epochs[s], migration: j.id }),
      );
  }
  return problems;
}

/**
 * A split or merge that stopped after it changed something, for recovery to finish: committed
 * with its roll-forward pending (the map has the new layout), or aborted with its roll-back
 * pending (its shards stay fenced until then). Not "nothing was changed", whatever stopped it.
 */
export class ChangeLeftOpenError extends UserError {
  constructor(
    message: string,
    hint: string,
    /** The map has the change (its roll-forward is pending), rather than its roll-back. */
    readonly committed: boolean,
  ) {
    super(message, { hint });
    this.name = "ChangeLeftOpenError";
  }
}

/**
 * Carries a layout diff out op by op (Lsmm.triggerResharding's `execute`):
 * each split or merge is one migration. Stops at the first failure, which is
 * reported; the changes before it stay committed.
 */
export async function executeLayoutDiff(
  diff: LayoutDiff,
  deps: MigrateDeps,
  /**
   * The map version the diff was computed against: the first change refuses
   * to start on another one (a PreconditionError, nothing done). Later changes
   * run on the versions the earlier ones wrote.
   */
  planVersion?: number,
  /**
   * Why to stop before the next change (the autopilot shutting down or deposed), checked between
   * changes only: unlike `deps.interrupted`, it lets the change in flight finish.
   */
  between?: () => string | undefined,
): Promise<{
  appliedVersion?: number;
  notApplied?: string;
  /** The first change found the map moved on since the diff (nothing was done). */
  stalePlan?: boolean;
  /** The change that stopped it found its shards held by another migration (nothing of it was done). */
  busy?: boolean;
  /** What to do about the change that stopped it (its error's hint). */
  hint?: string;
  /** The change that stopped it left its shards fenced or its roll-forward pending (recovery finishes it). */
  leftOpen?: boolean;
  records: MigrationRecord[];
}> {
  const records: MigrationRecord[] = [];
  for (const [i, op] of diff.ops.entries()) {
    const stop = i > 0 ? (deps.interrupted?.() ?? between?.()) : undefined;
    if (stop) {
      // the changes before stay committed; the next one is not started
      return {
        appliedVersion: (await deps.store.load({ consistent: true }))?.version,
        notApplied: `${i} of ${diff.ops.length} change(s) done; then ${stop}: the rest was not started`,
        records,
      };
    }
    try {
      records.push(await executeLayoutChange({ op, planVersion: i === 0 ? planVersion : undefined }, deps));
    } catch (err) {
      const v = (await deps.store.load({ consistent: true }))?.version;
      const open = err instanceof ChangeLeftOpenError;
      return {
        // a change committed before it stopped is applied too (its roll-forward is pending)
        appliedVersion: records.length || (open && err.committed) ? v : undefined,
        ...(open ? { leftOpen: true } : {}),
        notApplied: `${i} of ${diff.ops.length} change(s) done; then: ${(err as Error).message}`,
        ...(err instanceof StalePlanError ? { stalePlan: true } : {}),
        ...(err instanceof ShardBusyError ? { busy: true } : {}),
        ...(err instanceof UserError && err.hint ? { hint: err.hint } : {}),
        records,
      };
    }
  }
  return { appliedVersion: (await deps.store.load({ consistent: true }))?.version, records };
}

export interface Move {
  shard: string;
  source: string;
  target: string;
  /** A split whose new piece goes to `target` (a plan's "split then move"). */
  split?: { op: LayoutOp; piece: string };
}

/** A plan's steps as moves: a split and the move of its new piece become one step. */
export function movesOfPlan(plan: MigrationPlan): Move[] {
  const out: Move[] = [];
  const consumed = new Set<number>();
  plan.steps.forEach((s, i) => {
    if (consumed.has(i)) return;
    if (s.kind === "move") {
      out.push({ shard: s.shard, source: s.source, target: s.target });
      return;
    }
    const op = s.diff.ops[0];
    if (!op || op.kind !== "split")
      throw new PreconditionError(`plan step ${i + 1} is a split without its layout change`);
    const k = plan.steps.findIndex((m, j) => j > i && m.kind === "move" && m.shard === s.newShard);
    const target = k >= 0 ? (plan.steps[k] as { target: string }).target : s.node;
    if (k >= 0) consumed.add(k);
    out.push({ shard: s.shard, source: s.node, target, split: { op, piece: s.newShard } });
  });
  return out;
}
