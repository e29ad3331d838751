/** Shared helpers for benchmarks: timing, percentiles, the final JSON line. */
import { performance } from "node:perf_hooks";

export function now(): number {
  return performance.now();
}

/** Runs fn for at least minMs (after one warm-up call) and returns ns per iteration. */
export function timePerOp(fn: () => number, opsPerCall: number, minMs = 500): number {
  let sink = fn();
  let calls = 0;
  const start = now();
  let elapsed = 0;
  while (elapsed < minMs) {
    sink += fn();
    calls++;
    elapsed = now() - start;
  }
  if (sink === Number.MIN_VALUE) console.error("unreachable", sink);
  return (elapsed * 1e6) / (calls * opsPerCall);
}

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
