/**
 * Durability against real agent processes: concurrent writers, kill -9 during
 * writes, a torn tail, a flipped byte in the middle of a log.
 */
import {
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
  closeSync,
} from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  admin,
  cliArgs,
  get,
  http,
  keepAlive,
  put,
  startAgent,
  stopAgent,
  tempDir,
  type AgentProc,
} from "./harness.js";

const live: AgentProc[] = [];
let root: string;

beforeAll(() => {
  root = tempDir("durability");
});

afterAll(async () => {
  keepAlive.destroy();
  for (const p of live) await stopAgent(p, "SIGKILL");
  rmSync(root, { recursive: true, force: true });
});

async function agentWithShard(name: string, port?: number): Promise<AgentProc> {
  const p = await startAgent({ dataDir: join(root, name, "data"), port });
  live.push(p);
  const r = await admin(p.port, "PUT", "shard-1", { epoch: 1 });
  expect([200, 201]).toContain(r.status);
  return p;
}

function logFiles(p: AgentProc): string[] {
  const dir = join(p.dataDir, "shards", "shard-1");
  return readdirSync(dir)
    .filter((f) => f.startsWith("log-"))
    .sort()
    .map((f) => join(dir, f));
}

describe("agent durability", () => {
  it("serves concurrent writers with unique values; every acknowledged write reads back", async () => {
    const p = await agentWithShard("concurrent");
    const writers = 16;
    const each = 20;
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < each; i++) {
          const r = await put(p.port, "shard-1", `w${w}:k${i}`, `value-${w}-${i}`, 1, {}, keepAlive);
          expect(r.status).toBe(200);
        }
      }),
    );
    for (let w = 0; w < writers; w++) {
      for (let i = 0; i < each; i++) {
        const r = await get(p.port, "shard-1", `w${w}:k${i}`);
        expect(r.status).toBe(200);
        expect(r.body.toString()).toBe(`value-${w}-${i}`);
      }
    }
    const inv = (await http(p.port, "GET", "/v1/shards/shard-1")).json();
    expect(inv.lsn).toBe(writers * each);
    expect(inv.keys).toBe(writers * each);
    // group commit: fewer fsyncs than writes
    const metrics = (await http(p.port, "GET", "/metrics")).body.toString();
    const count = Number(/shardctl_agent_group_commit_entries_count (\d+)/.exec(metrics)![1]);
    expect(count).toBeLessThan(writers * each);
    // every put and get above is counted once, by operation and status (counted off prom-client, reported at scrape)
    const counted = (op: string, status: number) =>
      Number(
        new RegExp(`shardctl_agent_requests_total\\{op="${op}",status="${status}"\\} (\\d+)`).exec(
          metrics,
        )?.[1],
      );
    expect(counted("put", 200)).toBe(writers * each);
    expect(counted("get", 200)).toBe(writers * each);
  });

  it("keeps every acknowledged write, in order per key, through kill -9 during writes", async () => {
    const p = await agentWithShard("kill9");
    const acked: Map<string, number>[] = [];
    let stop = false;
    const writers = 8;
    const loops = Array.from({ length: writers }, async (_, w) => {
      const mine = new Map<string, number>();
      acked.push(mine);
      for (let i = 0; !stop; i++) {
        try {
          // a unique key per write, plus one key overwritten with an increasing counter
          const a = await put(p.port, "shard-1", `w${w}:seq${i}`, String(i));
          if (a.status !== 200) break;
          mine.set(`w${w}:seq${i}`, i);
          const b = await put(p.port, "shard-1", `w${w}:last`, String(i));
          if (b.status !== 200) break;
          mine.set(`w${w}:last`, i);
        } catch {
          break; // the agent died under us: this write was never acknowledged
        }
      }
    });
    await new Promise((r) => setTimeout(r, 1500));
    p.child.kill("SIGKILL");
    stop = true;
    await Promise.all(loops);
    await p.exited;
    const total = acked.reduce((n, m) => n + m.size, 0);
    expect(total).toBeGreaterThan(20);

    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    for (let w = 0; w < writers; w++) {
      let prevLsn = 0;
      const seqs = [...acked[w].entries()].filter(([k]) => k.includes(":seq")).sort((a, b) => a[1] - b[1]);
      for (const [key, i] of seqs) {
        const r = await get(again.port, "shard-1", key);
        expect(r.status, `${key} was acknowledged`).toBe(200);
        expect(r.body.toString()).toBe(String(i));
        const lsn = Number(r.headers["x-lsn"]);
        expect(lsn).toBeGreaterThan(prevLsn); // in the order they were acknowledged
        prevLsn = lsn;
      }
      const last = acked[w].get(`w${w}:last`);
      if (last !== undefined) {
        const r = await get(again.port, "shard-1", `w${w}:last`);
        // the acknowledged value, or a later one whose fsync completed just before the kill
        expect(Number(r.body.toString())).toBeGreaterThanOrEqual(last);
      }
    }
  });

  it("keeps every acknowledged write through kill -9 while its log has zeros written ahead, and trims them", async () => {
    const p = await agentWithShard("zeros");
    const acked = new Map<string, string>();
    let stop = false;
    // 8 writers of 4 KiB values: well over the 128 KiB/s from which a log writes zeros ahead
    const loops = Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        const value = `${w}:${i}:`.padEnd(4096, String.fromCharCode(97 + ((w + i) % 26)));
        try {
          const r = await put(p.port, "shard-1", `z${w}:${i}`, value);
          if (r.status !== 200) break;
          acked.set(`z${w}:${i}`, value);
        } catch {
          break;
        }
      }
    });
    await new Promise((r) => setTimeout(r, 2500));
    const [file] = logFiles(p);
    const sizeBefore = statSync(file).size;
    p.child.kill("SIGKILL");
    stop = true;
    await Promise.all(loops);
    await p.exited;
    expect(acked.size).toBeGreaterThan(100);
    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    expect(again.stderr()).toMatch(/bytes of zeros after the last entry \(LSN \d+\).*trimmed/);
    expect(again.stderr()).not.toMatch(/torn tail/);
    expect(statSync(file).size).toBeLessThan(sizeBefore);
    for (const [key, value] of acked) {
      const r = await get(again.port, "shard-1", key);
      expect(r.status, key).toBe(200);
      expect(r.body.toString(), key).toBe(value);
    }
  });

  it("truncates a torn tail at the last valid entry, says so, and serves on", async () => {
    const p = await agentWithShard("torn");
    for (let i = 0; i < 10; i++) expect((await put(p.port, "shard-1", `k${i}`, `v${i}`)).status).toBe(200);
    expect(await stopAgent(p)).toBe(0);
    const [file] = logFiles(p);
    const size = statSync(file).size;
    truncateSync(file, size - 7); // cut the last entry mid-way

    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    expect(again.stderr()).toMatch(/torn tail at offset \d+ .*bytes dropped/);
    for (let i = 0; i < 9; i++)
      expect((await get(again.port, "shard-1", `k${i}`)).body.toString()).toBe(`v${i}`);
    expect((await get(again.port, "shard-1", "k9")).status).toBe(404);
    const inv = (await http(again.port, "GET", "/v1/shards/shard-1")).json();
    expect(inv.lsn).toBe(9);
    // the log continues after the cut
    expect((await put(again.port, "shard-1", "k10", "v10")).json().lsn).toBe(10);
  });

  it("detects a flipped byte in the middle of a log file and refuses the shard without touching it", async () => {
    const p = await agentWithShard("flip");
    for (let i = 0; i < 20; i++)
      expect((await put(p.port, "shard-1", `k${i}`, `value-${i}`)).status).toBe(200);
    expect(await stopAgent(p)).toBe(0);
    const [file] = logFiles(p);
    const before = readFileSync(file);
    const fd = openSync(file, "r+");
    const at = Math.floor(before.length / 2);
    writeSync(fd, Buffer.from([before[at] ^ 0x40]), 0, 1, at);
    closeSync(fd);

    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    expect(again.stderr()).toMatch(/shard shard-1 REFUSED: .*corrupt entry at offset \d+/);
    const inv = (await http(again.port, "GET", "/v1/shards/shard-1")).json();
    expect(inv.state).toBe("failed");
    const r = await get(again.port, "shard-1", "k0");
    expect(r.status).toBe(500);
    expect(r.json().error).toBe("shard-failed");
    expect((await put(again.port, "shard-1", "k0", "x")).status).toBe(500);
    // nothing was truncated or rewritten
    expect(statSync(file).size).toBe(before.length);
    expect(existsSync(file)).toBe(true);
  });

  it("refuses a shard with an altered meta.json (listed as failed, not unknown) and will not re-create over its data", async () => {
    const p = await agentWithShard("meta");
    expect((await put(p.port, "shard-1", "k", "v")).status).toBe(200);
    expect(await stopAgent(p)).toBe(0);
    const meta = join(p.dataDir, "shards", "shard-1", "meta.json");
    writeFileSync(meta, readFileSync(meta, "utf8").replace('\\"epoch\\":1', '\\"epoch\\":9'));
    const [file] = logFiles(p);
    const size = statSync(file).size;

    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    expect(again.stderr()).toMatch(/shard shard-1 REFUSED: .*checksum mismatch/);
    const r = await get(again.port, "shard-1", "k");
    expect(r.status).toBe(500);
    expect(r.json().error).toBe("shard-failed");
    expect(r.json().message).toMatch(/checksum mismatch/);
    const create = await admin(again.port, "PUT", "shard-1", { epoch: 1 });
    expect(create.status).toBe(500);
    expect(create.json().error).toBe("shard-failed");
    expect(statSync(file).size).toBe(size);
  });

  it("saves the access windows while it runs, so kill -9 keeps the access history up to the last save", async () => {
    const p = await startAgent({
      dataDir: join(root, "windows", "data"),
      extra: ["--windows-save-seconds", "1"],
    });
    live.push(p);
    expect([200, 201]).toContain((await admin(p.port, "PUT", "shard-1", { epoch: 1 })).status);
    for (let i = 0; i < 40; i++) expect((await put(p.port, "shard-1", `w${i}`, "v")).status).toBe(200);
    const wroteAt = Date.now();
    const file = join(p.dataDir, "access-windows.bin");
    const before = (await http(p.port, "GET", "/v1/access?window=3600")).json() as {
      segments: { segment: number }[];
    };
    expect(before.segments.length).toBeGreaterThan(0);
    // a save that began after the last write
    const deadline = Date.now() + 20_000;
    while (!existsSync(file) || statSync(file).mtimeMs < wroteAt + 5) {
      if (Date.now() > deadline) throw new Error("the access windows were not saved within 20 s");
      await new Promise((r) => setTimeout(r, 100));
    }
    p.child.kill("SIGKILL");
    await p.exited;
    const again = await startAgent({ dataDir: p.dataDir, port: p.port });
    live.push(again);
    const after = (await http(again.port, "GET", "/v1/access?window=3600")).json() as {
      segments: { segment: number }[];
    };
    expect(after.segments.map((s) => s.segment)).toEqual(before.segments.map((s) => s.segment));
    expect(again.stderr()).not.toMatch(/access windows .* not loaded/);
    await stopAgent(again);

    // a bad interval is refused before the agent starts; nothing is written
    for (const bad of ["-1", "abc", "1.5", "", "86401"]) {
      const dataDir = join(root, `windows-bad-${bad}`, "data");
      const r = spawnSync(
        process.execPath,
        [
          ...cliArgs(),
          "--data-dir",
          dataDir,
          "agent",
          "--listen",
          "127.0.0.1:1",
          "--zone",
          "a",
          "--node-id",
          "node-1",
          "--windows-save-seconds",
          bad,
        ],
        {
          encoding: "utf8",
          env: { ...process.env, SHARDCTL_ZONES: "a,b,c", SHARDCTL_TOKEN: "t".repeat(20) },
        },
      );
      expect(r.status, `${bad}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(
        bad === ""
          ? /--windows-save-seconds is empty/
          : /--windows-save-seconds must be a whole number from 0 to 86400/,
      );
      expect(existsSync(dataDir)).toBe(false);
    }
  });

  it("stops cleanly on SIGTERM with exit code 0", async () => {
    const p = await agentWithShard("sigterm");
    const writes = Array.from({ length: 30 }, (_, i) => put(p.port, "shard-1", `k${i}`, "v"));
    const results = await Promise.all(writes);
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(await stopAgent(p)).toBe(0);
    expect(p.stderr()).toMatch(/SIGTERM: stopping/);
  });
});
