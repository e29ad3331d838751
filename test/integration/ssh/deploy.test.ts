/**
 * The cluster lifecycle against real OpenSSH servers: refuse unknown host
 * keys, deploy three nodes, write and read through the client (`shardctl
 * put/get`), re-run (up to date), upgrade with a changed bundle (rolling),
 * control a node, refuse to undeploy a node with shards, add and undeploy a
 * fourth node. The agents' dataDir holds quotes, spaces, `$()` and backticks:
 * every remote command must quote it.
 */
import {
  appendFileSync,
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { AGENT_NODE_FLAGS } from "../../../src/agent/node-flags.js";
import { buildBundle, sha256File, type Bundle } from "../../../src/cluster/bundle.js";
import type { DeployResult } from "../../../src/cluster/deploy.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { cli, watchedProcess } from "../../helpers/cli.js";
import { freePorts } from "../../helpers/ports.js";
import { inventoryNode, startSshLab, type SshHost, type SshLab } from "../../helpers/sshd.js";

const TOKEN = "tok-" + "9f3c1e77a0b2d4e6".repeat(2);

let lab: SshLab;
let hosts: SshHost[];
let bundle: Bundle;
let upgraded: Bundle;
let inventory: string;
let knownHosts: string;
let controlDir: string;
let pwned: string;
const dataDirs = new Map<string, string>();
const env: NodeJS.ProcessEnv = { SHARDCTL_TOKEN: TOKEN };

const base = () => ["--data-dir", controlDir];
const sshFlags = () => ["--inventory", inventory, "--known-hosts", knownHosts];
const deploy = (...args: string[]) =>
  cli([...base(), "deploy", ...sshFlags(), "--bundle", bundle.path, ...args], env);

/** The twelve keys the first test wrote are all served, with their values. */
async function expectKeysServed(): Promise<void> {
  for (let i = 0; i < 12; i++) {
    const get = await cli([...base(), "get", `key-${i}`], env);
    expect(get.code, get.err).toBe(0);
    expect(get.out).toBe(`value ${i} é`);
  }
}

/** Deploys h3 as the inventory has it but with `changes` to it (an inventory file of its own, `name`.yaml), --json. */
async function deployH3Moved(
  name: string,
  changes: (h3: Record<string, unknown>) => Record<string, unknown>,
  ...extra: string[]
) {
  const { parse } = await import("yaml");
  const inv = parse(readFileSync(inventory, "utf8")) as { nodes: Record<string, unknown>[] };
  const h3 = inv.nodes.find((n) => n.id === "h3")!;
  const movedInventory = join(lab.dir, `${name}.yaml`);
  writeFileSync(movedInventory, stringify({ nodes: [{ ...h3, ...changes(h3) }] }));
  const r = await cli(
    [
      ...base(),
      "deploy",
      "--inventory",
      movedInventory,
      "--known-hosts",
      knownHosts,
      "--bundle",
      bundle.path,
      ...extra,
      "--json",
    ],
    env,
  );
  return { r, movedInventory };
}

function pidOf(id: string): number | undefined {
  const f = join(dataDirs.get(id)!, "agent.pid");
  return existsSync(f) ? Number(readFileSync(f, "utf8").trim()) : undefined;
}

async function mapNodes(): Promise<{ id: string; shards: number; address: string }[]> {
  const store = new EmbeddedStore(controlDir);
  try {
    const vm = await store.load();
    return (vm?.map.nodes ?? []).map((n) => ({
      id: n.id,
      address: n.address,
      shards: vm!.map.shards.filter((s) => s.node === n.id).length,
    }));
  } finally {
    await store.close();
  }
}

beforeAll(async () => {
  lab = await startSshLab();
  hosts = [];
  for (const name of ["h1", "h2", "h3", "h4"]) hosts.push(await lab.addHost(name));
  controlDir = join(lab.dir, "control");
  knownHosts = join(lab.dir, "known_hosts");
  pwned = join(lab.dir, "pwned");
  bundle = await buildBundle(join(lab.dir, "bundle-1", "agent.mjs"));
  // the "new release": same code, another checksum
  const next = join(lab.dir, "bundle-2.mjs");
  copyFileSync(bundle.path, next);
  appendFileSync(next, "\n// release 2\n");
  upgraded = { path: next, sha256: sha256File(next), bytes: statSync(next).size };
  const zones = ["a", "b", "c", "a"];
  const nodes = hosts.map((h, i) => {
    const dataDir = `${h.home}/shard ctl's $(touch ${pwned}) \`touch ${pwned}\``;
    dataDirs.set(`h${i + 1}`, dataDir);
    const node = inventoryNode(lab, h, `h${i + 1}`, zones[i], { dataDir });
    // h4 authenticates through the SSH agent
    if (i === 3) delete node.keyFile;
    return node;
  });
  inventory = join(lab.dir, "inventory.yaml");
  writeFileSync(inventory, stringify({ nodes }));
  env.SSH_AUTH_SOCK = await lab.startAgent();
}, 120_000);

afterAll(async () => {
  await lab?.cleanup();
}, 60_000);

describe("deploy over SSH", () => {
  it("refuses unknown host keys, prints each fingerprint as ssh-keygen -l does, and changes nothing", async () => {
    const r = await deploy("--nodes", "h1,h2,h3", "--json");
    expect(r.code).toBe(1);
    const result = JSON.parse(r.out) as DeployResult;
    for (const [i, n] of result.nodes.entries()) {
      expect(n.outcome).toBe("failed");
      expect(n.step).toBe("connect");
      expect(n.hostKeyFingerprint).toBe(hosts[i].fingerprint);
      expect(r.err).toContain(hosts[i].fingerprint);
    }
    expect(r.err).toContain("--accept-new-host-keys");
    expect(existsSync(knownHosts)).toBe(false);
    for (const id of ["h1", "h2", "h3"]) expect(existsSync(dataDirs.get(id)!)).toBe(false);
  });

  it("deploys three nodes end to end and registers them in the location map", async () => {
    const r = await deploy("--nodes", "h1,h2,h3", "--accept-new-host-keys", "--json");
    expect(r.err).not.toContain("FAILED");
    expect(r.code).toBe(0);
    const result = JSON.parse(r.out) as DeployResult;
    expect(result.nodes.map((n) => [n.id, n.outcome])).toEqual([
      ["h1", "installed"],
      ["h2", "installed"],
      ["h3", "installed"],
    ]);
    expect(result.layoutWritten).toBe(true);
    expect(result.shardsAssigned).toBe(12);
    // per-node progress on stderr (plain lines: not a terminal)
    for (const id of ["h1", "h2", "h3"]) {
      for (const step of [
        "connect",
        "check platform",
        "upload bundle",
        "verify checksum",
        "wait for health",
        "installed",
      ]) {
        expect(r.err).toMatch(new RegExp(`^${id} +${step}`, "m"));
      }
    }
    expect(readFileSync(knownHosts, "utf8").trim().split("\n")).toHaveLength(3);
    const nodes = await mapNodes();
    expect(nodes.map((n) => n.id)).toEqual(["h1", "h2", "h3"]);
    expect(nodes.every((n) => n.shards === 4)).toBe(true);
    for (const id of ["h1", "h2", "h3"]) {
      const dir = dataDirs.get(id)!;
      expect(statSync(join(dir, "token")).mode & 0o777).toBe(0o600);
      expect(statSync(join(dir, "agent.json")).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(dir, "token"), "utf8").trim()).toBe(TOKEN);
      expect(sha256File(join(dir, "agent.mjs"))).toBe(bundle.sha256);
      expect(pidOf(id)).toBeGreaterThan(0);
      // started (by supervise.sh, the pid file's process) with the agent's V8 flags, before the bundle
      const supervisor = pidOf(id)!;
      const agentPid = readFileSync(`/proc/${supervisor}/task/${supervisor}/children`, "utf8").trim();
      const argv = readFileSync(`/proc/${agentPid}/cmdline`, "utf8").split("\0");
      expect(argv.slice(1, 2 + AGENT_NODE_FLAGS.length)).toEqual([
        ...AGENT_NODE_FLAGS,
        join(dir, "agent.mjs"),
      ]);
    }
    // the hostile dataDir was a path, never a command
    expect(existsSync(pwned)).toBe(false);
    // secrets stay out of the output
    for (const text of [r.out, r.err]) {
      expect(text).not.toContain(TOKEN);
      expect(text).not.toContain(lab.clientKeyText.split("\n")[1]);
    }
  });

  it("writes and reads through the client", async () => {
    for (let i = 0; i < 12; i++) {
      const put = await cli([...base(), "put", `key-${i}`, `value ${i} é`], env);
      expect(put.code, put.err).toBe(0);
    }
    await expectKeysServed();
  });

  it("is idempotent: a re-run leaves running, unchanged nodes alone", async () => {
    const pids = ["h1", "h2", "h3"].map(pidOf);
    const r = await deploy("--nodes", "h1,h2,h3", "--json");
    expect(r.code, r.err).toBe(0);
    const result = JSON.parse(r.out) as DeployResult;
    expect(result.nodes.map((n) => n.outcome)).toEqual(["up-to-date", "up-to-date", "up-to-date"]);
    expect(r.err).not.toMatch(/upload bundle/);
    expect(["h1", "h2", "h3"].map(pidOf)).toEqual(pids);
  });

  it("upgrades to a changed bundle one node at a time, keeping the data", async () => {
    const pids = ["h1", "h2", "h3"].map(pidOf);
    const r = await cli(
      [...base(), "deploy", ...sshFlags(), "--bundle", upgraded.path, "--nodes", "h1,h2,h3", "--json"],
      env,
    );
    expect(r.code, r.err).toBe(0);
    const result = JSON.parse(r.out) as DeployResult;
    expect(result.nodes.map((n) => n.outcome)).toEqual(["upgraded", "upgraded", "upgraded"]);
    for (const n of result.nodes) expect(n.downtimeMs).toBeGreaterThan(0);
    console.error(
      `rolling upgrade: per-node downtime ${result.nodes.map((n) => `${n.id} ${n.downtimeMs} ms`).join(", ")}`,
    );
    // rolling: between one node's stop and its being healthy again, no other node stops
    const lines = r.err.split("\n");
    const stops = lines.flatMap((l, i) =>
      /^h\d +stop \(drain\)$/.test(l) ? [[l.split(" ")[0], i] as const] : [],
    );
    expect(stops).toHaveLength(3);
    for (const [id, at] of stops) {
      const done = lines.findIndex((l, i) => i > at && new RegExp(`^${id} +healthy$`).test(l));
      expect(done).toBeGreaterThan(at);
      expect(lines.slice(at + 1, done).some((l) => /stop \(drain\)$/.test(l))).toBe(false);
    }
    const after = ["h1", "h2", "h3"].map(pidOf);
    after.forEach((p, i) => expect(p).not.toBe(pids[i]));
    for (const id of ["h1", "h2", "h3"])
      expect(sha256File(join(dataDirs.get(id)!, "agent.mjs"))).toBe(upgraded.sha256);
    await expectKeysServed();
  });

  it("rolls back to the release kept on each node (`deploy --rollback`), one node at a time, keeping the data", async () => {
    for (const id of ["h1", "h2", "h3"])
      expect(existsSync(join(dataDirs.get(id)!, "releases", `${bundle.sha256}.mjs`)), id).toBe(true);
    const r = await cli(
      [...base(), "deploy", ...sshFlags(), "--rollback", "--nodes", "h1,h2,h3", "--json"],
      env,
    );
    expect(r.code, r.err).toBe(0);
    const result = JSON.parse(r.out) as DeployResult;
    expect(result.nodes.map((n) => [n.outcome, n.bundleSha256])).toEqual([
      ["rolled-back", bundle.sha256],
      ["rolled-back", bundle.sha256],
      ["rolled-back", bundle.sha256],
    ]);
    expect(r.err).not.toMatch(/building the agent bundle|upload bundle/);
    const stops = r.err.split("\n").filter((l) => /^h\d +(stop \(drain\)|healthy)$/.test(l));
    expect(stops.map((l) => l.split(/ +/).slice(1).join(" "))).toEqual([
      "stop (drain)",
      "healthy",
      "stop (drain)",
      "healthy",
      "stop (drain)",
      "healthy",
    ]);
    for (const id of ["h1", "h2", "h3"]) {
      expect(sha256File(join(dataDirs.get(id)!, "agent.mjs"))).toBe(bundle.sha256);
      // the release it replaced is kept in its turn
      expect(existsSync(join(dataDirs.get(id)!, "releases", `${upgraded.sha256}.mjs`)), id).toBe(true);
    }
    await expectKeysServed();
  });

  it("controls a node: stop, status, start, logs", async () => {
    const flags = sshFlags();
    let r = await cli([...base(), "node", "stop", "h2", ...flags], env);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/h2: stopped/);
    expect(pidOf("h2")).toBeUndefined();
    r = await cli([...base(), "node", "status", "h2", ...flags, "--json"], env);
    expect(JSON.parse(r.out).output).toBe("stopped");
    r = await cli([...base(), "node", "start", "h2", ...flags], env);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/healthy/);
    r = await cli([...base(), "node", "logs", "h2", ...flags, "--lines", "40"], env);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/agent h2 \(zone b\) listening/);
    expect(r.out).not.toContain(TOKEN);
    const get = await cli([...base(), "get", "key-3"], env);
    expect(get.out).toBe("value 3 é");
  });

  it("does not register a node installed afresh elsewhere while the map gives it shards: the map keeps pointing at its data", async () => {
    // h3 "moved" to another dataDir and port (a mistaken inventory, or a replaced machine): its new
    // agent holds none of h3's shards. Registered, the map would point them at empty shards.
    const port = (await freePorts(1))[0];
    const before = await mapNodes();
    const { r, movedInventory } = await deployH3Moved("moved", (h3) => ({
      dataDir: `${hosts[2].home}/moved`,
      agentPort: port,
      ...(h3.listen ? { listen: `127.0.0.1:${port}` } : {}),
    }));
    expect(r.code).toBe(1);
    const result = JSON.parse(r.out) as DeployResult;
    expect(result.nodes[0]).toMatchObject({ id: "h3", outcome: "failed", step: "register" });
    expect(result.nodes[0].error).toMatch(
      /^h3 was installed afresh at [\d.]+:\d+, but the location map gives it 4 shard\(s\) this agent does not hold/,
    );
    expect(r.err).toContain("--accept-empty-shards");
    expect(await mapNodes()).toEqual(before);
    await expectKeysServed();
    const stop = await cli(
      [...base(), "node", "stop", "h3", "--inventory", movedInventory, "--known-hosts", knownHosts],
      env,
    );
    expect(stop.code, stop.err).toBe(0);
  });

  it("does not take an earlier install still listening on the address for the agent it started (a dataDir moved, the port kept)", async () => {
    const before = await mapNodes();
    const { r } = await deployH3Moved(
      "moved-same-port",
      () => ({ dataDir: `${hosts[2].home}/moved-same-port` }),
      "--health-timeout",
      "10",
    );
    // before: "installed", exit 0, while its agent could not listen and the old one answered
    expect(r.code, r.err).toBe(1);
    const result = JSON.parse(r.out) as DeployResult;
    expect(result.nodes[0]).toMatchObject({ id: "h3", outcome: "failed", step: "wait for health" });
    expect(result.nodes[0].error).toMatch(/serves another data directory than .*moved-same-port/);
    expect(await mapNodes()).toEqual(before);
    await expectKeysServed();
  });

  it("refuses to deploy another cluster onto a dataDir that holds this one's shards, changing nothing", async () => {
    // a second cluster (its own control directory: no map yet, its own token) given h1's dataDir
    const otherControl = join(lab.dir, "other-cluster");
    const h1 = pidOf("h1");
    expect(h1).toBeGreaterThan(0);
    const r = await cli(
      [
        "--data-dir",
        otherControl,
        "deploy",
        ...sshFlags(),
        "--nodes",
        "h1",
        "--bundle",
        bundle.path,
        "--json",
      ],
      { ...env, SHARDCTL_TOKEN: "b".repeat(64) },
    );
    // before: "upgraded", the layout of the new cluster written over the old one's shards (most keys
    // refused with 409 wrong-shard), and the old cluster's agent gone
    expect(r.code, r.err).toBe(1);
    const result = JSON.parse(r.out) as DeployResult;
    expect(result.nodes[0]).toMatchObject({ id: "h1", outcome: "failed", step: "check platform" });
    expect(result.nodes[0].error).toMatch(
      /\/data on .* holds 4 shard\(s\) of data, and this cluster has no location map yet: another cluster's install\?/,
    );
    expect(pidOf("h1")).toBe(h1);
    expect(existsSync(join(otherControl, "location-map.json"))).toBe(false);
    await expectKeysServed();
  });

  it("refuses to undeploy a node that still owns shards, and says how to move them", async () => {
    const r = await cli([...base(), "undeploy", "h1", ...sshFlags()], env);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/h1 still owns 4 shard/);
    expect(r.err).toContain("shardctl migrate --shard <id> --to <node> --apply");
    expect(pidOf("h1")).toBeGreaterThan(0);
  });

  it("adds a fourth node (authenticated by the SSH agent) without shards, then undeploys it", async () => {
    let r = await deploy("--nodes", "h4", "--accept-new-host-keys");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/h4.*installed/);
    expect((await mapNodes()).find((n) => n.id === "h4")).toMatchObject({ shards: 0 });
    const dir = dataDirs.get("h4")!;
    expect(lab.processesWith(`${dir}/supervise.sh`).length).toBeGreaterThan(0);
    r = await cli([...base(), "undeploy", "h4", ...sshFlags()], env);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/removed from the location map/);
    expect((await mapNodes()).map((n) => n.id)).toEqual(["h1", "h2", "h3"]);
    expect(lab.processesWith(dir)).toEqual([]);
    expect(existsSync(join(dir, "agent.mjs"))).toBe(false);
    expect(existsSync(join(dir, "token"))).toBe(false);
    expect(existsSync(join(dir, "data"))).toBe(true);
    expect(existsSync(pwned)).toBe(false);
    // again: nothing is left to remove, and --json says so (it listed every path it would have removed)
    r = await cli([...base(), "undeploy", "h4", ...sshFlags(), "--json"], env);
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ node: "h4", stopped: "not running", removed: [] });
  });
  it("undeploy leaves the map before it stops the agent: a shard moved to the node meanwhile stops it, with nothing changed", async () => {
    let r = await deploy("--nodes", "h4");
    expect(r.code, r.err).toBe(0);
    const dir = dataDirs.get("h4")!;
    // undeploy checked the map (no shard on h4) and connected; stopped there, a move lands on h4
    const undeploy = watchedProcess([...base(), "undeploy", "h4", ...sshFlags(), "--purge"], {
      ...process.env,
      ...env,
      SHARDCTL_FAILPOINT: "undeploy.connected",
    });
    try {
      await undeploy.waitFor(/failpoint undeploy\.connected: stopping/);
      const store = new EmbeddedStore(controlDir);
      const shard = (await store.load())!.map.shards.find((s) => s.node === "h1")!;
      await store.close();
      r = await cli([...base(), "migrate", "--shard", shard.id, "--to", "h4", "--apply"], env);
      expect(r.code, r.err).toBe(0);
    } finally {
      undeploy.child.kill("SIGCONT");
    }
    const end = await undeploy.exited;
    expect(end.code, undeploy.err()).toBe(3);
    expect(undeploy.err()).toMatch(/node h4 still owns 1 shard/);
    // before: "h4: stopped", its files and data removed, then the same refusal (the shard lost)
    expect(undeploy.err()).not.toMatch(/h4: stopped/);
    expect(existsSync(join(dir, "data"))).toBe(true);
    expect(lab.processesWith(`${dir}/supervise.sh`).length).toBeGreaterThan(0);
    expect((await mapNodes()).find((n) => n.id === "h4")).toMatchObject({ shards: 1 });
    await expectKeysServed();
  });
  it("deploys into a directory that exists without changing its mode, and undeploy --purge leaves what is not the agent's", async () => {
    // a shared directory (as /tmp is): before, deploy made it 0700 for good
    const shared = join(hosts[3].home, "shared");
    mkdirSync(shared, { recursive: true });
    chmodSync(shared, 0o1777);
    writeFileSync(join(shared, "someone-elses-file"), "x");
    const port = (await freePorts(1))[0];
    const h5 = inventoryNode(lab, hosts[3], "h5", "a", {
      dataDir: shared,
      agentPort: port,
      ...(lab.netns ? {} : { listen: `127.0.0.1:${port}` }),
    });
    const h5Inventory = join(lab.dir, "h5.yaml");
    writeFileSync(h5Inventory, stringify({ nodes: [h5] }));
    const flags = ["--inventory", h5Inventory, "--known-hosts", knownHosts];
    let r = await cli([...base(), "deploy", ...flags, "--bundle", bundle.path], env);
    expect(r.code, r.err).toBe(0);
    expect(statSync(shared).mode & 0o7777).toBe(0o1777);
    expect(statSync(join(shared, "data")).mode & 0o777).toBe(0o700);
    r = await cli([...base(), "undeploy", "h5", ...flags, "--purge"], env);
    expect(r.code, r.err).toBe(0);
    expect(statSync(shared).mode & 0o7777).toBe(0o1777);
    expect(readdirSync(shared)).toEqual(["someone-elses-file"]);
  });
  it("refuses to deploy a node into another node's install (its agent.json), changing nothing", async () => {
    const { parse } = await import("yaml");
    const inv = parse(readFileSync(inventory, "utf8")) as { nodes: Record<string, unknown>[] };
    const m4 = { ...inv.nodes.find((n) => n.id === "h4")!, id: "m4", keyFile: lab.clientKey };
    const m4Inventory = join(lab.dir, "m4.yaml");
    writeFileSync(m4Inventory, stringify({ nodes: [m4] }));
    const dir = dataDirs.get("h4")!;
    const before = readFileSync(join(dir, "agent.json"), "utf8");
    const supervisors = lab.processesWith(`${dir}/supervise.sh`);
    expect(supervisors.length).toBeGreaterThan(0);
    const r = await cli(
      [
        ...base(),
        "deploy",
        "--inventory",
        m4Inventory,
        "--known-hosts",
        knownHosts,
        "--bundle",
        upgraded.path,
      ],
      env,
    );
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /m4 .* failed at "check platform": .* holds the agent of node h4, not m4 \(its agent\.json\)/,
    );
    expect(r.err).toContain("nothing was changed there");
    expect(readFileSync(join(dir, "agent.json"), "utf8")).toBe(before);
    expect(lab.processesWith(`${dir}/supervise.sh`)).toEqual(supervisors);
    expect((await mapNodes()).map((n) => n.id)).not.toContain("m4");

    // node stop/restart/start/status/logs and undeploy of m4 would act on h4's agent (an undeploy
    // --purge deleted h4's data, exit 0): refused the same way, nothing changed
    const flags = ["--inventory", m4Inventory, "--known-hosts", knownHosts];
    for (const action of ["stop", "restart", "start", "status", "logs"]) {
      const c = await cli([...base(), "node", action, "m4", ...flags], env);
      expect(c.code, `${action}: ${c.err}`).toBe(3);
      expect(c.err).toMatch(/holds the agent of node h4, not m4 \(its agent\.json\); nothing was changed/);
    }
    const u = await cli([...base(), "undeploy", "m4", ...flags, "--purge"], env);
    expect(u.code, u.err).toBe(3);
    expect(u.err).toMatch(/^error: not undeploying m4: .* holds the agent of node h4, not m4/m);
    expect(existsSync(join(dir, "data"))).toBe(true);
    expect(readFileSync(join(dir, "agent.json"), "utf8")).toBe(before);
    expect(lab.processesWith(`${dir}/supervise.sh`)).toEqual(supervisors);
    expect((await mapNodes()).find((n) => n.id === "h4")).toBeDefined();
  });
  it("refuses to undeploy from a dataDir that holds no install but files by the names it removes (another program's), changing nothing", async () => {
    // a wrong dataDir in the inventory: another program's directory, with its own token, releases and data
    // (before: `undeploy --purge` removed all of them and the directory, exit 0)
    const other = join(hosts[3].home, "otherapp");
    const files = ["data/db.sqlite", "releases/v1.tar", "token", "installed", "agent.log"];
    for (const f of files) {
      mkdirSync(join(other, f, ".."), { recursive: true });
      writeFileSync(join(other, f), f);
    }
    const port = (await freePorts(1))[0];
    const h6 = inventoryNode(lab, hosts[3], "h6", "a", { dataDir: other, agentPort: port });
    const h6Inventory = join(lab.dir, "h6.yaml");
    writeFileSync(h6Inventory, stringify({ nodes: [h6] }));
    const flags = ["--inventory", h6Inventory, "--known-hosts", knownHosts];
    const nodesBefore = await mapNodes();
    for (const extra of [["--purge"], [], ["--json"]]) {
      const r = await cli([...base(), "undeploy", "h6", ...flags, ...extra], env);
      expect(r.code, r.err).toBe(3);
      expect(r.err).toMatch(
        /^error: not undeploying h6: .*otherapp on .* holds no shardctl install \(no agent\.json, ctl\.sh or data\/shards\), but it holds .*token.*: they are not removed; nothing was changed$/m,
      );
      for (const f of files) expect(readFileSync(join(other, f), "utf8")).toBe(f);
    }
    expect(await mapNodes()).toEqual(nodesBefore);
    // a directory with none of those names (never deployed, or undeployed already) is nothing to refuse
    const empty = join(hosts[3].home, "empty");
    mkdirSync(empty);
    writeFileSync(h6Inventory, stringify({ nodes: [{ ...h6, dataDir: empty }] }));
    const r = await cli([...base(), "undeploy", "h6", ...flags, "--purge", "--json"], env);
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ node: "h6", removed: [] });
  });
});
