/**
 * The node side of every remote command (REMOTE_RUN_SCRIPT), run by real
 * shells without sshd: its watcher must take the command down once the
 * process that stood for the connection has ended, even when that process
 * is left a zombie. On a node whose init does not reap orphans at once (a
 * container, a minimal VM), the ended sshd session stays in /proc as a
 * zombie for as long as nobody waits for it; "the directory is still there"
 * then kept the command running for good.
 */
import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { REMOTE_RUN_SCRIPT } from "../../../src/cluster/ssh.js";
import { pidsMentioning } from "../../helpers/sshd.js";

const started: number[] = [];

function state(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8")
      .replace(/^.*\) /, "")
      .split(" ")[0];
  } catch {
    return undefined;
  }
}

async function goneWithin(needle: string, ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  let left = pidsMentioning(needle);
  while (left.length && Date.now() < deadline) {
    await sleep(100);
    left = pidsMentioning(needle);
  }
  return left;
}

afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone
    }
  }
});

/**
 * reaper (never waits: it exec'd sleep) → anchor (ends after `anchorSeconds`)
 * → session leader running REMOTE_RUN_SCRIPT → the command. The anchor is what
 * sshd's session process is for a real command: the parent of the session
 * leader.
 */
function launch(tag: string, anchorSeconds: number): number {
  const anchor = `setsid sh -c "$S" sh 120 sh -c 'sleep 300.${tag}1 & sleep 300.${tag}2; wait' & sleep ${anchorSeconds}`;
  const child = spawn("sh", ["-c", `sh -c "$A" & exec sleep 60.${tag}0`], {
    env: { ...process.env, S: REMOTE_RUN_SCRIPT, A: anchor },
    stdio: "ignore",
    detached: true,
  });
  started.push(child.pid!);
  return child.pid!;
}

describe("REMOTE_RUN_SCRIPT's watcher", () => {
  it("ends the command when its anchor ended, even as a zombie nobody reaps", async () => {
    const tag = String(randomInt(100_000, 999_999));
    const reaper = launch(tag, 1);
    const sleepers = () => pidsMentioning(`300.${tag}`);
    for (let i = 0; i < 100 && sleepers().length < 2; i++) await sleep(50);
    expect(sleepers().length).toBeGreaterThanOrEqual(2);
    // the anchor ends and stays a zombie: its parent (the reaper) never waits
    let zombie = false;
    for (let i = 0; i < 60 && !zombie; i++) {
      await sleep(50);
      zombie = readdirSync("/proc").some(
        (p) => /^\d+$/.test(p) && state(Number(p)) === "Z" && ppid(Number(p)) === reaper,
      );
    }
    expect(zombie).toBe(true);
    expect(await goneWithin(`300.${tag}`, 6000)).toEqual([]);
    // the reaper itself is still there: the command went because of the watcher, not a group kill
    expect(state(reaper)).toBeDefined();
  }, 20_000);

  it("does not run the command at all when the session ended before it started (its leader handed to init)", async () => {
    const tag = String(randomInt(100_000, 999_999));
    // the session leader's parent exits at once, as sshd's session does when the connection is cut
    // right after the command was sent; the leader then starts the script
    const leader = `sleep 0.5; exec sh -c "$S" sh 120 sleep 300.${tag}`;
    const child = spawn("sh", ["-c", `setsid sh -c "$L" & exit 0`], {
      env: { ...process.env, S: REMOTE_RUN_SCRIPT, L: leader },
      stdio: "ignore",
    });
    await new Promise((r) => child.once("exit", r));
    // the precondition: the leader was handed to init (a subreaper would adopt it instead)
    let orphan: number | undefined;
    for (let i = 0; i < 20 && orphan === undefined; i++) {
      orphan = pidsMentioning(`300.${tag}`)[0];
      if (orphan === undefined) await sleep(10);
    }
    try {
      expect(orphan).toBeDefined();
      expect(ppid(orphan!)).toBe(1);
      await sleep(2000);
      expect(pidsMentioning(`300.${tag}`)).toEqual([]);
    } finally {
      // what a failure leaves behind has no parent of ours to take it down
      for (const pid of pidsMentioning(`300.${tag}`)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
      }
    }
  }, 20_000);

  it("leaves the command running while its anchor lives", async () => {
    const tag = String(randomInt(100_000, 999_999));
    launch(tag, 30);
    const sleepers = () => pidsMentioning(`300.${tag}`);
    for (let i = 0; i < 100 && sleepers().length < 2; i++) await sleep(50);
    expect(sleepers().length).toBeGreaterThanOrEqual(2);
    await sleep(3000);
    expect(sleepers().length).toBeGreaterThanOrEqual(2);
  }, 20_000);
});

function ppid(pid: number): number | undefined {
  try {
    return Number(
      readFileSync(`/proc/${pid}/stat`, "utf8")
        .replace(/^.*\) /, "")
        .split(" ")[1],
    );
  } catch {
    return undefined;
  }
}
