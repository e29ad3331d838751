/**
 * An agent restarted after its host's clock was stepped back (an in-process agent, its real windows
 * file): the access windows it saved while the clock was ahead are moved back by as much, so that
 * new accesses land in the second and minute windows again instead of looking hours late.
 */
import { utimesSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { InProcessAgent, tempDir } from "./harness.js";

const HOUR = 3_600_000;
const running = new InProcessAgent();

afterEach(() => running.stop());

const sum = (a: ArrayLike<number>) => Array.from(a).reduce((s, x) => s + x, 0);

describe("access windows across a clock stepped back", () => {
  it("windows saved 3 h ahead are moved back at start: new accesses count in the minute windows", async () => {
    const dataDir = join(tempDir("windows-clock"), "data");
    let agent = await running.start(dataDir);
    // counted while the host's clock was 3 h ahead, saved at stop with that clock's time
    const ahead = Date.now() + 3 * HOUR;
    agent.windows.record(7, false, agent.windows.zoneIndexOf("b"), ahead, 25);
    await running.stop();
    const file = join(dataDir, "access-windows.bin");
    utimesSync(file, new Date(ahead), new Date(ahead));

    // the clock is right again
    agent = await running.start(dataDir);
    expect(running.logs.join("\n")).toMatch(
      /were saved 108\d\d s ahead of this host's clock .*: moved back by as much/,
    );
    const now = Date.now();
    agent.windows.record(7, false, agent.windows.zoneIndexOf("a"), now, 10);
    // before: the minute level held nothing (every new access looked 3 h late and went to the hours)
    expect(sum(agent.windows.series(7, 1, now, "a"))).toBe(10);
    // the history kept, as recent as it was
    expect(sum(agent.windows.series(7, 1, now, "b"))).toBe(25);

    // a file saved on this clock is read as it is
    agent = await running.start(dataDir);
    expect(running.logs.join("\n")).not.toMatch(/ahead of this host's clock/);
    expect(sum(agent.windows.series(7, 1, Date.now(), "a"))).toBe(10);
  });
});
