/** The frame size `dashboard --once` draws when no --width/--height is given. */
import { describe, expect, it } from "vitest";
import { onceFrameSize } from "../../../src/commands/dashboard.js";

describe("dashboard --once frame size", () => {
  it("takes the terminal's size, a line short of its height", () => {
    expect(onceFrameSize({}, { columns: 160, rows: 50 })).toEqual({ width: 160, height: 49 });
  });

  it("a terminal that reports no size (0×0 under script, or none when piped) gets 120×40", () => {
    expect(onceFrameSize({}, { columns: 0, rows: 0 })).toEqual({ width: 120, height: 40 });
    expect(onceFrameSize({}, {})).toEqual({ width: 120, height: 40 });
  });

  it("a terminal smaller than the dashboard's minimum gets the minimum, never a 'too small' frame", () => {
    expect(onceFrameSize({}, { columns: 20, rows: 5 })).toEqual({ width: 60, height: 16 });
  });

  it("--width and --height win over the terminal", () => {
    expect(onceFrameSize({ width: 200, height: 30 }, { columns: 20, rows: 5 })).toEqual({
      width: 200,
      height: 30,
    });
  });
});
