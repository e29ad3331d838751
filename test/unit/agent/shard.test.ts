/** A shard on a temporary directory: recovery, snapshots and compaction (no server). */
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirs } from "../../helpers/temp-dirs.js";
import { Shard, type ShardOptions } from "../../../src/agent/shard.js";
import { decodeSnapshot } from "../../../src/agent/snapshot.js";

const tempDir = tempDirs("shardctl-shard-");

function opts(over: Partial<ShardOptions> = {}): ShardOptions & { warnings: string[] } {
  const warnings: string[] = [];
  return { maxFileBytes: 4096, snapshotBytes: 1 << 30, warn: (m) => warnings.push(m), warnings, ...over };
}

async function newShard(o = opts()) {
  const dir = tempDir();
  const shard = await Shard.create(
    join(dir, "s"),
    "shard-1",
    { epoch: 1, state: "owned", migrationTimestamp: 5 },
    o,
  );
  return { dir: join(dir, "s"), shard };
}

/** The files of a shard directory, less an empty log file (a log starting afresh). */
function left(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => !(n.startsWith("log-") && statSync(join(dir, n)).size === 0))
    .sort();
}

describe("Shard", () => {
  it("refuses a batch holding a key the log format cannot store, and leaves no gap in the LSNs", async () => {
    const o = opts();
    const { dir, shard } = await newShard(o);
    await shard.write([{ op: "put", key: "a", value: Buffer.from("1") }]);
    await expect(
      shard.write([
        { op: "put", key: "fine", value: Buffer.from("x") },
        { op: "put", key: "k".repeat(65536), value: Buffer.from("2") },
      ]),
    ).rejects.toThrow("key longer than 65535 bytes");
    expect(shard.failed).toBeUndefined();
    const [b] = await shard.write([{ op: "put", key: "b", value: Buffer.from("3") }]);
    expect(b.lsn).toBe(2);
    expect(shard.get("fine")).toBeUndefined();
    await shard.close();
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toBeUndefined();
    expect(o.warnings).toEqual([]);
    expect(again.get("b")!.value.toString()).toBe("3");
    expect(again.lsn).toBe(2);
    await again.close();
  });

  it("keeps a key's leading U+FEFF through recovery: it is part of the key, not a byte-order mark", async () => {
    // Given keys that start with U+FEFF (one of them only that), and one they would become without it
    const o = opts();
    const { dir, shard } = await newShard(o);
    const keys = ["\uFEFF", "\uFEFFbom", "\uFEFF\uFEFFtwo", "bom"];
    for (const [i, key] of keys.entries())
      await shard.write([{ op: "put", key, value: Buffer.from(`v${i}`) }]);
    await shard.close();
    // When the shard is rebuilt from its log
    const again = await Shard.open(dir, "shard-1", o);
    // Then every key is there, byte for byte, with its own value
    expect(again.failed).toBeUndefined();
    expect([...again.state.keys()].sort()).toEqual([...keys].sort());
    keys.forEach((key, i) => expect(again.get(key)!.value.toString(), JSON.stringify(key)).toBe(`v${i}`));
    await again.close();
  });

  it("a released copy's data is deleted (log files and snapshots), its redirect kept, durably", async () => {
    // Given a shard with a snapshot and log files after it, released to another node
    const o = opts();
    const { dir, shard } = await newShard(o);
    for (let i = 0; i < 200; i++)
      await shard.write([{ op: "put", key: `k${i % 20}`, value: Buffer.from(`v${i}`) }]);
    expect(await shard.snapshot(true)).toBe(200);
    for (let i = 0; i < 100; i++)
      await shard.write([{ op: "put", key: `k${i}`, value: Buffer.alloc(100, i) }]);
    await expect(shard.discardData()).rejects.toThrow(/only a released copy/); // owned: kept
    const redirect = { node: "node-2", address: "127.0.0.1:2", epoch: 2 };
    shard.release(2, redirect);
    // When its data is discarded
    const files = await shard.discardData();
    // Then only meta.json is left, nothing is in memory, and a restart finds the redirect and no data
    expect(files).toBeGreaterThan(2);
    expect(left(dir)).toEqual(["meta.json"]);
    expect(shard.state.size).toBe(0);
    expect(shard.valueBytes).toBe(0);
    expect(await shard.discardData()).toBe(0); // again: nothing to do
    await shard.close();
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toBeUndefined();
    expect(again.meta).toMatchObject({ state: "not-owned", epoch: 2, redirect });
    expect(again.state.size).toBe(0);
    expect(o.warnings).toEqual([]);
    // the copy holds no log open: not even an empty log file is left (before: one, and its open file,
    // per released copy for ever, reopened at every start)
    expect(shard.logFiles).toBe(0);
    await again.discardData();
    expect(readdirSync(dir)).toEqual(["meta.json"]);
    expect(again.logFiles).toBe(0);
    await expect(again.write([{ op: "put", key: "k", value: Buffer.from("v") }])).rejects.toThrow(
      /not available/,
    );
    await again.close();
  });

  it("a discard waits for a snapshot being written: no snapshot file comes back after it", async () => {
    const o = opts();
    const { dir, shard } = await newShard(o);
    for (let i = 0; i < 2000; i++)
      await shard.write([{ op: "put", key: `k${i}`, value: Buffer.alloc(200, i) }]);
    // a snapshot under way (started by the shard itself, say) when the release comes
    const snap = shard.snapshot(true);
    shard.release(2, { node: "node-2", address: "127.0.0.1:2", epoch: 2 });
    await shard.discardData();
    await snap;
    expect(left(dir)).toEqual(["meta.json"]);
    await shard.close();
  });

  it("a discard a crash cut short (newest log files gone, the rest left) still recovers", async () => {
    const o = opts();
    const { dir, shard } = await newShard(o);
    for (let i = 0; i < 200; i++)
      await shard.write([{ op: "put", key: `k${i % 20}`, value: Buffer.from(`v${i}`) }]);
    await shard.snapshot(true);
    for (let i = 0; i < 300; i++)
      await shard.write([{ op: "put", key: `k${i % 30}`, value: Buffer.alloc(64, i) }]);
    shard.release(2, { node: "node-2", address: "127.0.0.1:2", epoch: 2 });
    await shard.close();
    // what discardData deletes first: the newest log files; a crash after two of them
    const logs = readdirSync(dir)
      .filter((n) => n.startsWith("log-"))
      .sort()
      .reverse();
    expect(logs.length).toBeGreaterThan(2);
    for (const n of logs.slice(0, 2)) rmSync(join(dir, n));
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toBeUndefined();
    expect(await again.discardData()).toBeGreaterThan(0);
    expect(left(dir)).toEqual(["meta.json"]);
    await again.close();
  });

  it("rebuilds the latest value per key from the log, across sealed files", async () => {
    const o = opts();
    const { dir, shard } = await newShard(o);
    for (let i = 0; i < 200; i++)
      await shard.write([{ op: "put", key: `k${i % 20}`, value: Buffer.from(`v${i}`) }]);
    await shard.write([{ op: "delete", key: "k3" }]);
    expect(shard.logFiles).toBeGreaterThan(1); // 4 KiB files
    await shard.close();
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toBeUndefined();
    expect(again.lsn).toBe(201);
    expect(again.state.size).toBe(19);
    expect(again.get("k5")!.value.toString()).toBe("v185");
    expect(again.get("k3")).toBeUndefined();
    await again.close();
  });

  it("snapshots, deletes the log files the snapshot covers, and recovers from snapshot + newer log", async () => {
    const o = opts({ snapshotBytes: 8192 });
    const { dir, shard } = await newShard(o);
    for (let i = 0; i < 400; i++)
      await shard.write([{ op: "put", key: `k${i % 10}`, value: Buffer.alloc(40, i % 256) }]);
    // let the background snapshot finish
    for (let i = 0; i < 50 && shard.snapshotLsn === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const snap = await shard.snapshot();
    expect(snap).toBeGreaterThan(0);
    await shard.write([{ op: "put", key: "after", value: Buffer.from("x") }]);
    const files = readdirSync(dir);
    expect(files.filter((f) => f.startsWith("snapshot-"))).toHaveLength(1);
    expect(shard.logBytes).toBeLessThan(400 * 80); // old files were deleted
    await shard.close();
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toBeUndefined();
    expect(again.snapshotLsn).toBe(snap);
    expect(again.lsn).toBe(401);
    expect(again.state.size).toBe(11);
    expect(again.get("k9")!.value).toEqual(Buffer.alloc(40, 399 % 256));
    await again.close();
  });

  it("recovers past log files a compaction left below its snapshot, gap included, and deletes them", async () => {
    const o = opts({ snapshotBytes: 1 << 30 });
    const { dir, shard } = await newShard(o);
    for (let i = 0; i < 200; i++)
      await shard.write([{ op: "put", key: `k${i % 30}`, value: Buffer.from(`v${i}`.padEnd(60, "-")) }]);
    const logs = readdirSync(dir).filter((f) => f.startsWith("log-"));
    expect(logs.length).toBeGreaterThan(3);
    const oldest = readFileSync(join(dir, logs[0]));
    expect(await shard.snapshot()).toBe(200);
    await shard.close();
    // a crash while compacting: the oldest file's deletion never reached the disk, the later ones' did
    // (without an fsync of the directory between them, the disk may keep them in any order)
    expect(readdirSync(dir)).not.toContain(logs[0]);
    writeFileSync(join(dir, logs[0]), oldest);
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toBeUndefined();
    expect(again.lsn).toBe(200);
    expect(again.get("k19")!.value.toString()).toBe("v199".padEnd(60, "-"));
    expect(again.get("k20")!.value.toString()).toBe("v170".padEnd(60, "-"));
    expect(o.warnings.join("\n")).toMatch(
      /log-00000000000000000001\.seg: every entry is at or below the snapshot's LSN 200 .*; deleted/,
    );
    expect(readdirSync(dir)).not.toContain(logs[0]);
    await again.write([{ op: "put", key: "after", value: Buffer.from("x") }]);
    expect(again.lsn).toBe(201);
    await again.close();
  });

  it("refuses the shard when the snapshot it needs is corrupt and the log below it is gone", async () => {
    const o = opts({ snapshotBytes: 1 << 30 });
    const { dir, shard } = await newShard(o);
    for (let i = 0; i < 100; i++) await shard.write([{ op: "put", key: `k${i}`, value: Buffer.alloc(40) }]);
    await shard.snapshot();
    await shard.write([{ op: "put", key: "z", value: Buffer.from("z") }]);
    await shard.close();
    const snap = readdirSync(dir).find((f) => f.startsWith("snapshot-"))!;
    writeFileSync(join(dir, snap), "garbage");
    const again = await Shard.open(dir, "shard-1", o);
    expect(again.failed).toMatch(/entries are missing|missing/);
    expect(o.warnings.join("\n")).toMatch(/snapshot .* is corrupt/);
    await again.close();
  });

  it("writes a snapshot that verifies and rejects a flipped byte", async () => {
    const { dir, shard } = await newShard();
    await shard.write([
      { op: "put", key: "a", value: Buffer.from("1") },
      { op: "put", key: "b", value: Buffer.from("2") },
    ]);
    await shard.snapshot();
    await shard.close();
    const { readFileSync } = await import("node:fs");
    const buf = readFileSync(
      join(
        dir,
        readdirSync(dir).find((f) => f.startsWith("snapshot-"))!,
      ),
    );
    const seen: string[] = [];
    expect(decodeSnapshot(buf, (k) => seen.push(k)).lsn).toBe(2);
    expect(seen.sort()).toEqual(["a", "b"]);
    const bad = Buffer.from(buf);
    bad[bad.length - 10] ^= 1;
    expect(() => decodeSnapshot(bad, () => {})).toThrow(/checksum/);
  });

  describe("entries updated in place by later writes", () => {
    it("updates a written key's entry in place, and an entry read with get() stays as it was", async () => {
      const { shard } = await newShard();
      await shard.write([{ op: "put", key: "k", value: Buffer.from("one") }]);
      await shard.write([{ op: "put", key: "k", value: Buffer.from("two") }]);
      const live = shard.peek("k")!;
      await shard.write([{ op: "put", key: "k", value: Buffer.from("333") }]);
      // the same entry, updated (this is what spares the collector an object per put)
      expect(shard.peek("k")).toBe(live);
      expect(live.value.toString()).toBe("333");
      expect(live.lsn).toBe(3);
      const kept = shard.get("k")!;
      const keptValue = kept.value;
      await shard.write([{ op: "put", key: "k", value: Buffer.from("444") }]);
      await shard.write([{ op: "put", key: "k", value: Buffer.from("55555") }]);
      expect(kept.value.toString()).toBe("333");
      expect(keptValue.toString()).toBe("333");
      expect(kept.lsn).toBe(3);
      expect(shard.peek("k")!.value.toString()).toBe("55555");
      expect(shard.get("k")).not.toBe(kept);
      await shard.close();
    });

    it("never writes over a caller's buffer, even one given for two keys", async () => {
      const { shard } = await newShard();
      // a buffer of its own (not a piece of a larger one): the state keeps it as it is
      const shared = Buffer.alloc(4, "same");
      await shard.write([
        { op: "put", key: "a", value: shared },
        { op: "put", key: "b", value: shared },
      ]);
      for (const v of ["AAAA", "BBBB", "CCCC"])
        await shard.write([{ op: "put", key: "a", value: Buffer.from(v) }]);
      expect(shared.toString()).toBe("same");
      expect(shard.get("b")!.value.toString()).toBe("same");
      expect(shard.get("a")!.value.toString()).toBe("CCCC");
      await shard.close();
    });

    it("keeps a value given as a piece of a larger buffer in one of its own, not the larger buffer", async () => {
      const { shard } = await newShard();
      const request = Buffer.alloc(1 << 20, "r");
      await shard.write([{ op: "put", key: "k", value: request.subarray(100, 110) }]);
      const v = shard.get("k")!.value;
      expect(v.toString()).toBe("r".repeat(10));
      expect(v.buffer.byteLength).toBe(10);
      // and the piece was copied, not taken: the request's buffer is the caller's
      request.fill("x");
      expect(shard.get("k")!.value.toString()).toBe("r".repeat(10));
      await shard.close();
    });

    it("a snapshot holds the values as of its LSN while writes to the same keys go on", async () => {
      const { dir, shard } = await newShard(opts({ maxFileBytes: 64 << 20 }));
      // 100,000 keys: the snapshot is written a MiB at a time over many turns of the event loop, and
      // the keys written meanwhile are the last it reaches (a Map keeps the order keys came in)
      const cold = Array.from({ length: 100_000 }, (_, i) => `cold-${i}`);
      for (let i = 0; i < cold.length; i += 10_000)
        await shard.write(
          cold.slice(i, i + 10_000).map((key) => ({ op: "put" as const, key, value: Buffer.alloc(100, 7) })),
        );
      const hot = ["h0", "h1", "h2", "h3"];
      // twice: the second write to a key gives its entry a buffer of the shard's own, written over after
      for (const round of [1, 2])
        await shard.write(hot.map((key) => ({ op: "put" as const, key, value: Buffer.alloc(64, round) })));
      const at = shard.lsn;
      const snapshot = shard.snapshot();
      let done = false;
      void snapshot.finally(() => (done = true));
      let round = 2;
      while (!done) {
        round++;
        for (const key of hot) await shard.write([{ op: "put", key, value: Buffer.alloc(64, round) }]);
      }
      expect(await snapshot).toBe(at);
      expect(round).toBeGreaterThan(2);
      const file = readdirSync(dir).find((f) => f === `snapshot-${String(at).padStart(20, "0")}.snap`);
      expect(file).toBeDefined();
      const seen = new Map<string, { bytes: number[]; lsn: number }>();
      decodeSnapshot(readFileSync(join(dir, file!)), (k, v) => {
        if (k.startsWith("h")) seen.set(k, { bytes: [...new Set(v.value)], lsn: v.lsn });
      });
      expect([...seen.keys()].sort()).toEqual(hot);
      for (const v of seen.values()) {
        expect(v.bytes).toEqual([2]);
        expect(v.lsn).toBeLessThanOrEqual(at);
      }
      // and the shard itself carries on from the latest values
      expect(shard.peek("h3")!.value[0]).toBe(round);
      await shard.close();
    });
  });

  it("records epochs and owner states durably", async () => {
    const { dir, shard } = await newShard();
    shard.raiseEpoch(4);
    shard.fence(4);
    shard.release(4, { node: "n2", address: "127.0.0.1:1", epoch: 5 });
    await shard.close();
    const again = await Shard.open(dir, "shard-1", opts());
    expect(again.meta).toMatchObject({
      epoch: 5,
      state: "not-owned",
      redirect: { node: "n2", epoch: 5 },
      migrationTimestamp: 5,
    });
    await again.close();
  });
});
