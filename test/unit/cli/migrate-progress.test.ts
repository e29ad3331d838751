/**
 * The progress display of `migrate --apply` (issue 8): an ora spinner on a
 * terminal, plain throttled lines otherwise; stderr only.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CopyProgress } from "../../../src/cluster/migrate-copy.js";
import { MigrationProgress, PLAIN_EVERY_MS } from "../../../src/commands/migrate-progress.js";

class Sink extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

/** A writable that says it is a terminal (what ora needs of one). */
class FakeTty extends Sink {
  isTTY = true;
  columns = 200;
  rows = 50;
  cursorTo(): boolean {
    return true;
  }
  moveCursor(): boolean {
    return true;
  }
  clearLine(): boolean {
    this.text += "<clear>";
    return true;
  }
}

const step = (over: Partial<CopyProgress>): CopyProgress => ({
  phase: "copying",
  bytes: 0,
  bytesTotal: 100 * 1024 * 1024,
  lag: 5000,
  entries: 0,
  step: "log",
  ...over,
});

describe("MigrationProgress", () => {
  it("prints plain lines at most once a second per phase, with bytes of the total, lag and rate", () => {
    const err = new Sink();
    let t = 0;
    const p = new MigrationProgress(err, "shard-3", false, () => t);
    p.update(step({ bytes: 10 * 1024 * 1024 }));
    t = 200;
    p.update(step({ bytes: 20 * 1024 * 1024 })); // throttled
    t = PLAIN_EVERY_MS + 1;
    p.update(step({ bytes: 60 * 1024 * 1024, lag: 40 }));
    t += 10;
    p.update(step({ phase: "fenced", bytes: 100 * 1024 * 1024, lag: 0 })); // a phase change: at once
    const lines = err.text.replace(/\n$/, "").split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe("  shard-3 copying: 10.0 MiB of ~100.0 MiB (10%) copied, lag 5000 entries");
    expect(lines[1]).toMatch(
      /^ {2}shard-3 copying: 60\.0 MiB of ~100\.0 MiB \(60%\) copied, lag 40 entries, 50\.0 MiB\/s$/,
    );
    expect(lines[2]).toMatch(/^ {2}shard-3 fenced: 100\.0 MiB of ~100\.0 MiB \(100%\) copied, lag 0 entries/);
    expect(err.text.includes("\u001b")).toBe(false); // no escape sequences off a terminal
  });

  it("names the snapshot step and leaves out a total that is unknown or exceeded", () => {
    const p = new MigrationProgress(new Sink(), "shard-1", false, () => 0);
    expect(p.describe(step({ step: "snapshot", bytes: 2048, bytesTotal: undefined }))).toBe(
      "shard-1 copying (snapshot): 2.0 KiB copied, lag 5000 entries",
    );
    expect(p.describe(step({ bytes: 300, bytesTotal: 200 }))).toBe(
      "shard-1 copying: 300 B copied, lag 5000 entries",
    );
  });

  it("draws a spinner on a terminal, keeps status lines above it and clears it when stopped", () => {
    const err = new FakeTty();
    let t = 0;
    const p = new MigrationProgress(err, "shard-2", true, () => t);
    p.update(step({ bytes: 1024 * 1024 }));
    t = 500;
    p.update(step({ bytes: 3 * 1024 * 1024, lag: 12 }));
    p.log("migration m1: source fenced at LSN 42; catching up");
    expect(err.text).toContain("shard-2 copying: 1.0 MiB of ~100.0 MiB (1%) copied, lag 5000 entries");
    expect(err.text).toContain("migration m1: source fenced at LSN 42; catching up\n");
    // the spinner is redrawn after the status line, with the latest text
    const after = err.text.slice(err.text.indexOf("catching up\n"));
    expect(after).toContain("shard-2 copying: 3.0 MiB of ~100.0 MiB (3%) copied, lag 12 entries, 4.0 MiB/s");
    p.stop();
    expect(err.text.endsWith("<clear>") || err.text.includes("\x1b[?25h")).toBe(true);
  });
});
