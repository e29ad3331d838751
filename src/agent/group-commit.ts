/**
 * Group commit: callers submit items; one flush (write + fsync) is in flight
 * at a time, and every item submitted while it runs joins the next flush. An
 * item's promise settles only when the flush that carried it has completed,
 * so a write is acknowledged only after its fsync.
 *
 * Flushes run strictly one after another and in submission order, so the
 * caller may apply the items to its state inside `flush`, after the fsync.
 * The first flush of an idle committer starts in the `setImmediate` phase,
 * after the event loop has read every request that arrived in its poll phase,
 * so they share it too (measured: larger batches than starting on a microtask).
 *
 * A failed flush rejects its items and every later one: after a failed fsync
 * the file's content is unknown (the kernel may have dropped the dirty pages),
 * so the log must not accept more writes.
 */
export class GroupCommit<T> {
  private queue: T[] = [];
  /** The outcome of the next flush, shared by every item waiting for it (one promise per flush, not per item). */
  private next?: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void };
  private flushing = false;
  private failed: unknown = undefined;
  private idleWaiters: (() => void)[] = [];
  /** Flushes done and items carried (for metrics and tests). */
  flushes = 0;
  items = 0;

  constructor(
    private readonly flush: (items: T[]) => Promise<void>,
    private readonly onBatch?: (size: number) => void,
  ) {}

  submit(item: T): Promise<void> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    this.queue.push(item);
    if (!this.next) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.next = { promise, resolve, reject };
    }
    if (!this.flushing) {
      this.flushing = true;
      // start after the event loop's poll phase: every request read in this turn shares the flush
      setImmediate(() => void this.run());
    }
    return this.next.promise;
  }

  /** Items waiting or in flight. */
  get pending(): number {
    return this.queue.length + (this.flushing ? 1 : 0);
  }

  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void> {
    if (!this.flushing && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async run(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue;
      const outcome = this.next!;
      this.queue = [];
      this.next = undefined;
      this.onBatch?.(batch.length);
      try {
        if (this.failed !== undefined) throw this.failed;
        await this.flush(batch);
        this.flushes++;
        this.items += batch.length;
        outcome.resolve();
      } catch (err) {
        this.failed = err;
        outcome.reject(err);
      }
    }
    this.flushing = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
