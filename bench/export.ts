/**
 * `npm run bench -- export`: a split's export of a compacted shard, whose
 * snapshot is sent page by page (GET /v1/shards/:id/export?from=1&snapSkip=N,
 * 5,000 entries a page as the reshape coordinator asks). One agent, started
 * on a free local port with a temporary data directory; --keys (default
 * 200,000) 100-byte values written, the shard snapshotted, then half its
 * segments exported: every page where the previous one stopped (this revision
 * goes on from there), then every page again, last first (no cursor stands
 * where one is asked for: each is read from the snapshot's start and skipped
 * to, as every page was before) — the baseline, in the same run, page for
 * page. Ends with one JSON line.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { admin, http, startAgent, stopAgent, tempDir } from "../test/integration/agent/harness.js";
import { emit, log, now, numberArg, round } from "./_util.js";

const KEYS = numberArg("keys", 200_000);
const PAGE = 5000;
const SEGMENTS = 64;

const root = tempDir("bench-export");
// 1 MiB log files: the snapshot leaves a log that no longer starts at LSN 1
const agent = await startAgent({
  dataDir: join(root, "data"),
  segments: SEGMENTS,
  extra: ["--max-file-bytes", String(1 << 20)],
});
try {
  if ((await admin(agent.port, "PUT", "shard-1", { epoch: 1, ranges: [[0, SEGMENTS]] })).status !== 201)
    throw new Error("cannot create the shard");
  log(`writing ${KEYS} keys…`);
  for (let b = 0; b < KEYS; b += 10_000) {
    const ops = Array.from({ length: Math.min(10_000, KEYS - b) }, (_, i) => ({
      op: "put",
      key: `key-${b + i}`,
      value: Buffer.alloc(100, (b + i) % 251).toString("base64"),
    }));
    const r = await http(agent.port, "POST", "/v1/shards/shard-1/batch", {
      headers: { "x-shard-epoch": "1" },
      body: JSON.stringify({ ops }),
    });
    if (r.status !== 200) throw new Error(`batch: ${r.status} ${r.body}`);
  }
  // a snapshot, which deletes the log files wholly before it
  if ((await admin(agent.port, "POST", "shard-1/snapshot", { epoch: 1 })).status !== 200)
    throw new Error("snapshot refused");
  const reads = async () =>
    Number(
      /^shardctl_agent_export_snapshot_reads_total (\d+)/m.exec(
        (await http(agent.port, "GET", "/metrics")).body.toString(),
      )![1],
    );
  const page = async (skip: number) => {
    const t = now();
    const r = await http(
      agent.port,
      "GET",
      `/v1/shards/shard-1/export?from=1&max=${PAGE}&ranges=0-32&snapSkip=${skip}`,
    );
    if (r.status !== 200) throw new Error(`export: ${r.status} ${r.body}`);
    if (r.headers["x-snapshot-lsn"] === undefined) throw new Error("the log was not compacted");
    return {
      ms: now() - t,
      next: Number(r.headers["x-snapshot-next"]),
      done: r.headers["x-scanned-through"] !== "0",
      bytes: r.body.length,
    };
  };
  log(`exporting half the segments, ${PAGE} entries a page, then each page again…`);
  const reads0 = await reads();
  const skips: number[] = [];
  const sizes: number[] = [];
  let cursorMs = 0;
  let bytes = 0;
  for (let skip = 0; ;) {
    const p = await page(skip);
    skips.push(skip);
    sizes.push(p.bytes);
    cursorMs += p.ms;
    bytes += p.bytes;
    if (p.done) break;
    skip = p.next;
  }
  const cursorReads = (await reads()) - reads0;
  // the baseline: every page again, last first, so that no cursor stands where one is asked for
  let rereadMs = 0;
  for (let k = skips.length - 1; k >= 0; k--) {
    const again = await page(skips[k]);
    if (again.bytes !== sizes[k]) throw new Error(`the page at ${skips[k]} differs when read again`);
    rereadMs += again.ms;
  }
  const pages = skips.length;
  const skip = skips[pages - 1];
  const snapshotReads = (await reads()) - reads0 - cursorReads;
  log(
    `${pages} pages, ${skip} entries before the last, ${round(bytes / 2 ** 20, 1)} MiB: going on ${round(cursorMs, 0)} ms, reading each from the start ${round(rereadMs, 0)} ms; ${cursorReads} and ${snapshotReads} reads of the snapshot`,
  );
  emit({
    bench: "export",
    keys: KEYS,
    pages,
    exported_mib: round(bytes / 2 ** 20, 1),
    cursor_ms: round(cursorMs, 0),
    reread_ms: round(rereadMs, 0),
    speedup: round(rereadMs / cursorMs, 1),
    snapshot_reads: cursorReads,
    reread_snapshot_reads: snapshotReads,
  });
} finally {
  await stopAgent(agent);
  rmSync(root, { recursive: true, force: true });
}
