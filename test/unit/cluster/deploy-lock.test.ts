/**
 * The deploy lock's record and its embedded-store lock file (real files, real
 * processes); the Consul lock and the commands are in
 * test/integration/ssh/deploy-lock.test.ts.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  acquireDeployLock,
  deployLockTtlS,
  describeHolder,
  holderRecord,
  parseHolder,
} from "../../../src/cluster/deploy-lock.js";
import { ExitCode, PreconditionError, UsageError } from "../../../src/errors.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";

let dir: string;
let store: EmbeddedStore;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-deploy-lock-"));
  store = new EmbeddedStore(join(dir, "data"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const lockFile = () => join(dir, "data", "deploy.lock");

/** The pid of a process that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ["-e", ""]).pid!;
}

describe("the lock record", () => {
  it("reads back what it writes, and describes the holder", () => {
    const h = holderRecord("rollback", ["n1", "n2"], () => Date.UTC(2025, 0, 2, 3, 4, 5));
    expect(parseHolder(JSON.stringify(h))).toEqual(h);
    expect(describeHolder(h, Date.UTC(2025, 0, 2, 3, 6, 5))).toBe(
      `\`shardctl deploy --rollback\` of n1, n2 by pid ${process.pid} on ${hostname()}, since 2025-01-02T03:04:05.000Z (2 min ago)`,
    );
    // a start ahead of this host's clock is not "0 s ago"
    expect(describeHolder(h, Date.UTC(2025, 0, 1))).toMatch(/\(in the future by this host's clock\)$/);
    expect(describeHolder(h, Date.UTC(2025, 0, 2, 3, 4, 3))).toMatch(/\(0 s ago\)$/);
  });

  it("is not a record when anything is off", () => {
    const good = holderRecord("deploy", ["n1"]);
    for (const bad of [
      "",
      "null",
      "42",
      "[]",
      "{not json",
      JSON.stringify({ ...good, format: "other" }),
      JSON.stringify({ ...good, pid: 0 }),
      JSON.stringify({ ...good, pid: 1.5 }),
      JSON.stringify({ ...good, command: "rm -rf /" }),
      JSON.stringify({ ...good, host: "\x1b[2Jhost" }),
      JSON.stringify({ ...good, nodes: ["n1\nerror: fake"] }),
      JSON.stringify({ ...good, nodes: "n1" }),
      JSON.stringify({ ...good, startedAt: "yesterday" }),
      JSON.stringify({ ...good, sessionTtlS: -1 }),
    ])
      expect(parseHolder(bad), bad).toBeUndefined();
  });

  it("takes its Consul session TTL from SHARDCTL_DEPLOY_LOCK_TTL (15 s by default), refusing nonsense", () => {
    expect(deployLockTtlS({})).toBe(15);
    expect(deployLockTtlS({ SHARDCTL_DEPLOY_LOCK_TTL: "30" })).toBe(30);
    for (const v of ["0", "-1", "1.5", "x", "86401", " 30", "30 ", "0x1e", "3e1"])
      expect(() => deployLockTtlS({ SHARDCTL_DEPLOY_LOCK_TTL: v })).toThrow(UsageError);
  });
});

describe("the lock file of the embedded store", () => {
  it("is held by one command at a time; the second is refused (exit 3) naming the first, until it is released", async () => {
    const lock = await acquireDeployLock(store, "deploy", ["n1"]);
    expect(parseHolder(readFileSync(lockFile(), "utf8"))).toMatchObject({ command: "deploy", nodes: ["n1"] });
    const refused = await acquireDeployLock(store, "undeploy", ["n1"]).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PreconditionError);
    expect((refused as PreconditionError).exitCode).toBe(ExitCode.Precondition);
    expect((refused as Error).message).toMatch(/`shardctl deploy` of n1 by pid \d+/);
    await lock.release();
    await lock.release(); // idempotent
    expect(existsSync(lockFile())).toBe(false);
    const next = await acquireDeployLock(store, "undeploy", ["n1"]);
    await next.release();
  });

  it("takes over at once the lock of a holder that died on this host", async () => {
    const dead = { ...holderRecord("deploy", ["n1"]), pid: deadPid() };
    mkdirSync(join(dir, "data"));
    writeFileSync(lockFile(), JSON.stringify(dead));
    const t0 = Date.now();
    const lock = await acquireDeployLock(store, "deploy", ["n2"]);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(parseHolder(readFileSync(lockFile(), "utf8"))).toMatchObject({ pid: process.pid, nodes: ["n2"] });
    await lock.release();
  });

  it("never takes over a lock taken on another host (its pid means nothing here)", async () => {
    mkdirSync(join(dir, "data"));
    const remote = { ...holderRecord("deploy", ["n1"]), host: "elsewhere", pid: deadPid() };
    writeFileSync(lockFile(), JSON.stringify(remote));
    const refused = await acquireDeployLock(store, "deploy", ["n1"]).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PreconditionError);
    expect((refused as PreconditionError).hint).toMatch(
      /runs on another host: if no shardctl deploy runs on elsewhere/,
    );
    expect(JSON.parse(readFileSync(lockFile(), "utf8"))).toEqual(remote);
  });

  it("releases only its own lock, never one another command holds by then", async () => {
    const lock = await acquireDeployLock(store, "deploy", ["n1"]);
    const other = JSON.stringify({ ...holderRecord("deploy", ["n9"]), pid: process.pid + 1 });
    writeFileSync(lockFile(), other);
    await lock.release();
    expect(readFileSync(lockFile(), "utf8")).toBe(other);
  });
});
