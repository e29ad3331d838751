import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { initialLayout } from "../../../src/engine/location-map.js";
import { UsageError } from "../../../src/errors.js";
import {
  acquireFileLock,
  checksumOf,
  EmbeddedStore,
  ensureDataDir,
  readLockText,
  takeOverStaleLock,
} from "../../../src/store/embedded.js";

const nodes = [{ id: "n1", address: "127.0.0.1:1", zone: "a" }];
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-store-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("EmbeddedStore", () => {
  it("starts empty, then compare-and-sets from version 0", async () => {
    const store = new EmbeddedStore(dir);
    expect(await store.load()).toBeNull();
    const map = initialLayout(16, nodes, { now: 0 });
    expect(await store.compareAndSet(0, map)).toEqual({ ok: true, version: 1 });
    expect((await store.load())!.version).toBe(1);
    expect((await store.load())!.map).toEqual(map);
  });

  it("refuses a write against a stale version and leaves the file as it was", async () => {
    const store = new EmbeddedStore(dir);
    const map = initialLayout(16, nodes, { now: 0 });
    await store.compareAndSet(0, map);
    const before = readFileSync(store.file, "utf8");
    expect(await store.compareAndSet(0, { ...map, term: 3 })).toEqual({ ok: false, currentVersion: 1 });
    expect(readFileSync(store.file, "utf8")).toBe(before);
  });

  it("lets exactly one of many concurrent writers win a version", async () => {
    const map = initialLayout(16, nodes, { now: 0 });
    await new EmbeddedStore(dir).compareAndSet(0, map);
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => new EmbeddedStore(dir).compareAndSet(1, { ...map, term: i + 1 })),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(1);
  });

  it("refuses an invalid map and writes nothing", async () => {
    const store = new EmbeddedStore(dir);
    const map = initialLayout(16, nodes, { now: 0 });
    map.shards[0].ranges = [[0, 1]];
    await expect(store.compareAndSet(0, map)).rejects.toThrow(/gap/);
    expect(existsSync(store.file)).toBe(false);
  });

  it.each([
    ["truncated", (t: string) => t.slice(0, t.length / 2), /not JSON/],
    ["altered", (t: string) => t.replace('"node":"n1"', '"node":"n2"'), /checksum/],
    ["foreign", () => JSON.stringify({ hello: "world" }), /not a shardctl location map/],
    ["empty", () => "", /not JSON/],
  ])("refuses a %s file with a clear error", async (_name, mangle, message) => {
    const store = new EmbeddedStore(dir);
    await store.compareAndSet(0, initialLayout(16, nodes, { now: 0 }));
    writeFileSync(store.file, mangle(readFileSync(store.file, "utf8")));
    const mangled = readFileSync(store.file, "utf8");
    await expect(store.load()).rejects.toThrow(message);
    await expect(store.compareAndSet(1, initialLayout(16, nodes, { now: 0 }))).rejects.toThrow(message);
    expect(readFileSync(store.file, "utf8")).toBe(mangled);
  });

  it.each([-5, 0, 1e300])(
    "refuses a file whose version is %s (checksummed again: only the version is wrong)",
    async (v) => {
      const store = new EmbeddedStore(dir);
      await store.compareAndSet(0, initialLayout(16, nodes, { now: 0 }));
      const body = JSON.parse(readFileSync(store.file, "utf8"));
      writeFileSync(store.file, JSON.stringify({ ...body, version: v, checksum: checksumOf(v, body.map) }));
      await expect(store.load()).rejects.toThrow(/is not a whole number from 1 to 2\^53/);
    },
  );

  it("a data directory that is a file, or below one, is said to be one: not an empty store", async () => {
    const file = join(dir, "a-file");
    writeFileSync(file, "hi");
    await expect(new EmbeddedStore(file).load()).rejects.toThrow(
      /the data directory .*a-file is not a directory/,
    );
    await expect(new EmbeddedStore(join(file, "sub")).load()).rejects.toThrow(
      /is not a directory \(.*a-file is a file\)/,
    );
    // a directory that does not exist yet is an empty store
    expect(await new EmbeddedStore(join(dir, "not-yet")).load()).toBeNull();
  });

  it("takes over a lock whose writer died, and waits for a live one", async () => {
    const store = new EmbeddedStore(dir);
    writeFileSync(join(dir, "location-map.lock"), "999999999");
    expect((await store.compareAndSet(0, initialLayout(16, nodes, { now: 0 }))).ok).toBe(true);
    writeFileSync(join(dir, "location-map.lock"), String(process.pid));
    const t0 = Date.now();
    const pending = store.compareAndSet(1, initialLayout(16, nodes, { now: 1 }));
    setTimeout(() => rmSync(join(dir, "location-map.lock")), 200);
    expect((await pending).ok).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
  });

  it("watch reports the current map and each new version", async () => {
    const store = new EmbeddedStore(dir);
    await store.compareAndSet(0, initialLayout(16, nodes, { now: 0 }));
    const seen: number[] = [];
    const ac = new AbortController();
    const done = store.watch((m) => seen.push(m.version), ac.signal);
    await new Promise((r) => setTimeout(r, 50));
    await store.compareAndSet(1, initialLayout(16, nodes, { now: 1 }));
    await new Promise((r) => setTimeout(r, 400));
    ac.abort();
    await done;
    expect(seen).toEqual([1, 2]);
  });
});

/** The pid of a process that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ["-e", ""]).pid!;
}

/** What this process's plain lock holds: its pid and when it started. */
const ownLock = () => new RegExp(`^${process.pid} \\d+$`);

describe("the lock file", () => {
  it("a lock that is /dev/zero, a huge file or a directory: read up to 1 MiB, then refused as held, never read to the end", async () => {
    const zero = join(dir, "zero.lock");
    symlinkSync("/dev/zero", zero);
    expect(readLockText(zero)).toHaveLength(1024 * 1024);
    const huge = join(dir, "huge.lock");
    writeFileSync(huge, Buffer.alloc(3 * 1024 * 1024, "7"));
    expect(readLockText(huge)).toHaveLength(1024 * 1024);
    expect(readLockText(dir)).toBeUndefined();
    expect(readLockText(join(dir, "missing.lock"))).toBeUndefined();
    // no record, so no holder to see dead: the lock stays, and the error names it
    await expect(acquireFileLock(zero, "the x", 100)).rejects.toThrow(
      /the x is locked by another writer \(pid unknown\)/,
    );
    await expect(acquireFileLock(huge, "the x", 100)).rejects.toThrow(/locked by another writer/);
    expect(readFileSync(huge).length).toBe(3 * 1024 * 1024);
  });

  it("takes over a lock whose writer died", async () => {
    const lock = join(dir, "x.lock");
    writeFileSync(lock, String(deadPid()));
    const release = await acquireFileLock(lock, "x", 1000);
    expect(readFileSync(lock, "utf8")).toMatch(ownLock());
    release();
    expect(existsSync(lock)).toBe(false);
    expect(existsSync(`${lock}.takeover`)).toBe(false);
  });

  it("takes over a lock left empty for seconds (its writer died before writing its pid), not a fresh one", async () => {
    const lock = join(dir, "x.lock");
    writeFileSync(lock, "");
    // fresh: a writer between making it and writing its pid
    await expect(acquireFileLock(lock, "the thing", 300)).rejects.toThrow(
      /locked by another writer \(pid unknown\)/,
    );
    expect(readFileSync(lock, "utf8")).toBe("");
    // empty for 10 s: left behind (before, it refused every later writer for good)
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const release = await acquireFileLock(lock, "the thing", 2000);
    expect(readFileSync(lock, "utf8")).toMatch(ownLock());
    release();
  });

  it("a takeover decided on an old view leaves the new holder's lock alone", () => {
    // a writer saw the lock stale (dead pid), then another writer took it over and created its
    // own before the first one acted: removing the lock now would let both hold it
    const lock = join(dir, "x.lock");
    const dead = deadPid();
    writeFileSync(lock, String(process.pid));
    expect(takeOverStaleLock(lock, dead)).toBe(true);
    expect(readFileSync(lock, "utf8")).toBe(String(process.pid));
    writeFileSync(lock, String(dead));
    expect(takeOverStaleLock(lock, dead)).toBe(true);
    expect(existsSync(lock)).toBe(false);
  });

  it("waits while another process takes a lock over, and clears a guard its taker left behind", async () => {
    const lock = join(dir, "x.lock");
    const dead = deadPid();
    writeFileSync(lock, String(dead));
    writeFileSync(`${lock}.takeover`, "");
    expect(takeOverStaleLock(lock, dead)).toBe(false);
    expect(readFileSync(lock, "utf8")).toBe(String(dead));
    // a guard older than 5 s: its taker died inside the takeover
    const old = new Date(Date.now() - 10_000);
    utimesSync(`${lock}.takeover`, old, old);
    const release = await acquireFileLock(lock, "x", 2000);
    expect(readFileSync(lock, "utf8")).toMatch(ownLock());
    release();
  });

  it("releases only its own lock: one taken over meanwhile (its holder taken for dead) stays", async () => {
    const lock = join(dir, "x.lock");
    const release = await acquireFileLock(lock, "x", 1000);
    // another writer took it over (removed it, made its own) while this one was stalled
    rmSync(lock);
    writeFileSync(lock, "424242 1");
    // before: the release removed the other writer's lock, and a third writer then went in beside it
    release();
    expect(readFileSync(lock, "utf8")).toBe("424242 1");
  });

  it("takes over a lock whose pid now belongs to another process (the kernel reused it)", async () => {
    const lock = join(dir, "x.lock");
    // this process is alive, but did not start at tick 1: the lock's writer is gone
    writeFileSync(lock, `${process.pid} 1`);
    const t0 = Date.now();
    const release = await acquireFileLock(lock, "x", 3000);
    // before: refused after waiting (locked by pid …), and so every writer until the file was removed by hand
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(readFileSync(lock, "utf8")).toMatch(ownLock());
    release();
    // a lock written before start times were recorded: its pid alone decides
    writeFileSync(lock, String(process.pid));
    await expect(acquireFileLock(lock, "x", 200)).rejects.toThrow(/locked by another writer \(pid \d+\)/);
  });

  it("never leaves the file its content was written to beside the lock", async () => {
    const lock = join(dir, "y.lock");
    const release = await acquireFileLock(lock, "y", 1000);
    expect(readdirSync(dir).filter((n) => n.startsWith("y.lock"))).toEqual(["y.lock"]);
    release();
    expect(readdirSync(dir).filter((n) => n.startsWith("y.lock"))).toEqual([]);
  });
});

describe("ensureDataDir and the lock on a path that cannot be a data directory", () => {
  it("makes missing parents, and accepts a directory or a link to one", () => {
    ensureDataDir(join(dir, "a/b/c"));
    expect(statSync(join(dir, "a/b/c")).isDirectory()).toBe(true);
    symlinkSync("a", join(dir, "link"));
    expect(() => ensureDataDir(join(dir, "link"))).not.toThrow();
  });

  it("refuses a name too long, a link loop and a dangling link with a UsageError naming the path", () => {
    symlinkSync("l1", join(dir, "l2"));
    symlinkSync("l2", join(dir, "l1"));
    symlinkSync("nowhere", join(dir, "dangling"));
    for (const [path, re] of [
      [
        join(dir, "x".repeat(300)),
        /cannot create the data directory .*xxx: the path, or a name in it, is too long \(ENAMETOOLONG\)/,
      ],
      [join(dir, "l1"), /cannot create the data directory .*l1: a symbolic link .* \(ELOOP\)/],
      [join(dir, "l1/sub"), /\(ELOOP\)/],
      [
        join(dir, "dangling"),
        /cannot create the data directory .*dangling: no directory can be made there \(ENOENT\)/,
      ],
    ] as const) {
      expect(() => ensureDataDir(path)).toThrow(UsageError);
      expect(() => ensureDataDir(path)).toThrow(re);
    }
  });

  it("removes the parents it made when a deeper level fails", () => {
    expect(() => ensureDataDir(join(dir, "new/deeper", "y".repeat(300), "z"))).toThrow(/ENAMETOOLONG/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it.skipIf(!existsSync("/proc/self"))("refuses /proc/self/x (Node's recursive mkdir never returned)", () => {
    expect(() => ensureDataDir("/proc/self/x")).toThrow(
      /cannot create the data directory \/proc\/self\/x: no directory can be made there \(ENOENT\)/,
    );
  });

  it.skipIf(!existsSync("/proc/self"))(
    "a lock file that cannot be made in /proc/self is a UsageError",
    async () => {
      const store = new EmbeddedStore("/proc/self");
      const err = await store.compareAndSet(0, initialLayout(16, nodes, { now: 0 })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(
        /cannot write in the data directory \/proc\/self: no file can be made there \(ENOENT\)/,
      );
    },
  );
});
