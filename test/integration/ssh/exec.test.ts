/**
 * Remote commands against a real OpenSSH server. sshd does not end a command
 * when its channel or its connection goes away (there is no terminal to hang
 * up): a command that outlives its timeout, or whose connection is cut, must
 * be killed on the node — with everything it started — by the side that runs
 * it, and the caller must not wait for it.
 */
import { randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SshExecutor } from "../../../src/cluster/ssh.js";
import { startSshLab, type SshHost, type SshLab } from "../../helpers/sshd.js";

let lab: SshLab;
let host: SshHost;
let proxy: { port: number; cutNow: () => void };
/** In the command line of every process a test starts on the node (unique to this run). */
const tag = String(randomInt(100_000, 999_999));

function connect(port = host.port, address = host.address): Promise<SshExecutor> {
  return SshExecutor.connect({
    host: address,
    port,
    user: host.user,
    keyFile: lab.clientKey,
    verifyHostKey: async () => true,
  });
}

/** A command that starts a background child and waits for it: two processes with `tag` in their argv. */
function sleepers(n: number): string[] {
  return ["sh", "-c", `sleep ${n}.${tag}1 & sleep ${n}.${tag}2; wait`];
}

async function goneWithin(ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  let left = lab.processesWith(tag);
  while (left.length && Date.now() < deadline) {
    await sleep(100);
    left = lab.processesWith(tag);
  }
  return left;
}

beforeAll(async () => {
  lab = await startSshLab();
  host = await lab.addHost("x");
  proxy = await lab.cuttingProxy(host, Infinity);
}, 60_000);

afterAll(async () => {
  // what a failed test left behind does not mention the lab directory: kill it by its tag
  for (const pid of lab?.processesWith(tag) ?? []) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  await lab?.cleanup();
}, 60_000);

describe("remote commands over SSH", () => {
  it("pass stdin, stdout, stderr and the exit status through unchanged", async () => {
    const exec = await connect();
    try {
      const r = await exec.exec(["sh", "-c", 'cat; echo "to stderr $1" >&2; exit 3', "sh", "a 'b' $c"], {
        stdin: "line 1\nline 2\n",
      });
      expect(r).toEqual({ code: 3, stdout: "line 1\nline 2\n", stderr: "to stderr a 'b' $c\n" });
      // a command that exits 124 by itself is not a timeout
      expect((await exec.exec(["sh", "-c", "exit 124"], { timeoutMs: 10_000 })).code).toBe(124);
    } finally {
      await exec.close();
    }
  });

  it("kill a command that outlives its timeout, and what it started, on the node", async () => {
    const exec = await connect();
    try {
      const t0 = Date.now();
      const outcome = exec.exec(sleepers(300), { timeoutMs: 1500 }).then(
        (r) => `finished: ${JSON.stringify(r)}`,
        (e: Error) => e.message,
      );
      const settled = await Promise.race([outcome, sleep(12_000).then(() => "still waiting after 12 s")]);
      expect(settled).toMatch(/did not finish within 1\.5 s/);
      expect(Date.now() - t0).toBeLessThan(12_000);
      expect(await goneWithin(5000)).toEqual([]);
      // the connection is still good for the next command
      expect((await exec.exec(["echo", "next"])).stdout).toBe("next\n");
    } finally {
      await exec.close();
    }
  }, 30_000);

  it("kill a command whose connection was cut, and what it started, on the node", async () => {
    const exec = await connect(proxy.port, "127.0.0.1");
    try {
      const outcome = exec.exec(sleepers(301), { timeoutMs: 120_000 }).then(
        (r) => `finished: ${JSON.stringify(r)}`,
        (e: Error) => e.message,
      );
      for (let i = 0; i < 100 && lab.processesWith(tag).length < 2; i++) await sleep(50);
      expect(lab.processesWith(tag).length).toBeGreaterThanOrEqual(2);
      proxy.cutNow();
      expect(await outcome).toMatch(/connection to .* was lost/);
      expect(await goneWithin(8000)).toEqual([]);
    } finally {
      await exec.close();
    }
  }, 30_000);
});
