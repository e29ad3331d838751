/**
 * Long work on an event loop, done in slices: a generator does a bounded step
 * per next(), and runInSlices gives the loop a turn (I/O, timers, other
 * requests) whenever about `sliceMs` of steps have run. An agent writing the
 * access windows of 100,000 segments keeps answering gets and puts; an
 * autopilot forecasting thousands of segments keeps its leader heartbeat
 * going; the dashboard keeps drawing.
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

/** Runs a stepwise job to its end at once (where nothing else waits on the thread). */
export function runAtOnce<T>(steps: Generator<unknown, T, void>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}
