/**
 * Deploy with the Consul store: nodes go into the map in Consul KV and are
 * registered as `shardctl-agent` services with an HTTP check on /health;
 * undeploy deregisters them.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildBundle, type Bundle } from "../../../src/cluster/bundle.js";
import { cli } from "../../helpers/cli.js";
import { startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";
import { consulDeployArgs, inventoryNode, startSshLab, type SshLab } from "../../helpers/sshd.js";

let lab: SshLab;
let consul: DevConsul;
let bundle: Bundle;
let inventory: string;
let env: NodeJS.ProcessEnv;
let flags: string[];

interface NodeRow {
  id: string;
  health: string;
  registered: boolean;
  inMap: boolean;
  shards: number;
}

async function nodes(): Promise<NodeRow[]> {
  const r = await cli(["--store", "consul", "nodes", "--json"], env);
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as NodeRow[];
}

beforeAll(async () => {
  [lab, consul] = await Promise.all([startSshLab(), startConsulDev()]);
  const h1 = await lab.addHost("c1");
  const h2 = await lab.addHost("c2");
  bundle = await buildBundle(join(lab.dir, "bundle", "agent.mjs"));
  inventory = join(lab.dir, "inventory.yaml");
  writeFileSync(
    inventory,
    stringify({ nodes: [inventoryNode(lab, h1, "c1", "a"), inventoryNode(lab, h2, "c2", "b")] }),
  );
  ({ env, flags } = consulDeployArgs(lab, {
    token: "consul-deploy-token",
    consulAddr: consul.addr,
    prefix: uniquePrefix("deploy"),
    inventory,
    bundle: bundle.path,
  }));
}, 120_000);

afterAll(async () => {
  await lab?.cleanup();
  await consul?.stop();
}, 60_000);

describe("deploy with the Consul store", () => {
  it("registers deployed agents as services whose /health check passes, and deregisters on undeploy", async () => {
    let r = await cli(["--store", "consul", "deploy", ...flags, "--nodes", "c1"], env);
    expect(r.code, r.err).toBe(0);
    r = await cli(["--store", "consul", "deploy", ...flags, "--nodes", "c2"], env);
    expect(r.code, r.err).toBe(0);
    // Consul runs the HTTP check every 5 s
    let rows: NodeRow[] = [];
    for (let i = 0; i < 60; i++) {
      rows = await nodes();
      if (rows.length === 2 && rows.every((n) => n.health === "passing")) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    expect(rows.map((n) => [n.id, n.registered, n.inMap, n.shards, n.health])).toEqual([
      ["c1", true, true, 4, "passing"],
      ["c2", true, true, 0, "passing"],
    ]);
    const put = await cli(["--store", "consul", "put", "k", "v"], env);
    expect(put.code, put.err).toBe(0);
    expect((await cli(["--store", "consul", "get", "k"], env)).out).toBe("v");

    r = await cli(
      [
        "--store",
        "consul",
        "undeploy",
        "c2",
        "--inventory",
        inventory,
        "--known-hosts",
        join(lab.dir, "known_hosts"),
      ],
      env,
    );
    expect(r.code, r.err).toBe(0);
    expect((await nodes()).map((n) => n.id)).toEqual(["c1"]);
  });
});
