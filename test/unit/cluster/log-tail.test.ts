import { appendFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { logTail } from "../../../src/cluster/local.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-log-tail-");

describe("logTail: the last lines of an agent's log, for an error that says why it did not start", () => {
  it("gives the last lines, from this start's offset on", () => {
    const f = join(newDir(), "agent.log");
    const before = "an earlier run\nits last line\n";
    writeFileSync(f, before + Array.from({ length: 12 }, (_, i) => `line ${i}`).join("\n") + "\n\n");
    expect(logTail(f, 3)).toBe("line 9\nline 10\nline 11");
    expect(logTail(f, 20, Buffer.byteLength(before))).toBe(
      Array.from({ length: 12 }, (_, i) => `line ${i}`).join("\n"),
    );
    writeFileSync(f, "only this run\n");
    expect(logTail(f, 8, 100)).toBe(""); // nothing after the offset
  });

  it("reads only the log's end: a log of 3 GiB (sparse) still gives its last lines", () => {
    // read whole, such a log threw (over 2 GiB) and the error lost the agent's last words
    const f = join(newDir(), "agent.log");
    writeFileSync(f, "");
    truncateSync(f, 3 * 1024 ** 3);
    appendFileSync(f, "\nlistening failed: EADDRINUSE\nexiting\n");
    expect(logTail(f, 2)).toBe("listening failed: EADDRINUSE\nexiting");
  });

  it("drops a first line that the window cut, and gives nothing for a missing log", () => {
    const f = join(newDir(), "agent.log");
    writeFileSync(f, "x".repeat(70 * 1024) + "\nwhole line\n");
    expect(logTail(f, 8)).toBe("whole line");
    expect(logTail(join(newDir(), "missing.log"))).toBe("");
  });
});
