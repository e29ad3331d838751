/**
 * Interrupting `shardctl deploy` in the middle of a rolling upgrade, against
 * real OpenSSH servers and real agents. A real `shardctl deploy` process (the
 * build in dist/) is signalled when it prints the progress line of the step
 * that follows the old agent's stop ("swap into place"): from then on, until
 * the new agent starts, the node has no agent running.
 *
 * - SIGINT or SIGTERM: it finishes the node being cut over (or rolls it back),
 *   does not stop any other node, says what it is doing, and exits 1;
 * - SIGKILL: nothing can run any more, and the node is left stopped; `node
 *   start|restart` refuse it (exit 3); the next deploy finds it and starts its
 *   previous release again, also when the new release does not start;
 * - a second Ctrl-C: it exits at once, naming the node that may be left
 *   stopped and how to repair it; the next deploy repairs it;
 * - the SSH connection cut while the old agent drains: the stop is killed on
 *   the node, and the rollback (over a new connection) waits for the old agent
 *   to be gone before it starts it again.
 */
import { appendFileSync, copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildBundle, sha256File, type Bundle } from "../../../src/cluster/bundle.js";
import { runDeploy, type DeployResult, type NodeReport } from "../../../src/cluster/deploy.js";
import { parseInventory } from "../../../src/cluster/inventory.js";
import { EmbeddedStore, processAlive } from "../../../src/store/embedded.js";
import { cli, watchedProcess } from "../../helpers/cli.js";
import { inventoryNode, startSshLab, type SshHost, type SshLab } from "../../helpers/sshd.js";

const TOKEN = "intr-token-" + "5ca1ab1e".repeat(4);
const IDS = ["n1", "n2"];

let lab: SshLab;
let controlDir: string;
let knownHosts: string;
let inventory: string;
let v1: Bundle;
let v2: Bundle;
let v3: Bundle;
/** A release whose agent exits at once. */
let bad: Bundle;
const dataDirs = new Map<string, string>();
const hosts = new Map<string, SshHost>();

function release(from: Bundle, name: string, suffix: string): Bundle {
  const path = join(lab.dir, name);
  copyFileSync(from.path, path);
  appendFileSync(path, suffix);
  return { path, sha256: sha256File(path), bytes: statSync(path).size };
}

function pidOf(id: string): number | undefined {
  const f = join(dataDirs.get(id)!, "agent.pid");
  return existsSync(f) ? Number(readFileSync(f, "utf8").trim()) : undefined;
}

function alive(pid: number | undefined): boolean {
  return pid !== undefined && pid > 0 && processAlive(pid);
}

/** The node's supervisor (and with it its agent) runs. */
function running(id: string): boolean {
  return lab.processesWith(`${dataDirs.get(id)}/supervise.sh`).length > 0;
}

function releaseOn(id: string): string {
  return sha256File(join(dataDirs.get(id)!, "agent.mjs"));
}

/** What an unfinished cut-over leaves in a node's directory. */
function leftovers(id: string): string[] {
  return [".staging", ".prev", ".cutover"].filter((f) => existsSync(join(dataDirs.get(id)!, f)));
}

function deployArgs(b: Bundle, ...extra: string[]): string[] {
  return [
    "--data-dir",
    controlDir,
    "deploy",
    "--inventory",
    inventory,
    "--known-hosts",
    knownHosts,
    "--bundle",
    b.path,
    "--health-timeout",
    "15",
    ...extra,
  ];
}

async function deployInProcess(
  b: Bundle,
  ...extra: string[]
): Promise<{ code: number; result: DeployResult; err: string }> {
  const r = await cli([...deployArgs(b, ...extra), "--json"], { SHARDCTL_TOKEN: TOKEN });
  return { code: r.code, result: JSON.parse(r.out) as DeployResult, err: r.err };
}

/** `shardctl node ACTION ID` through the CLI, as an operator runs it. */
function nodeCommand(action: string, id: string) {
  return cli(
    ["--data-dir", controlDir, "node", action, id, "--inventory", inventory, "--known-hosts", knownHosts],
    { SHARDCTL_TOKEN: TOKEN },
  );
}

/** `shardctl deploy` as a real process, with its output collected. */
function deployProcess(b: Bundle, ...extra: string[]) {
  return watchedProcess(deployArgs(b, ...extra), {
    PATH: process.env.PATH,
    HOME: lab.dir,
    SHARDCTL_TOKEN: TOKEN,
  });
}

function report(result: DeployResult, id: string): NodeReport {
  return result.nodes.find((n) => n.id === id)!;
}

beforeAll(async () => {
  lab = await startSshLab();
  const nodes = [];
  for (const [i, id] of IDS.entries()) {
    const host = await lab.addHost(`h${i + 1}`);
    hosts.set(id, host);
    const node = inventoryNode(lab, host, id, ["a", "b"][i]);
    dataDirs.set(id, node.dataDir as string);
    nodes.push(node);
  }
  controlDir = join(lab.dir, "control");
  knownHosts = join(lab.dir, "known_hosts");
  inventory = join(lab.dir, "inventory.yaml");
  writeFileSync(inventory, stringify({ nodes }));
  v1 = await buildBundle(join(lab.dir, "bundle", "agent.mjs"));
  v2 = release(v1, "agent-v2.mjs", "\n// release 2\n");
  v3 = release(v1, "agent-v3.mjs", "\n// release 3\n");
  const badPath = join(lab.dir, "agent-bad.mjs");
  writeFileSync(badPath, `console.error("bad release: cannot start"); process.exit(1);\n`);
  bad = { path: badPath, sha256: sha256File(badPath), bytes: statSync(badPath).size };
  const first = await deployInProcess(v1, "--accept-new-host-keys");
  expect(first.code, first.err).toBe(0);
  expect(first.result.nodes.map((n) => n.outcome)).toEqual(["installed", "installed"]);
}, 180_000);

afterAll(async () => {
  await lab?.cleanup();
}, 60_000);

describe("an interrupted deploy", () => {
  // SIGHUP: the operator's terminal or SSH session closed; "stderr closed": the reader of its
  // output went away (before, the first failed write ended the process at once, with exit 0)
  for (const [signal, from, to] of [
    ["SIGINT", () => v1, () => v2],
    ["SIGTERM", () => v2, () => v3],
    ["SIGHUP", () => v3, () => v2],
    ["stderr closed", () => v2, () => v3],
  ] as const) {
    it(`on ${signal} at the cut-over, finishes the node being cut over, stops no other node, says so, and exits 1`, async () => {
      for (const id of IDS) expect(releaseOn(id)).toBe(from().sha256);
      const before = new Map(IDS.map((id) => [id, pidOf(id)]));
      const d = deployProcess(to(), "--json");
      const [, id] = await d.waitFor(/^(n\d) +swap into place$/m);
      const other = IDS.find((x) => x !== id)!;
      if (signal === "stderr closed") d.child.stderr!.destroy();
      else d.child.kill(signal);
      const { code } = await d.exited;
      expect(code, d.err()).toBe(1);
      if (signal !== "stderr closed") {
        expect(d.err()).toMatch(new RegExp(`${signal}: .*finishing the cut-over of ${id}`));
        expect(d.err()).toMatch(/deploy interrupted/);
      }
      expect(existsSync(join(controlDir, "deploy.lock")), "the deploy lock is released").toBe(false);
      const result = JSON.parse(d.out()) as DeployResult;
      expect(report(result, id)).toMatchObject({ outcome: "upgraded" });
      expect(report(result, other)).toMatchObject({ outcome: "failed", step: "interrupted" });
      // the node being cut over runs the new release; the other one was never stopped
      expect(releaseOn(id)).toBe(to().sha256);
      expect(running(id)).toBe(true);
      expect(pidOf(id)).not.toBe(before.get(id));
      expect(releaseOn(other)).toBe(from().sha256);
      expect(pidOf(other)).toBe(before.get(other));
      expect(alive(pidOf(other))).toBe(true);
      for (const x of IDS) expect(leftovers(x), x).toEqual([]);
      // the next deploy finishes the rollout
      const again = await deployInProcess(to());
      expect(again.code, again.err).toBe(0);
      expect(report(again.result, id).outcome).toBe("up-to-date");
      expect(report(again.result, other).outcome).toBe("upgraded");
    }, 180_000);
  }

  it("killed (SIGKILL) mid-cut-over leaves that node stopped; the next deploy starts its previous release again, even when the new one does not start", async () => {
    // both nodes run the same release, and run it
    const was = releaseOn("n1");
    for (const id of IDS) {
      expect(releaseOn(id)).toBe(was);
      expect(running(id), id).toBe(true);
    }
    const otherPid = pidOf("n2");
    // one node at a time, in inventory order: n1 is cut over first
    const d = deployProcess(bad, "--concurrency", "1");
    await d.waitFor(/^n1 +swap into place$/m);
    d.child.kill("SIGKILL");
    await d.exited;
    // what a hard kill leaves: n1's agent stopped, n2 untouched
    expect(running("n1")).toBe(false);
    const status = await nodeCommand("status", "n1");
    expect(status.err).toMatch(/n1: stopped; a deploy was interrupted during the cut-over from release/);
    // node start|restart would start whatever the swap left in place: both refuse, and say what to run
    for (const action of ["start", "restart"]) {
      const refused = await cli(
        [
          "--data-dir",
          controlDir,
          "node",
          action,
          "n1",
          "--inventory",
          inventory,
          "--known-hosts",
          knownHosts,
        ],
        { SHARDCTL_TOKEN: TOKEN },
      );
      expect(refused.code, refused.err).toBe(3);
      expect(refused.err).toContain(
        `a deploy was interrupted during the cut-over from release ${was.slice(0, 12)} to release ${bad.sha256.slice(0, 12)} on n1`,
      );
      expect(refused.err).toMatch(/run the same `shardctl deploy` again/);
      expect(refused.err).not.toMatch(/\n\s+at /);
      expect(running("n1")).toBe(false);
      expect(leftovers("n1")).toContain(".cutover");
    }
    expect(pidOf("n2")).toBe(otherPid);

    const r = await deployInProcess(bad, "--concurrency", "1", "--health-timeout", "10");
    expect(r.code).toBe(1);
    // every node runs the release it ran before the interrupted deploy, n2 never stopped
    for (const id of IDS) {
      expect(releaseOn(id)).toBe(was);
      expect(running(id), id).toBe(true);
      expect(leftovers(id), id).toEqual([]);
    }
    expect(pidOf("n2")).toBe(otherPid);
    const n1 = report(r.result, "n1");
    expect(n1.repaired, JSON.stringify(n1)).toMatch(/interrupted cut-over/);
    // the bad release was tried on n1 again, failed, and n1 went back to the release it ran before
    expect(n1).toMatchObject({ outcome: "failed", step: "wait for health" });
    expect(n1.rollbackErrors).toBeUndefined();
    expect(report(r.result, "n2")).toMatchObject({ outcome: "failed", step: "rolling upgrade halted" });
    expect(r.err).toMatch(/n1: .*interrupted cut-over/);
  }, 180_000);

  it("exits at once on a second Ctrl-C, naming the node that may be left stopped and how to repair it; the next deploy repairs it", async () => {
    const d = deployProcess(v2);
    const [, id] = await d.waitFor(/^(n\d) +swap into place$/m);
    d.child.kill("SIGINT");
    await d.waitFor(/finishing the cut-over/);
    const t0 = Date.now();
    d.child.kill("SIGINT");
    const { code, signal } = await d.exited;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(signal === "SIGINT" || code === 130, `${code} ${signal}`).toBe(true);
    expect(d.err()).toMatch(new RegExp(`${id}: .*may be left stopped`));
    expect(d.err()).toMatch(/run the same `shardctl deploy` again/);
    const again = await deployInProcess(v2);
    expect(again.code, again.err).toBe(0);
    for (const x of IDS) {
      expect(releaseOn(x)).toBe(v2.sha256);
      expect(running(x), x).toBe(true);
      expect(leftovers(x), x).toEqual([]);
    }
  }, 180_000);
  it("with its SSH connection cut while the old agent drains, kills the stop on the node and brings the previous agent back once the old one is gone", async () => {
    const was = releaseOn("n1");
    const next = was === v3.sha256 ? v2 : v3;
    const host = hosts.get("n1")!;
    const proxy = await lab.cuttingProxy(host, Infinity);
    // n1 reached through a proxy the test cuts; its host key pinned
    const inv = parseInventory(readFileSync(inventory, "utf8"), inventory);
    const node = {
      ...inv.nodes.find((n) => n.id === "n1")!,
      host: "127.0.0.1",
      port: proxy.port,
      hostKey: host.fingerprint,
    };
    const dir = dataDirs.get("n1")!;
    const oldSupervisor = pidOf("n1")!;
    const agentPid = lab
      .processesWith(`${dir}/agent.mjs`)
      .find((p) => readFileSync(`/proc/${p}/cmdline`, "utf8").includes(`${dir}/agent.mjs\0--data-dir`))!;
    expect(agentPid).toBeGreaterThan(0);
    const continueAgent = () => {
      try {
        process.kill(agentPid, "SIGCONT");
      } catch {
        // gone
      }
    };
    // the cluster's own store: its map lists n1 (a store without a map is another cluster's, and a
    // node holding shards is refused there before anything is touched)
    const store = new EmbeddedStore(controlDir);
    try {
      const steps: string[] = [];
      const r = await runDeploy(
        {
          nodes: [node],
          bundle: next,
          token: TOKEN,
          zones: ["a", "b"],
          segments: 64,
          concurrency: 1,
          hostKeys: { knownHostsFile: knownHosts, acceptNew: false },
          healthTimeoutMs: 15_000,
          stopTimeoutSeconds: 30,
        },
        {
          store,
          progress: (_id, e) => {
            steps.push(e.step);
            if (e.step === "stop (drain)" && !e.final) {
              // the old agent drains slowly: it takes its SIGTERM only once continued
              process.kill(agentPid, "SIGSTOP");
              setTimeout(() => proxy.cutNow(), 1500);
            }
            // the rollback's start is under way by then: let the old agent finish and go
            if (e.step === "reconnect for the rollback" && !e.final) setTimeout(continueAgent, 1500);
          },
        },
      );
      const n1 = r.nodes[0];
      expect(n1, JSON.stringify(n1)).toMatchObject({ outcome: "failed", step: "stop (drain)" });
      expect(n1.error).toMatch(/connection to .* was lost/);
      expect(n1.rollbackErrors, JSON.stringify(n1)).toBeUndefined();
      expect(steps).toContain("reconnect for the rollback");
    } finally {
      continueAgent();
      await store.close();
    }
    // the previous release runs again, under a new supervisor whose pid file is in place
    expect(alive(oldSupervisor)).toBe(false);
    expect(alive(agentPid)).toBe(false);
    expect(releaseOn("n1")).toBe(was);
    expect(running("n1")).toBe(true);
    expect(alive(pidOf("n1"))).toBe(true);
    expect(leftovers("n1")).toEqual([]);
    // no stop left behind on the node
    expect(lab.processesWith(`${dir}/ctl.sh`)).toEqual([]);
    const status = await nodeCommand("status", "n1");
    expect(status.err).toMatch(/n1: running/);
  }, 180_000);
});
