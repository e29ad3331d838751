/**
 * `npm run bench -- windows-stall`: how long an agent's event loop is held
 * while it writes its access windows (a collector's GET /v1/access/export, the
 * periodic save to access-windows.bin), with every one of 100,000 segments
 * active. Baseline, in the same run: serialize() at once, which holds the loop
 * for its whole time. Measured: the same bytes written in slices
 * (AccessWindows.serializeSteps through the agent's runInSlices), with a timer
 * every millisecond standing in for the requests waiting: the longest and the
 * 99th-percentile gap between its ticks, and the total time. Then what the
 * agent does now: the form streamed to a file a chunk at a time as it is laid
 * out (serializeStream through pipeInSlices into writeFileAtomic, the
 * periodic save's path; the export streams the same pieces to its socket):
 * the same loop figures, and the memory it holds (the growth of the
 * process's ArrayBuffer memory, sampled at each piece) against the whole
 * form that the two others hold. And the export's path: the same pieces
 * written to an HTTP answer (as GET /v1/access/export writes them) that
 * another process reads as fast as they come, the case where a socket takes
 * each piece at once. Alternates them, --rounds times (default 3).
 * Ends with one JSON line.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeFileAtomic, writeFully } from "../src/agent/fs-util.js";
import { writePiece } from "../src/agent/server.js";
import { AccessWindows } from "../src/engine/access-windows.js";
import { pipeInSlices, runInSlices } from "../src/slices.js";
import { emit, log, numberArg, percentile, round, ticking } from "./_util.js";

const SEGMENTS = numberArg("segments", 100_000);
const ROUNDS = numberArg("rounds", 3);

const w = new AccessWindows({ segmentCount: SEGMENTS, zones: ["a", "b", "c"] });
const t0 = Date.now();
for (let s = 0; s < SEGMENTS; s++) w.record(s, s % 5 === 0, s % 3, t0 - (s % 3600) * 1000);
log(`${SEGMENTS} active segments, ${round(w.allocatedBytes / 2 ** 20, 1)} MiB of windows`);

const dir = mkdtempSync(join(tmpdir(), "shardctl-bench-windows-stall-"));
const file = join(dir, "access-windows.bin");
const atOnce: number[] = [];
const sliced: { ms: number; max: number; p99: number }[] = [];
const streamed: { ms: number; max: number; p99: number; heldMiB: number }[] = [];
const exported: { ms: number; max: number; p99: number }[] = [];

/** The export's path: the pieces written to an HTTP answer by the agent's own writePiece. */
function writeExport(res: ServerResponse): Promise<void> {
  const { length, pieces } = w.serializeStream();
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": length });
  return pipeInSlices(pieces, (piece) => writePiece(res, piece)).then(() => void res.end());
}

/** One export to a reader in another process that keeps up: the loop's gaps from its request to the last piece. */
async function exportToReader(): Promise<{ ms: number; gaps: number[]; got: number }> {
  let answered!: (p: Promise<{ ms: number; gaps: number[] }>) => void;
  const writing = new Promise<Promise<{ ms: number; gaps: number[] }>>((r) => (answered = r));
  const server = createServer((_req, res) => answered(ticking(() => writeExport(res))));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const reader = spawn(
    process.execPath,
    [
      "-e",
      `require("node:http").get({ host: "127.0.0.1", port: ${port} }, (r) => { let n = 0; r.on("data", (c) => (n += c.length)); r.on("end", () => process.stdout.write(String(n))); });`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let out = "";
  reader.stdout.on("data", (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => reader.once("exit", () => resolve()));
  const { ms, gaps } = await await writing;
  await exited;
  server.close();
  return { ms, gaps, got: Number(out) };
}
let bytes = 0;
for (let r = 0; r < ROUNDS; r++) {
  const a = await ticking(async () => {
    bytes = w.serialize().length;
  });
  atOnce.push(Math.max(...a.gaps));
  const b = await ticking(() => runInSlices(w.serializeSteps()));
  const sorted = Float64Array.from(b.gaps).sort();
  sliced.push({ ms: b.ms, max: sorted[sorted.length - 1], p99: percentile(sorted, 99) });
  log(
    `round ${r + 1}: at once ${round(a.ms, 0)} ms (the loop held ${round(atOnce[r], 0)} ms); ` +
      `in slices ${round(b.ms, 0)} ms, the loop held at most ${round(sliced[r].max, 1)} ms (p99 ${round(sliced[r].p99, 1)} ms)`,
  );
  // streamed to a file as the agent saves it: the ArrayBuffer memory it holds, sampled at each piece
  const base = process.memoryUsage().arrayBuffers;
  let held = 0;
  const c = await ticking(() =>
    writeFileAtomic(file, async (fh) => {
      let pos = 0;
      await pipeInSlices(w.serializeStream().pieces, async (piece) => {
        held = Math.max(held, process.memoryUsage().arrayBuffers - base);
        await writeFully(fh, piece, pos);
        pos += piece.length;
      });
    }),
  );
  if (statSync(file).size !== bytes) throw new Error("the streamed file is not the whole form");
  const sortedC = Float64Array.from(c.gaps).sort();
  streamed.push({
    ms: c.ms,
    max: sortedC[sortedC.length - 1],
    p99: percentile(sortedC, 99),
    heldMiB: held / 2 ** 20,
  });
  log(
    `  streamed to a file ${round(c.ms, 0)} ms, the loop held at most ${round(streamed[r].max, 1)} ms, ` +
      `${round(streamed[r].heldMiB, 1)} MiB held at most (the whole form: ${round(bytes / 2 ** 20, 1)} MiB)`,
  );
  // the export to a reader that keeps up
  const d = await exportToReader();
  if (d.got !== bytes) throw new Error(`the reader got ${d.got} bytes of ${bytes}`);
  const sortedD = Float64Array.from(d.gaps).sort();
  exported.push({ ms: d.ms, max: sortedD[sortedD.length - 1], p99: percentile(sortedD, 99) });
  log(
    `  exported to a reader in another process ${round(d.ms, 0)} ms, the loop held at most ${round(exported[r].max, 1)} ms (p99 ${round(exported[r].p99, 1)} ms)`,
  );
  await new Promise((resolve) => setTimeout(resolve, 200));
}
const median = (xs: number[]) => Float64Array.from(xs).sort()[Math.floor(xs.length / 2)];
const stallAtOnce = median(atOnce);
const stallSliced = median(sliced.map((s) => s.max));
emit({
  bench: "windows-stall",
  segments: SEGMENTS,
  bytes,
  at_once_stall_ms: round(stallAtOnce, 1),
  sliced_total_ms: round(median(sliced.map((s) => s.ms)), 1),
  sliced_max_stall_ms: round(stallSliced, 1),
  sliced_p99_gap_ms: round(median(sliced.map((s) => s.p99)), 2),
  stall_ratio: round(stallSliced / stallAtOnce, 4),
  streamed_total_ms: round(median(streamed.map((x) => x.ms)), 1),
  streamed_max_stall_ms: round(median(streamed.map((x) => x.max)), 1),
  whole_form_mib: round(bytes / 2 ** 20, 1),
  streamed_held_mib: round(median(streamed.map((x) => x.heldMiB)), 1),
  export_total_ms: round(median(exported.map((x) => x.ms)), 1),
  export_max_stall_ms: round(median(exported.map((x) => x.max)), 1),
  export_p99_gap_ms: round(median(exported.map((x) => x.p99)), 2),
});
rmSync(dir, { recursive: true, force: true });
