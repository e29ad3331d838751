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
  private queue: { item: T; resolve: () => void; reject: (err: unknown) => void }[] = [];
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
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.flushing) {
        this.flushing = true;
        // start after the event loop's poll phase: every request read in this turn shares the flush
        setImmediate(() => void this.run());
      }
    });
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
      this.queue = [];
      this.onBatch?.(batch.length);
      try {
        if (this.failed !== undefined) throw this.failed;
        await this.flush(batch.map((b) => b.item));
        this.flushes++;
        this.items += batch.length;
        for (const b of batch) b.resolve();
      } catch (err) {
        this.failed = err;
        for (const b of batch) b.reject(err);
      }
    }
    this.flushing = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
