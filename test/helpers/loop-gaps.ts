/**
 * Runs `job` with a timer ticking every millisecond beside it, standing in for what waits on the
 * event loop (requests, a leader's heartbeat): the job's value and time, and every gap between the
 * ticks up to its end (ms). A job that holds the loop shows as one long gap.
 */
export async function withTicker<T>(
  job: () => Promise<T>,
): Promise<{ value: T; ms: number; gaps: number[] }> {
  const gaps: number[] = [];
  let last = performance.now();
  const ticker = setInterval(() => {
    const t = performance.now();
    gaps.push(t - last);
    last = t;
  }, 1);
  const t0 = performance.now();
  try {
    const value = await job();
    gaps.push(performance.now() - last); // (the last stretch may have held the loop too)
    return { value, ms: performance.now() - t0, gaps };
  } finally {
    clearInterval(ticker);
  }
}
