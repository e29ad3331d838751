/**
 * A split or merge export of a compacted shard sends its snapshot page by page
 * (GET /v1/shards/:id/export?from=1&snapSkip=N). Each page used to read the
 * snapshot from its start and skip what earlier pages had sent — hundreds of
 * whole reads for a shard of a million keys. A page now goes on where the
 * previous one stopped; a page asked for anywhere else (a retry, a restarted
 * agent) still reads from the start. The pages are the same either way.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeEntry } from "../../../src/agent/log-format.js";
import { admin, http, startAgent, stopAgent, tempDir, type AgentProc } from "./harness.js";

const SEGMENTS = 64;
const KEYS = 3000;
let root: string;
let agent: AgentProc;

/** The put entries of an export answer's body, as [key, value]. */
function puts(body: Buffer): string[][] {
  const out: string[][] = [];
  for (let off = 0; off < body.length;) {
    const d = decodeEntry(body, off);
    if (d.kind !== "entry") throw new Error(`a bad entry at ${off}: ${d.kind}`);
    if (d.entry.op === "put") out.push([d.entry.key, d.entry.value.toString()]);
    off += d.length;
  }
  return out;
}

async function page(skip: number | string, max: number) {
  const r = await http(
    agent.port,
    "GET",
    `/v1/shards/shard-1/export?from=1&max=${max}&ranges=0-32,40-64&snapSkip=${skip}`,
  );
  return { r, next: Number(r.headers["x-snapshot-next"]), done: r.headers["x-scanned-through"] !== "0" };
}

async function snapshotReads(): Promise<number> {
  const m = (await http(agent.port, "GET", "/metrics")).body.toString();
  return Number(/^shardctl_agent_export_snapshot_reads_total (\d+)/m.exec(m)![1]);
}

beforeAll(async () => {
  root = tempDir("export-cursor");
  // small log files: the snapshot leaves a log that no longer starts at LSN 1
  agent = await startAgent({
    dataDir: join(root, "data"),
    segments: SEGMENTS,
    extra: ["--max-file-bytes", "4096"],
  });
  expect((await admin(agent.port, "PUT", "shard-1", { epoch: 1, ranges: [[0, SEGMENTS]] })).status).toBe(201);
  for (let b = 0; b < KEYS; b += 500) {
    const ops = Array.from({ length: 500 }, (_, i) => ({
      op: "put",
      key: `key-${b + i}`,
      value: Buffer.from(`value-${b + i}`).toString("base64"),
    }));
    const r = await http(agent.port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1" },
      body: JSON.stringify({ ops }),
    });
    expect(r.status).toBe(200);
  }
  expect((await admin(agent.port, "POST", "shard-1/snapshot", { epoch: 1 })).status).toBe(200);
});

afterAll(async () => {
  await stopAgent(agent);
  rmSync(root, { recursive: true, force: true });
});

describe("agent: a snapshot's export, page by page", () => {
  it("goes on where the previous page stopped, and sends what one page would", async () => {
    const before = await snapshotReads();
    const whole = await page(0, 100_000);
    expect(whole.r.status).toBe(200);
    expect(whole.done).toBe(true);
    const all = puts(whole.r.body);
    expect(all.length).toBeGreaterThan(KEYS / 2);
    expect(all.length).toBeLessThan(KEYS);
    expect(await snapshotReads()).toBe(before + 1);

    const paged: string[][] = [];
    let skip = 0;
    let pages = 0;
    for (;;) {
      const p = await page(skip, 97);
      expect(p.r.status).toBe(200);
      expect(p.r.headers["x-snapshot-lsn"]).toBe(whole.r.headers["x-snapshot-lsn"]);
      paged.push(...puts(p.r.body));
      pages++;
      if (p.done) break;
      expect(p.next).toBeGreaterThan(skip);
      skip = p.next;
    }
    expect(pages).toBeGreaterThan(10);
    expect(paged).toEqual(all);
    // one read of the snapshot for all the pages, not one per page
    expect(await snapshotReads()).toBe(before + 2);
  });

  it("reads from the start for a page asked for elsewhere (a retry), with the same entries", async () => {
    const first = await page(0, 200);
    const second = await page(first.next, 200);
    const before = await snapshotReads();
    const retried = await page(first.next, 200); // the second page again: its cursor has moved on
    expect(await snapshotReads()).toBe(before + 1);
    expect(puts(retried.r.body)).toEqual(puts(second.r.body));
    expect(retried.next).toBe(second.next);
    // and the page after the retried one goes on from it
    await page(retried.next, 200);
    expect(await snapshotReads()).toBe(before + 1);
  });

  it("sends nothing past the end, and refuses a snapSkip that is not a count", async () => {
    const past = await page(KEYS * 10, 100);
    expect(past.r.status).toBe(200);
    expect(past.r.body.length).toBe(0);
    expect(past.done).toBe(true);
    for (const bad of ["-1", "x", "1.5"]) expect((await page(bad, 100)).r.status, bad).toBe(400);
  });
});
