/**
 * Long work on the agent's event loop, done in slices: a generator does a
 * bounded step per next(), and runInSlices gives the loop a turn (I/O,
 * timers, other requests) whenever about `sliceMs` of steps have run. So a
 * request that arrives while the access windows of 100,000 segments are being
 * written waits for one slice, not for the whole store.
 */
import { setImmediate as nextTurn } from "node:timers/promises";

export async function runInSlices<T>(steps: Generator<unknown, T, void>, sliceMs = 10): Promise<T> {
  let sliceStart = performance.now();
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    if (performance.now() - sliceStart >= sliceMs) {
      await nextTurn();
      sliceStart = performance.now();
    }
  }
}
