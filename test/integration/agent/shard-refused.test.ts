/**
 * A shard that cannot be loaded is refused with its reason, never forgotten: a meta.json whose
 * checksum does not match, one that cannot be read (an I/O error), a log file too large to read
 * whole. Each stays listed as "failed" with why, every request names it (not "unknown shard"), a
 * create at its id does not write over it, and nothing of it is deleted or rewritten.
 */
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { admin, get, http, put, startAgent, stopAgent, tempDir, type AgentProc } from "./harness.js";

let root: string;
const live: AgentProc[] = [];

beforeAll(() => {
  root = tempDir("shard-refused");
});

afterAll(async () => {
  for (const p of live) await stopAgent(p, "SIGKILL");
  rmSync(root, { recursive: true, force: true });
});

/** Every file under a shard's directory with its size (a directory as -1), to see that nothing changed. */
function listing(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of readdirSync(dir)) {
    const st = statSync(join(dir, n));
    out[n] = st.isDirectory() ? -1 : st.size;
  }
  return out;
}

describe("a shard that cannot be loaded", () => {
  it("is listed as failed with its reason, answered as refused (not unknown), and nothing of it is deleted", async () => {
    const dataDir = join(root, "data");
    const p = await startAgent({ dataDir, extra: ["--windows-save-seconds", "0"] });
    live.push(p);
    for (const id of ["shard-1", "shard-2", "shard-3", "shard-4"]) {
      expect((await admin(p.port, "PUT", id, { epoch: 3 })).status).toBe(201);
      for (let i = 0; i < 5; i++) expect((await put(p.port, id, `k${i}`, `${id}:${i}`, 3)).status).toBe(200);
    }
    await stopAgent(p);
    const dir = (id: string) => join(dataDir, "shards", id);

    // shard-1: meta.json altered (its epoch raised by hand): the checksum no longer matches
    const metaFile = join(dir("shard-1"), "meta.json");
    const altered = readFileSync(metaFile, "utf8").replace('\\"epoch\\":3', '\\"epoch\\":9');
    expect(altered).not.toBe(readFileSync(metaFile, "utf8"));
    writeFileSync(metaFile, altered);
    // shard-2: meta.json cannot be read (an I/O error: EISDIR)
    renameSync(join(dir("shard-2"), "meta.json"), join(dir("shard-2"), "meta.json.saved"));
    mkdirSync(join(dir("shard-2"), "meta.json"));
    // shard-3: a log file larger than the agent reads whole (sparse: no disk used)
    const log3 = readdirSync(dir("shard-3")).find((n) => n.startsWith("log-"))!;
    const log3Size = statSync(join(dir("shard-3"), log3)).size;
    truncateSync(join(dir("shard-3"), log3), 3 * 1024 ** 3);
    const before = Object.fromEntries(["shard-1", "shard-2", "shard-3"].map((id) => [id, listing(dir(id))]));
    const meta1 = readFileSync(metaFile);

    const again = await startAgent({ dataDir, port: p.port, extra: ["--windows-save-seconds", "0"] });
    live.push(again);
    const reasons: Record<string, RegExp> = {
      "shard-1": /meta\.json: checksum mismatch/,
      "shard-2": /EISDIR/,
      "shard-3": /ERR_FS_FILE_TOO_LARGE|greater than 2 GiB/,
    };
    // the inventory lists them as failed, with why and what to do
    const inv = (await http(again.port, "GET", "/v1/shards")).json().shards as Record<string, unknown>[];
    expect(inv.map((s) => s.id).sort()).toEqual(["shard-1", "shard-2", "shard-3", "shard-4"]);
    for (const [id, why] of Object.entries(reasons)) {
      const s = inv.find((x) => x.id === id)!;
      expect(s.state, id).toBe("failed");
      expect(s.failed, id).toMatch(why);
      expect(s.failed, id).toMatch(/Nothing was deleted/);
      const one = await http(again.port, "GET", `/v1/shards/${id}`);
      expect(one.status).toBe(200);
      expect(one.json().state).toBe("failed");
      // a data request: refused, naming the reason — not "unknown shard"
      const r = await get(again.port, id, "k1", 3);
      expect(r.status, r.body.toString()).toBe(500);
      expect(r.json().error).toBe("shard-failed");
      expect(r.json().message).toMatch(why);
      const w = await put(again.port, id, "k1", "new", 9);
      expect(w.json().error).toBe("shard-failed");
      // a create or an assignment at its id does not write over what is there
      const c = await admin(again.port, "PUT", id, { epoch: 10 });
      expect(c.status, c.body.toString()).toBe(500);
      expect(c.json().error).toBe("shard-failed");
    }
    expect(again.stderr()).toMatch(/shard shard-1 REFUSED: .*checksum mismatch/);
    expect((await http(again.port, "GET", "/health")).json().failedShards).toBe(3);
    // the healthy shard is served as ever
    expect((await get(again.port, "shard-4", "k2", 3)).body.toString()).toBe("shard-4:2");
    // nothing was deleted, trimmed or rewritten
    for (const id of ["shard-1", "shard-2", "shard-3"]) expect(listing(dir(id)), id).toEqual(before[id]);
    expect(readFileSync(metaFile)).toEqual(meta1);
    await stopAgent(again);

    // repaired, each is served again with every write
    truncateSync(join(dir("shard-3"), log3), log3Size);
    rmSync(join(dir("shard-2"), "meta.json"), { recursive: true });
    renameSync(join(dir("shard-2"), "meta.json.saved"), join(dir("shard-2"), "meta.json"));
    const third = await startAgent({ dataDir, port: p.port, extra: ["--windows-save-seconds", "0"] });
    live.push(third);
    for (const id of ["shard-2", "shard-3"])
      for (let i = 0; i < 5; i++)
        expect((await get(third.port, id, `k${i}`, 3)).body.toString()).toBe(`${id}:${i}`);
    await stopAgent(third);
  });

  it("an empty directory left by a create cut short is not a shard: the id can be created", async () => {
    const dataDir = join(root, "empty-leftover");
    mkdirSync(join(dataDir, "shards", "shard-7"), { recursive: true });
    const p = await startAgent({ dataDir, extra: ["--windows-save-seconds", "0"] });
    live.push(p);
    expect((await http(p.port, "GET", "/v1/shards")).json().shards).toEqual([]);
    expect((await admin(p.port, "PUT", "shard-7", { epoch: 1 })).status).toBe(201);
    await stopAgent(p);
  });
});
