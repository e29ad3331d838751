/**
 * The blocking-query loop, with Consul's documented rules
 * (developer.hashicorp.com/consul/api-docs/features/blocking):
 *
 * - the index sent is always ≥ 1 (0 would return at once, forever);
 * - an index that goes backwards (a snapshot restore, a new leader behind)
 *   resets the loop to 0 so that it re-reads from scratch (the handler sees
 *   the answer to that fresh read too: handlers compare versions themselves);
 * - a wakeup whose index did not change is not a change (timeouts, unrelated
 *   writes): the handler is not called;
 * - the loop is rate-limited (at most one query per minIntervalMs), so a
 *   misbehaving server cannot make it spin;
 * - errors back off exponentially (to maxBackoffMs) and the loop carries on
 *   until the signal aborts.
 *
 * The fetch and the sleep are injected, so the rules are unit-tested without
 * a server.
 */

export interface BlockingFetchResult {
  /** The X-Consul-Index of the answer. */
  index: number;
}

export interface BlockingLoopOptions<R extends BlockingFetchResult> {
  /** One query: index 0 means "answer now"; otherwise block until the index passes it. */
  fetch: (index: number, signal: AbortSignal) => Promise<R>;
  /** Called with each answer whose index moved (and with the first). May be async. */
  onResult: (result: R) => void | Promise<void>;
  onError?: (err: unknown, backoffMs: number) => void;
  signal: AbortSignal;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** A monotonic clock in ms (performance.now): with a wall clock stepped back, the loop would wait for the size of the step. */
  now: () => number;
  minIntervalMs?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

export async function blockingLoop<R extends BlockingFetchResult>(
  opts: BlockingLoopOptions<R>,
): Promise<void> {
  const minInterval = opts.minIntervalMs ?? 100;
  const initialBackoff = opts.initialBackoffMs ?? 250;
  const maxBackoff = opts.maxBackoffMs ?? 10_000;
  let index = 0;
  let backoff = initialBackoff;
  let lastStart = -Infinity;
  while (!opts.signal.aborted) {
    const wait = lastStart + minInterval - opts.now();
    if (wait > 0) {
      await opts.sleep(wait, opts.signal).catch(() => undefined);
      if (opts.signal.aborted) return;
    }
    lastStart = opts.now();
    let result: R;
    try {
      result = await opts.fetch(index, opts.signal);
    } catch (err) {
      if (opts.signal.aborted) return;
      opts.onError?.(err, backoff);
      await opts.sleep(backoff, opts.signal).catch(() => undefined);
      backoff = Math.min(maxBackoff, backoff * 2);
      continue;
    }
    backoff = initialBackoff;
    // An index below 1 is bogus (a missing header): treat it as 1, not as a reset.
    const next = Math.max(1, result.index);
    if (index > 0 && next === index) continue; // woke up without a change
    const wentBackwards = next < index;
    try {
      await opts.onResult(result);
    } catch (err) {
      if (opts.signal.aborted) return;
      opts.onError?.(err, backoff);
    }
    // Backwards: start over from 0 (an immediate full read); otherwise block on
    // the new index, never below 1.
    index = wentBackwards ? 0 : next;
  }
}
