/**
 * Faults during a deploy, against real OpenSSH servers: a host that is down, a
 * key the host refuses, a changed host key, a full disk, a connection cut in
 * the middle of the upload. Each is reported for its node; none leaves an
 * agent running; the healthy node completes.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildBundle, type Bundle } from "../../../src/cluster/bundle.js";
import { runDeploy, type DeployResult, type NodeReport } from "../../../src/cluster/deploy.js";
import { parseInventory } from "../../../src/cluster/inventory.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { cli } from "../../helpers/cli.js";
import { inventoryNode, startSshLab, type SshHost, type SshLab } from "../../helpers/sshd.js";

const TOKEN = "fault-token-" + "4be1c0de".repeat(4);

let lab: SshLab;
let bundle: Bundle;
let knownHosts: string;
let inventory: string;
let controlDir: string;
const hosts = new Map<string, SshHost>();
const dataDirs = new Map<string, string>();
let cutProxy: { port: number; cut: () => boolean };
let result: DeployResult;
let stderr: string;
let exitCode: number;

function report(id: string): NodeReport {
  const r = result.nodes.find((n) => n.id === id);
  if (!r) throw new Error(`no report for ${id}`);
  return r;
}

/** No agent (nor supervisor) of this node runs, and no agent files are in place. */
function expectNothingRunning(id: string): void {
  const dir = dataDirs.get(id)!;
  expect(lab.processesWith(dir)).toEqual([]);
  for (const f of ["agent.mjs", "ctl.sh", "token", "agent.pid"])
    expect(existsSync(join(dir, f)), `${id}: ${f}`).toBe(false);
}

beforeAll(async () => {
  lab = await startSshLab();
  for (const name of ["good", "down", "wrongkey", "changed", "othertype", "disk", "cut"]) {
    hosts.set(
      name,
      await lab.addHost(name, {
        start: name !== "down",
        authorizedKey: name === "wrongkey" ? `${lab.strangerKey}.pub` : undefined,
        // "disk": its dataDir is a 64 KiB tmpfs
        tmpfs: name === "disk" ? { path: "agent", sizeKiB: 64 } : undefined,
      }),
    );
  }
  controlDir = join(lab.dir, "control");
  knownHosts = join(lab.dir, "known_hosts");
  // "changed": known_hosts remembers another key for it
  const changed = hosts.get("changed")!;
  const otherKey = readFileSync(`${lab.strangerKey}.pub`, "utf8").split(" ").slice(0, 2).join(" ");
  const changedName = changed.port === 22 ? changed.address : `[${changed.address}]:${changed.port}`;
  // "othertype": known_hosts holds only an RSA key for it; the host has only ed25519
  const othertype = hosts.get("othertype")!;
  execFileSync("ssh-keygen", ["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", join(lab.dir, "old_rsa")]);
  const rsaKey = readFileSync(join(lab.dir, "old_rsa.pub"), "utf8").split(" ").slice(0, 2).join(" ");
  const othertypeName =
    othertype.port === 22 ? othertype.address : `[${othertype.address}]:${othertype.port}`;
  writeFileSync(knownHosts, `${changedName} ${otherKey}\n${othertypeName} ${rsaKey}\n`);
  bundle = await buildBundle(join(lab.dir, "bundle", "agent.mjs"));
  // "cut": reached through a proxy that drops the connection after 2 MiB (in the upload of 4+ MiB)
  cutProxy = await lab.cuttingProxy(hosts.get("cut")!, 2 << 20);
  const nodes = [...hosts.entries()].map(([name, h], i) => {
    const extra: Record<string, unknown> = {};
    if (name === "cut")
      Object.assign(extra, {
        host: "127.0.0.1",
        port: cutProxy.port,
        advertise: `${h.address}:${h.agentPort}`,
      });
    // the good host is pinned instead of being in known_hosts
    if (name === "good") extra.hostKey = h.fingerprint;
    const node = inventoryNode(lab, h, name, ["a", "b", "c"][i % 3], extra);
    dataDirs.set(name, node.dataDir as string);
    return node;
  });
  inventory = join(lab.dir, "inventory.yaml");
  writeFileSync(inventory, stringify({ nodes }));
  // Given every fault at once, new host keys accepted
  const r = await cli(
    [
      "--data-dir",
      controlDir,
      "deploy",
      "--inventory",
      inventory,
      "--known-hosts",
      knownHosts,
      "--bundle",
      bundle.path,
      "--accept-new-host-keys",
      "--json",
      "--health-timeout",
      "20",
    ],
    { SHARDCTL_TOKEN: TOKEN },
  );
  result = JSON.parse(r.out) as DeployResult;
  stderr = r.err;
  exitCode = r.code;
}, 180_000);

afterAll(async () => {
  await lab?.cleanup();
}, 60_000);

describe("deploy faults", () => {
  it("completes the healthy node (pinned host key), writes no layout over it alone, and exits 1 for the others", async () => {
    expect(exitCode).toBe(1);
    expect(report("good").outcome).toBe("installed");
    expect(lab.processesWith(`${dataDirs.get("good")}/supervise.sh`).length).toBeGreaterThan(0);
    const store = new EmbeddedStore(controlDir);
    const vm = await store.load();
    await store.close();
    // the first deploy: no initial layout over the one node that came up (it would get every shard)
    expect(vm).toBeNull();
    expect(result.layoutWritten).toBe(false);
    expect(stderr).toMatch(
      /warning: no initial layout written: down, wrongkey, changed, othertype, disk, cut failed/,
    );
    expect(stderr).toMatch(
      /6 of 7 node\(s\) failed: down, wrongkey, changed, othertype, disk, cut; the others completed/,
    );
  });

  it("reports a host that is down", () => {
    const r = report("down");
    expect(r).toMatchObject({ outcome: "failed", step: "connect" });
    expect(r.error).toMatch(/connection refused/);
    expectNothingRunning("down");
  });

  it("reports a key the host refuses", () => {
    const r = report("wrongkey");
    expect(r).toMatchObject({ outcome: "failed", step: "connect" });
    expect(r.error).toMatch(/refused the key in keyFile \(authentication failed\)/);
    expectNothingRunning("wrongkey");
  });

  it("refuses a changed host key even with --accept-new-host-keys, and keeps known_hosts as it was", () => {
    const h = hosts.get("changed")!;
    const r = report("changed");
    expect(r).toMatchObject({ outcome: "failed", step: "connect", hostKeyFingerprint: h.fingerprint });
    expect(r.error).toMatch(/HOST KEY CHANGED/);
    expect(r.hint).toMatch(/ssh-keygen -R/);
    const lines = readFileSync(knownHosts, "utf8").trim().split("\n");
    const name = h.port === 22 ? `${h.address} ` : `[${h.address}]:${h.port} `;
    expect(lines.filter((l) => l.startsWith(name))).toHaveLength(1);
    expect(lines.some((l) => l.includes(readFileSync(`${h.hostKeyFile}.pub`, "utf8").split(" ")[1]))).toBe(
      false,
    );
    expectNothingRunning("changed");
  });

  it("refuses a host that no longer offers the key type known_hosts holds for it", () => {
    const r = report("othertype");
    expect(r).toMatchObject({ outcome: "failed", step: "connect" });
    expect(r.error).toMatch(/offers none of the host key types known_hosts holds for it/);
    expectNothingRunning("othertype");
  });

  it("reports a disk too small for the bundle before uploading", () => {
    const r = report("disk");
    expect(r).toMatchObject({ outcome: "failed", step: "check disk space" });
    expect(r.error).toMatch(/not enough disk space .*: \d+ KiB free, the bundle needs \d+ KiB/);
    expectNothingRunning("disk");
  });

  it("reports a connection cut in the middle of the upload", () => {
    expect(cutProxy.cut()).toBe(true);
    const r = report("cut");
    expect(r).toMatchObject({ outcome: "failed", step: "upload bundle" });
    expect(r.error).toMatch(/connection .* was lost/);
    // the rollback reconnected and removed the partial upload
    expect(r.rollbackErrors).toBeUndefined();
    expect(existsSync(join(dataDirs.get("cut")!, ".staging"))).toBe(false);
    expectNothingRunning("cut");
  });

  it("prints each failure with its step and never the token or the private key", () => {
    for (const id of ["down", "wrongkey", "changed", "othertype", "disk", "cut"])
      expect(stderr).toMatch(new RegExp(`^${id} \\(.*\\) failed at "`, "m"));
    const keyBody = lab.clientKeyText.split("\n")[1];
    expect(JSON.stringify(result)).not.toContain(TOKEN);
    expect(stderr).not.toContain(TOKEN);
    expect(JSON.stringify(result)).not.toContain(keyBody);
    expect(stderr).not.toContain(keyBody);
  });

  it("reports a disk that fills up during the upload, and removes the partial file", async () => {
    // When the free-space check is waived, the upload itself hits ENOSPC
    const disk = hosts.get("disk")!;
    const inv = parseInventory(readFileSync(inventory, "utf8"), inventory);
    const store = new EmbeddedStore(join(lab.dir, "control-2"));
    try {
      const r = await runDeploy(
        {
          nodes: inv.nodes.filter((n) => n.id === "disk"),
          bundle,
          token: TOKEN,
          zones: ["a", "b", "c"],
          segments: 64,
          concurrency: 1,
          hostKeys: { knownHostsFile: knownHosts, acceptNew: true },
          minFreeBytes: 1,
        },
        { store },
      );
      expect(r.nodes[0]).toMatchObject({ outcome: "failed", step: "upload bundle" });
      expect(r.nodes[0].error).toMatch(/the disk is full: \d+ KiB free/);
      expect(r.nodes[0].rollbackErrors).toBeUndefined();
    } finally {
      await store.close();
    }
    expect(readdirSync(`${disk.home}/agent`).filter((f) => f !== "data")).toEqual([]);
    expectNothingRunning("disk");
  });
});
