/** An agent's series answer as the dashboard reads it: a bad interval is an error, never a rate of Infinity. */
import { describe, expect, it } from "vitest";
import { seriesAnswer } from "../../../src/tui/live-source.js";

describe("seriesAnswer", () => {
  it("reads the counts and their interval", () => {
    const a = seriesAnswer("node-1", 7, { series: [3, -1, "x", 4.5], resolutionSeconds: 60 });
    expect(Array.from(a.series)).toEqual([3, 0, 0, 4.5]);
    expect(a.intervalSeconds).toBe(60);
  });

  it.each([0, -60, 0.5, Number.NaN, "60", null, undefined, Infinity])(
    "refuses resolutionSeconds %s, naming the agent and the segment",
    (res) => {
      expect(() => seriesAnswer("node-1", 7, { series: [1, 2], resolutionSeconds: res })).toThrow(
        /node-1 answered segment 7's series with resolutionSeconds .*not a whole number of seconds ≥ 1/,
      );
    },
  );

  it("refuses an answer without a list of counts", () => {
    expect(() => seriesAnswer("node-2", 3, { series: "1,2", resolutionSeconds: 60 })).toThrow(
      /node-2 answered segment 3's series without a list of counts/,
    );
    expect(() => seriesAnswer("node-2", 3, undefined)).toThrow(/without a list of counts/);
  });
});
