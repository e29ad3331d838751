/**
 * ConsulStore: the LocationStore over Consul KV.
 *
 * - The version is the meta key's ModifyIndex.
 * - A write is one transaction that check-and-sets the meta key against the
 *   version read, writes the new immutable chunks and deletes the chunks no
 *   longer referenced. When that would exceed 64 operations or Consul's
 *   512 KiB request limit, the new chunks are written first (under names no
 *   one else uses, so they are invisible garbage until referenced), then one
 *   transaction CASes the meta to point at them, then the old chunks are
 *   collected. A lost race writes nothing and returns {ok:false}.
 * - Fencing: a write carrying a leadership term (> 0) must carry the current
 *   term (the `<prefix>term` key); the transaction re-checks that key's
 *   ModifyIndex, so a term taken over between the check and the commit also
 *   fails. A deposed leader's late write is refused (StaleTermError). The same
 *   holds for migration journal writes that carry a term (the autopilot's):
 *   a deposed leader can neither start, advance nor take over a migration.
 * - Reads validate everything (chunk checksums, the map checksum, validateMap):
 *   a corrupt or foreign value under the prefix is a clear UserError.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { CorruptLocationMapError, PreconditionError, UserError } from "../errors.js";
import { validateMap, type LocationMap, type VersionedMap } from "../engine/location-map.js";
import type {
  CasResult,
  LoadOptions,
  LocationStore,
  MigrationPutResult,
  MigrationWrite,
  StoredMigration,
} from "../engine/ports.js";
import { checkRecord, endedBeyondHistory, isTerminal, looksLikeRecord } from "../engine/migration.js";
import { blockingLoop } from "./blocking.js";
import {
  CorruptMapError,
  decodeMap,
  encodeMap,
  parseMeta,
  renderMeta,
  type ChunkRef,
  type MetaDoc,
} from "./codec.js";
import {
  CONSUL_MAX_TXN_BYTES,
  CONSUL_MAX_TXN_OPS,
  txnOpBytes,
  type ConsulHttp,
  type KvRead,
  type TxnOp,
} from "./http.js";
import { consulKeys, type ConsulKeys } from "./keys.js";

/** Orphan chunks (from a writer that died between its chunk writes and its commit) older than this are collected. */
export const ORPHAN_CHUNK_AGE_MS = 10 * 60 * 1000;
const TXN_BUDGET_BYTES = CONSUL_MAX_TXN_BYTES - 32 * 1024;

export class StaleTermError extends PreconditionError {
  constructor(
    readonly writerTerm: number,
    readonly currentTerm: number,
    /** What was refused: a map write (commits included) or a migration journal write. */
    readonly what: "map" | "journal" = "map",
  ) {
    const write = what === "map" ? "a map write" : "a migration journal write";
    super(
      writerTerm < currentTerm
        ? `refused ${write} from leadership term ${writerTerm}: term ${currentTerm} has taken over (this writer was deposed); nothing was written`
        : `refused ${write} from leadership term ${writerTerm}: the current term is ${currentTerm}; nothing was written`,
      { hint: "only the current autopilot leader may write with a term; `shardctl status` shows who leads" },
    );
    this.name = "StaleTermError";
  }
}

export interface ConsulStoreOptions {
  http: ConsulHttp;
  prefix: string;
  /** Watch errors (Consul unreachable, a corrupt map) are reported here; the watch carries on. */
  onWatchError?: (err: unknown) => void;
  /** Blocking query wait, seconds (default 60). */
  watchWaitS?: number;
  now?: () => number;
}

export interface TermRecord {
  term: number;
  holder: string;
  since: number;
}

export class ConsulStore implements LocationStore {
  readonly kind = "consul" as const;
  readonly keys: ConsulKeys;
  readonly http: ConsulHttp;
  private readonly now: () => number;
  /** Counts writes so that old chunk names stay unique within one process. */
  private writeSeq = 0;
  /**
   * The meta this client last read or wrote, by version. A CAS against that
   * version reuses it instead of reading the meta again: the transaction's
   * check-and-set on the ModifyIndex still refuses the write if it is stale.
   */
  private lastMeta?: { version: number; meta: MetaDoc };
  /** Same for the term record (the transaction re-checks its ModifyIndex). */
  private lastTerm?: { term: number; modifyIndex: number };

  constructor(private readonly opts: ConsulStoreOptions) {
    this.http = opts.http;
    this.keys = consulKeys(opts.prefix);
    this.now = opts.now ?? Date.now;
  }

  async load(opts: LoadOptions = {}): Promise<VersionedMap | null> {
    // A chunk can vanish between a concurrent writer's commit and our read of
    // the old meta only if we read meta and chunks apart; the recursive GET is
    // one snapshot, so a missing chunk is retried once, then reported.
    for (let attempt = 0; ; attempt++) {
      const tree = await this.http.kvTree(this.keys.mapDir, { consistent: opts.consistent });
      const metaEntry = tree.entries.find((e) => e.Key === this.keys.meta);
      if (!metaEntry) {
        const foreign = tree.entries.filter((e) => !e.Key.startsWith(this.keys.chunksDir));
        if (foreign.length) throw this.corrupt(`${foreign[0].Key} is not a key shardctl writes`);
        // A recursive GET hides keys the token may not read (404, no header);
        // a GET of the key itself answers 403 then: "no map" must not be a
        // disguised "not allowed".
        const direct = await this.http.kvGet(this.keys.meta, { consistent: opts.consistent });
        if (direct.entry) {
          if (attempt < 3) continue; // created in between: read again
          throw this.corrupt(`${this.keys.meta} is readable alone but not in its folder`);
        }
        return null;
      }
      // (beside a meta too: a key shardctl does not write under map/ is damage, as without one)
      const foreign = tree.entries.find(
        (e) => e.Key !== this.keys.meta && !e.Key.startsWith(this.keys.chunksDir),
      );
      if (foreign) throw this.corrupt(`${foreign.Key} is not a key shardctl writes`);
      try {
        const meta = parseMeta(metaEntry.value);
        const chunks = new Map(tree.entries.map((e) => [e.Key, e.value] as const));
        const map = decodeMap(meta, chunks);
        this.lastMeta = { version: metaEntry.ModifyIndex, meta };
        return { map, version: metaEntry.ModifyIndex };
      } catch (err) {
        if (err instanceof CorruptMapError) {
          if (err.missingChunk && attempt === 0) continue;
          throw this.corrupt(err.why);
        }
        throw err;
      }
    }
  }

  async compareAndSet(
    expectedVersion: number,
    next: LocationMap,
    opts: { migration?: MigrationWrite } = {},
  ): Promise<CasResult> {
    if (opts.migration) checkRecord(opts.migration.record);
    validateMap(next);
    if (!Number.isInteger(expectedVersion) || expectedVersion < 0) {
      throw new Error(`bug: expected version must be a non-negative integer, got ${expectedVersion}`);
    }
    const encoded = encodeMap(next);
    const cachedMeta =
      this.lastMeta?.version === expectedVersion && expectedVersion > 0 ? this.lastMeta.meta : undefined;
    const cachedTerm = next.term > 0 && this.lastTerm?.term === next.term ? this.lastTerm : undefined;
    const [metaRead, termRead] = await Promise.all([
      cachedMeta ? Promise.resolve(null) : this.http.kvGet(this.keys.meta, { consistent: true }),
      next.term > 0 && !cachedTerm
        ? this.http.kvGet(this.keys.term, { consistent: true })
        : Promise.resolve(null),
    ]);
    // Fencing by leadership term, checked first: a deposed leader hears that
    // it was deposed, not that it lost a race.
    const termGuard: TxnOp[] = [];
    if (next.term > 0) {
      let stored = cachedTerm;
      if (!stored) {
        const rec = termRead?.entry ? this.parseTerm(termRead.entry.value) : null;
        stored = { term: rec?.term ?? 0, modifyIndex: termRead?.entry?.ModifyIndex ?? 0 };
      }
      if (next.term !== stored.term) throw new StaleTermError(next.term, stored.term);
      this.lastTerm = stored;
      termGuard.push({ verb: "check-index", key: this.keys.term, index: stored.modifyIndex });
    }
    if (metaRead) {
      const currentVersion = metaRead.entry?.ModifyIndex ?? 0;
      if (currentVersion !== expectedVersion) return { ok: false, currentVersion };
    }
    const current = cachedMeta ?? (metaRead?.entry ? this.parseCurrentMeta(metaRead) : null);
    if (current && next.term > 0 && current.term > next.term)
      throw new StaleTermError(next.term, current.term);

    // Chunks: reuse stored ones with the same content, write the rest under fresh names.
    const oldBySum = new Map<string, ChunkRef>();
    for (const c of current?.chunks ?? []) oldBySum.set(c.sum, c);
    const writeId = this.newWriteId();
    const refs: ChunkRef[] = [];
    const fresh: { key: string; value: string }[] = [];
    encoded.chunks.forEach((chunk, i) => {
      const reused = oldBySum.get(chunk.sum);
      if (reused && reused.n === chunk.n) {
        refs.push(reused);
        return;
      }
      const key = `${this.keys.chunksDir}${writeId}-${i}`;
      fresh.push({ key, value: chunk.value });
      refs.push({ key, sum: chunk.sum, n: chunk.n });
    });
    const metaText = renderMeta(encoded.meta, refs);
    const referenced = new Set(refs.map((r) => r.key));
    const dead = (current?.chunks ?? []).map((c) => c.key).filter((k) => !referenced.has(k));

    const metaOp: TxnOp = { verb: "cas", key: this.keys.meta, value: metaText, index: expectedVersion };
    // The commit point of a migration: its journal record goes in the same transaction as the meta.
    const journalOps: TxnOp[] = opts.migration ? [this.migrationOp(opts.migration)] : [];
    const freshOps: TxnOp[] = fresh.map((f) => ({ verb: "set", key: f.key, value: f.value }));
    const deleteOps: TxnOp[] = dead.map((key) => ({ verb: "delete", key }));
    const single = [...termGuard, metaOp, ...journalOps, ...freshOps, ...deleteOps];
    const fitsOne = fitsOneTxn(single);

    let ops: TxnOp[];
    let laterDeletes: string[] = [];
    if (fitsOne) {
      ops = single;
    } else {
      // Too big for one transaction: write the new chunks first (nobody reads
      // them until the meta points at them), then commit the pointer.
      await runLimited(fresh, 4, (f) => this.http.kvPut(f.key, f.value).then(() => undefined));
      const room = CONSUL_MAX_TXN_OPS - termGuard.length - 1 - journalOps.length;
      ops = [...termGuard, metaOp, ...journalOps, ...deleteOps.slice(0, room)];
      laterDeletes = dead.slice(room);
    }

    let result;
    try {
      result = await this.http.txn(ops);
    } catch (err) {
      // Outcome unknown (e.g. the connection dropped): the pre-written chunks
      // may now be referenced, so they are left for the orphan sweep.
      this.lastMeta = undefined;
      this.lastTerm = undefined;
      throw err;
    }
    if (!result.ok) {
      if (!fitsOne) await this.deleteKeys(fresh.map((f) => f.key)).catch(() => undefined);
      this.lastMeta = undefined;
      const termFailed = termGuard.length > 0 && result.errors.some((e) => e.opIndex === 0);
      if (termFailed) {
        this.lastTerm = undefined;
        const latest = await this.readTerm();
        throw new StaleTermError(next.term, latest?.term ?? 0);
      }
      const now = await this.http.kvGet(this.keys.meta, { consistent: true });
      return { ok: false, currentVersion: now.entry?.ModifyIndex ?? 0 };
    }
    const written = result.results.find((r) => r.Key === this.keys.meta);
    if (!written) throw new Error("bug: Consul's transaction result does not include the meta key");
    if (laterDeletes.length) await this.deleteKeys(laterDeletes).catch(() => undefined);
    this.lastMeta = { version: written.ModifyIndex, meta: JSON.parse(metaText) as MetaDoc };
    if (opts.migration) {
      const key = this.migrationKey(opts.migration.record.id);
      const rec = result.results.find((r) => r.Key === key);
      if (!rec) throw new Error("bug: Consul's transaction result does not include the journal record");
      return { ok: true, version: written.ModifyIndex, migrationRev: rec.ModifyIndex };
    }
    return { ok: true, version: written.ModifyIndex };
  }

  /**
   * The check that fences a journal write by term: the term key at the
   * ModifyIndex this client last saw for `term` (read once, consistently, when
   * not known), so a takeover after the check still fails the transaction.
   */
  private async termGuard(term: number): Promise<TxnOp[]> {
    let stored = this.lastTerm?.term === term ? this.lastTerm : undefined;
    if (!stored) {
      const read = await this.http.kvGet(this.keys.term, { consistent: true });
      const rec = read.entry ? this.parseTerm(read.entry.value) : null;
      stored = { term: rec?.term ?? 0, modifyIndex: read.entry?.ModifyIndex ?? 0 };
    }
    if (stored.term !== term) throw new StaleTermError(term, stored.term, "journal");
    this.lastTerm = stored;
    return [{ verb: "check-index", key: this.keys.term, index: stored.modifyIndex }];
  }

  private migrationKey(id: string): string {
    return `${this.keys.migrationsDir}${id}`;
  }

  private migrationOp(w: MigrationWrite): TxnOp {
    return {
      verb: "cas",
      key: this.migrationKey(w.record.id),
      value: JSON.stringify(w.record),
      index: w.expectRev,
    };
  }

  async putMigration(write: MigrationWrite): Promise<MigrationPutResult> {
    checkRecord(write.record);
    const key = this.migrationKey(write.record.id);
    const term = write.term ?? 0;
    const termGuard = term > 0 ? await this.termGuard(term) : [];
    let r;
    try {
      r = await this.http.txn([...termGuard, this.migrationOp(write)]);
    } catch (err) {
      this.lastTerm = undefined;
      throw err;
    }
    if (r.ok) {
      const e = r.results.find((x) => x.Key === key);
      if (!e) throw new Error("bug: Consul's transaction result does not include the journal record");
      // a migration ended (records end through here; a commit writes "committed"): keep the history bounded
      if (isTerminal(write.record.phase)) await this.trimJournal().catch(() => 0);
      return { ok: true, rev: e.ModifyIndex };
    }
    if (termGuard.length > 0 && r.errors.some((e) => e.opIndex === 0)) {
      this.lastTerm = undefined;
      const latest = await this.readTerm();
      throw new StaleTermError(term, latest?.term ?? 0, "journal");
    }
    const now = await this.http.kvGet(key, { consistent: true });
    return { ok: false, rev: now.entry?.ModifyIndex ?? 0 };
  }

  async getMigration(id: string): Promise<StoredMigration | null> {
    const r = await this.http.kvGet(this.migrationKey(id), { consistent: true });
    if (!r.entry) return null;
    let record: unknown;
    try {
      record = JSON.parse(r.entry.value);
    } catch {
      throw this.corruptJournal(id);
    }
    if (!looksLikeRecord(record)) throw this.corruptJournal(id);
    return { record, rev: r.entry.ModifyIndex };
  }

  async listMigrations(): Promise<{ records: StoredMigration[]; unreadable: string[] }> {
    const tree = await this.http.kvTree(this.keys.migrationsDir, { consistent: true });
    const records: StoredMigration[] = [];
    const unreadable: string[] = [];
    for (const e of tree.entries) {
      if (e.Key === this.keys.migrationsDir) continue;
      const id = e.Key.slice(this.keys.migrationsDir.length);
      try {
        const record: unknown = JSON.parse(e.value);
        if (looksLikeRecord(record) && record.id === id) records.push({ record, rev: e.ModifyIndex });
        else unreadable.push(id);
      } catch {
        unreadable.push(id);
      }
    }
    records.sort((a, b) => a.record.startedAt - b.record.startedAt);
    return { records, unreadable };
  }

  /**
   * Deletes the ended records beyond the newest JOURNAL_HISTORY, as the
   * embedded store drops them on write (endedBeyondHistory). Each delete is
   * conditional on the revision read, so a record written in between stays;
   * a record that cannot be read is never deleted (it is reported instead).
   * Returns how many went. The caller ignores failures: the next migration's
   * end trims again.
   */
  async trimJournal(): Promise<number> {
    const { records } = await this.listMigrations();
    const drop = endedBeyondHistory(records);
    const ops: TxnOp[] = drop.map((r) => ({
      verb: "delete-cas",
      key: this.migrationKey(r.record.id),
      index: r.rev,
    }));
    let deleted = 0;
    for (const batch of txnBatches(ops)) {
      const r = await this.http.txn(batch);
      if (r.ok) deleted += batch.length;
    }
    return deleted;
  }

  private corruptJournal(id: string): UserError {
    return new UserError(
      `the migration journal record ${this.migrationKey(id)} in Consul at ${this.http.addr} is not shardctl's`,
      {
        hint: `inspect it with \`consul kv get ${this.migrationKey(id)}\`; delete it if it is not a migration`,
      },
    );
  }

  async watch(onChange: (map: VersionedMap) => void, signal: AbortSignal): Promise<void> {
    let lastVersion = -1;
    await blockingLoop({
      signal,
      now: () => performance.now(),
      sleep: (ms, s) => sleep(ms, undefined, { signal: s }),
      fetch: (index, s) =>
        this.http.kvGet(this.keys.meta, { index, waitS: this.opts.watchWaitS ?? 60, signal: s }),
      onResult: async (read: KvRead) => {
        const version = read.entry?.ModifyIndex ?? 0;
        if (!read.entry || version === lastVersion) return;
        const vm = await this.load();
        if (vm && vm.version !== lastVersion) {
          lastVersion = vm.version;
          onChange(vm);
        }
      },
      onError: (err) => this.opts.onWatchError?.(err),
    });
  }

  async close(): Promise<void> {
    this.http.close();
  }

  /** The autopilot's memory of failed moves: one key, `<prefix>autopilot-memory`. */
  async loadAutopilotMemory(): Promise<string | undefined> {
    const read = await this.http.kvGet(this.keys.autopilotMemory, { consistent: true });
    return read.entry?.value;
  }

  async saveAutopilotMemory(text: string): Promise<void> {
    await this.http.kvPut(this.keys.autopilotMemory, text);
  }

  /** The leadership term record, or null before any leader took one. */
  async readTerm(): Promise<(TermRecord & { modifyIndex: number }) | null> {
    const r = await this.http.kvGet(this.keys.term, { consistent: true });
    if (!r.entry) return null;
    return { ...this.parseTerm(r.entry.value), modifyIndex: r.entry.ModifyIndex };
  }

  /**
   * Deletes chunks no meta refers to whose writer started more than
   * ORPHAN_CHUNK_AGE_MS ago (left by a writer that died before its commit)
   * and that no commit can refer to any more. Returns how many were deleted.
   *
   * A writer's commit CASes the meta at the version it read, before it wrote
   * its chunks; so a chunk created after the current meta may still be
   * committed (its writer may be paused, or its clock behind ours, making its
   * name look old) and is kept, while one created before the current meta
   * belongs to a write whose CAS can only fail.
   */
  async sweepOrphanChunks(): Promise<number> {
    const tree = await this.http.kvTree(this.keys.mapDir, { consistent: true });
    const metaEntry = tree.entries.find((e) => e.Key === this.keys.meta);
    if (!metaEntry) return 0; // a first write may be pending: nothing is provably dead
    const referenced = new Set<string>();
    for (const c of this.parseCurrentMeta({ entry: metaEntry, index: 0 }).chunks) referenced.add(c.key);
    const cutoff = this.now() - ORPHAN_CHUNK_AGE_MS;
    const orphans = tree.entries
      .filter((e) => e.Key.startsWith(this.keys.chunksDir) && !referenced.has(e.Key))
      .filter((e) => e.CreateIndex < metaEntry.ModifyIndex)
      .map((e) => e.Key)
      .filter((k) => {
        const ms = parseInt(k.slice(this.keys.chunksDir.length).split("-")[0], 36);
        return Number.isFinite(ms) && ms < cutoff;
      });
    await this.deleteKeys(orphans);
    return orphans.length;
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    for (const batch of txnBatches(keys.map((key) => ({ verb: "delete", key }) as TxnOp)))
      await this.http.txn(batch);
  }

  private parseCurrentMeta(read: KvRead): MetaDoc {
    try {
      return parseMeta(read.entry!.value);
    } catch (err) {
      if (err instanceof CorruptMapError) throw this.corrupt(err.why);
      throw err;
    }
  }

  parseTerm(text: string): TermRecord {
    let doc: TermRecord;
    try {
      doc = JSON.parse(text);
    } catch {
      throw this.corruptTerm("it is not JSON");
    }
    if (!doc || !Number.isInteger(doc.term) || doc.term < 0) throw this.corruptTerm("it holds no term");
    return { term: doc.term, holder: String(doc.holder ?? ""), since: Number(doc.since ?? 0) };
  }

  /** A new write's name for its chunks: base-36 ms (the orphan sweep reads the age from it) + random + a count. */
  private newWriteId(): string {
    return `${this.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}${(this.writeSeq++).toString(36)}`;
  }

  /**
   * The leadership term's key is damaged. It is not part of the map, so `init --force` (which
   * replaces a damaged map) leaves it as it is: the hint says how to write a term that deposes any
   * leader, above every term the map was written under.
   */
  private corruptTerm(why: string): UserError {
    return new UserError(
      `the autopilot's leadership term ${this.keys.term} in Consul at ${this.http.addr} is damaged (${why}); nothing was written`,
      {
        hint: `stop every \`shardctl autopilot\`, read the map's term (\`consul kv get ${this.keys.meta}\`, its "term"), and write one above it: \`consul kv put ${this.keys.term} '{"term": N, "holder": "", "since": 0}'\` with N = that term + 1`,
      },
    );
  }

  private corrupt(why: string): CorruptLocationMapError {
    return new CorruptLocationMapError(
      `the location map under ${this.keys.prefix} in Consul at ${this.http.addr} is corrupt or not shardctl's (${why}); nothing was written`,
      why,
      {
        hint: `inspect it with \`consul kv get -recurse ${this.keys.mapDir}\`; restore it from a backup, re-create the layout with \`shardctl --store consul init --force\` (it keeps a copy of the damaged keys), or use another prefix (SHARDCTL_CONSUL_PREFIX)`,
      },
    );
  }

  /**
   * `init --force` over a damaged map: every key under map/ is copied, byte for byte, under
   * `<prefix>corrupt/<time>/` (`keptAs`), then the new map is written in their place and the
   * damaged keys deleted. The copies go first (they change nothing that is read); the switch is
   * one transaction whose check on the damaged meta's index (or on its absence) and on the damaged
   * keys it deletes refuses it if anything changed meanwhile; then the copies and the new chunks
   * are deleted again and nothing is replaced. A map that loads again is not replaced either.
   */
  async replaceCorruptMap(
    next: LocationMap,
    now: number,
  ): Promise<{ version: number; keptAs: string; why: string }> {
    validateMap(next);
    let why: string;
    try {
      await this.load({ consistent: true });
      throw new PreconditionError(
        `the location map under ${this.keys.prefix} in Consul is no longer corrupt; nothing was changed`,
        { hint: "run the command again" },
      );
    } catch (err) {
      if (!(err instanceof CorruptLocationMapError)) throw err;
      why = err.why;
    }
    const tree = await this.http.kvTree(this.keys.mapDir, { consistent: true, raw: true });
    const stamp = new Date(now).toISOString().replace(/[-:.]/g, "");
    const keptAs = `${this.keys.prefix}corrupt/${stamp}-${Math.random().toString(36).slice(2, 8)}/`;
    const copies: TxnOp[] = tree.entries.map((e) => ({
      verb: "set",
      key: keptAs + e.Key.slice(this.keys.mapDir.length),
      value: e.base64 ?? "",
      encoding: "base64",
    }));
    for (const c of copies) {
      if (txnOpBytes(c) > TXN_BUDGET_BYTES)
        throw new UserError(
          `the damaged key ${this.keys.mapDir}${c.key.slice(keptAs.length)} is too large to keep a copy of in one Consul transaction; nothing was changed`,
          {
            hint: `save it yourself (\`consul kv get ${this.keys.mapDir}${c.key.slice(keptAs.length)}\`), delete it, and run init --force again`,
          },
        );
    }
    const encoded = encodeMap(next);
    const writeId = this.newWriteId();
    const fresh = encoded.chunks.map((chunk, i) => ({
      key: `${this.keys.chunksDir}${writeId}-${i}`,
      value: chunk.value,
      sum: chunk.sum,
      n: chunk.n,
    }));
    const metaText = renderMeta(
      encoded.meta,
      fresh.map(({ key, sum, n }) => ({ key, sum, n })),
    );
    const damagedMeta = tree.entries.find((e) => e.Key === this.keys.meta);
    // (index 0: only if there is still no meta)
    const metaOp: TxnOp = {
      verb: "cas",
      key: this.keys.meta,
      value: metaText,
      index: damagedMeta?.ModifyIndex ?? 0,
    };
    const deletes: TxnOp[] = tree.entries
      .filter((e) => e.Key !== this.keys.meta)
      .map((e) => ({ verb: "delete-cas", key: e.Key, index: e.ModifyIndex }));
    // keys written before the switch: deleted again if it does not happen (never after it was sent:
    // its outcome may be unknown, and the new chunks then named by the meta)
    const written: string[] = [];
    const undo = () => this.deleteKeys(written).catch(() => undefined);
    let result;
    let later: TxnOp[] = [];
    try {
      // the copies, in as few transactions as they fit in
      for (const batch of txnBatches(copies)) {
        const r = await this.http.txn(batch);
        if (!r.ok) throw new Error("bug: a transaction of plain sets was refused");
        for (const op of batch) written.push(op.key);
      }
      const freshOps: TxnOp[] = fresh.map((f) => ({ verb: "set", key: f.key, value: f.value }));
      const single = [metaOp, ...freshOps, ...deletes];
      let ops = single;
      if (!fitsOneTxn(single)) {
        // nobody reads the new chunks until the meta names them
        await runLimited(fresh, 4, async (f) => {
          await this.http.kvPut(f.key, f.value);
          written.push(f.key);
        });
        const room = CONSUL_MAX_TXN_OPS - 1;
        ops = [metaOp, ...deletes.slice(0, room)];
        later = deletes.slice(room);
      }
      this.lastMeta = undefined;
      result = this.http.txn(ops);
    } catch (err) {
      await undo();
      throw err;
    }
    const done = await result;
    if (!done.ok) {
      await undo();
      throw new PreconditionError(
        `the location map under ${this.keys.prefix} in Consul changed while it was being replaced; nothing was changed`,
        { hint: "run the command again" },
      );
    }
    if (later.length) await this.deleteKeys(later.map((op) => op.key)).catch(() => undefined);
    const meta = done.results.find((r) => r.Key === this.keys.meta);
    if (!meta) throw new Error("bug: Consul's transaction result does not include the meta key");
    this.lastMeta = { version: meta.ModifyIndex, meta: JSON.parse(metaText) as MetaDoc };
    return { version: meta.ModifyIndex, keptAs, why };
  }
}

function fitsOneTxn(ops: readonly TxnOp[]): boolean {
  return ops.length <= CONSUL_MAX_TXN_OPS && ops.reduce((n, op) => n + txnOpBytes(op), 0) <= TXN_BUDGET_BYTES;
}

/** Operations cut into transactions that each fit (every one fits alone: the caller checked). */
function txnBatches(ops: readonly TxnOp[]): TxnOp[][] {
  const out: TxnOp[][] = [];
  let cur: TxnOp[] = [];
  let bytes = 0;
  for (const op of ops) {
    const b = txnOpBytes(op);
    if (cur.length && (cur.length === CONSUL_MAX_TXN_OPS || bytes + b > TXN_BUDGET_BYTES)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(op);
    bytes += b;
  }
  if (cur.length) out.push(cur);
  return out;
}

async function runLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  const worker = async () => {
    while (i < items.length) await fn(items[i++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
