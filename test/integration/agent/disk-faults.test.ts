/**
 * A disk that refuses writes, against real agent processes: a file size limit
 * (RLIMIT_FSIZE, set on the running agent with prlimit) that cuts a snapshot
 * short, and a full file system (a small tmpfs) under the log. After either,
 * a restart must serve every acknowledged write.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { AgentRpc, readAll } from "../../../src/cluster/agent-rpc.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeSnapshot } from "../../../src/agent/snapshot.js";
import { admin, get, http, put, startAgent, stopAgent, tempDir, TOKEN, type AgentProc } from "./harness.js";

const live: AgentProc[] = [];
const mounts: string[] = [];
let root: string;

beforeAll(() => {
  root = tempDir("disk-faults");
});

afterAll(async () => {
  for (const p of live) await stopAgent(p, "SIGKILL");
  for (const m of mounts) spawnSync("umount", [m]);
  rmSync(root, { recursive: true, force: true });
});

/**
 * The faults are real (a file size limit, an immutable file, a full tmpfs), so these tests need
 * root, util-linux's prlimit and mount, e2fsprogs' chattr and a filesystem that takes chattr +i
 * (ext4 and the like): what the test machines have (scripts/setup-test-env.sh). Without them a test
 * fails saying what is missing, rather than passing unseen.
 */
function requireTool(ok: boolean, what: string): void {
  if (!ok) throw new Error(`this test needs ${what}; run it as root on ext4 (scripts/setup-test-env.sh)`);
}

/** prlimit exists and may lower a running process's limits (it does as root). */
const canLimit = () => spawnSync("prlimit", ["--pid", String(process.pid), "--fsize"]).status === 0;

/** Whether files here can be made immutable (chattr +i: root, on ext4 and the like), so that deleting one fails. */
function canMakeImmutable(): boolean {
  const dir = tempDir("chattr-probe");
  const file = join(dir, "f");
  writeFileSync(file, "x");
  const ok = spawnSync("chattr", ["+i", file]).status === 0;
  if (ok) spawnSync("chattr", ["-i", file]);
  rmSync(dir, { recursive: true, force: true });
  return ok;
}

/** Whether this machine lets the tests mount a tmpfs (root in a sandbox that allows it). */
function canMount(): boolean {
  const dir = tempDir("mount-probe");
  const ok = spawnSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]).status === 0;
  if (ok) spawnSync("umount", [dir]);
  rmSync(dir, { recursive: true, force: true });
  return ok;
}

function shardFiles(p: AgentProc): string[] {
  return readdirSync(join(p.dataDir, "shards", "shard-1")).sort();
}

/** The size writeSnapshot gives a snapshot of these keys and values (no write ids) at `lsn`, taken now. */
function snapshotSize(lsn: number, entries: Map<string, string>): number {
  const header = JSON.stringify({ shardId: "shard-1", lsn, count: entries.size, createdAt: Date.now() });
  let n = 12 + Buffer.byteLength(header) + 4;
  for (const [k, v] of entries) n += 4 + Buffer.byteLength(k) + 4 + Buffer.byteLength(v) + 16;
  return n;
}

async function expectAll(p: AgentProc, acked: Map<string, string>): Promise<void> {
  for (const [key, value] of acked) {
    const r = await get(p.port, "shard-1", key);
    expect(r.status, `${key} was acknowledged; ${r.body.toString().slice(0, 300)}`).toBe(200);
    expect(r.body.toString(), key).toBe(value);
  }
}

describe("a disk that refuses writes", () => {
  it("a snapshot the disk cuts short is reported and deletes nothing; a restart serves every acknowledged write", async () => {
    requireTool(canLimit(), "prlimit (util-linux) allowed to lower a running process's limits");
    const p = await startAgent({
      dataDir: join(root, "short-snapshot", "data"),
      // small log files (many sealed ones for a snapshot to compact), no snapshot of its own
      extra: ["--max-file-bytes", "8192", "--snapshot-bytes", String(1 << 30), "--windows-save-seconds", "0"],
    });
    live.push(p);
    expect((await admin(p.port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
    const acked = new Map<string, string>();
    for (let i = 0; i < 300; i++) {
      const value = `v${i}:`.padEnd(200, "x");
      expect((await put(p.port, "shard-1", `k${i}`, value)).status).toBe(200);
      acked.set(`k${i}`, value);
    }
    const before = shardFiles(p);
    expect(before.filter((f) => f.startsWith("log-")).length).toBeGreaterThan(5);
    // files may grow to 2 bytes short of the snapshot: every byte of it is written but the last
    // two of its checksum (a write that the kernel cuts short, as a nearly full disk does)
    const size = snapshotSize(300, acked);
    expect(size).toBeGreaterThan(8192 * 2); // far above any log file
    execFileSync("prlimit", ["--pid", String(p.child.pid), `--fsize=${size - 2}`]);
    const snap = await admin(p.port, "POST", "shard-1/snapshot", { epoch: 1 });
    const after = shardFiles(p);

    // a crash now: the restarted agent (without the limit) must have every write
    p.child.kill("SIGKILL");
    await p.exited;
    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    expect(again.stderr()).not.toMatch(/REFUSED/);
    await expectAll(again, acked);

    // the snapshot was refused as it happened, and nothing was deleted for it
    expect(snap.status, snap.body.toString()).toBe(507);
    expect(snap.json().error).toBe("snapshot-failed");
    expect(snap.json().message).toMatch(/nothing was deleted/);
    expect(p.stderr()).toMatch(/snapshot failed \(the log is kept: nothing was deleted\): EFBIG/);
    expect(after).toEqual(before);

    // with room, the same snapshot is written and compacts the log; a restart still has everything
    const ok = await admin(again.port, "POST", "shard-1/snapshot", { epoch: 1 });
    expect(ok.status).toBe(200);
    expect(ok.json().snapshotLsn).toBe(300);
    expect(shardFiles(again).filter((f) => f.startsWith("log-")).length).toBeLessThan(3);
    await stopAgent(again);
    const third = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(third);
    await expectAll(third, acked);
  });

  it("a log file compaction cannot delete is deleted later, never left behind a gap; a restart serves every acknowledged write", async () => {
    requireTool(canMakeImmutable(), "chattr +i (e2fsprogs) on the temporary directory's filesystem");
    const p = await startAgent({
      dataDir: join(root, "undeletable", "data"),
      extra: ["--max-file-bytes", "4096", "--snapshot-bytes", String(1 << 30), "--windows-save-seconds", "0"],
    });
    live.push(p);
    const dir = join(p.dataDir, "shards", "shard-1");
    expect((await admin(p.port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
    const acked = new Map<string, string>();
    const write = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const value = `v${i}:`.padEnd(150, "w");
        expect((await put(p.port, "shard-1", `k${i % 70}`, value)).status).toBe(200);
        acked.set(`k${i % 70}`, value);
      }
    };
    await write(0, 200);
    const logs = shardFiles(p).filter((f) => f.startsWith("log-"));
    expect(logs.length).toBeGreaterThan(4);
    // the oldest log file cannot be deleted for now (as a file on a failing disk)
    const oldest = join(dir, logs[0]);
    execFileSync("chattr", ["+i", oldest]);
    let first;
    try {
      first = await admin(p.port, "POST", "shard-1/snapshot", { epoch: 1 });
    } finally {
      execFileSync("chattr", ["-i", oldest]);
    }
    // the snapshot is durable; deleting what it covers failed, and the answer says so
    expect(first.status, first.body.toString()).toBe(500);
    expect(first.json()).toMatchObject({ error: "snapshot-failed", written: true, lsn: 200 });
    expect(shardFiles(p)).toContain(logs[1]);
    // the next snapshot deletes the file the first could not, with the rest
    await write(200, 400);
    const second = await admin(p.port, "POST", "shard-1/snapshot", { epoch: 1 });
    expect(second.status, second.body.toString()).toBe(200);
    const afterSecond = shardFiles(p);
    p.child.kill("SIGKILL");
    await p.exited;
    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    expect(again.stderr()).not.toMatch(/REFUSED/);
    await expectAll(again, acked);
    expect(afterSecond).not.toContain(logs[0]);
  });

  it("a full disk stops the shard acknowledging and says what to do; after room is made a restart serves every acknowledged write", async () => {
    requireTool(canMount(), "mount -t tmpfs (root)");
    const mnt = join(root, "full");
    mkdirSync(mnt, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]);
    mounts.push(mnt);
    const p = await startAgent({ dataDir: join(mnt, "data"), extra: ["--windows-save-seconds", "0"] });
    live.push(p);
    expect((await admin(p.port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
    const acked = new Map<string, string>();
    let refused: Awaited<ReturnType<typeof put>> | undefined;
    for (let i = 0; i < 2000 && !refused; i++) {
      const value = `v${i}:`.padEnd(3000, "y");
      const r = await put(p.port, "shard-1", `k${i}`, value);
      if (r.status === 200) acked.set(`k${i}`, value);
      else refused = r;
    }
    expect(acked.size).toBeGreaterThan(100);
    expect(refused?.status).toBe(500);
    expect(refused?.json().error).toBe("shard-failed");
    expect(refused?.json().message).toMatch(/not acknowledged.*ENOSPC.*restart the agent/s);
    expect(p.stderr()).not.toMatch(/internal error/);
    // acknowledged nothing more, and says so to every request
    const next = await put(p.port, "shard-1", "after", "tiny");
    expect(next.status).toBe(500);
    expect(next.json().error).toBe("shard-failed");
    const inv = (await http(p.port, "GET", "/v1/shards/shard-1")).json();
    expect(inv.state).toBe("failed");
    expect(inv.lsn).toBe(acked.size);

    p.child.kill("SIGKILL");
    await p.exited;
    execFileSync("mount", ["-o", "remount,size=8m", mnt]);
    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    await expectAll(again, acked);
    expect((await put(again.port, "shard-1", "after", "tiny")).json().lsn).toBe(acked.size + 1);
    await stopAgent(again);
  });

  it("a new epoch that meta.json has no room for is refused with 507, saying nothing changed; with room it is recorded", async () => {
    requireTool(canMount(), "mount -t tmpfs (root)");
    const mnt = join(root, "meta-full");
    mkdirSync(mnt, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    mounts.push(mnt);
    const p = await startAgent({ dataDir: join(mnt, "data"), extra: ["--windows-save-seconds", "0"] });
    live.push(p);
    expect((await admin(p.port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
    expect((await put(p.port, "shard-1", "k", "v")).status).toBe(200);
    // the disk fills up (dd stops at ENOSPC)
    const filler = join(mnt, "filler");
    spawnSync("dd", ["if=/dev/zero", `of=${filler}`, "bs=4k"]);
    const dir = join(p.dataDir, "shards", "shard-1");
    const metaBefore = readFileSync(join(dir, "meta.json"));

    // a read at a newer epoch must record it before serving it: the disk refuses
    const r = await get(p.port, "shard-1", "k", 2);
    expect(r.status, r.body.toString()).toBe(507);
    expect(r.json()).toMatchObject({ error: "meta-write-failed", epoch: 1, code: "ENOSPC" });
    expect(r.json().message).toMatch(/epoch 2 .*ENOSPC.*nothing was changed.*epoch 1.*Make room/s);
    // so does a fence
    const f = await admin(p.port, "POST", "shard-1/fence", { epoch: 3 });
    expect(f.status, f.body.toString()).toBe(507);
    expect(f.json().message).toMatch(/nothing was changed/);
    expect(p.stderr()).not.toMatch(/internal error/);
    // memory did not run ahead of the file: still epoch 1, owned, serving epoch 1; the file as it was
    expect((await http(p.port, "GET", "/v1/shards/shard-1")).json()).toMatchObject({
      epoch: 1,
      state: "owned",
    });
    expect((await get(p.port, "shard-1", "k", 1)).status).toBe(200);
    expect(readFileSync(join(dir, "meta.json"))).toEqual(metaBefore);
    expect(readdirSync(dir).filter((n) => n.includes("tmp"))).toEqual([]);

    // with room, the same request records the epoch
    rmSync(filler);
    const ok = await get(p.port, "shard-1", "k", 2);
    expect(ok.status, ok.body.toString()).toBe(200);
    expect(ok.headers["x-shard-epoch"]).toBe("2");
    await stopAgent(p);
  });

  it("a migration target whose disk refuses a snapshot upload answers 507 (not a broken-off upload) and keeps nothing", async () => {
    requireTool(canLimit(), "prlimit (util-linux) allowed to lower a running process's limits");
    const p = await startAgent({
      dataDir: join(root, "snapshot-target", "data"),
      extra: ["--windows-save-seconds", "0"],
    });
    live.push(p);
    expect((await admin(p.port, "POST", "shard-1/receive", { epoch: 1 })).status).toBe(201);
    // a snapshot of 2 MiB, as a source would send it
    const src = tempDir("snapshot-source");
    const entries: [string, { value: Buffer; lsn: number; timestamp: number }][] = [];
    for (let i = 0; i < 200; i++)
      entries.push([`k${i}`, { value: Buffer.alloc(10_000, i), lsn: i + 1, timestamp: 1 }]);
    const file = await writeSnapshot(src, "shard-1", 200, entries);
    const body = readFileSync(file);
    rmSync(src, { recursive: true, force: true });
    const sum = `${body
      .readUInt32LE(body.length - 4)
      .toString(16)
      .padStart(8, "0")}-${body.length}`;
    const upload = () =>
      http(p.port, "PUT", "/v1/admin/shards/shard-1/snapshot", {
        body,
        headers: { "x-shard-epoch": "1", "x-snapshot-lsn": "200", "x-snapshot-checksum": sum },
        timeoutMs: 30_000,
      });
    const dir = join(p.dataDir, "shards", "shard-1");

    // files may not grow past 512 KiB: the target's disk refuses the copy a quarter of the way in
    execFileSync("prlimit", ["--pid", String(p.child.pid), `--fsize=${512 * 1024}:unlimited`]);
    const refused = await upload();
    expect(refused.status, refused.body.toString()).toBe(507);
    expect(refused.json()).toMatchObject({ error: "no-space", code: "EFBIG" });
    expect(refused.json().message).toMatch(/disk .*refused the snapshot.*not kept.*nothing was installed/s);
    expect(refused.json().message).not.toMatch(/broke off/);
    expect(readdirSync(dir).filter((n) => n.includes("tmp") || n.startsWith("snapshot-"))).toEqual([]);
    expect((await http(p.port, "GET", "/v1/shards/shard-1")).json()).toMatchObject({
      state: "receiving",
      lsn: 0,
      snapshotLsn: 0,
    });

    // with room, the same upload is installed
    execFileSync("prlimit", ["--pid", String(p.child.pid), "--fsize=unlimited:unlimited"]);
    const ok = await upload();
    expect(ok.status, ok.body.toString()).toBe(200);
    expect(ok.json()).toMatchObject({ installed: 200, snapshotLsn: 200, keys: 200 });
    await stopAgent(p);
  });

  it("a snapshot upload whose disk fills while the coordinator is still streaming it gets its 507, not a closed connection", async () => {
    requireTool(canLimit(), "prlimit (util-linux) allowed to lower a running process's limits");
    const p = await startAgent({
      dataDir: join(root, "slow-snapshot-target", "data"),
      extra: ["--windows-save-seconds", "0"],
    });
    live.push(p);
    expect((await admin(p.port, "POST", "shard-1/receive", { epoch: 1 })).status).toBe(201);
    // files may not grow past 512 KiB: the disk refuses the copy early, while 32 MiB are still to
    // come, streamed as a coordinator does (from the source, a piece at a time)
    execFileSync("prlimit", ["--pid", String(p.child.pid), `--fsize=${512 * 1024}:unlimited`]);
    const src = tempDir("slow-snapshot-source");
    const entries: [string, { value: Buffer; lsn: number; timestamp: number }][] = [];
    for (let i = 0; i < 1600; i++)
      entries.push([`k${i}`, { value: Buffer.alloc(10_000, i), lsn: i + 1, timestamp: 1 }]);
    const snapshot = readFileSync(await writeSnapshot(src, "shard-1", 1600, entries));
    rmSync(src, { recursive: true, force: true });
    const size = snapshot.length; // 16 MB
    const sum = `${snapshot
      .readUInt32LE(size - 4)
      .toString(16)
      .padStart(8, "0")}-${size}`;
    let sent = 0;
    const slow = new Readable({
      read() {
        if (sent >= size) return void this.push(null);
        const piece = snapshot.subarray(sent, sent + 1024 * 1024);
        sent += piece.length;
        setTimeout(() => this.push(piece), 20);
      },
    });
    const rpc = new AgentRpc({ token: TOKEN, timeoutMs: 60_000 });
    try {
      const r = await rpc.stream(`127.0.0.1:${p.port}`, "PUT", "/v1/admin/shards/shard-1/snapshot", {
        headers: {
          "content-length": String(size),
          "x-shard-epoch": "1",
          "x-snapshot-lsn": "1600",
          "x-snapshot-checksum": sum,
        },
        body: slow,
      });
      const answer = JSON.parse((await readAll(r.body)).toString());
      expect(r.status, JSON.stringify(answer)).toBe(507);
      expect(answer).toMatchObject({ error: "no-space", code: "EFBIG" });
      expect(answer.message).toMatch(/disk .*refused the snapshot of shard-1 after \d+ of \d+ bytes/);
    } finally {
      rpc.close();
    }
    await stopAgent(p);
  });
});
