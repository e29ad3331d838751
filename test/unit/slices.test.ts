import { describe, expect, it } from "vitest";
import { runInSlices } from "../../src/slices.js";

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
