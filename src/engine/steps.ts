/**
 * Stepwise work: a generator that does a bounded step of a long computation
 * per next() (yielding undefined between steps) and returns its result. The
 * edges run it in slices on their event loop (src/slices.ts); here, where
 * nothing else waits on the thread, it is run to its end at once.
 */
export function runAtOnce<T>(steps: Generator<unknown, T, void>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}
