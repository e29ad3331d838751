/**
 * Progress of long synchronous work (forecast backtest, simulate): nothing for
 * quick work, a line redrawn in place on a terminal, throttled plain lines
 * otherwise; stderr only, and the terminal line erased at the end.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  PLAIN_AFTER_MS,
  PLAIN_EVERY_MS,
  StepProgress,
  TTY_AFTER_MS,
  TTY_EVERY_MS,
} from "../../../src/commands/step-progress.js";
import { runForecastBacktest } from "../../../src/commands/forecast.js";

class Sink extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

function clocked(tty: boolean) {
  const sink = new Sink();
  let t = 1_000_000;
  const p = new StepProgress(sink, "work", tty, () => t);
  return { sink, p, advance: (ms: number) => (t += ms) };
}

describe("StepProgress", () => {
  it("prints nothing for work that ends quickly", () => {
    for (const tty of [true, false]) {
      const { sink, p, advance } = clocked(tty);
      for (let i = 1; i <= 10; i++) {
        p.update(i, 10, `step ${i}`);
        advance(10);
      }
      p.end();
      expect(sink.text).toBe("");
    }
  });

  it("writes plain, throttled lines when stderr is not a terminal", () => {
    const { sink, p, advance } = clocked(false);
    p.update(0, 100, "start"); // starts the clock
    advance(PLAIN_AFTER_MS);
    p.update(10, 100, "fitting ets");
    advance(PLAIN_EVERY_MS - 1);
    p.update(20, 100, "too soon");
    advance(1);
    p.update(55, 100, "fitting arima");
    p.end();
    expect(sink.text).toBe("work: 10% (fitting ets)\nwork: 55% (fitting arima)\n");
  });

  it("redraws one line on a terminal and erases it at the end", () => {
    const { sink, p, advance } = clocked(true);
    p.update(0, 3, "a");
    advance(TTY_AFTER_MS);
    p.update(1, 3, "b");
    advance(TTY_EVERY_MS);
    p.update(2, 3, "c");
    p.end();
    expect(sink.text).toBe("\r\x1b[2Kwork: 33% (b)\r\x1b[2Kwork: 66% (c)\r\x1b[2K");
    expect(sink.text).not.toContain("\n");
  });

  it("never shows more than 100% nor divides by zero", () => {
    const { sink, p, advance } = clocked(false);
    p.update(0, 0, "x");
    advance(PLAIN_AFTER_MS);
    p.update(5, 0, "nothing to count");
    advance(PLAIN_EVERY_MS);
    p.update(7, 5, "past the end");
    expect(sink.text).toBe("work: 0% (nothing to count)\nwork: 100% (past the end)\n");
  });
});

describe("forecast backtest progress", () => {
  const csv =
    "t,v\n" + Array.from({ length: 200 }, (_, i) => `${1700000000 + 3600 * i},${(i % 24) + 5}`).join("\n");
  const io = { out: new Sink(), err: new Sink() };

  it("counts every model fit and ends the display", () => {
    const calls: [number, number, string][] = [];
    let ended = 0;
    const report = runForecastBacktest(
      { input: "s.csv" },
      {
        io,
        readFile: () => csv,
        progress: { update: (d, t, s) => calls.push([d, t, s]), end: () => ended++ },
      },
    );
    expect(report.models.length).toBeGreaterThan(1);
    expect(calls.length).toBe(calls[0][1]);
    expect(calls.at(-1)![0]).toBe(calls[0][1]);
    expect(calls[0][2]).toMatch(/^backtest seasonal_naive, model fit 1 of \d+$/);
    expect(ended).toBe(1);
    expect(io.err.text).toBe("");
  });

  it("ends the display when the work fails too", () => {
    let ended = 0;
    expect(() =>
      runForecastBacktest(
        { input: "s.csv", horizon: 24 },
        {
          io,
          readFile: () => csv,
          progress: {
            update: () => {
              throw new Error("interrupted");
            },
            end: () => ended++,
          },
        },
      ),
    ).toThrow(/interrupted/);
    expect(ended).toBe(1);
  });
});
