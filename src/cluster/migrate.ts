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
 * The journal is, for now, a JSON file `<dataDir>/migrations/<id>.json`
 * written atomically (writeAtomic), not a record in the location store:
 * the commit point is therefore the map CAS alone, and the journal's
 * "committed" is written right after it (recoveryAction decides from the map).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { PreconditionError, UserError } from "../errors.js";
import type { NodeInfo, ShardInfo } from "../engine/location-map.js";
import {
  advance,
  commitMap,
  newJournal,
  type MigrationJournal,
  type MigrationPhase,
} from "../engine/migration.js";
import { checkPlanFresh } from "../engine/planner.js";
import type { Clock, LocationStore } from "../engine/ports.js";
import { writeAtomic } from "../store/embedded.js";
import type { AgentRpc } from "./agent-rpc.js";

/** The journal plus what the history shows (`shardctl migrations`). */
export interface MigrationRecord extends MigrationJournal {
  /** ms the shard refused writes: fence → target activated. */
  writePauseMs?: number;
  entriesCopied: number;
  /** Pre-copy rounds before the fence. */
  rounds: number;
  endedAt?: number;
  /** ms spent in each phase (derived from phaseAt). */
  phaseMs?: Partial<Record<MigrationPhase, number>>;
  /** Set when a step after the commit point failed: recovery must roll forward. */
  rollForwardPending?: string;
}

export interface MigrateDeps {
  store: LocationStore;
  rpc: AgentRpc;
  clock: Clock;
  /** Progress lines (stderr in the CLI). */
  log: (msg: string) => void;
  /** Where the journal files live: <dir>/<id>.json. */
  journalDir: string;
}

export interface MigrateOptions {
  shard: string;
  target: string;
  /** The map version a plan was made for; refused (exit 3) if the map moved on. */
  planVersion?: number;
  /** Pre-copy ends when the source is fewer than this many entries ahead (default 1000). */
  lagThreshold?: number;
  /** At most this many pre-copy rounds before fencing anyway (default 50). */
  maxRounds?: number;
  /** Entries per log request (default 5000). */
  batchEntries?: number;
  /** Progress callback (bytes, lag, phase). */
  onProgress?: (p: { phase: MigrationPhase; bytes: number; lag: number }) => void;
}

export function journalPath(dir: string, id: string): string {
  return join(dir, `${id}.json`);
}

function saveJournal(dir: string, j: MigrationRecord): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeAtomic(journalPath(dir, j.id), JSON.stringify(j, null, 2) + "\n");
}

/** Every journaled migration, oldest first; unreadable files are reported, not hidden. */
export function listMigrations(dir: string): { records: MigrationRecord[]; unreadable: string[] } {
  const records: MigrationRecord[] = [];
  const unreadable: string[] = [];
  if (!existsSync(dir)) return { records, unreadable };
  for (const name of readdirSync(dir).sort()) {
    if (!name.endsWith(".json")) continue;
    try {
      const r = JSON.parse(readFileSync(join(dir, name), "utf8")) as MigrationRecord;
      if (typeof r.id !== "string" || typeof r.phase !== "string") throw new Error("not a journal");
      records.push(r);
    } catch {
      unreadable.push(name);
    }
  }
  records.sort((a, b) => a.startedAt - b.startedAt);
  return { records, unreadable };
}

function phaseDurations(j: MigrationJournal): Partial<Record<MigrationPhase, number>> {
  const entries = Object.entries(j.phaseAt).sort((a, b) => (a[1] ?? 0) - (b[1] ?? 0)) as [
    MigrationPhase,
    number,
  ][];
  const out: Partial<Record<MigrationPhase, number>> = {};
  for (let i = 0; i + 1 < entries.length; i++) out[entries[i][0]] = entries[i + 1][1] - entries[i][1];
  return out;
}

class StepError extends Error {}

function failText(what: string, status: number, body: unknown): string {
  const b = body as { error?: string; message?: string } | undefined;
  return `${what} answered ${status} ${b?.error ?? ""}: ${b?.message ?? JSON.stringify(body)}`;
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
  const e = shard.epoch;
  const id = `${new Date(clock.now()).toISOString().replace(/[-:.]/g, "").slice(0, 15)}-${shard.id}-${Math.random().toString(36).slice(2, 8)}`;
  let j: MigrationRecord = {
    ...newJournal({ id, shard, target: target.id, planVersion: vm.version, term: 0, now: clock.now() }),
    entriesCopied: 0,
    rounds: 0,
  };
  const save = () => saveJournal(deps.journalDir, j);
  const to = (phase: MigrationPhase, patch: Partial<MigrationRecord> = {}) => {
    j = { ...j, ...advance(j, phase, clock.now(), patch), ...patch } as MigrationRecord;
    save();
  };
  save();
  log(`migration ${id}: ${shard.id} ${source.id} → ${target.id} at epoch ${e}`);
  const enc = encodeURIComponent(shard.id);
  let fenced = false;
  let targetCreated = false;
  let next = 1;
  let lastSourceLsn = 0;

  /** Copies one chunk; returns the lag (source last LSN − copied). */
  const copyChunk = async (): Promise<number> => {
    const r = await rpc.request(
      source.address,
      "GET",
      `/v1/shards/${enc}/log?from=${next}&max=${opts.batchEntries ?? 5000}`,
    );
    if (r.status !== 200)
      throw new StepError(failText(`source ${source.id} (log)`, r.status, tryJson(r.body)));
    lastSourceLsn = Number(r.headers["x-last-lsn"]);
    const n = Number(r.headers["x-entries"]);
    if (n > 0) {
      const a = await rpc.request(target.address, "POST", `/v1/admin/shards/${enc}/append`, {
        headers: { "content-type": "application/octet-stream", "x-shard-epoch": String(e) },
        body: r.body,
      });
      if (a.status !== 200)
        throw new StepError(failText(`target ${target.id} (append)`, a.status, tryJson(a.body)));
      next += n;
      j.bytesCopied += r.body.length;
      j.entriesCopied += n;
    }
    const lag = lastSourceLsn - (next - 1);
    opts.onProgress?.({ phase: j.phase, bytes: j.bytesCopied, lag });
    return lag;
  };

  const abort = async (why: string): Promise<never> => {
    log(`migration ${id}: ABORT: ${why}`);
    const problems: string[] = [];
    if (fenced) {
      const u = await rpc.shardAction(source.address, shard.id, "unfence", { epoch: e }).catch((err) => ({
        status: 0,
        body: { message: (err as Error).message },
      }));
      if (u.status !== 200) problems.push(failText(`unfence on ${source.id}`, u.status, u.body));
    }
    if (targetCreated) {
      const d = await rpc
        .json(target.address, "DELETE", `/v1/admin/shards/${enc}`, { epoch: e })
        .catch((err) => ({ status: 0, body: { message: (err as Error).message } }));
      if (d.status !== 200 && d.status !== 404)
        problems.push(failText(`drop on ${target.id}`, d.status, d.body));
    }
    const now = clock.now();
    j = {
      ...advance(j, "aborted", now),
      entriesCopied: j.entriesCopied,
      rounds: j.rounds,
      error: why + (problems.length ? `; cleanup failed: ${problems.join("; ")}` : ""),
      endedAt: now,
    };
    j.phaseMs = phaseDurations(j);
    save();
    throw new UserError(`migration of ${shard.id} to ${target.id} aborted: ${j.error}`, {
      hint: problems.length
        ? "the cleanup did not finish: check the agents, then unfence the source / drop the target copy by hand"
        : `${shard.id} is still served by ${source.id} at epoch ${e} with all its data; fix the cause and re-run`,
    });
  };

  try {
    const rcv = await rpc.json(target.address, "POST", `/v1/admin/shards/${enc}/receive`, {
      epoch: e,
      ranges: shard.ranges,
      migrationTimestamp: shard.migrationTimestamp,
    });
    if (rcv.status !== 201 && rcv.status !== 200)
      throw new StepError(failText(`target ${target.id} (receive)`, rcv.status, rcv.body));
    targetCreated = true;
    to("copying");
    const threshold = opts.lagThreshold ?? 1000;
    for (;;) {
      j.rounds++;
      const lag = await copyChunk();
      if (lag < threshold || j.rounds >= (opts.maxRounds ?? 50)) break;
    }
    log(
      `migration ${id}: pre-copied ${j.entriesCopied} entries (${j.bytesCopied} bytes) in ${j.rounds} rounds`,
    );
    const f = await rpc.shardAction(source.address, shard.id, "fence", { epoch: e });
    if (f.status !== 200) throw new StepError(failText(`source ${source.id} (fence)`, f.status, f.body));
    fenced = true;
    const fencedLsn = (f.body as { lsn: number }).lsn;
    to("fenced", { fencedLsn });
    log(`migration ${id}: source fenced at LSN ${fencedLsn}; catching up`);
    while (next - 1 < fencedLsn) {
      await copyChunk();
      if (lastSourceLsn !== fencedLsn)
        throw new StepError(`the fenced source moved from LSN ${fencedLsn} to ${lastSourceLsn}`);
    }
    const c = await rpc.json<{ checksum: string }>(
      source.address,
      "GET",
      `/v1/shards/${enc}/checksum?upto=${fencedLsn}`,
    );
    if (c.status !== 200) throw new StepError(failText(`source ${source.id} (checksum)`, c.status, c.body));
    const p = await rpc.json<{ vote?: string }>(target.address, "POST", `/v1/admin/shards/${enc}/prepare`, {
      epoch: e,
      lastLsn: fencedLsn,
      checksum: c.body.checksum,
    });
    if (p.status !== 200 || p.body.vote !== "commit")
      throw new StepError(failText(`target ${target.id} (prepare)`, p.status, p.body));
    to("prepared", { checksum: c.body.checksum });
    log(`migration ${id}: target prepared (checksum ${c.body.checksum}); committing`);
    // the commit point: one CAS of the map, read consistently
    const cur = await store.load({ consistent: true });
    if (!cur) throw new StepError("the location map disappeared");
    let nextMap;
    try {
      nextMap = commitMap(cur.map, j, clock.now());
    } catch (err) {
      throw new StepError((err as Error).message);
    }
    let cas;
    try {
      cas = await store.compareAndSet(cur.version, nextMap);
    } catch (err) {
      // outcome unknown: decide from the map (failure matrix row "commit txn sent, outcome unknown")
      const after = await store.load({ consistent: true }).catch(() => null);
      const s = after?.map.shards.find((x) => x.id === shard.id);
      if (!(s && s.node === target.id && s.epoch === e + 1))
        throw new StepError(`the commit was refused: ${(err as Error).message}`);
      cas = { ok: true as const, version: after!.version };
    }
    if (!cas.ok)
      throw new StepError(
        `the location map changed during the migration (version ${cur.version} → ${cas.currentVersion}); the commit was refused`,
      );
  } catch (err) {
    if (err instanceof StepError) return abort(err.message);
    return abort(`unexpected: ${(err as Error).message}`);
  }

  // after the commit point: roll forward only
  const committedAt = clock.now();
  to("committed");
  log(`migration ${id}: committed: ${shard.id} is on ${target.id} at epoch ${e + 1}`);
  const problems: string[] = [];
  const retry = async (what: string, fn: () => Promise<{ status: number; body: unknown }>) => {
    let last = "";
    for (let i = 0; i < 5; i++) {
      try {
        const r = await fn();
        if (r.status === 200) return true;
        last = failText(what, r.status, r.body);
      } catch (err) {
        last = `${what}: ${(err as Error).message}`;
      }
      await new Promise((res) => setTimeout(res, 50 * 2 ** i));
    }
    problems.push(last);
    return false;
  };
  const nextMts = (await store.load({ consistent: true }))?.map.shards.find(
    (s) => s.id === shard.id,
  )?.migrationTimestamp;
  const activated = await retry(`activate on ${target.id}`, () =>
    rpc.json(target.address, "POST", `/v1/admin/shards/${enc}/activate`, {
      epoch: e,
      migrationTimestamp: nextMts ?? committedAt,
    }),
  );
  const activatedAt = clock.now();
  await retry(`release on ${source.id}`, () =>
    rpc.shardAction(source.address, shard.id, "release", {
      epoch: e + 1,
      redirect: { node: target.id, address: target.address, epoch: e + 1 },
    }),
  );
  const fenceAt = j.phaseAt.fenced ?? committedAt;
  if (problems.length) {
    j = { ...j, rollForwardPending: problems.join("; ") };
    save();
    throw new UserError(
      `migration ${id} of ${shard.id} committed (the map has it on ${target.id} at epoch ${e + 1}) but: ${j.rollForwardPending}`,
      {
        hint: "no data is lost; bring the agents back and re-run the cutover steps (recovery rolls forward)",
      },
    );
  }
  const now = clock.now();
  j = {
    ...advance(j, "done", now),
    entriesCopied: j.entriesCopied,
    rounds: j.rounds,
    writePauseMs: activated ? activatedAt - fenceAt : undefined,
    endedAt: now,
  };
  j.phaseMs = phaseDurations(j);
  save();
  log(`migration ${id}: done; write pause ${j.writePauseMs} ms, ${j.bytesCopied} bytes copied`);
  return j;
}

function tryJson(b: Buffer): unknown {
  try {
    return JSON.parse(b.toString("utf8"));
  } catch {
    return { message: b.toString("utf8").slice(0, 200) };
  }
}
