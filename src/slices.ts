/**
 * Long work on an event loop, done in slices: a generator does a bounded step
 * per next(), and runInSlices gives the loop a turn (I/O, timers, other
 * requests) whenever about `sliceMs` of steps have run. An agent writing the
 * access windows of 100,000 segments keeps answering gets and puts; an
 * autopilot forecasting thousands of segments keeps its leader heartbeat
 * going; the dashboard keeps drawing. pipeInSlices does the same for a
 * generator that produces output as it goes (a socket or a file written a
 * piece at a time, never held whole).
 */
import { setImmediate as nextTurn } from "node:timers/promises";

export { runAtOnce } from "./engine/steps.js";

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

/**
 * runInSlices for a generator that yields pieces of output (anything but
 * undefined) between its steps of work (undefined): each piece is handed to
 * `write` as it comes, and when that returns a promise (a socket or a file
 * that must take the piece first) the next step waits for it. A `write` that
 * throws or rejects ends the generator (its finally blocks run) and the error
 * is thrown.
 */
export async function pipeInSlices<P>(
  steps: Generator<P | undefined, void, void>,
  write: (piece: P) => void | Promise<void>,
  sliceMs = 10,
): Promise<void> {
  let sliceStart = performance.now();
  try {
    for (;;) {
      const r = steps.next();
      if (r.done) return;
      if (r.value !== undefined) {
        // Waiting for a write is not a turn of the loop: a socket that takes a piece at once (its
        // reader keeps up) says so on process.nextTick, and the promise settles without the loop
        // running; only nextTurn below is sure to give it one.
        const wrote = write(r.value);
        if (wrote) await wrote;
      }
      if (performance.now() - sliceStart >= sliceMs) {
        await nextTurn();
        sliceStart = performance.now();
      }
    }
  } finally {
    steps.return();
  }
}
