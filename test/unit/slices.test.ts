import { describe, expect, it } from "vitest";
import { pipeInSlices, runInSlices } from "../../src/slices.js";

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

function* steps(n: number, ms: number, log: string[]): Generator<void, string, void> {
  for (let i = 0; i < n; i++) {
    busy(ms);
    log.push(`step ${i}`);
    yield;
  }
  return "done";
}

describe("runInSlices", () => {
  it("gives the event loop turns between slices of steps, and returns the generator's value", async () => {
    const log: string[] = [];
    const turns = setInterval(() => log.push("turn"), 0);
    try {
      expect(await runInSlices(steps(12, 3, log), 5)).toBe("done");
    } finally {
      clearInterval(turns);
    }
    // other work ran before the last step, not only after it
    const lastStep = log.lastIndexOf("step 11");
    expect(log.slice(0, lastStep).filter((e) => e === "turn").length).toBeGreaterThanOrEqual(2);
    expect(log.filter((e) => e.startsWith("step")).length).toBe(12);
  });

  it("runs steps back to back within a slice", async () => {
    const log: string[] = [];
    setImmediate(() => log.push("turn"));
    await runInSlices(steps(5, 0, log), 1000);
    expect(log.indexOf("turn")).toBe(-1); // five instant steps: no turn given before they were done
    await new Promise((r) => setImmediate(r));
    expect(log.at(-1)).toBe("turn");
  });

  it("rejects with the error a step throws", async () => {
    function* failing(): Generator<void, number, void> {
      yield;
      throw new Error("chunk 3 is unreadable");
    }
    await expect(runInSlices(failing())).rejects.toThrow("chunk 3 is unreadable");
  });
});

describe("pipeInSlices", () => {
  /** Pieces of output, each after `ms` of work. */
  function* pieces(n: number, ms: number, log: string[]): Generator<number | undefined, void, void> {
    for (let i = 0; i < n; i++) {
      busy(ms);
      log.push(`piece ${i}`);
      yield i;
    }
  }

  it("gives the loop turns while a writer takes every piece at once (its promise settled on nextTick)", async () => {
    // a socket whose reader keeps up: write() returns false, and "drain" comes on process.nextTick,
    // so awaiting it never lets the loop run (the export of the access windows held an agent's
    // loop for the whole answer that way)
    const log: string[] = [];
    const written: number[] = [];
    const turns = setInterval(() => log.push("turn"), 0);
    try {
      await pipeInSlices(
        pieces(12, 3, log),
        (p) => {
          written.push(p);
          return new Promise<void>((resolve) => process.nextTick(resolve));
        },
        5,
      );
    } finally {
      clearInterval(turns);
    }
    expect(written).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const lastPiece = log.lastIndexOf("piece 11");
    expect(log.slice(0, lastPiece).filter((e) => e === "turn").length).toBeGreaterThanOrEqual(3);
  });

  it("ends the generator and rejects when a write fails", async () => {
    const log: string[] = [];
    let closed = false;
    function* gen(): Generator<number | undefined, void, void> {
      try {
        yield* pieces(5, 0, log);
      } finally {
        closed = true;
      }
    }
    await expect(
      pipeInSlices(gen(), (p) => (p === 2 ? Promise.reject(new Error("the client went away")) : undefined)),
    ).rejects.toThrow("the client went away");
    expect(closed).toBe(true);
    expect(log).toEqual(["piece 0", "piece 1", "piece 2"]);
  });
});
