import { describe, expect, it } from "vitest";
import { PAUSE_BUDGET_MS, preCopyThreshold } from "../../../src/cluster/migrate-copy.js";

describe("preCopyThreshold: when pre-copy stops and the source is fenced", () => {
  it("is what the copy does in the pause budget, between 32 and 5000 entries, for small entries", () => {
    expect(preCopyThreshold(0, 0)).toBe(32); // nothing measured yet
    expect(preCopyThreshold(1, 100)).toBe(32);
    expect(preCopyThreshold(100, 100)).toBe(100 * PAUSE_BUDGET_MS);
    expect(preCopyThreshold(10_000, 100)).toBe(5000);
  });

  it("leaves no more than 1 MiB of entries to the catch-up by its floor: large entries count by bytes", () => {
    // 16 MiB entries copied at one per 100 ms: before, 31 of them (~500 MB) were left for after the fence
    expect(preCopyThreshold(0.01, 16 * 1024 * 1024)).toBe(1);
    expect(preCopyThreshold(0.01, 256 * 1024)).toBe(4);
    expect(preCopyThreshold(0.01, 32 * 1024)).toBe(32);
    // a fast copy still earns its budget's worth
    expect(preCopyThreshold(5, 16 * 1024 * 1024)).toBe(50);
  });
});
