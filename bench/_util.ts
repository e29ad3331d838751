/** Shared helpers for benchmarks: timing, percentiles, the final JSON line. */
import { performance } from "node:perf_hooks";

export function now(): number {
  return performance.now();
}

/**
 * Nanoseconds per operation of fn (which performs opsPerCall operations),
 * after a warm-up that lets the JIT settle: the median over slices of at
 * least SLICE_MS, timed for minMs in all. On a shared machine another
 * process takes the CPU now and then; the median of short slices is what the
 * code costs when it runs, where one long mean would also count the time it
 * waited.
 */
export function timePerOp(fn: () => number, opsPerCall: number, minMs = 500): number {
  let sink = 0;
  const warm = now();
  while (now() - warm < Math.min(250, minMs / 4)) sink += fn();
  const slices: number[] = [];
  const start = now();
  while (now() - start < minMs || slices.length < 5) {
    const t0 = now();
    let calls = 0;
    let elapsed = 0;
    while (elapsed < SLICE_MS) {
      sink += fn();
      calls++;
      elapsed = now() - t0;
    }
    slices.push((elapsed * 1e6) / (calls * opsPerCall));
  }
  if (sink === Number.MIN_VALUE) console.error("unreachable", sink);
  slices.sort((a, b) => a - b);
  return slices[slices.length >> 1];
}

const SLICE_MS = 25;

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

export function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Prints the benchmark's figures as its last line of output. */
export function emit(figures: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(figures) + "\n");
}

export function log(msg: string): void {
  process.stderr.write(msg + "\n");
}

/** Runs a job with a 1 ms timer beside it: its time and the gaps between the ticks (the tests' helper). */
export { withTicker as ticking } from "../test/helpers/loop-gaps.js";

/** The number after `--NAME` on the command line (`npm run bench -- NAME --rounds 3`), else `dflt`. */
export function numberArg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
