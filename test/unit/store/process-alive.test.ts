/**
 * processAlive answers for lock holders, pid files and migration owners. A
 * process that has ended but was not reaped yet (a zombie: its parent has not
 * waited for it, or init reaps orphans late) has not ended for kill(pid, 0),
 * but it holds nothing and will never run again: it is not alive.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { processAlive } from "../../../src/store/embedded.js";

function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

describe("processAlive", () => {
  it("is true for this process and a running child, false for an unused pid", () => {
    expect(processAlive(process.pid)).toBe(true);
    expect(processAlive(2 ** 22 + 12345)).toBe(false);
  });

  it("is false for a zombie nobody has reaped", async () => {
    // the parent forks a short-lived child, then execs sleep, which never waits for it
    const parent = spawn("sh", ["-c", "sh -c 'exit 0' & exec sleep 30"], { stdio: "ignore", detached: true });
    try {
      let zombie: number | undefined;
      for (let i = 0; i < 100 && zombie === undefined; i++) {
        await sleep(20);
        zombie = children(parent.pid!).find((c) => {
          try {
            return readFileSync(`/proc/${c}/stat`, "utf8")
              .replace(/^.*\) /, "")
              .startsWith("Z");
          } catch {
            return false;
          }
        });
      }
      expect(zombie).toBeDefined();
      expect(processAlive(parent.pid!)).toBe(true);
      expect(processAlive(zombie!)).toBe(false);
    } finally {
      process.kill(-parent.pid!, "SIGKILL");
    }
  });
});
