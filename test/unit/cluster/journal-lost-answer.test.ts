/**
 * The journal writer when an answer from the store is lost (JournalWriter,
 * src/cluster/journal.ts), against a store double that carries a write out
 * and then throws as a dropped connection does. The writer must recognise its
 * own write when it reads the record again, and report a takeover only when
 * another coordinator's write is there.
 */
import { describe, expect, it } from "vitest";
import type { LocationMap, VersionedMap } from "../../../src/engine/location-map.js";
import { advance, endRecord, newJournal, type MigrationRecord } from "../../../src/engine/migration.js";
import type {
  CasResult,
  LocationStore,
  MigrationPutResult,
  MigrationWrite,
  StoredMigration,
} from "../../../src/engine/ports.js";
import { JournalWriter, TakenOverError } from "../../../src/cluster/journal.js";

const lost = () =>
  new Error("cannot reach Consul (ECONNRESET); the write was sent: whether it committed is unknown");

/** One map and journal in memory; `dropNext` makes the next write of that kind apply, then throw. */
class LossyStore {
  readonly kind = "consul" as const;
  version = 1;
  map = { nodes: [], shards: [], term: 0 } as unknown as LocationMap;
  rev = 0;
  records = new Map<string, StoredMigration>();
  dropNextCommit = false;
  dropNextPut = false;
  /** Resolved by the test to let a dropped commit's error through (a client waiting for its timeout). */
  commitSent?: () => void;
  release?: () => void;

  async load(): Promise<VersionedMap | null> {
    return { version: this.version, map: this.map };
  }
  private write(w: MigrationWrite): MigrationPutResult {
    const cur = this.records.get(w.record.id);
    if ((cur?.rev ?? 0) !== w.expectRev) return { ok: false, rev: cur?.rev ?? 0 };
    const rev = ++this.rev;
    this.records.set(w.record.id, { record: structuredClone(w.record), rev });
    return { ok: true, rev };
  }
  async compareAndSet(
    expected: number,
    next: LocationMap,
    o?: { migration?: MigrationWrite },
  ): Promise<CasResult> {
    if (expected !== this.version) return { ok: false, currentVersion: this.version };
    const cur = o?.migration ? this.records.get(o.migration.record.id) : undefined;
    if (o?.migration && (cur?.rev ?? 0) !== o.migration.expectRev)
      return { ok: false, currentVersion: this.version };
    this.map = next;
    this.version++;
    const w = o?.migration ? this.write(o.migration) : undefined;
    if (this.dropNextCommit) {
      this.dropNextCommit = false;
      this.commitSent?.();
      await new Promise<void>((r) => (this.release = r));
      throw lost();
    }
    return { ok: true, version: this.version, migrationRev: w?.ok ? w.rev : undefined };
  }
  async putMigration(w: MigrationWrite): Promise<MigrationPutResult> {
    const r = this.write(w);
    if (this.dropNextPut) {
      this.dropNextPut = false;
      throw lost();
    }
    return r;
  }
  async getMigration(id: string): Promise<StoredMigration | null> {
    return structuredClone(this.records.get(id) ?? null);
  }
  async listMigrations() {
    return { records: [...this.records.values()], unreadable: [] };
  }
  async watch(): Promise<void> {}
  async close(): Promise<void> {}
}

function record(id = "m-1"): MigrationRecord {
  const shard = { id: "shard-1", node: "node-1", epoch: 3, ranges: [[0, 4]] } as never;
  return {
    ...newJournal({ id, shard, target: "node-2", planVersion: 1, term: 0, now: 1000 }),
    entriesCopied: 0,
    rounds: 0,
    owner: { host: "here", pid: 42, term: 0 },
  };
}

describe("JournalWriter, an answer lost", () => {
  it("the commit's answer lost while a heartbeat is due: the commit is its own, and the record ends done", async () => {
    const store = new LossyStore();
    let now = 1000;
    let j = record();
    const journal = new JournalWriter(
      store as unknown as LocationStore,
      () => j,
      () => now,
    );
    await journal.save();
    for (const phase of ["copying", "fenced", "prepared"] as const) {
      j = advance(j, phase, ++now);
      await journal.save();
    }
    const committing = advance(j, "committed", ++now);
    store.dropNextCommit = true;
    const sent = new Promise<void>((r) => (store.commitSent = r));
    // Given the commit transaction carried out, its answer lost
    const commit = journal.commitPoint((m) => m, committing, "unknown");
    await sent;
    // When a heartbeat comes due while the coordinator still waits for that answer
    now += 2000;
    const heartbeat = journal.save();
    store.release!();
    // Then the commit is found to be this coordinator's own
    await expect(commit).resolves.toMatchObject({ ok: true });
    await heartbeat;
    expect(journal.takenOver).toBe(false);
    j = committing;
    // and the record ends done
    j = endRecord(j, "done", ++now);
    await expect(journal.save()).resolves.toBeUndefined();
    expect((await store.getMigration(j.id))?.record.phase).toBe("done");
  });

  it("a phase write whose answer was lost: the next write finds it its own and goes on", async () => {
    const store = new LossyStore();
    let now = 1000;
    let j = record();
    const journal = new JournalWriter(
      store as unknown as LocationStore,
      () => j,
      () => now,
    );
    await journal.save();
    j = advance(j, "copying", ++now);
    store.dropNextPut = true;
    // the write that lost its answer is read back at once: it is there, so the save succeeds
    await expect(journal.save()).resolves.toBeUndefined();
    j = advance(j, "fenced", ++now);
    await journal.save();
    expect((await store.getMigration(j.id))?.record.phase).toBe("fenced");
    expect(journal.takenOver).toBe(false);
  });

  it("another coordinator's write is still a takeover", async () => {
    const store = new LossyStore();
    let now = 1000;
    let j = record();
    const journal = new JournalWriter(
      store as unknown as LocationStore,
      () => j,
      () => now,
    );
    await journal.save();
    j = advance(j, "copying", ++now);
    store.dropNextPut = true;
    await journal.save();
    // recovery elsewhere claims the record
    const cur = (await store.getMigration(j.id))!;
    await store.putMigration({
      record: { ...cur.record, owner: { host: "there", pid: 7, term: 0 }, recoveredBy: "there:7" },
      expectRev: cur.rev,
    });
    j = advance(j, "fenced", ++now);
    await expect(journal.save()).rejects.toBeInstanceOf(TakenOverError);
    expect(journal.takenOver).toBe(true);
  });
});

describe("JournalWriter, a store that does not answer", () => {
  it("does not queue a heartbeat while the last one waits: the coordinator's own write comes next, not a minute later", async () => {
    const store = new LossyStore();
    let j = record();
    const journal = new JournalWriter(
      store as unknown as LocationStore,
      () => j,
      () => Date.now(),
    );
    await journal.save();
    // Given a store whose every write and read waits 50 ms and fails (Consul paused: 5 s each)
    let puts = 0;
    const away = async (): Promise<never> => {
      await new Promise((r) => setTimeout(r, 50));
      throw new Error("cannot reach Consul (no answer within 5 s)");
    };
    store.putMigration = async () => {
      puts++;
      return away();
    };
    store.getMigration = away;
    // When heartbeats come due every 10 ms for 400 ms
    journal.startHeartbeat(10);
    await new Promise((r) => setTimeout(r, 400));
    journal.stopHeartbeat();
    // Then the coordinator's own write (its abort's) waits for at most the heartbeat in flight:
    // each save costs a write and a read (100 ms), so about four heartbeats were sent, not forty
    j = endRecord(advance(j, "copying", Date.now()), "aborted", Date.now());
    await expect(journal.save()).rejects.toThrow(/no answer/);
    expect(puts).toBeGreaterThanOrEqual(2);
    expect(puts).toBeLessThanOrEqual(8);
  });
});
