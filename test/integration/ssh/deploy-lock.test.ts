/**
 * The cluster-wide deploy lock, against real OpenSSH servers, real agents and
 * a real Consul: real `shardctl deploy` processes (the build in dist/) hold
 * it, and the commands that meet it run in-process.
 *
 * For each store (embedded: `<dataDir>/deploy.lock`; Consul: the session lock
 * `<prefix>deploy-lock`):
 * - a second deploy, `deploy --rollback` or undeploy while a deploy runs is
 *   refused with exit 3, naming the holder, and touches no node; the first
 *   completes normally;
 * - once it ended the lock is gone and the next deploy proceeds;
 * - a holder killed with SIGKILL: the embedded lock is taken over at once;
 *   the Consul lock refuses (saying when it goes) until the holder's session
 *   expires, then the next deploy proceeds;
 * - a lock holding something that is not a deploy lock record is refused
 *   with a clear error, changing nothing;
 * - Consul: a deploy that exits at once on a second Ctrl-C releases its lock.
 *
 * The first deploy ships a release whose agent takes 4 s to start, so that it
 * is surely still running ("wait for health") when the others arrive.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildBundle, sha256File, type Bundle } from "../../../src/cluster/bundle.js";
import type { DeployResult } from "../../../src/cluster/deploy.js";
import { processAlive } from "../../../src/store/embedded.js";
import { cli, watchedProcess } from "../../helpers/cli.js";
import { rawKeys, rawPut, startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";
import { inventoryNode, startSshLab, type SshLab } from "../../helpers/sshd.js";

const TOKEN = "lock-token-" + "0d15ea5e".repeat(4);
/** The Consul session TTL of the deploys here (this Consul's session_ttl_min is 1 s). */
const TTL_S = 2;

let lab: SshLab;
let consul: DevConsul;
let inventory: string;
let knownHosts: string;
let v1: Bundle;
let v2: Bundle;
/** v1 whose agent waits 4 s before it starts listening. */
let slow: Bundle;
const dataDirs = new Map<string, string>();

function release(name: string, text: string): Bundle {
  const path = join(lab.dir, name);
  writeFileSync(path, text);
  return { path, sha256: sha256File(path), bytes: statSync(path).size };
}

function pidOf(id: string): number | undefined {
  const f = join(dataDirs.get(id)!, "agent.pid");
  return existsSync(f) ? Number(readFileSync(f, "utf8").trim()) : undefined;
}

function releaseOn(id: string): string {
  return sha256File(join(dataDirs.get(id)!, "agent.mjs"));
}

/** One store's setup: the flags and environment of its deploys. */
interface Setup {
  node: string;
  store: string[];
  env: NodeJS.ProcessEnv;
  controlDir: string;
}

const ssh = () => ["--inventory", inventory, "--known-hosts", knownHosts];

function deployArgs(s: Setup, b: Bundle | "rollback", ...extra: string[]): string[] {
  return [
    ...s.store,
    "--data-dir",
    s.controlDir,
    "deploy",
    ...ssh(),
    "--nodes",
    s.node,
    ...(b === "rollback" ? ["--rollback"] : ["--bundle", b.path]),
    "--health-timeout",
    "20",
    ...extra,
  ];
}

/** A deploy in-process (it meets the lock; it never holds it past its end). */
async function deploy(s: Setup, b: Bundle | "rollback", ...extra: string[]) {
  return cli(deployArgs(s, b, ...extra), s.env);
}

async function undeploy(s: Setup) {
  return cli([...s.store, "--data-dir", s.controlDir, "undeploy", s.node, ...ssh()], s.env);
}

async function nodeCommand(s: Setup, action: "start" | "stop" | "restart" | "status") {
  return cli([...s.store, "--data-dir", s.controlDir, "node", action, s.node, ...ssh()], s.env);
}

/** `shardctl deploy` as a real process, with its output collected. */
function deployProcess(s: Setup, b: Bundle, env: NodeJS.ProcessEnv = {}, ...extra: string[]) {
  return watchedProcess(deployArgs(s, b, ...extra), {
    PATH: process.env.PATH,
    HOME: lab.dir,
    ...s.env,
    ...env,
  });
}

/** A refusal: exit 3, the CLI's error shape on stderr (`error:` + `hint:`), nothing on stdout, no stack. */
function expectRefused(r: { code: number; out: string; err: string }, message: RegExp, hint: RegExp) {
  expect(r.code, r.err).toBe(3);
  expect(r.out).toBe("");
  expect(r.err).not.toMatch(/internal error|\n\s+at /);
  expect(r.err).toMatch(/^error: /m);
  expect(r.err).toMatch(message);
  expect(r.err).toMatch(/^hint: /m);
  expect(r.err).toMatch(hint);
  // the refused command did not start on any node
  expect(r.err).not.toMatch(/connect|check platform|upload bundle/);
}

beforeAll(async () => {
  [lab, consul] = await Promise.all([startSshLab(), startConsulDev({ sessionTtlMinS: 1 })]);
  const nodes = [];
  for (const [id, zone] of [
    ["e1", "a"],
    ["c1", "b"],
  ]) {
    const host = await lab.addHost(id);
    const node = inventoryNode(lab, host, id, zone);
    dataDirs.set(id, node.dataDir as string);
    nodes.push(node);
  }
  inventory = join(lab.dir, "inventory.yaml");
  knownHosts = join(lab.dir, "known_hosts");
  writeFileSync(inventory, stringify({ nodes }));
  v1 = await buildBundle(join(lab.dir, "bundle", "agent.mjs"));
  const text = readFileSync(v1.path, "utf8");
  v2 = release("agent-v2.mjs", text + "\n// release 2\n");
  const eol = text.startsWith("#!") ? text.indexOf("\n") + 1 : 0;
  slow = release(
    "agent-slow.mjs",
    text.slice(0, eol) + "await new Promise((r) => setTimeout(r, 4000));\n" + text.slice(eol),
  );
}, 180_000);

afterAll(async () => {
  await lab?.cleanup();
  await consul?.stop();
}, 60_000);

describe("the deploy lock with the embedded store", () => {
  const s: Setup = {
    node: "e1",
    store: [],
    env: { SHARDCTL_TOKEN: TOKEN },
    controlDir: "",
  };
  const lockFile = () => join(s.controlDir, "deploy.lock");
  beforeAll(() => {
    s.controlDir = join(lab.dir, "control-embedded");
  });

  it("refuses a second deploy, a rollback and an undeploy while a deploy runs (exit 3, naming it); the first completes, its node untouched by them", async () => {
    const first = deployProcess(s, slow, {}, "--accept-new-host-keys");
    await first.waitFor(/^e1 +wait for health/m);
    const holder = JSON.parse(readFileSync(lockFile(), "utf8")) as Record<string, unknown>;
    expect(holder).toMatchObject({
      format: "shardctl-deploy-lock",
      host: hostname(),
      pid: first.child.pid,
      command: "deploy",
      nodes: ["e1"],
    });
    const agent = pidOf("e1");

    const names = new RegExp(
      `another deploy holds the cluster's deploy lock: \`shardctl deploy\` of e1 by pid ${first.child.pid} on ${hostname()}, since ${holder.startedAt as string} \\(\\d+ s ago\\); nothing was changed`,
    );
    const hint =
      /hint: wait for it to end, then run this command again; if pid \d+ is no longer that shardctl .*deploy\.lock/;
    expectRefused(await deploy(s, v2, "--json"), names, hint);
    expectRefused(await deploy(s, "rollback"), names, hint);
    expectRefused(await undeploy(s), names, hint);
    // what changes the node's agent from `node` waits its turn too; status only looks
    for (const action of ["start", "stop", "restart"] as const)
      expectRefused(await nodeCommand(s, action), names, hint);
    expect((await nodeCommand(s, "status")).code).toBe(0);

    const { code } = await first.exited;
    expect(code, first.err()).toBe(0);
    expect(first.err()).toMatch(/^e1 +installed/m);
    // the first's release runs, started once: no other command stopped, replaced or started it
    expect(releaseOn("e1")).toBe(slow.sha256);
    expect(pidOf("e1")).toBe(agent);
    expect(processAlive(agent!)).toBe(true);
    expect(existsSync(lockFile())).toBe(false);
  }, 180_000);

  it("a node restart holds the lock while it runs: a deploy meanwhile is refused, naming it", async () => {
    const restart = watchedProcess(
      [...s.store, "--data-dir", s.controlDir, "node", "restart", s.node, ...ssh()],
      { PATH: process.env.PATH, HOME: lab.dir, ...s.env, SHARDCTL_FAILPOINT: "deploy.locked" },
    );
    await restart.waitFor(/failpoint deploy\.locked: stopping/);
    const r = await deploy(s, v2, "--json");
    expectRefused(
      r,
      new RegExp(
        `another command holds the cluster's deploy lock: \`shardctl node restart\` of e1 by pid ${restart.child.pid} on ${hostname()}`,
      ),
      /hint: wait for it to end/,
    );
    restart.child.kill("SIGCONT");
    const { code } = await restart.exited;
    expect(code, restart.err()).toBe(0);
    expect(existsSync(lockFile())).toBe(false);
  }, 180_000);

  it("once that deploy ended, the next one proceeds (and releases the lock in turn)", async () => {
    const r = await deploy(s, v2, "--json");
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as DeployResult).nodes[0].outcome).toBe("upgraded");
    expect(releaseOn("e1")).toBe(v2.sha256);
    expect(existsSync(lockFile())).toBe(false);
  }, 180_000);

  it("takes over at once the lock of a holder killed with SIGKILL", async () => {
    const killed = deployProcess(s, v1, { SHARDCTL_FAILPOINT: "deploy.locked" });
    await killed.waitFor(/failpoint deploy\.locked: stopping/);
    expect(JSON.parse(readFileSync(lockFile(), "utf8"))).toMatchObject({ pid: killed.child.pid });
    killed.child.kill("SIGKILL");
    await killed.exited;
    // the dead holder's lock is still there
    expect(JSON.parse(readFileSync(lockFile(), "utf8"))).toMatchObject({ pid: killed.child.pid });
    expect(releaseOn("e1")).toBe(v2.sha256);

    const r = await deploy(s, v1, "--json");
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as DeployResult).nodes[0].outcome).toBe("upgraded");
    expect(releaseOn("e1")).toBe(v1.sha256);
    expect(existsSync(lockFile())).toBe(false);
  }, 180_000);

  it("refuses a lock file that holds no lock record (exit 3), saying what to check, and changes nothing", async () => {
    const agent = pidOf("e1");
    for (const garbage of [
      "\x1b[2Jnot a lock\n",
      "",
      "4242",
      JSON.stringify({ format: "shardctl-deploy-lock", host: "h", pid: -1, command: "rm -rf", nodes: [] }),
    ]) {
      writeFileSync(lockFile(), garbage);
      const r = await deploy(s, v2, "--json");
      expectRefused(
        r,
        /error: the deploy lock .*deploy\.lock does not hold a shardctl deploy lock record \((it is empty|it holds \d+ byte\(s\) starting ".*")\); nothing was changed/,
        /hint: another program wrote it, or it was damaged: if no shardctl deploy, deploy --rollback, undeploy or node start\|stop\|restart runs on this cluster, remove .*deploy\.lock/,
      );
      // no terminal escape from the file reaches the output
      expect(r.err).not.toContain("\x1b");
      expect(readFileSync(lockFile(), "utf8")).toBe(garbage);
      expect(releaseOn("e1")).toBe(v1.sha256);
      expect(pidOf("e1")).toBe(agent);
    }
  }, 180_000);
});

describe("the deploy lock with the Consul store", () => {
  const s: Setup = { node: "c1", store: ["--store", "consul"], env: {}, controlDir: "" };
  let key: string;
  let prefix: string;
  const lockKeys = async () => (await rawKeys(consul.addr, prefix)).filter((k) => k === key);
  const lockValue = async () => {
    const res = await fetch(`http://${consul.addr}/v1/kv/${key}?raw`);
    return res.status === 404 ? undefined : await res.text();
  };
  beforeAll(() => {
    prefix = uniquePrefix("deploy-lock");
    key = `${prefix}deploy-lock`;
    s.controlDir = join(lab.dir, "control-consul");
    s.env = {
      SHARDCTL_TOKEN: TOKEN,
      CONSUL_HTTP_ADDR: consul.addr,
      SHARDCTL_CONSUL_PREFIX: prefix,
      SHARDCTL_DEPLOY_LOCK_TTL: String(TTL_S),
    };
  });

  it("refuses a second deploy, a rollback and an undeploy while a deploy runs (exit 3, naming it, saying when a dead holder's lock goes); the first completes", async () => {
    const first = deployProcess(s, slow, {}, "--accept-new-host-keys");
    await first.waitFor(/^c1 +wait for health/m);
    const holder = JSON.parse((await lockValue())!) as Record<string, unknown>;
    expect(holder).toMatchObject({
      format: "shardctl-deploy-lock",
      host: hostname(),
      pid: first.child.pid,
      command: "deploy",
      nodes: ["c1"],
      sessionTtlS: TTL_S,
    });
    const agent = pidOf("c1");

    const names = new RegExp(
      `another deploy holds the cluster's deploy lock: \`shardctl deploy\` of c1 by pid ${first.child.pid} on ${hostname()}, since ${holder.startedAt as string} \\(\\d+ s ago\\); nothing was changed`,
    );
    const hint = new RegExp(
      `hint: wait for it to end, then run this command again; if that process is gone .*its lock goes by itself when its Consul session expires, within ${2 * TTL_S} s of its last renewal`,
    );
    expectRefused(await deploy(s, v2, "--json"), names, hint);
    expectRefused(await deploy(s, "rollback"), names, hint);
    expectRefused(await undeploy(s), names, hint);

    const { code } = await first.exited;
    expect(code, first.err()).toBe(0);
    expect(first.err()).toMatch(/^c1 +installed/m);
    expect(releaseOn("c1")).toBe(slow.sha256);
    expect(pidOf("c1")).toBe(agent);
    expect(processAlive(agent!)).toBe(true);
    // released at the end: deleted, not left to expire
    expect(await lockKeys()).toEqual([]);
  }, 180_000);

  it("once that deploy ended, the next one proceeds", async () => {
    const r = await deploy(s, v2, "--json");
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as DeployResult).nodes[0].outcome).toBe("upgraded");
    expect(await lockKeys()).toEqual([]);
  }, 180_000);

  it("keeps refusing while the session of a holder killed with SIGKILL lives, and lets the next deploy in once it expired", async () => {
    const killed = deployProcess(s, v1, { SHARDCTL_FAILPOINT: "deploy.locked" });
    await killed.waitFor(/failpoint deploy\.locked: stopping/);
    killed.child.kill("SIGKILL");
    await killed.exited;
    const diedAt = Date.now();
    expectRefused(
      await deploy(s, v1),
      new RegExp(`\`shardctl deploy\` of c1 by pid ${killed.child.pid}`),
      new RegExp(
        `its Consul session expires, within ${2 * TTL_S} s of its last renewal \\(session TTL ${TTL_S} s\\)`,
      ),
    );
    expect(releaseOn("c1")).toBe(v2.sha256);
    // Consul invalidates a session within twice its TTL, and deletes the key it held
    while ((await lockKeys()).length) {
      expect(Date.now() - diedAt).toBeLessThan(4 * TTL_S * 1000 + 5000);
      await sleep(100);
    }
    const r = await deploy(s, v1, "--json");
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as DeployResult).nodes[0].outcome).toBe("upgraded");
    expect(releaseOn("c1")).toBe(v1.sha256);
  }, 180_000);

  it("releases the lock when a second Ctrl-C makes the deploy exit at once", async () => {
    const d = deployProcess(s, slow);
    await d.waitFor(/^c1 +wait for health/m);
    d.child.kill("SIGINT");
    await d.waitFor(/finishing the cut-over/);
    d.child.kill("SIGINT");
    const { code, signal } = await d.exited;
    expect(signal === "SIGINT" || code === 130, `${code} ${signal}\n${d.err()}`).toBe(true);
    // gone at once, not when the session expires
    expect(await lockKeys()).toEqual([]);
    const again = await deploy(s, slow);
    expect(again.code, again.err).toBe(0);
    expect(releaseOn("c1")).toBe(slow.sha256);
  }, 180_000);

  it("refuses a lock key that holds no lock record (exit 3), saying what to check, and changes nothing", async () => {
    const agent = pidOf("c1");
    await rawPut(consul.addr, key, "\x1b[2Jgarbage");
    const r = await deploy(s, v2, "--json");
    expectRefused(
      r,
      new RegExp(
        `error: the Consul key ${key} does not hold a shardctl deploy lock record \\(it holds 11 byte\\(s\\) starting "\\\\u001b\\[2Jgarbage"\\); nothing was changed`,
      ),
      new RegExp(`another program wrote it .*consul kv delete ${key}`),
    );
    expect(r.err).not.toContain("\x1b");
    expect(await lockValue()).toBe("\x1b[2Jgarbage");

    // the same, held by some other session
    const created = await fetch(`http://${consul.addr}/v1/session/create`, {
      method: "PUT",
      body: JSON.stringify({ TTL: "60s", NodeChecks: [] }),
    });
    const { ID: session } = (await created.json()) as { ID: string };
    const acquired = await fetch(`http://${consul.addr}/v1/kv/${key}?acquire=${session}`, {
      method: "PUT",
      body: "not ours",
    });
    expect(await acquired.json()).toBe(true);
    expectRefused(
      await deploy(s, v2),
      /does not hold a shardctl deploy lock record \(it holds 8 byte\(s\) starting "not ours"\)/,
      new RegExp(`Consul session ${session} holds it, and it is not a shardctl deploy's`),
    );
    expect(await lockValue()).toBe("not ours");
    expect(releaseOn("c1")).toBe(slow.sha256);
    expect(pidOf("c1")).toBe(agent);
    await fetch(`http://${consul.addr}/v1/session/destroy/${session}`, { method: "PUT" });
    await fetch(`http://${consul.addr}/v1/kv/${key}`, { method: "DELETE" });
  }, 180_000);
});
